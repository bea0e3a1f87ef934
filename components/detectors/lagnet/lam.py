"""Location Activation Maps (LAGNet, ``lagnet.md`` section 3.2, eq. 1) from a trained detector.

``LAM = 0.5 * RGB + 0.5 * JET(255 * sigmoid(CSM))``. LAGNet's YOLOv5 had an objectness map;
the anchor-free YOLO11 head has none, so the confidence score map of a level is the sigmoid of
its class logits, max over classes (exactly the class scores ultralytics' ``Detect`` returns
at inference, ``pred[:, 4:]``, level after level). Each level's map is resized to the input
size and the maximum over levels is taken; the letterbox padding is cut away, so LAM pixels line
up with the pixels of the image as the network sees it (resized by the letterbox ratio).

The steps are plain tensor code, so ``LamMap`` (baseline -> LAM) runs inside the one ONNX graph
of ``LagnetPipeline`` (baseline -> LAM -> LAGNet, ``export.py``); the JET
colours are OpenCV's own table, held as a buffer.

For training, ``make_lams`` writes each image's (normalised) *confidence map* as an 8-bit grey
PNG at the loader's scale (the letterbox content: a 200 px NEU-DET image at imgsz 224 gives a
224 x 224 map), not the colour LAM and not resized back to the image's own size: the data loader
resizes the image to exactly that size (long side = imgsz, bilinear, as the letterbox does), so
the map meets it without a resample, and on the served framing the file path's LAM is the served
LAM bit for bit (the stored byte is the JET index). The training data path
(``data.py``) moves the map through the same augmentation and letterbox as the
image and only then codes and blends it (``lam_blend``, the function the served graph uses), at
the network's input resolution. Colour-coding before a resize (the earlier design) resampled JET
colours into colours the served LAM never has, a train/serve skew. ``lam_grid`` is the sample
plot (colour LAMs made from the maps with ``lam_image``). How a map is coded (``alpha``, ``beta``,
``normalize``, ``quantile``) is one :class:`~.coding.LamCoding`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .coding import NORMALIZE, LamCoding  # noqa: F401  (NORMALIZE: re-exported)

PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]   # lossless; level 1 is ~3x faster to write than 3
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


def normalize_confidence(conf: torch.Tensor, coding: LamCoding) -> torch.Tensor:
    """Stretch each ``(H, W)`` map of a ``(B, H, W)`` batch before colour coding (a deviation from
    eq. 1, ``coding.normalize``): ``none`` keeps the detector's confidence; ``image_max`` divides by
    the image's highest confidence; ``quantile`` divides by its ``coding.quantile``-quantile (the k-th
    largest value, k = ceil((1 - q) H W), so one hot pixel does not set the scale) and clips at 1.
    An empty map (max 0) stays 0. Plain tensor ops (TopK), so it runs inside the ONNX graph."""
    if coding.normalize == "none":
        return conf
    flat = conf.flatten(1)
    if coding.normalize == "image_max":
        ref = flat.amax(1)
    else:                                                   # quantile (LamCoding checks the choice)
        k = max(1, int(np.ceil((1 - coding.quantile) * flat.shape[1] - 1e-9)))
        ref = flat.topk(k, 1).values[:, -1]
    return (conf / ref.clamp_min(1e-6)[:, None, None]).clamp(0, 1)


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


def content_crop(conf: np.ndarray, orig_hw: tuple[int, int], ratio: float, pad: tuple[float, float]
                 ) -> np.ndarray:
    """The letterbox content of one ``(H_in, W_in)`` map: the padding (``pad`` = left, top) cut off,
    the image's ``(round(h * ratio), round(w * ratio))`` pixels kept, not resized."""
    h, w = orig_hw
    x0, y0 = int(round(pad[0])), int(round(pad[1]))
    return np.ascontiguousarray(conf[y0:y0 + int(round(h * ratio)), x0:x0 + int(round(w * ratio))], np.float32)


def unletterbox_np(conf: np.ndarray, orig_hw: tuple[int, int], ratio: float, pad: tuple[float, float]
                   ) -> np.ndarray:
    """``unletterbox`` for one ``(H_in, W_in)`` float map with OpenCV (same half-pixel bilinear
    sampling as ``F.interpolate(align_corners=False)``, ~30x faster on CPU for single maps)."""
    h, w = orig_hw
    return cv2.resize(content_crop(conf, orig_hw, ratio, pad), (w, h), interpolation=cv2.INTER_LINEAR)


