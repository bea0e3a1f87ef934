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
from components.lam_data import lam_data_yaml
from components.models.dasc_yolo import DascToggles, write_dasc_yaml
from components.models.lagnet_yolo import LagnetToggles, write_lagnet_yaml
from components.train import baseline_cfg, train_detector

from .common import (COMPUTE, dataset_dir, dataset_hash, log_outputs, read_params, split_file, stage_run,
                     trainer_args)

log = logging.getLogger(__name__)
MODELS = ("baseline", "dasc", "lagnet")


def model_cfg(model: str, params: dict, nc: int, work: Path) -> str:
    """The model YAML to train: ultralytics' own for the baseline, generated ones for DASC-YOLO
    and LAGNet."""
    if model == "baseline":
        return baseline_cfg(section(params, "baseline.scale"))
    if model == "dasc":
        d = dict(section(params, "dasc"))
        scale = d.pop("scale")
        return str(write_dasc_yaml(work, scale, nc, DascToggles(**d)))
    if model == "lagnet":
        g = section(params, "lagnet")
        return str(write_lagnet_yaml(work, g["variant"], g["width"], g["k"], g["n"], nc,
                                     LagnetToggles(g["lam"], g["scem"])))
    raise ValueError(f"unknown model '{model}' (choose from {', '.join(MODELS)})")


def uses_lam(model: str, params: dict) -> bool:
    """Does ``model`` read RGB + LAM (LAGNet with its LAM branch on)?"""
    return model == "lagnet" and bool(section(params, "lagnet.lam"))


def model_data_yaml(model: str, params: dict, data_yaml: Path) -> Path:
    """The data YAML ``model`` trains / validates on: plus the LAM folder for LAGNet."""
    if not uses_lam(model, params):
        return data_yaml
    from .lam import lam_dir

    lams = lam_dir(params)
    if not (lams / "lam_info.json").is_file():
        raise FileNotFoundError(f"no LAMs in {lams}: run `dvc repro lam` (defectops lam) first")
    return lam_data_yaml(data_yaml, lams)


@task(name="train-detector", **COMPUTE)
def train_task(cfg: str, data_yaml: str, out_dir: str, train_args: dict, device: str, seed: int,
               iou_loss: str, run, lam: bool = False) -> dict:
    def on_epoch(epoch: int | None, metrics: dict[str, float]) -> None:
        try:  # a tracking hiccup must not kill hours of training; MLflow retries HTTP itself
            run.log_metrics(metrics, step=epoch)
        except Exception as e:  # noqa: BLE001
            log.warning("could not log epoch %s to MLflow: %s", epoch, e)

    t = time.time()
    res = train_detector(cfg, Path(data_yaml), Path(out_dir), train_args, device, seed, iou_loss, on_epoch, lam)
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
    used = ["train", model, "loss", "data.name", "split"] + (["lam"] if uses_lam(model, params) else [])
    with stage_run(f"train:{model}", params, used, dataset_hash(ds),
                   {"model": model, "iou_loss": iou_loss}) as run:
        data_yaml = model_data_yaml(model, params, write_yolo_data_yaml(ds, load_split(split_file(params)), work))
        train_args, device, seed = trainer_args(params)
        info = train_task(cfg, str(data_yaml), str(out), train_args, device, seed, iou_loss, run,
                          uses_lam(model, params))
        if cfg.endswith(".yaml") and Path(cfg).is_file():
            shutil.copy(cfg, out / Path(cfg).name)      # the architecture, next to its weights
        info.update(model=model, model_cfg=Path(cfg).name, iou_loss=iou_loss, imgsz=train_args["imgsz"],
                    mlflow_run_id=run.run_id, dataset_hash=dataset_hash(ds))
        (out / "train_info.json").write_text(json.dumps(info, indent=1))
        log_outputs(run, metrics={"train_seconds": info["train_seconds"], "epochs_run": info["epochs_run"]},
                    artifacts=[(info["best"], "weights")] +
                    [(str(p), "training") for p in sorted(out.iterdir()) if p.is_file()])
    return info
