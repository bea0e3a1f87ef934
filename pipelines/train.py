"""Training flows (DVC stages ``train@<model>``)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from prefect import flow, task

from components.config import section
from components.data.canonical import load_manifest
from components.data.views import load_split, write_yolo_data_yaml
from components.models.dasc_yolo import DascToggles, write_dasc_yaml
from components.train import baseline_cfg, train_detector

from .common import (COMPUTE, dataset_dir, dataset_hash, log_outputs, read_params, split_file, stage_run,
                     trainer_args)

log = logging.getLogger(__name__)
MODELS = ("baseline", "dasc")


def model_cfg(model: str, params: dict, nc: int, work: Path) -> str:
    """The model YAML to train: ultralytics' own for the baseline, a generated one for DASC-YOLO."""
    if model == "baseline":
        return baseline_cfg(section(params, "baseline.scale"))
    if model == "dasc":
        d = dict(section(params, "dasc"))
        scale = d.pop("scale")
        return str(write_dasc_yaml(work, scale, nc, DascToggles(**d)))
    raise ValueError(f"unknown model '{model}' (choose from {', '.join(MODELS)})")


@task(name="train-detector", **COMPUTE)
def train_task(cfg: str, data_yaml: str, out_dir: str, train_args: dict, device: str, seed: int,
               iou_loss: str, run) -> dict:
    def on_epoch(epoch: int | None, metrics: dict[str, float]) -> None:
        try:  # a tracking hiccup must not kill hours of training; MLflow retries HTTP itself
            run.log_metrics(metrics, step=epoch)
        except Exception as e:  # noqa: BLE001
            log.warning("could not log epoch %s to MLflow: %s", epoch, e)

    t = time.time()
    res = train_detector(cfg, Path(data_yaml), Path(out_dir), train_args, device, seed, iou_loss, on_epoch)
    return {"best": str(res.best), "results_csv": str(res.results_csv), "epochs_run": res.epochs_run,
            "final": res.final, "train_seconds": round(time.time() - t, 1)}


@flow(name="train")
def train_flow(model: str = "baseline", params_file: str = "params.yaml") -> dict:
    """Train ``model`` on the train split (best epoch picked on val) into ``paths.models/model``."""
    params = read_params(params_file)
    ds = dataset_dir(params)
    out = Path(section(params, "paths.models")) / model
    work = Path(section(params, "paths.work")) / f"train-{model}"
    cfg = model_cfg(model, params, len(load_manifest(ds)["classes"]), work)
    iou_loss = section(params, "loss.iou")
    used = ["train", model, "loss", "data.name", "split"]
    with stage_run(f"train:{model}", params, used, dataset_hash(ds),
                   {"model": model, "iou_loss": iou_loss}) as run:
        data_yaml = write_yolo_data_yaml(ds, load_split(split_file(params)), work)
        train_args, device, seed = trainer_args(params)
        info = train_task(cfg, str(data_yaml), str(out), train_args, device, seed, iou_loss, run)
        if cfg.endswith(".yaml") and Path(cfg).is_file():
            shutil.copy(cfg, out / Path(cfg).name)      # the architecture, next to its weights
        info.update(model=model, model_cfg=Path(cfg).name, iou_loss=iou_loss, imgsz=train_args["imgsz"],
                    mlflow_run_id=run.run_id, dataset_hash=dataset_hash(ds))
        (out / "train_info.json").write_text(json.dumps(info, indent=1))
        log_outputs(run, metrics={"train_seconds": info["train_seconds"], "epochs_run": info["epochs_run"]},
                    artifacts=[(info["best"], "weights")] +
                    [(str(p), "training") for p in sorted(out.iterdir()) if p.is_file()])
    return info
