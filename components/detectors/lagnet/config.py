"""LAGNet (``../shared/papers/lagnet.md``) as an ultralytics model YAML.

    backbone  DualMobileNetV3 (RGB + LAM branches, LGB at C3/C4/C5)   | MobileNetV3Features (w/o LAM)
    neck      LagPAN (eqs 4-5) -> Index x3 -> SCEM(k, n) x3 (eqs 6-10)  | no SCEM
    head      ultralytics' anchor-free ``Detect`` + its loss (box IoU loss selectable)

The neck is YOLOv5's PAN (the paper's baseline) with ultralytics' ``C3`` blocks: ``width`` is
the P3 channel count, P4 / P5 get 2x / 4x (YOLOv5-L's 256 / 512 / 1024 ladder at width 256) and
``depth`` the bottleneck repeats in each C3 (default 1); the backbone's LGBs (or 1x1
projections) output ``width`` channels at C3, C4 and C5. The paper gives neither; ``PAPER_WIDTH``
are the widths at which the 6-class models have Table 1's parameter counts (depth 1).

Deviation from the paper, on purpose: LAGNet's head is YOLOv5's anchor-based head with
objectness; here it is ultralytics' anchor-free Detect (DFL + class scores, task-aligned
assigner) so LAGNet trains, validates, exports and is compared through the same code as the
other detectors. Detect's 3x3 conv branches are much bigger than YOLOv5's 1x1 head, so at a
given neck width this model has more head parameters than the paper's.

``LagnetToggles(lam, scem)`` are the Table 4 rows. A model with ``lam`` takes 6 channels (RGB
then LAM, both RGB order, 0..1), one without takes the RGB image only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from .layers import SCEM, DualMobileNetV3, LagPAN, MobileNetV3Features, pan_widths


VARIANTS = {"large": "LAGNet", "small": "LAGNet-s"}
# lagnet.md Table 1 (NEU-DET, 640 px, 500 epochs, RTX 4090) and Table 4 / 5
PAPER_PARAMS_M = {"large": 31.9, "small": 8.9}
# neck widths (``lagnet.width``, depth 1) at which the 6-class models have the paper's size:
# large 31.51 M (-1.2 %), small 9.02 M (+1.3 %) (tests/test_lagnet_modules.py checks +-10 %)
PAPER_WIDTH = {"large": 264, "small": 136}
PAPER_TABLE1 = {
    "YOLOv5 (paper)": {"mAP50": 76.2, "crazing": 38.4, "inclusion": 82.0, "rolled-in_scale": 64.5,
                       "scratches": 94.0, "patches": 94.8, "pitted_surface": 83.3, "params_M": 46.1},
    "LAGNet (paper)": {"mAP50": 85.5, "crazing": 64.2, "inclusion": 86.4, "rolled-in_scale": 82.4,
                       "scratches": 96.1, "patches": 94.4, "pitted_surface": 89.2, "params_M": 31.9},
    "LAGNet-s (paper)": {"mAP50": 84.9, "crazing": 63.6, "inclusion": 85.3, "rolled-in_scale": 80.5,
                         "scratches": 95.5, "patches": 94.4, "pitted_surface": 90.9, "params_M": 8.9},
}
# Table 4, MobileNetV3 rows (the paper's "baseline" row for this backbone is not given; its
# CSPDarkNet YOLOv5 baseline is 76.5)
PAPER_TABLE4 = {"baseline": None, "+LAM": 83.6, "+SCEM": 77.8, "+LAM+SCEM": 85.5}
# Table 5, NEU-DET: {(k, n): mAP}
PAPER_TABLE5 = {(3, 1): 83.9, (5, 1): 84.4, (7, 1): 84.8, (9, 1): 85.0,
                (3, 2): 84.0, (5, 2): 85.5, (7, 2): 84.5, (9, 2): 83.8,
                (3, 3): 84.6, (5, 3): 83.8, (7, 3): 83.5, (9, 3): 82.9}


@dataclass(frozen=True)
class LagnetToggles:
    """Which LAGNet parts are on (Table 4): the LAM branch + LGB, and SCEM."""

    lam: bool = True
    scem: bool = True


TABLE4 = {"baseline": LagnetToggles(False, False), "+LAM": LagnetToggles(True, False),
          "+SCEM": LagnetToggles(False, True), "+LAM+SCEM": LagnetToggles(True, True)}


def lagnet_cfg(variant: str, width: int, k: int, n: int, nc: int,
               toggles: LagnetToggles = LagnetToggles(), depth: int = 1) -> dict:
    """The ultralytics model dict. Layer 0 returns [C3, C4, C5], layer 1 (``LagPAN``) [P3, P4, P5]
    with ``width``, 2 ``width``, 4 ``width`` channels; ``depth``: repeats in the neck's C3 blocks."""
    if variant not in VARIANTS:
        raise ValueError(f"lagnet.variant must be one of {', '.join(VARIANTS)} (got '{variant}')")
    if k < 1 or k % 2 == 0 or n < 1:
        raise ValueError(f"SCEM needs an odd k >= 1 and n >= 1 (got k={k}, n={n})")
    if width < 16 or width % 8:
        raise ValueError(f"lagnet.width must be a multiple of 8, >= 16 (got {width})")
    if depth < 1:
        raise ValueError(f"lagnet depth (C3 repeats) must be >= 1 (got {depth})")
    pw = pan_widths(width)                               # P3, P4, P5 channels
    backbone = DualMobileNetV3 if toggles.lam else MobileNetV3Features
    layers = [[-1, 1, backbone.__name__, [variant, width]],
              [0, 1, LagPAN.__name__, [[width] * 3, width, depth]],   # backbone C3/C4/C5 channels in
              *([1, 1, "Index", [c, i]] for i, c in enumerate(pw))]     # 2, 3, 4: P3, P4, P5
    heads = [2, 3, 4]
    if toggles.scem:
        layers += [[p, 1, SCEM.__name__, [c, k, n]] for p, c in zip(heads, pw)]  # 5, 6, 7: P3', P4', P5'
        heads = [5, 6, 7]
    return {"nc": nc, "channels": 6 if toggles.lam else 3, "backbone": layers[:1],
            "head": layers[1:] + [[heads, 1, "Detect", ["nc"]]],   # Detect gets [w, 2w, 4w] channels
            "lagnet": {"variant": variant, "width": width, "depth": depth, "k": k, "n": n, **asdict(toggles)}}


