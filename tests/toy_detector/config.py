"""ToyNet: five strided 3x3 convolutions (P3, P4, P5 at strides 8, 16, 32) and ultralytics' Detect
head, as an ultralytics model YAML: small enough to train an epoch in a second on a CPU."""

from __future__ import annotations

from pathlib import Path

import yaml


def toy_cfg(nc: int, width: int = 16) -> dict:
    """The model dict (what a model YAML parses to) for ``nc`` classes; ``width``: P3 channels."""
    w = width
    return {"nc": nc, "toy": {"width": w},
            "backbone": [[-1, 1, "Conv", [w, 3, 2]],           # 0: stride 2
                         [-1, 1, "Conv", [w, 3, 2]],           # 1: 4
                         [-1, 1, "Conv", [w, 3, 2]],           # 2: P3, 8
                         [-1, 1, "Conv", [2 * w, 3, 2]],       # 3: P4, 16
                         [-1, 1, "Conv", [2 * w, 3, 2]]],      # 4: P5, 32
            "head": [[[2, 3, 4], 1, "Detect", ["nc"]]]}


def write_toy_yaml(folder: str | Path, nc: int) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "toynet.yaml"
    path.write_text(yaml.safe_dump(toy_cfg(nc), sort_keys=False))
    return path
