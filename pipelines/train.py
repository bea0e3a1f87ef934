"""Training flows (DVC stages ``train_baseline``, ``train_dasc``, ``train_lagnet``)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from prefect import flow

from components.data.canonical import load_manifest
from components.data.views import load_split, write_yolo_data_yaml
from components.detectors import model_cfg, spec, uses_lam
from components.settings import Settings
from components.train import ScratchRun, TrainRequest, training_key

from .common import (dataset_hash, layout, load_tuned, log_outputs, model_data_yaml, read_params, stage_run,
                     trainer_args)
from .tasks import train_task

log = logging.getLogger(__name__)
def warm_start(model: str, params: Settings, cfg: str, classes: list[str], ch: int, dst: Path) -> tuple[str | None, str]:
    """``train.init`` when it names weights for ``model``: tried on the model before training
    (``components.transfer.plan_init``: a bad init stops here, one line; what transfers is said).
    Else ``retrain.warm_start``: the registry champion's weights when the champion is a ``model``
    detector of exactly this architecture; else ``None`` (train from scratch). Any registry
    problem means a cold start, logged, never a failed training."""
    from components.detectors import MODELS
    from components.tracking import tracking_uri
    from components.transfer import init_for, plan_init

    nc, init = len(classes), init_for(params.train.init, model, MODELS)
    if init:
        src, moved = plan_init(init, cfg, classes, ch, tracking_uri(params.tracking.plain()), dst)
        return str(src.path), f"{moved.line()} (sha256 {src.sha256[:16]})"
    if not params.retrain.warm_start:
        return None, "retrain.warm_start is off"
    from components.deploy.registry import champion_weights
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

    Training runs in ``paths.work/train-<model>-run`` (``components.train.ScratchRun``): if an
    earlier run with the same inputs was interrupted, it resumes from its ``last.pt``; the
    finished run is moved into ``paths.models/<model>``."""
    params, tuned_info = with_tuned(read_params(params_file), model, tuned)
    lay = layout(params)
    ds, out, work = lay.dataset, lay.model_dir(model), lay.scratch(f"train-{model}")
    ds_hash = dataset_hash(ds)
    req, init_what = training_request(model, params, work, lay.scratch(f"train-{model}-run"))
    slot = ScratchRun(req.out_dir, training_key(req, ds_hash, init_what if req.init_weights else None))
    req = replace(req, resume=slot.resumable())
    used = ["train", *spec(model).sections, "loss", "data.name", "split"] + (["lam"] if req.lam else [])
    log.info("%s: %s%s", model, f"warm start from {init_what}" if req.init_weights else f"cold start ({init_what})",
             "; resuming the interrupted run" if req.resume else "")
    with stage_run(f"train:{model}", params, used, ds_hash, train_tags(model, req, init_what, tuned_info),
                   dataset="train") as run:
        req = replace(req, data_yaml=model_data_yaml(model, params, write_yolo_data_yaml(
            ds, load_split(lay.split_file), work)))
        if not req.resume:
            slot.claim()
        info = train_task(req, run)
        slot.finish(out)
        info.update(best=str(lay.weights(model)), results_csv=str(out / "results.csv"), model=model,
                    model_cfg=Path(req.model_cfg).name, iou_loss=req.iou_loss, imgsz=req.train_args["imgsz"],
                    mlflow_run_id=run.run_id, dataset_hash=ds_hash,
                    tuned=tuned_info["overrides"] if tuned_info else None,
                    warm_start=init_what if req.init_weights else None, resumed=req.resume)
        lay.train_info(model).write_text(json.dumps(info, indent=1))
        log_outputs(run, metrics={"train_seconds": info["train_seconds"], "epochs_run": info["epochs_run"]},
                    artifacts=[(info["best"], "weights")] +
                    [(str(p), "training") for p in sorted(out.iterdir()) if p.is_file()])
    return info


def with_tuned(params: Settings, model: str, tuned: str | None) -> tuple[Settings, dict | None]:
    """``params`` with the ``tune_<model>`` stage's decision (``tuned``: its JSON) laid over, and that
    decision; ``params`` as they are and None without one."""
    if not tuned:
        return params, None
    info = load_tuned(tuned, model)
    return params.override(info["overrides"], f"tuned {tuned}"), info


def training_request(model: str, params: Settings, work: Path, run_dir: Path) -> tuple[TrainRequest, str]:
    """What ``train_flow`` trains (its data YAML is written inside the stage's run) and what its
    start weights are, in words (:func:`warm_start`)."""
    classes = load_manifest(layout(params).dataset)["classes"]
    cfg = model_cfg(model, params, len(classes), work)
    init, init_what = warm_start(model, params, cfg, classes, spec(model).channels(params), work / "warm_start")
    train_args, device, seed = trainer_args(params)
    return TrainRequest(cfg, Path(), run_dir, train_args, device, seed, params.loss.iou, uses_lam(model, params),
                        init), init_what


def train_tags(model: str, req: TrainRequest, init_what: str, tuned: dict | None) -> dict:
    """The training run's MLflow tags: model, box loss, start weights, resumed, the tune decision."""
    tags = {"model": model, "iou_loss": req.iou_loss, "resumed": req.resume,
            "warm_start": init_what if req.init_weights else f"none ({init_what})"}
    if tuned:
        tags.update(tuned_study=tuned["study"], tuned_overrides=json.dumps(tuned["overrides"]),
                    tuned_decision=tuned.get("decision", "tuned"))
    return tags
