"""Checkpoints saved before the detectors had their own packages keep loading.

A trained ``.pt`` pickles each layer's class by its module path (``components.models.dasc.ResCBAM``).
Those modules moved into ``components/detectors/<name>/``; ``MOVED`` maps every old path to its new
one. ultralytics loads every checkpoint through ``ultralytics.nn.tasks.torch_safe_load``, which
already maps *its own* moved modules with ``temporary_modules`` (``ultralytics.yolo.utils`` ->
``ultralytics.utils``...); :func:`install` extends that seam: it wraps ``torch_safe_load`` so that
the project's old paths are mapped too, with the same ``temporary_modules`` (only while a checkpoint
is unpickled; nothing is left in ``sys.modules``). ``components.yolo`` installs it, so every project
path that loads weights (``YOLO(...)``, ``load_checkpoint``, the trainer's resume) sees the map.

When a module moves again, add its old path here (and keep the old ones).
"""

from __future__ import annotations

import functools

# old module path -> where it lives now
MOVED = {
    "components.models.dasc": "components.detectors.dasc.layers",
    "components.models.lagnet": "components.detectors.lagnet.layers",
}


def install() -> None:
    """Make ultralytics' checkpoint loader map ``MOVED`` (idempotent)."""
    from ultralytics.nn import tasks

    if getattr(tasks.torch_safe_load, "defectops_moved", None) is MOVED:
        return
    original = tasks.torch_safe_load

    @functools.wraps(original)
    def torch_safe_load(*args, **kwargs):
        with tasks.temporary_modules(modules=MOVED):
            return original(*args, **kwargs)

    torch_safe_load.defectops_moved = MOVED
    tasks.torch_safe_load = torch_safe_load
