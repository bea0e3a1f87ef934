"""Training flows (DVC stages ``train_baseline``, ``train_dasc``, ``train_lagnet``)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from prefect import flow

from components.config import params_hash
from components.data.canonical import load_manifest
from components.data.views import load_split, write_yolo_data_yaml
from components.detectors import model_cfg, spec, uses_lam
from components.settings import Settings

from .common import (dataset_hash, layout, load_tuned, log_outputs, model_data_yaml, read_params, stage_run,
                     trainer_args)
from .tasks import train_task

log = logging.getLogger(__name__)
def warm_start(model: str, params: Settings, cfg: str, nc: int, ch: int, dst: Path) -> tuple[str | None, str]:
    """``retrain.warm_start``: the registry champion's weights when the champion is a ``model``
    detector of exactly this architecture; else ``None`` (train from scratch). Any registry
    problem means a cold start, logged, never a failed training."""
    if not params.retrain.warm_start:
        return None, "retrain.warm_start is off"
    from components.deploy.registry import champion_weights
    from components.tracking import tracking_uri
    from components.train import same_architecture

    try:
        weights, what = champion_weights(tracking_uri(params.tracking.plain()), params.promote.registered_model,
                                         model, dst)
        if weights is None:
            return None, what
        same, why = same_architecture(cfg, weights, nc, ch)
        return (str(weights), what) if same else (None, f"{what} has another architecture: {why}")
    except Exception as e:  # noqa: BLE001
        return None, f"no warm start ({type(e).__name__}: {e})"


@flow(name="train")
def train_flow(model: str = "baseline", params_file: str = "params.yaml", tuned: str | None = None) -> dict:
    """Train ``model`` on the train split (best epoch picked on val) into ``paths.models/model``.
    ``tuned``: the ``tune_<model>`` stage's JSON; its best overrides replace those params.yaml
    leaves (``Settings.override``: the MLflow run logs the resulting params, the study, and which
    keys the decision set, ``defectops.overrides``).

    Training runs in ``paths.work/train-<model>-run`` (DVC clears the stage's outs before a
    rerun, scratch survives): if an earlier run with the same inputs was interrupted, it resumes
    from its ``last.pt``; the finished run is moved into ``paths.models/<model>``."""
    params = read_params(params_file)
    tuned_info = None
    if tuned:
        tuned_info = load_tuned(tuned, model)
        params = params.override(tuned_info["overrides"], f"tuned {tuned}")
    lay = layout(params)
    ds, out = lay.dataset, lay.model_dir(model)
    work, run_dir = lay.scratch(f"train-{model}"), lay.scratch(f"train-{model}-run")
    nc = len(load_manifest(ds)["classes"])
    ds_hash = dataset_hash(ds)
    cfg = model_cfg(model, params, nc, work)
    iou_loss = params.loss.iou
    lam = uses_lam(model, params)
    init, init_what = warm_start(model, params, cfg, nc, spec(model).channels(params), work / "warm_start")
    train_args, device, seed = trainer_args(params)
    key = params_hash({"cfg": Path(cfg).read_text() if Path(cfg).is_file() else cfg, "args": train_args,
                       "device": device, "seed": seed, "iou": iou_loss, "lam": lam, "data": ds_hash,
                       "init": init_what if init else None})
    key_file = run_dir.with_name(run_dir.name + ".key")
    resume = (key_file.is_file() and key_file.read_text() == key and (run_dir / "weights" / "last.pt").is_file())
    used = ["train", model, "loss", "data.name", "split"] + (["lam"] if lam else [])
    tags = {"model": model, "iou_loss": iou_loss, "warm_start": init_what if init else f"none ({init_what})",
            "resumed": resume}
    if tuned_info:
        tags.update(tuned_study=tuned_info["study"], tuned_overrides=json.dumps(tuned_info["overrides"]),
                    tuned_decision=tuned_info.get("decision", "tuned"))
    log.info("%s: %s%s", model, f"warm start from {init_what}" if init else f"cold start ({init_what})",
             "; resuming the interrupted run" if resume else "")
    with stage_run(f"train:{model}", params, used, ds_hash, tags, dataset="train") as run:
        data_yaml = model_data_yaml(model, params, write_yolo_data_yaml(ds, load_split(lay.split_file), work))
        if not resume:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(key)
        info = train_task(cfg, str(data_yaml), str(run_dir), train_args, device, seed, iou_loss, run, lam,
                          init, resume)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(run_dir), str(out))
        key_file.unlink()                   # the architecture (+ its loss) is next to its weights: train_detector
        info.update(best=str(lay.weights(model)), results_csv=str(out / "results.csv"),
                    model=model, model_cfg=Path(cfg).name, iou_loss=iou_loss, imgsz=train_args["imgsz"],
                    mlflow_run_id=run.run_id, dataset_hash=ds_hash,
                    tuned=tuned_info["overrides"] if tuned_info else None,
                    warm_start=init_what if init else None, resumed=resume)
        lay.train_info(model).write_text(json.dumps(info, indent=1))
        log_outputs(run, metrics={"train_seconds": info["train_seconds"], "epochs_run": info["epochs_run"]},
                    artifacts=[(info["best"], "weights")] +
                    [(str(p), "training") for p in sorted(out.iterdir()) if p.is_file()])
    return info
