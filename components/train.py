"""Train a detector through ultralytics' trainer (the public seam: a ``DetectionTrainer``
subclass), from a model YAML, from scratch, offline.

The baseline is plain YOLO11 at the scale from params (``yolo11{n,s,m,l,x}.yaml`` ships inside
ultralytics, so nothing is downloaded). Later detectors plug in by overriding ``get_model``.
"""

from __future__ import annotations

import csv
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ultralytics.models.yolo.detect import DetectionTrainer

from .yolo import YOLO

log = logging.getLogger(__name__)

EpochCallback = Callable[[int | None, dict[str, float]], None]

# train args owned by this module / the pipeline, not by params.train
_RESERVED = {"data", "project", "name", "exist_ok", "device", "seed", "pretrained", "model",
             "resume", "plots"}


class DefectTrainer(DetectionTrainer):
    """ultralytics' detection trainer; the seam later detectors extend (``get_model``).

    ``final_eval`` (validation of best.pt after the last epoch) is flagged, so epoch callbacks
    can tell it from a training epoch.
    """

    in_final_eval = False

    def final_eval(self):
        self.in_final_eval = True
        try:
            super().final_eval()
        finally:
            self.in_final_eval = False


@dataclass
class TrainResult:
    out_dir: Path
    best: Path
    last: Path
    results_csv: Path
    final: dict[str, float]       # last row of results.csv (val metrics of the last epoch)
    epochs_run: int


def baseline_cfg(scale: str) -> str:
    if scale not in {"n", "s", "m", "l", "x"}:
        raise ValueError(f"baseline.scale must be one of n, s, m, l, x (got '{scale}')")
    return f"yolo11{scale}.yaml"


def train_detector(model_cfg: str, data_yaml: Path, out_dir: Path, train_args: dict, device: str,
                   seed: int, on_epoch: EpochCallback | None = None,
                   trainer: type[DetectionTrainer] = DefectTrainer) -> TrainResult:
    """Train ``model_cfg`` (a YAML, never a ``.pt`` to fetch) on ``data_yaml`` into ``out_dir``.

    ``train_args`` are ultralytics train arguments from params (epochs, imgsz, batch, optimizer,
    lr0, ... and augmentation); ``on_epoch(epoch, metrics)`` is called after each epoch's
    validation with the losses, val metrics and learning rates, and once more with
    ``epoch=None`` and the val metrics of best.pt (keys prefixed ``best/``).
    """
    if not str(model_cfg).endswith((".yaml", ".yml")):
        raise ValueError(f"train from a model YAML, not '{model_cfg}' (no weights are downloaded)")
    clash = _RESERVED & set(train_args)
    if clash:
        raise ValueError(f"params.train must not set {sorted(clash)}: the pipeline sets them")
    out_dir = Path(out_dir).resolve()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    model = YOLO(model_cfg)
    if on_epoch is not None:
        def _cb(tr: DetectionTrainer) -> None:
            if getattr(tr, "in_final_eval", False):
                on_epoch(None, {f"best/{k}": float(v) for k, v in tr.metrics.items()})
                return
            metrics = {**tr.label_loss_items(tr.tloss, prefix="train"), **tr.metrics, **tr.lr}
            on_epoch(tr.epoch + 1, {k: float(v) for k, v in metrics.items()})

        model.add_callback("on_fit_epoch_end", _cb)
    model.train(trainer=trainer, data=str(data_yaml), project=str(out_dir.parent), name=out_dir.name,
                exist_ok=True, device=device, seed=seed, pretrained=False, plots=True, **train_args)
    results_csv = out_dir / "results.csv"
    rows = list(csv.DictReader(results_csv.open())) if results_csv.is_file() else []
    final = {k.strip(): float(v) for k, v in rows[-1].items()} if rows else {}
    best = out_dir / "weights" / "best.pt"
    last = out_dir / "weights" / "last.pt"
    if not best.is_file():
        raise RuntimeError(f"training finished without {best}")
    return TrainResult(out_dir, best, last, results_csv, final, len(rows))