def lam_image(bgr: np.ndarray, conf: np.ndarray, coding: LamCoding = LamCoding()) -> np.ndarray:
    """Eq. (1): blend the image with the JET-coded ``255 * conf`` map (``conf`` in [0, 1], HxW; the
    blend weights of ``coding``)."""
    if bgr.shape[:2] != conf.shape:
        raise ValueError(f"image {bgr.shape[:2]} and confidence map {conf.shape} differ in size")
    idx = np.clip(np.rint(conf * 255), 0, 255).astype(np.uint8)
    heat = JET_BGR[idx]
    return cv2.addWeighted(bgr, coding.alpha, heat, coding.beta, 0.0)       # rounds to nearest, saturates


def lam_path(lam_dir: str | Path, image: str | Path) -> Path:
    """Where the confidence map of ``image`` lives: ``lam_dir/<image stem>.png`` (lossless)."""
    return Path(lam_dir) / f"{Path(image).stem}.png"


def conf_u8(conf: np.ndarray) -> np.ndarray:
    """A confidence map in [0, 1] as the 8-bit grey map written for training: ``round(255 conf)``,
    the very index the JET coding uses, so storing it loses nothing the LAM shows."""
    return np.clip(np.rint(conf * 255), 0, 255).astype(np.uint8)


def lam_blend(rgb: torch.Tensor, conf: torch.Tensor, jet_rgb: torch.Tensor, coding: LamCoding = LamCoding()
              ) -> torch.Tensor:
    """Eq. (1) on tensors: ``alpha * rgb + beta * JET(round(255 * conf))`` (``coding``'s blend). ``rgb``: ``(B, 3, H, W)``
    in [0, 1]; ``conf``: ``(B, H, W)`` in [0, 1]; ``jet_rgb``: the ``(256, 3)`` JET table in RGB,
    [0, 1] (``jet_table``). The one blend of the served graph and of the training data path."""
    idx = torch.round(conf.clamp(0, 1) * 255.0).long()
    return coding.alpha * rgb + coding.beta * jet_rgb[idx].permute(0, 3, 1, 2).to(rgb.dtype)


def jet_table(device=None) -> torch.Tensor:
    """OpenCV's JET colour map as a ``(256, 3)`` RGB tensor in [0, 1]."""
    return torch.from_numpy(JET_BGR[:, ::-1].copy()).float().div(255.0).to(device)


def head_output(y) -> torch.Tensor:
    """The ``(B, 4 + nc, anchors)`` tensor of an ultralytics detection model in eval mode."""
    return y[0] if isinstance(y, (list, tuple)) else y


