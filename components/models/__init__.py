"""What every detector shares: the detection model with a selectable box loss (``detect``), the
IoU losses (``iou``, ``loss``), CBAM's attention gates (``attention``) and the registration of the
detectors' blocks with ultralytics' parser (``blocks``). Each detector's own layers live in its
package, ``components/detectors/<name>/layers.py``.
"""

from __future__ import annotations

import importlib

# name -> its module; loaded on first use (PEP 562), so importing one light module of the package
# (``iou.IOU_LOSSES``, which the settings check ``loss.iou`` against) does not load torch
_EXPORTS = {"register_blocks": "blocks", "DefectDetectionModel": "detect", "DefectDetectionLoss": "loss",
            "SelectableBboxLoss": "loss", "IOU_LOSSES": "iou", "iou_loss": "iou"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
