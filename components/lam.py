"""Location Activation Maps (LAGNet, ``lagnet.md`` section 3.2, eq. 1) from a trained detector.

``LAM = 0.5 * RGB + 0.5 * JET(255 * sigmoid(CSM))``. LAGNet's YOLOv5 had an objectness map;
the anchor-free YOLO11 head has none, so the confidence score map of a level is the sigmoid of
its class logits, max over classes (exactly the class scores ultralytics' ``Detect`` returns
at inference, ``pred[:, 4:]``, level after level). Each level's map is resized to the input
size, the maximum over levels is taken, the letterbox padding is cut away and the map resized
to the original image, so LAM pixels line up with image pixels.

Everything here is plain tensor/array code so the same steps can run inside one ONNX graph
(baseline -> LAM -> LAGNet) later; the JET colours are OpenCV's own table.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# OpenCV's JET colour map as a 256 x 3 (BGR) lookup table
JET_BGR = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)[:, 0, :].copy()


def level_confidence(pred: torch.Tensor, input_hw: tuple[int, int], strides: tuple[int, ...]
                     ) -> list[torch.Tensor]:
    """Split a ``(B, 4 + nc, anchors)`` inference output into per-level confidence maps
    ``(B, H/s, W/s)``: max over the class scores (already sigmoid-ed by the head)."""
    h, w = input_hw
    conf = pred[:, 4:].amax(1)
    sizes = [(h // s, w // s) for s in strides]
    n = sum(a * b for a, b in sizes)
    if conf.shape[1] != n:
        raise ValueError(f"{conf.shape[1]} anchors, expected {n} for input {input_hw} and strides {strides}")
    maps, start = [], 0
    for a, b in sizes:
        maps.append(conf[:, start:start + a * b].reshape(-1, a, b))
        start += a * b
    return maps


def fuse_levels(levels: list[torch.Tensor], out_hw: tuple[int, int]) -> torch.Tensor:
    """Resize every level's map to ``out_hw`` (bilinear) and take the per-pixel maximum."""
    up = [F.interpolate(m[:, None], size=out_hw, mode="bilinear", align_corners=False)[:, 0] for m in levels]
    return torch.stack(up).amax(0).clamp(0, 1)


def unletterbox(conf: torch.Tensor, orig_hw: tuple[int, int], ratio: float, pad: tuple[float, float]
                ) -> torch.Tensor:
    """Cut the letterbox padding (``pad`` = left, top) off a ``(B, H_in, W_in)`` map and resize
    the content (``ratio`` = input / original scale) to the original ``(H, W)``."""
    h, w = orig_hw
    left, top = pad
    x0, y0 = int(round(left)), int(round(top))
    x1, y1 = x0 + int(round(w * ratio)), y0 + int(round(h * ratio))
    crop = conf[:, y0:y1, x0:x1]
    return F.interpolate(crop[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def lam_image(bgr: np.ndarray, conf: np.ndarray, alpha: float = 0.5, beta: float = 0.5) -> np.ndarray:
    """Eq. (1): blend the image with the JET-coded ``255 * conf`` map (``conf`` in [0, 1], HxW)."""
    if bgr.shape[:2] != conf.shape:
        raise ValueError(f"image {bgr.shape[:2]} and confidence map {conf.shape} differ in size")
    idx = np.clip(np.rint(conf * 255), 0, 255).astype(np.uint8)
    heat = JET_BGR[idx]
    return np.clip(np.rint(alpha * bgr.astype(np.float32) + beta * heat.astype(np.float32)), 0, 255
                   ).astype(np.uint8)
