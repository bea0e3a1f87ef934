"""DASC-YOLO (``../shared/papers/dasc-yolo.md``): YOLO11 with ResCBAM, SCConv, Cross-Scale
Attention and ProtoNet inserted. The params key ``dasc``.

- ``layers``: its blocks (``ResCBAM``, ``SCConv``, ``CSA``, ``ProtoNet``...), one class each;
- ``config``: the model YAML (YOLO11 with the blocks inserted), its toggles and the paper's Table 3.

Checkpoints trained before this package existed pickled the blocks as ``components.models.dasc``:
``components.detectors.legacy`` maps that path here when a checkpoint is loaded.
"""

from __future__ import annotations

from pathlib import Path

from ..spec import DetectorSpec


def _cfg(params, nc: int, work: Path) -> str:
    from .config import DascToggles, write_dasc_yaml

    d = params.dasc.plain()
    scale = d.pop("scale")
    return str(write_dasc_yaml(work, scale, nc, DascToggles(**d)))


def _blocks() -> tuple[type, ...]:
    from .layers import CBAM, CSA, ProtoNet, ResCBAM, SCConv

    return (CBAM, ResCBAM, SCConv, CSA, ProtoNet)


SPEC = DetectorSpec(
    key="dasc", build=_cfg, name=lambda p: f"DASC-YOLO-{p.dasc.scale}", paper="dasc-yolo.md", section="dasc",
    tune_space="tune.space.dasc", tune_keys={"protonet_k": "dasc.protonet_k"}, blocks=_blocks,
    dvc_deps=("components/detectors/dasc",),
    seconds_per_image_224=109 / 1260,      # NEU-DET CPU runs, as the baseline's (docs/results.md)
    deviations="YOLO11 + ResCBAM, SCConv, Cross-Scale Attention and ProtoNet as the paper; CSA's global "
               "branch pools to 1x1; options not in the paper (off unless set): `dasc.gate: zero`, "
               "`dasc.csa_context: local`, `dasc.proto_loss` (box-supervised prototypes).")
