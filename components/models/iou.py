"""The IoU-loss family compared in DASC-YOLO (Fig. 6): one function, seven losses.

All take boxes as ``(N, 4)`` ``x1, y1, x2, y2`` tensors and return the per-box loss ``(N,)``
(lower is better; identical boxes give the minimum). Formulas, with
``IoU = |A n B| / |A u B|``, ``rho`` the distance between box centres, ``c`` the diagonal of the
smallest enclosing box (width ``cw``, height ``ch``):

* ``ciou``   Zheng et al. 2020, DASC-YOLO eqs (6)-(8): ``1 - IoU + rho^2/c^2 + a*v``,
  ``v = 4/pi^2 (atan(wg/hg) - atan(w/h))^2``, ``a = v / ((1 - IoU) + v)`` (a without gradient).
* ``eiou``   Zhang et al. 2022 (Focal-EIoU): ``1 - IoU + rho^2/c^2 + (w-wg)^2/cw^2 + (h-hg)^2/ch^2``.
* ``mpdiou`` Ma & Xu 2023: ``1 - IoU + d1^2/(W^2+H^2) + d2^2/(W^2+H^2)``, d1/d2 the distances of
  the top-left/bottom-right corners, W x H the input image (in the boxes' units).
* ``piou``   Liu et al. 2024 (Powerful-IoU): ``1 - IoU + 1 - exp(-P^2)``,
  ``P = (|dx1| + |dx2|) / (4 wg) + (|dy1| + |dy2|) / (4 hg)`` (edge distances over the target size).
* ``shape_iou`` Zhang & Zhang 2023: ``1 - IoU + (hh*dx^2 + ww*dy^2)/c^2 + 0.5*sum_t (1-exp(-w_t))^4``,
  ``ww = 2 wg^s/(wg^s + hg^s)``, ``hh = 2 hg^s/(wg^s + hg^s)``, ``w_w = hh |w-wg|/max(w,wg)``,
  ``w_h = ww |h-hg|/max(h,hg)``; scale ``s`` = ``shape_scale`` (0 as the authors' default).
* ``siou``   Gevorgyan 2022: ``1 - IoU + (Delta + Omega)/2``; angle cost ``L = sin(2 alpha)``
  (alpha the smaller angle of the centre line to an axis), ``Delta = sum_t 1 - exp(-(2-L) rho_t)``
  with ``rho_x = (dx/cw)^2``, ``rho_y = (dy/ch)^2``, ``Omega = sum_t (1 - exp(-w_t))^4``,
  ``w_w = |w-wg|/max(w,wg)``.
* ``uiou``   Luo et al. 2024 (Unified-IoU): both boxes are scaled about their centres by a ratio
  that falls linearly from 2 (first epoch) to 0.5 (last epoch): early on, low-quality boxes get
  IoU and gradient; later, high-quality boxes dominate. The loss is CIoU of the scaled boxes.
  ``progress`` in [0, 1] is ``epoch / (epochs - 1)``.
"""

from __future__ import annotations

import math

# the one list (params.yaml loss.iou is checked against it). torch is imported where the losses are
# computed, so that the settings can import this list without it
IOU_LOSSES = ("ciou", "eiou", "mpdiou", "piou", "shape_iou", "siou", "uiou")
UIOU_RATIO = (2.0, 0.5)  # Unified-IoU: box scale at the first and at the last epoch


def uiou_ratio(progress: float) -> float:
    p = min(max(float(progress), 0.0), 1.0)
    return UIOU_RATIO[0] + (UIOU_RATIO[1] - UIOU_RATIO[0]) * p


def _scale(b: torch.Tensor, r: float) -> torch.Tensor:
    import torch

    c = (b[:, :2] + b[:, 2:]) / 2
    half = (b[:, 2:] - b[:, :2]) * r / 2
    return torch.cat([c - half, c + half], 1)


