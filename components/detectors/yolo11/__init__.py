"""YOLO11 (ultralytics' detector as published, trained from scratch): the params key ``baseline``.

It is the reference every other detector's gain is measured against, and the LAM maker whose
trained weights make the Location Activation Maps LAGNet reads.

- ``config``: the model YAML (ultralytics' own ``yolo11<scale>.yaml``).
"""

from __future__ import annotations

from pathlib import Path

from ..spec import LAM_MAKER, REFERENCE, DetectorSpec


def _cfg(params, nc: int, work: Path) -> str:
    from .config import baseline_cfg

    return baseline_cfg(params.baseline.scale)


SPEC = DetectorSpec(
    key="baseline", build=_cfg, name=lambda p: f"YOLO11{p.baseline.scale}", section="baseline",
    roles=frozenset({REFERENCE, LAM_MAKER}), dvc_deps=("components/detectors/yolo11",),
    # NEU-DET CPU runs on the project's 2-core AMD EPYC, one torch thread: 93 s per epoch of 1260 images
    # at 224 px (docs/results.md)
    seconds_per_image_224=93 / 1260,
    deviations="ultralytics' YOLO11 as published, trained from scratch (no COCO weights).")
