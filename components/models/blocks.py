"""``register_blocks()``: make the detectors' blocks known to ultralytics' model-YAML parser.

ultralytics' ``parse_model`` resolves a YAML layer's module name in ``ultralytics.nn.tasks``'
globals, a public seam with no registry function. This puts the blocks of every detector in the
catalogue there (``DetectorSpec.blocks``: DASC-YOLO's, LAGNet's, a registered detector's),
explicitly and idempotently; ``DefectDetectionModel`` calls it before it parses a YAML, so building
a model never depends on which module happened to be imported first.
"""

from __future__ import annotations


def register_blocks() -> tuple[str, ...]:
    """Register every catalogued detector's blocks with ultralytics' parser; returns their names."""
    from ultralytics.nn import tasks

    from ..detectors import CATALOGUE

    blocks = [b for s in CATALOGUE.values() for b in s.blocks()]
    for block in blocks:
        existing = getattr(tasks, block.__name__, None)
        if existing is not None and existing is not block:
            raise RuntimeError(f"ultralytics already defines a {block.__name__}: the project's block would shadow it")
        setattr(tasks, block.__name__, block)
    return tuple(b.__name__ for b in blocks)
