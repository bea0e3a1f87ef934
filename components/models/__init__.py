"""Detector building blocks (one small block per class, the paper named in the docstring).

Importing this package is what makes checkpoints of the project's models loadable in a fresh
process: their classes are pickled by reference to these modules.
"""

from .blocks import register_blocks
from .detect import DefectDetectionModel
from .iou import IOU_LOSSES, iou_loss
from .loss import DefectDetectionLoss, SelectableBboxLoss

__all__ = ["register_blocks", "DefectDetectionModel", "DefectDetectionLoss", "SelectableBboxLoss", "IOU_LOSSES", "iou_loss"]
