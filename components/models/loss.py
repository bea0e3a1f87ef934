"""The box-regression loss of every detector, selectable by one param (``model.iou_loss``).

Plugged in through ultralytics' public seams: a ``BboxLoss`` subclass inside a
``v8DetectionLoss`` subclass, returned by the detection model's ``init_criterion``
(``components/models/detect.py``). Nothing of ultralytics is patched or copied.

The task-aligned assigner still ranks anchors with CIoU (ultralytics' ``TaskAlignedAssigner``):
only the regression loss changes, as in the DASC-YOLO loss comparison (Fig. 6).
"""

from __future__ import annotations

import torch
from ultralytics.utils.loss import BboxLoss, v8DetectionLoss

from .iou import IOU_LOSSES, iou_loss


class SelectableBboxLoss(BboxLoss):
    """ultralytics' ``BboxLoss`` (IoU term + DFL) with the IoU term chosen from ``IOU_LOSSES``.

    Boxes arrive in feature-grid units, so MPDIoU's image size is ``imgsz / stride`` of each
    anchor's level. ``progress`` (epoch / (epochs - 1)) drives Unified-IoU's box scaling.
    """

    def __init__(self, reg_max: int, kind: str = "ciou"):
        if kind not in IOU_LOSSES:
            raise ValueError(f"unknown IoU loss '{kind}' (choose from {', '.join(IOU_LOSSES)})")
        super().__init__(reg_max)
        self.kind = kind
        self.progress = 0.0

    def forward(self, pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores,
                target_scores_sum, fg_mask, imgsz, stride):
        loss_ciou, loss_dfl = super().forward(pred_dist, pred_bboxes, anchor_points, target_bboxes,
                                              target_scores, target_scores_sum, fg_mask, imgsz, stride)
        if self.kind == "ciou":
            return loss_ciou, loss_dfl
        idx = fg_mask.nonzero(as_tuple=True)
        weight = target_scores[idx].sum(-1)
        s = stride.view(-1)[idx[1]]
        img_wh = torch.stack([imgsz[1] / s, imgsz[0] / s], -1)
        loss = iou_loss(pred_bboxes[idx], target_bboxes[idx], self.kind, img_wh=img_wh,
                        progress=self.progress)
        return (loss * weight).sum() / target_scores_sum, loss_dfl


class DefectDetectionLoss(v8DetectionLoss):
    """ultralytics' detection loss with the selectable box-regression loss."""

    def __init__(self, model, iou_loss: str = "ciou", tal_topk: int = 10):
        super().__init__(model, tal_topk=tal_topk)
        self.bbox_loss = SelectableBboxLoss(self.reg_max, iou_loss).to(self.device)
