"""Seeded synthetic surface-defect dataset: the embedded default data of the pipeline.

Backgrounds imitate rolled steel (grey, horizontal rolling streaks, low-frequency shading)
and leather (brown, pored grain). Defect kinds imitate NEU-DET's six classes:

* ``scratch``        long thin straight/slightly curved line
* ``inclusion``      small elongated dark blob aligned with the rolling direction
* ``patch``          blotchy, soft-edged large region
* ``pits``           cluster of small dark dots
* ``crazing``        branching crack network of thin dark polylines
* ``scale``          cluster of small irregular flakes (rolled-in scale)

A share ``clean_fraction`` of the images is rendered without any defect (background only, an empty
label file): defect-free parts, on which an overkill rate (good parts rejected) is measured.

Every defect is rendered from a binary mask, so its box is exact: the tight bounding box of
the mask pixels that changed. Everything is driven by one ``numpy.random.Generator`` seeded
from params, so the same seed gives byte-identical images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from ..settings import Synth

CLASS_NAMES = ("scratch", "inclusion", "patch", "pits", "crazing", "scale")


# All knobs come from params.yaml ``data.synth``: the settings section is the generator's config
# (checked there: images, size, defects per image, contrast range, clean fraction).
SynthConfig = Synth


@dataclass(frozen=True)
class SynthSample:
    name: str
    image: np.ndarray  # HxWx3 uint8, BGR
    boxes: list[tuple[int, float, float, float, float]]  # (class, x1, y1, x2, y2) pixels


# ---------------------------------------------------------------- backgrounds

def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    small = rng.standard_normal((max(2, h // scale), max(2, w // scale))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def steel_background(rng: np.random.Generator, s: int) -> np.ndarray:
    base = rng.uniform(110, 170)
    streaks = np.repeat(rng.standard_normal((s, 1)).astype(np.float32), s, axis=1)
    streaks = cv2.GaussianBlur(streaks, (1, 3), 0) * rng.uniform(3, 7)
    g = base + 10 * _smooth_noise(rng, s, s, 32) + streaks + rng.normal(0, 4, (s, s))
    return np.repeat(g[..., None], 3, axis=2).astype(np.float32)


def leather_background(rng: np.random.Generator, s: int) -> np.ndarray:
    tone = np.array([rng.uniform(40, 70), rng.uniform(75, 105), rng.uniform(120, 160)], np.float32)
    grain = _smooth_noise(rng, s, s, 3) * 6 + _smooth_noise(rng, s, s, 24) * 10
    pores = (rng.random((s, s)) < 0.02).astype(np.float32)
    pores = cv2.GaussianBlur(pores, (3, 3), 0) * -40
    shade = grain + pores + rng.normal(0, 3, (s, s))
    return tone[None, None, :] + shade[..., None]


# ---------------------------------------------------------------- defect masks
# Each returns a float mask in [0, 1] of shape (s, s); pixels > 0.5 define the box.

def _scratch(rng: np.random.Generator, s: int, bold: bool = False) -> np.ndarray:
    m = np.zeros((s, s), np.float32)
    length = rng.uniform(0.3, 0.6) * s if bold else rng.uniform(0.45, 0.9) * s
    # bold: along or across the rolling direction (+-10 deg), as NEU-DET's scratches mostly run, so
    # the box is tight around the stroke; otherwise any direction (a diagonal box is mostly background)
    ang = rng.choice([0.0, np.pi / 2]) + rng.uniform(-0.17, 0.17) if bold else rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0.3, 0.7, 2) * s
    dx, dy = np.cos(ang) * length / 2, np.sin(ang) * length / 2
    bend = rng.uniform(-0.08, 0.08) * s
    pts = []
    for t in np.linspace(-1, 1, 9):
        off = bend * (1 - t * t)
        pts.append((cx + t * dx - off * np.sin(ang), cy + t * dy + off * np.cos(ang)))
    pts = np.clip(np.array(pts), 1, s - 2).astype(np.int32)
    # bold: 5-7 px wide (at 160 px a 4 px box loses IoU 0.5 to a 2 px width error)
    width = int(rng.integers(5, 8)) if bold else int(rng.integers(2, 4))
    cv2.polylines(m, [pts], False, 1.0, thickness=width, lineType=cv2.LINE_AA)
    return m


def _inclusion(rng: np.random.Generator, s: int, bold: bool = False) -> np.ndarray:
    m = np.zeros((s, s), np.float32)
    ax = (int(rng.uniform(0.05, 0.14) * s), int(rng.uniform(0.015, 0.035) * s) + 1)
    c = tuple(int(v) for v in rng.uniform(0.15, 0.85, 2) * s)
    cv2.ellipse(m, c, ax, float(rng.uniform(-15, 15)), 0, 360, 1.0, -1, cv2.LINE_AA)
    return m


def _patch(rng: np.random.Generator, s: int, bold: bool = False) -> np.ndarray:
    r = rng.uniform(0.12, 0.25) * s
    c = rng.uniform(0.25, 0.75, 2) * s
    ang = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    rad = r * rng.uniform(0.6, 1.3, ang.size)
    pts = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1)
    m = np.zeros((s, s), np.float32)
    cv2.fillPoly(m, [np.clip(pts, 0, s - 1).astype(np.int32)], 1.0, cv2.LINE_AA)
    return cv2.GaussianBlur(m, (5, 5), 0)


def _cluster(rng: np.random.Generator, s: int, spread: tuple[float, float], count: tuple[int, int], bold: bool,
             lo: int, hi: int):
    """Centres of a cluster of marks (pits, scale flakes): a cluster centre in the middle 60 % of
    the image, then per mark the centre plus an offset, clipped to ``[lo, hi]``; bold: uniform in
    a square of half-side 1.5 spread, so one stray mark does not set the box; else normal."""
    c = rng.uniform(0.2, 0.8, 2) * s
    sd = rng.uniform(*spread) * s
    for _ in range(int(rng.integers(*count))):
        d = rng.uniform(-1.5, 1.5, 2) * sd if bold else rng.normal(0, sd, 2)
        yield np.clip(c + d, lo, hi)


def _pits(rng: np.random.Generator, s: int, bold: bool = False) -> np.ndarray:
    m = np.zeros((s, s), np.float32)
    for p in _cluster(rng, s, (0.06, 0.14), (8, 16), bold, 2, s - 3):
        p = p.astype(int)
        cv2.circle(m, (int(p[0]), int(p[1])), int(rng.integers(2, 4)), 1.0, -1, cv2.LINE_AA)
    return m


def _crazing(rng: np.random.Generator, s: int, bold: bool = False) -> np.ndarray:
    m = np.zeros((s, s), np.float32)
    c = rng.uniform(0.25, 0.75, 2) * s
    extent = rng.uniform(0.12, 0.22) * s
    for _ in range(int(rng.integers(4, 8))):
        p = c + rng.uniform(-extent, extent, 2)
        ang = rng.uniform(0, 2 * np.pi)
        pts = [p.copy()]
        for _ in range(int(rng.integers(3, 6))):
            ang += rng.uniform(-0.8, 0.8)
            p = p + rng.uniform(0.03, 0.07) * s * np.array([np.cos(ang), np.sin(ang)])
            p = np.clip(p, c - 1.3 * extent, c + 1.3 * extent)
            pts.append(p.copy())
        pts = np.clip(np.array(pts), 1, s - 2).astype(np.int32)
        cv2.polylines(m, [pts], False, 1.0, 3 if bold else 2, cv2.LINE_AA)
    return m


def _scale(rng: np.random.Generator, s: int, bold: bool = False) -> np.ndarray:
    m = np.zeros((s, s), np.float32)
    for p in _cluster(rng, s, (0.08, 0.16), (4, 9), bold, 4, s - 5):
        k = int(rng.integers(4, 7))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(0.03, 0.06) * s * rng.uniform(0.5, 1.0, k) * (1.5 if bold else 1.0)
        pts = np.stack([p[0] + rad * np.cos(ang), p[1] + rad * np.sin(ang)], 1)
        cv2.fillPoly(m, [np.clip(pts, 0, s - 1).astype(np.int32)], 1.0, cv2.LINE_AA)
    return m


DEFECTS: dict[str, Callable[..., np.ndarray]] = {
    "scratch": _scratch, "inclusion": _inclusion, "patch": _patch,
    "pits": _pits, "crazing": _crazing, "scale": _scale,
}
# patches are bright or dark; the others darken (scratches on steel may shine)
_BRIGHT_PROB = {"scratch": 0.5, "inclusion": 0.0, "patch": 0.5, "pits": 0.0, "crazing": 0.0,
                "scale": 0.3}


def _mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    ys, xs = np.nonzero(mask > 0.5)
    if xs.size == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _overlaps(box, boxes, thr: float = 0.3) -> bool:
    x1, y1, x2, y2 = box
    for _, a1, b1, a2, b2 in boxes:
        iw, ih = min(x2, a2) - max(x1, a1), min(y2, b2) - max(y1, b1)
        if iw > 0 and ih > 0:
            inter = iw * ih
            if inter / min((x2 - x1) * (y2 - y1), (a2 - a1) * (b2 - b1)) > thr:
                return True
    return False


def render_sample(rng: np.random.Generator, cfg: SynthConfig, index: int, clean: bool = False) -> SynthSample:
    """Sample ``index``: a background, then (unless ``clean``) min..max defects. A clean sample draws
    the same background as its defect twin would."""
    s = cfg.size
    leather = rng.random() < cfg.leather_fraction
    img = leather_background(rng, s) if leather else steel_background(rng, s)
    n = 0 if clean else int(rng.integers(cfg.min_defects, cfg.max_defects + 1))
    boxes: list[tuple[int, float, float, float, float]] = []
    tries = 0
    while len(boxes) < n and tries < 20 * n:
        tries += 1
        cls = int(rng.integers(len(CLASS_NAMES)))
        name = CLASS_NAMES[cls]
        mask = DEFECTS[name](rng, s, cfg.bold)
        box = _mask_box(mask)
        if box is None or (box[2] - box[0]) < 3 or (box[3] - box[1]) < 3 or _overlaps(box, boxes):
            continue
        strength = rng.uniform(*cfg.contrast) * 255
        sign = 1.0 if rng.random() < _BRIGHT_PROB[name] else -1.0
        img = img + (sign * strength * mask)[..., None]
        boxes.append((cls, *box))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return SynthSample(name=f"synth_{index:05d}", image=img, boxes=boxes)


def clean_indices(cfg: SynthConfig) -> set[int]:
    """The ``round(images * clean_fraction)`` sample indices rendered without defects: a seeded
    choice (``numpy.random.default_rng(seed)``), so the same config gives the same set."""
    k = int(round(cfg.images * cfg.clean_fraction))
    return {int(i) for i in np.random.default_rng(cfg.seed).choice(cfg.images, k, replace=False)} if k else set()


def generate(cfg: SynthConfig) -> Iterator[SynthSample]:
    """Yield ``cfg.images`` samples; sample i depends only on (seed, i) and whether it is clean
    (``clean_indices``); a defect sample is the same at any ``clean_fraction``."""
    clean = clean_indices(cfg)
    for i in range(cfg.images):
        rng = np.random.default_rng([cfg.seed, i])
        yield render_sample(rng, cfg, i, i in clean)


def write_synth_dataset(cfg: SynthConfig, root, name: str) -> dict:
    """Render the dataset and write it in the canonical layout (see ``canonical.py``)."""
    from tqdm import tqdm

    from .canonical import Box, Contents, Sample, decode_image, sha256_bytes, write_dataset

    samples = []
    for s in tqdm(generate(cfg), total=cfg.images, desc="synth", unit="img"):
        ok, buf = cv2.imencode(".jpg", s.image, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        data = buf.tobytes()
        _, _, pixels = decode_image(data)
        samples.append(Sample(
            name=s.name, ext=".jpg", data=data, width=cfg.size, height=cfg.size,
            boxes=[Box(*b) for b in s.boxes], source=f"synth:seed={cfg.seed}:{s.name}",
            sha256=sha256_bytes(data), pixel_sha256=pixels))
    return write_dataset(Path(root), name, Contents(list(CLASS_NAMES), samples), source="synth", fmt="synth")