def iou_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "ciou", *, eps: float = 1e-7,
             img_wh: torch.Tensor | None = None, progress: float = 0.0, shape_scale: float = 0.0
             ) -> torch.Tensor:
    """Per-box loss of ``kind`` (one of ``IOU_LOSSES``) between ``pred`` and ``target`` (xyxy)."""
    import torch

    if kind not in IOU_LOSSES:
        raise ValueError(f"unknown IoU loss '{kind}' (choose from {', '.join(IOU_LOSSES)})")
    if kind == "uiou":
        r = uiou_ratio(progress)
        return iou_loss(_scale(pred, r), _scale(target, r), "ciou", eps=eps)

    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    w1, h1 = px2 - px1, (py2 - py1).clamp(min=eps)
    w2, h2 = tx2 - tx1, (ty2 - ty1).clamp(min=eps)
    inter = (torch.min(px2, tx2) - torch.max(px1, tx1)).clamp(min=0) * \
            (torch.min(py2, ty2) - torch.max(py1, ty1)).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(px2, tx2) - torch.min(px1, tx1)
    ch = torch.max(py2, ty2) - torch.min(py1, ty1)
    c2 = cw ** 2 + ch ** 2 + eps
    dx = (tx1 + tx2 - px1 - px2) / 2          # target centre minus prediction centre
    dy = (ty1 + ty2 - py1 - py2) / 2
    rho2 = dx ** 2 + dy ** 2

    if kind == "ciou":
        v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
        with torch.no_grad():
            alpha = v / (v - iou + (1 + eps))
        return 1 - iou + rho2 / c2 + alpha * v
    if kind == "eiou":
        return 1 - iou + rho2 / c2 + (w1 - w2) ** 2 / (cw ** 2 + eps) + (h1 - h2) ** 2 / (ch ** 2 + eps)
    if kind == "mpdiou":
        if img_wh is None:
            raise ValueError("mpdiou needs img_wh (input image width, height in the boxes' units)")
        img_wh = torch.as_tensor(img_wh, dtype=pred.dtype, device=pred.device)
        norm = (img_wh[..., 0] ** 2 + img_wh[..., 1] ** 2)
        d1 = (px1 - tx1) ** 2 + (py1 - ty1) ** 2
        d2 = (px2 - tx2) ** 2 + (py2 - ty2) ** 2
        return 1 - iou + d1 / norm + d2 / norm
    if kind == "piou":
        p = ((px1 - tx1).abs() + (px2 - tx2).abs()) / (4 * w2.clamp(min=eps)) + \
            ((py1 - ty1).abs() + (py2 - ty2).abs()) / (4 * h2)
        return 1 - iou + 1 - torch.exp(-p ** 2)
    if kind == "shape_iou":
        ws, hs = w2.clamp(min=eps) ** shape_scale, h2 ** shape_scale
        ww, hh = 2 * ws / (ws + hs), 2 * hs / (ws + hs)
        distance = (hh * dx ** 2 + ww * dy ** 2) / c2
        om_w = hh * (w1 - w2).abs() / torch.max(w1, w2).clamp(min=eps)
        om_h = ww * (h1 - h2).abs() / torch.max(h1, h2)
        shape = (1 - torch.exp(-om_w)) ** 4 + (1 - torch.exp(-om_h)) ** 4
        return 1 - iou + distance + 0.5 * shape
    # siou
    sigma = torch.sqrt(rho2 + eps)
    sin_a1, sin_a2 = dx.abs() / sigma, dy.abs() / sigma
    sin_alpha = torch.where(sin_a1 > math.sqrt(2) / 2, sin_a2, sin_a1)
    angle = torch.cos(2 * torch.arcsin(sin_alpha.clamp(max=1.0)) - math.pi / 2)
    gamma = 2 - angle
    rho_x, rho_y = (dx / (cw + eps)) ** 2, (dy / (ch + eps)) ** 2
    distance = (1 - torch.exp(-gamma * rho_x)) + (1 - torch.exp(-gamma * rho_y))
    om_w = (w1 - w2).abs() / torch.max(w1, w2).clamp(min=eps)
    om_h = (h1 - h2).abs() / torch.max(h1, h2)
    shape = (1 - torch.exp(-om_w)) ** 4 + (1 - torch.exp(-om_h)) ** 4
    return 1 - iou + (distance + shape) / 2