class LamMap(nn.Module):
    """Baseline detector -> confidence map -> LAM, for letterboxed RGB batches in [0, 1]:
    ``LAM = alpha * x + beta * JET(round(255 * CSM)) / 255`` (eq. 1, RGB order, in [0, 1]; ``coding``:
    the blend and the normalisation)."""

    def __init__(self, detector: nn.Module, coding: LamCoding = LamCoding()):
        super().__init__()
        self.detector = detector
        self.strides = tuple(int(s) for s in detector.stride)
        self.coding = coding
        self.register_buffer("jet_rgb", jet_table())

    def raw_confidence(self, x: torch.Tensor) -> torch.Tensor:
        """The detector's confidence map at the input resolution (eq. 1's ``sigmoid(CSM)``)."""
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        return fuse_levels(level_confidence(head_output(self.detector(x)), hw, self.strides), hw)

    def confidence(self, x: torch.Tensor) -> torch.Tensor:
        """The map that is colour coded: the raw confidence, normalised per ``normalize``."""
        return normalize_confidence(self.raw_confidence(x), self.coding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lam_blend(x, self.confidence(x), self.jet_rgb, self.coding)


def lam_map(detector: nn.Module, coding: LamCoding = LamCoding(), device: str | int = "cpu") -> LamMap:
    """``LamMap`` of a trained detector (float, eval mode) on ``device`` (``cpu``, ``0``, ``"0,1"``: the first GPU)."""
    dev = torch.device("cpu" if str(device) == "cpu" else f"cuda:{str(device).split(',')[0]}")
    return LamMap(detector.float().eval(), coding).to(dev).eval()


def _letterbox(img: np.ndarray, imgsz: int):
    from ultralytics.data.augment import LetterBox

    lb = LetterBox((imgsz, imgsz), auto=False)
    labels = {"img": img}
    p = lb.get_params(labels)
    return lb.apply_image(labels, p)["img"], p["ratio"][0], (p["left"], p["top"])


def make_lams(lam: LamMap, images: list[Path], out_dir: Path, imgsz: int, batch: int,
              progress: Callable[[int], None] | None = None,
              boxes: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """Write ``out_dir/<stem>.png``, the (normalised, per ``lam.coding``) confidence map of each image
    at the loader's scale, 8-bit grey (``conf_u8``): ``lam``'s detector (see :func:`lam_map`) runs once
    per batch on letterboxed inputs, on the device ``lam`` is on; each map is cut out of the letterbox
    (``content_crop``, no resize). The training data path codes and blends it after augmentation (the
    blend is recorded by the caller, ``lam_image`` makes the colour LAM for viewing). Returns ``{image: {"lam": path}}``
    plus, for images in ``boxes`` (xyxy px), the LAM's contrast: mean raw confidence
    (``conf_in``/``conf_out``), normalised confidence (``norm_in``/``norm_out``) and luminance of
    the JET colour (``jet_in``/``jet_out``, 0..1) inside / outside the boxes (measured on the maps
    resized back to the image, where the boxes are)."""
    dev = lam.jet_rgb.device
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        origs, xs, geo = [], [], []
        for f in chunk:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise FileNotFoundError(f"cannot read image {f}")
            lb, ratio, pad = _letterbox(img, imgsz)
            origs.append(img)
            xs.append(lb[..., ::-1].transpose(2, 0, 1))
            geo.append((ratio, pad))
        x = torch.from_numpy(np.ascontiguousarray(np.stack(xs))).to(dev).float() / 255.0
        with torch.inference_mode():
            raw = lam.raw_confidence(x)
            conf = normalize_confidence(raw, lam.coding)
        conf, raw = conf.clamp(0, 1).cpu().numpy(), raw.clamp(0, 1).cpu().numpy()
        for f, img, c, r, (ratio, pad) in zip(chunk, origs, conf, raw, geo):
            dst = lam_path(out_dir, f)
            if not cv2.imwrite(str(dst), conf_u8(content_crop(c, img.shape[:2], ratio, pad)), PNG_FAST):
                raise OSError(f"could not write {dst}")
            written[str(f)] = {"lam": dst}
            if boxes is not None and str(f) in boxes:
                b = boxes[str(f)]
                w = written[str(f)]
                m = unletterbox_np(c, img.shape[:2], ratio, pad)
                w["conf_in"], w["conf_out"] = box_confidence(unletterbox_np(r, img.shape[:2], ratio, pad), b)
                w["norm_in"], w["norm_out"] = box_confidence(m, b)
                w["jet_in"], w["jet_out"] = box_confidence(jet_luminance(m), b)
        if progress is not None:
            progress(len(chunk))
    return written


def lam_grid(samples: list[tuple[np.ndarray, np.ndarray, list[str]]], path: Path, cols: int = 4,
             tile: int = 256) -> Path:
    """Tile LAMs (BGR) with their ground-truth boxes (``(n, 4)`` xyxy pixels) and class names."""
    tiles = []
    for lam, boxes, names in samples:
        h, w = lam.shape[:2]
        s = tile / max(h, w)
        im = cv2.resize(lam, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        canvas = np.full((tile, tile, 3), 255, np.uint8)
        canvas[:im.shape[0], :im.shape[1]] = im
        for (x1, y1, x2, y2), name in zip(np.asarray(boxes, float).reshape(-1, 4), names):
            p1, p2 = (int(x1 * s), int(y1 * s)), (int(x2 * s) - 1, int(y2 * s) - 1)
            cv2.rectangle(canvas, p1, p2, (255, 255, 255), 2)
            cv2.rectangle(canvas, p1, p2, (0, 0, 0), 1)
            cv2.putText(canvas, name, (p1[0] + 2, max(10, p1[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(canvas)
    if not tiles:
        raise ValueError("no samples for the LAM grid")
    while len(tiles) % cols:
        tiles.append(np.full((tile, tile, 3), 255, np.uint8))
    rows = [np.concatenate(tiles[i:i + cols], 1) for i in range(0, len(tiles), cols)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate(rows, 0))
    return path


def oof_folds(names: list[str], k: int, seed: int) -> list[list[str]]:
    """Split training-image names into ``k`` disjoint folds (seeded shuffle, round robin)."""
    if k < 2:
        raise ValueError(f"lam.folds must be >= 2 for out_of_fold (got {k})")
    if len(names) < k:
        raise ValueError(f"{len(names)} training images cannot make {k} folds")
    order = sorted(names)
    np.random.default_rng(seed).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


# luminance (ITU-R BT.601) of each JET colour, 0..1: how bright the heat map is at a confidence
JET_LUMA = (JET_BGR[:, ::-1].astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0).astype(np.float32)


def jet_luminance(conf: np.ndarray) -> np.ndarray:
    """Luminance of the JET colour of every pixel of a confidence map in [0, 1]."""
    return JET_LUMA[np.clip(np.rint(conf * 255), 0, 255).astype(np.uint8)]


def box_confidence(conf: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
    """Mean confidence inside the union of ``boxes`` (xyxy px) and outside it."""
    inside = np.zeros(conf.shape, bool)
    for x1, y1, x2, y2 in np.asarray(boxes, float).reshape(-1, 4):
        inside[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = True
    return (float(conf[inside].mean()) if inside.any() else float("nan"),
            float(conf[~inside].mean()) if (~inside).any() else float("nan"))
