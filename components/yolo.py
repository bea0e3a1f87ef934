"""Ultralytics, imported once and configured for this project.

The integrations ultralytics would switch on by itself (MLflow, DVCLive, TensorBoard, W&B,
ClearML, Comet, Ray Tune) and its usage telemetry are turned off: this project owns its
MLflow runs (``components/tracking.py``) and its DVC metrics (``components/evaluate.py``).
Checkpoints that pickled a layer under its old module path load through
``components.detectors.legacy`` (installed here).
"""

from __future__ import annotations

import components  # noqa: F401  (sets the offline environment first)
from ultralytics import YOLO
from ultralytics.utils import SETTINGS

from .detectors import legacy

_OFF = {k: False for k in ("mlflow", "dvc", "tensorboard", "wandb", "clearml", "comet", "raytune",
                           "sync", "vscode_msg", "openvino_msg")}
if any(SETTINGS.get(k) for k in _OFF):
    SETTINGS.update(_OFF)
legacy.install()

__all__ = ["YOLO", "SETTINGS"]