def write_lagnet_yaml(folder: str | Path, cfg: dict) -> Path:
    """Write a :func:`lagnet_cfg` model dict as ``folder/lagnet-<variant>.yaml`` (the name carries no YOLO scale)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"lagnet-{cfg['lagnet']['variant']}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def lagnet_kwargs(g: dict) -> dict:
    """``lagnet_cfg`` keyword arguments from the params ``lagnet`` section (``plain()``)."""
    return dict(variant=g["variant"], width=g["width"], k=g["k"], n=g["n"],
                toggles=LagnetToggles(g["lam"], g["scem"]))


def ablation_rows(k: int, n: int) -> dict[str, tuple[LagnetToggles, int, int, float | None]]:
    """``defectops ablate lagnet`` rows: name -> (toggles, k, n, paper NEU-DET mAP).

    Table 4 rows use the configured SCEM ``k``/``n``; Table 5 rows (``k<k>n<n>``) are the full
    model (LAM + SCEM) with k in 3, 5, 7, 9 and n in 1, 2, 3."""
    rows = {name: (t, k, n, PAPER_TABLE4[name]) for name, t in TABLE4.items()}
    for (kk, nn_), v in PAPER_TABLE5.items():
        rows[f"k{kk}n{nn_}"] = (LagnetToggles(True, True), kk, nn_, v)
    return rows
