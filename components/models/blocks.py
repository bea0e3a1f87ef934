"""``register_blocks()``: make the project's blocks known to ultralytics' model-YAML parser.

ultralytics' ``parse_model`` resolves a YAML layer's module name in ``ultralytics.nn.tasks``'
globals, a public seam with no registry function. This puts DASC-YOLO's and LAGNet's blocks
there, explicitly and idempotently; ``DefectDetectionModel`` calls it before it parses a YAML,
so building a model never depends on which module happened to be imported first.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=None)
def register_blocks() -> tuple[str, ...]:
    """Register every project block with ultralytics' parser; returns their names."""
    from ultralytics.nn import tasks

    from .dasc import CBAM, CSA, ProtoNet, ResCBAM, SCConv
    from .lagnet import SCEM, DualMobileNetV3, LagPAN, MobileNetV3Features

    blocks = (CBAM, ResCBAM, SCConv, CSA, ProtoNet, DualMobileNetV3, MobileNetV3Features, LagPAN, SCEM)
    for block in blocks:
        existing = getattr(tasks, block.__name__, None)
        if existing is not None and existing is not block:
            raise RuntimeError(f"ultralytics already defines a {block.__name__}: the project's block would shadow it")
        setattr(tasks, block.__name__, block)
    return tuple(b.__name__ for b in blocks)
