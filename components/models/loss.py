"""The box-regression loss of every detector, selectable by one param (``model.iou_loss``).

Plugged in through ultralytics' public seams: a ``BboxLoss`` subclass inside a
``v8DetectionLoss`` subclass, returned by the detection model's ``init_criterion``
(``components/models/detect.py``). Nothing of ultralytics is patched or copied.

The task-aligned assigner still ranks anchors with CIoU (ultralytics' ``TaskAlignedAssigner``):
only the regression loss changes, as in the DASC-YOLO loss comparison (Fig. 6).

Optionally (``dasc.proto_loss`` > 0, not in the paper) each DASC-YOLO ProtoNet's background mask
is also taught where the ground-truth boxes are: a fourth loss item ``proto_loss``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def box_mask(bboxes: torch.Tensor, batch_idx: torch.Tensor, batch_size: int, h: int, w: int) -> torch.Tensor:
    """(batch_size, 1, h, w): 1 where a grid cell's centre lies inside a ground-truth box.
    ``bboxes`` are ultralytics' normalised xywh, ``batch_idx`` the image of each box."""
    ys = (torch.arange(h, device=bboxes.device, dtype=bboxes.dtype) + 0.5) / h
    xs = (torch.arange(w, device=bboxes.device, dtype=bboxes.dtype) + 0.5) / w
    mask = torch.zeros(batch_size, h, w, device=bboxes.device, dtype=bboxes.dtype)
    if len(bboxes):
        cx, cy, bw, bh = bboxes.unbind(-1)
        inside_x = (xs[None] - cx[:, None]).abs() <= bw[:, None] / 2          # (n, w)
        inside_y = (ys[None] - cy[:, None]).abs() <= bh[:, None] / 2          # (n, h)
        inside = (inside_y[:, :, None] & inside_x[:, None, :]).to(mask.dtype)  # (n, h, w)
        mask.index_put_((batch_idx.long(),), inside, accumulate=True)
    return mask.clamp_(max=1).unsqueeze(1)


def proto_mask_loss(backs: list[torch.Tensor], bboxes: torch.Tensor, batch_idx: torch.Tensor) -> torch.Tensor:
    """Mean over ProtoNets of the binary cross-entropy between the foreground probability
    ``1 - M_back`` and the ground-truth box mask at that ProtoNet's resolution. In float32 with
    autocast off: CUDA autocast refuses ``binary_cross_entropy`` on probabilities."""
    losses = []
    with torch.autocast(backs[0].device.type, enabled=False):
        for back in backs:
            b, _, h, w = back.shape
            target = box_mask(bboxes.float(), batch_idx, b, h, w)
            fore = (1 - back.float()).clamp(1e-6, 1 - 1e-6)
            losses.append(F.binary_cross_entropy(fore, target))
    return torch.stack(losses).mean()


class DefectDetectionLoss(v8DetectionLoss):
    """ultralytics' detection loss with the selectable box-regression loss, and optionally
    (``proto_loss`` > 0) the ProtoNet mask loss, weighted by ``proto_loss``."""

    def __init__(self, model, iou_loss: str = "ciou", tal_topk: int = 10, proto_loss: float = 0.0):
        super().__init__(model, tal_topk=tal_topk)
        self.bbox_loss = SelectableBboxLoss(self.reg_max, iou_loss).to(self.device)
        self.proto_gain = proto_loss
        self.protonets = []
        if proto_loss:
            from ..detectors.dasc.layers import ProtoNet

            self.protonets = [m for m in model.modules() if isinstance(m, ProtoNet)]
            if not self.protonets:
                raise ValueError("proto_loss > 0 needs a model with ProtoNet blocks")

    def loss(self, preds, batch):
        total, items = super().loss(preds, batch)
        if not self.protonets:
            return total, items
        backs = [m.last_back for m in self.protonets]
        lp = self.proto_gain * proto_mask_loss(backs, batch["bboxes"].to(self.device),
                                               batch["batch_idx"].to(self.device))
        return torch.cat([total, (lp * preds["boxes"].shape[0]).view(1)]), {**items, "proto_loss": lp.detach()}
