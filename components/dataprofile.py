"""A profile proposed from an imported dataset (``defectops data profile NAME``).

:func:`propose` reads a canonical dataset's manifest (image sizes, boxes per class) and proposes
``profiles/<name>.yaml`` values, each with the reason it was chosen:

* the data keys (``data.name``, ``data.source``, ``data.format``, ``data.classes``);
* ``train.imgsz``: the smallest multiple of 32 at which every class's 5th-percentile box keeps a
  short side of at least one stride-8 cell (8 px, YOLO's finest head), between 128 and the images'
  median long side (a larger input only upsamples);
* ``train.batch``: at most 16 images of 320 px worth of pixels per batch (CPU memory);
* ``train.epochs``: as many as the three final trainings fit in the time budget, from the epoch
  times measured on this project's 2-core CPU machine.

:func:`render` writes them as a commented profile file (ruamel.yaml keeps the comments).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .detectors import MODELS, spec

STRIDE = 32                # the input size must be a multiple of the network's largest stride
MIN_SIDE_PX = 8            # one cell of the stride-8 (P3) head
PERCENTILE = 5             # of each class's box short sides
MIN_IMGSZ = 128            # params.yaml's default training size, the smallest this project uses
BATCH_PIXELS = 16 * 320 ** 2
MAX_EPOCHS = 300           # the papers' protocol


@dataclass(frozen=True)
class Proposal:
    values: dict[str, Any]          # profile keys (``dotted.key``) -> value
    notes: dict[str, str]           # the same keys -> why this value


def box_short_sides(manifest: dict) -> dict[str, np.ndarray]:
    """Per class: each box's short side as a fraction of its image's long side."""
    names = list(manifest["classes"])
    sides: dict[str, list[float]] = {c: [] for c in names}
    for im in manifest["images"]:
        long_side = max(im["width"], im["height"])
        for cls, x1, y1, x2, y2 in im["boxes"]:
            sides[names[cls]].append(min(x2 - x1, y2 - y1) / long_side)
    return {c: np.asarray(v) for c, v in sides.items() if v}


def input_size(manifest: dict) -> tuple[int, str]:
    """``train.imgsz`` and why (see the module docstring)."""
    sides = box_short_sides(manifest)
    if not sides:
        raise ValueError("the dataset has no boxes: no input size can be derived from them")
    small = {c: float(np.percentile(v, PERCENTILE)) for c, v in sides.items()}
    worst = min(small, key=small.get)
    long_sides = [max(im["width"], im["height"]) for im in manifest["images"]]
    native = float(np.median(long_sides))
    cap = max(STRIDE, int(native) // STRIDE * STRIDE)
    need = MIN_SIDE_PX / small[worst]
    size = min(max(MIN_IMGSZ, math.ceil(need / STRIDE) * STRIDE), cap)
    why = (f"{PERCENTILE}th-percentile box short side per class, as a fraction of the image's long side: "
           + ", ".join(f"{c} {v:.3f}" for c, v in small.items())
           + f". The smallest, {worst}, needs {need:.0f} px for {MIN_SIDE_PX} px (one stride-8 cell); "
           f"multiple of {STRIDE}, at least {MIN_IMGSZ}, at most the median image long side "
           f"{native:.0f} px rounded down to {cap}. At {size} px that box is {small[worst] * size:.1f} px.")
    if need > cap:
        why += f" Even at full size it stays under {MIN_SIDE_PX} px: expect a low AP for {worst}."
    return size, why


def batch_size(imgsz: int) -> tuple[int, str]:
    b = max(2, min(16, 2 ** int(math.log2(BATCH_PIXELS / imgsz ** 2))))
    return b, (f"at most 16 images of 320 px worth of pixels per batch on a CPU (the NEU-DET CPU profile "
               f"trains batch 16 at 224 px), a power of 2: {b} at {imgsz} px")


def epochs_for(hours: float, train_images: int, imgsz: int) -> tuple[int, str]:
    if hours <= 0:
        raise ValueError(f"the time budget must be > 0 hours (got {hours:g})")
    # seconds per training image and epoch at 224 px, one torch thread, of each detector the project
    # trains (DetectorSpec.seconds_per_image_224: NEU-DET CPU runs); time grows with the pixel count
    per_epoch = train_images * sum(spec(m).seconds_per_image_224 for m in MODELS) * (imgsz / 224) ** 2
    e = max(1, min(MAX_EPOCHS, int(hours * 3600 // per_epoch)))
    why = (f"{hours:g} h for the three final trainings at ~{per_epoch / 60:.0f} min per epoch of all three "
           f"({train_images} training images at {imgsz} px; epoch times of the NEU-DET CPU runs, one torch "
           f"thread, scaled by pixels), at most {MAX_EPOCHS}. Tuning, LAMs and evaluation come on top.")
    if e < 20:
        why += " Fewer than 20 epochs train from scratch poorly: raise --hours, or run on a GPU."
    return e, why


def propose(manifest: dict, summary: dict, name: str, hours: float, train_fraction: float) -> Proposal:
    """The profile for dataset ``name`` (its manifest and summary.json) trained in ``hours``;
    ``train_fraction``: the share of images the split gives to training."""
    imgsz, why_size = input_size(manifest)
    batch, why_batch = batch_size(imgsz)
    n_train = max(1, round(len(manifest["images"]) * train_fraction))
    epochs, why_epochs = epochs_for(hours, n_train, imgsz)
    fmt = str(summary.get("format", "auto")).split("-")[0]
    per_class = summary.get("boxes_per_class") or {}
    values = {"data.name": name, "data.source": summary["source"], "data.format": fmt,
              "data.classes": list(manifest["classes"]), "train.imgsz": imgsz, "train.batch": batch,
              "train.epochs": epochs}
    notes = {
        "data.name": f"the dataset folder the data stage writes (data/datasets/{name})",
        "data.source": "the folder the data stage imports; outside data/raw/ DVC does not watch its files "
                       "(docs/data.md)",
        "data.format": f"the import found the {summary.get('format')} layout",
        "data.classes": "fixed, in the import's order (boxes: "
                        + ", ".join(f"{c} {per_class[c]}" for c in manifest["classes"] if c in per_class)
                        + "); a name outside it is quarantined",
        "train.imgsz": why_size,
        "train.batch": why_batch,
        "train.epochs": why_epochs,
    }
    return Proposal(values, notes)


def render(p: Proposal, header: str, width: int = 100) -> str:
    """The profile file: ``header`` lines, then each key with its reason as a comment above it."""
    import textwrap

    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    doc = CommentedMap()
    for k, v in p.values.items():
        if isinstance(v, list):
            v = CommentedSeq(v)
            v.fa.set_flow_style()
        doc[k] = v
        before = "\n".join(textwrap.wrap(p.notes[k], width - 2))
        doc.yaml_set_comment_before_after_key(k, before=before)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [w for line in [*header.splitlines(), f"written {stamp}"]
            for w in textwrap.wrap(line, width - 2, break_long_words=False, break_on_hyphens=False)]
    doc.yaml_set_start_comment("\n".join(head))
    y = YAML()
    y.width = 4096
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()
