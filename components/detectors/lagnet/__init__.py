"""LAGNet (``../shared/papers/lagnet.md``): a detector that reads the RGB image and a Location
Activation Map (LAM) made by another detector (the LAM maker). The params key ``lagnet``.

- ``layers``: its blocks (``LGB``, ``SCEM``, ``DualMobileNetV3``, ``LagPAN``...), one class each;
- ``config``: the model YAML (dual MobileNetV3 + LGB, PAN with C3 and SCEM) and the paper's tables;
- ``coding``: ``LamCoding``, how a confidence map becomes a LAM (eq. (1): blend, normalisation);
- ``lam``: the LAM from a trained detector's confidence;
- ``data``: the RGB + LAM data path (dataset, augmentation, trainer / validator mixins);
- ``export``: the one-graph model (LAM maker -> LAM -> LAGNet) and its ONNX export.

Checkpoints trained before this package existed pickled the blocks as ``components.models.lagnet``:
``components.detectors.legacy`` maps that path here when a checkpoint is loaded.
"""

from __future__ import annotations

from pathlib import Path

from ..spec import DetectorSpec
from .coding import LamCoding

__all__ = ["SPEC", "LamCoding"]


def _cfg(params, nc: int, work: Path) -> str:
    from .config import lagnet_cfg, lagnet_kwargs, write_lagnet_yaml

    return str(write_lagnet_yaml(work, lagnet_cfg(nc=nc, **lagnet_kwargs(params.lagnet.plain()))))


def _name(params) -> str:
    name = "LAGNet-s" if params.lagnet.variant == "small" else "LAGNet"
    return name if params.lagnet.lam else f"{name} (RGB only)"


def _reads_lam(params) -> bool:
    return params.lagnet.lam


def _blocks() -> tuple[type, ...]:
    from .layers import SCEM, DualMobileNetV3, LagPAN, MobileNetV3Features

    return (DualMobileNetV3, MobileNetV3Features, LagPAN, SCEM)


SPEC = DetectorSpec(
    key="lagnet", build=_cfg, name=_name, paper="lagnet.md", section="lagnet", reads_lam=_reads_lam,
    tune_space="tune.space.lagnet", tune_keys={"k": "lagnet.k", "n": "lagnet.n"}, blocks=_blocks,
    dvc_deps=("components/detectors/lagnet", "${paths.lams}/${data.name}"),
    seconds_per_image_224=112 / 1260,      # NEU-DET CPU runs, as the baseline's (docs/results.md)
    deviations="ultralytics' anchor-free Detect head instead of the paper's YOLOv5 anchor head; neck width "
               "`lagnet.width` (the paper gives none); MobileNetV3 backbones from torchvision, from "
               "scratch; the LAM is computed in the served graph from the RGB image by the baseline.")
