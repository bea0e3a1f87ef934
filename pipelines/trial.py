"""One Optuna trial, in its own process (``python -m pipelines.trial ...``, started by the tune flow).

ultralytics does not give memory back between trainings in one process, so every trial is a
fresh interpreter. It joins the study in the shared storage, trains the detector with the
trial's overrides of params.yaml for ``tune.epochs`` epochs, reports the validation mAP50 after
every epoch (``trial.report``) and stops when the study's pruner says so (never during the first
``tune.warmup_epochs`` epochs, never for the default trial: it is the reference the study's
decision compares with). It logs one MLflow run,
a child of the study's run, and writes its result JSON. Exit codes: 0 done, 3 pruned, else failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PRUNED = 3


class _Pruned(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    for a in ("--params", "--model", "--study", "--trial-id", "--parent-run", "--out", "--overrides"):
        ap.add_argument(a, required=True)
    a = ap.parse_args(argv)

    import optuna

    from components.settings import ConfigError, load_settings
    from components.data.canonical import load_manifest
    from components.data.views import load_split, write_yolo_data_yaml
    from components.tracking import start_stage_run
    from components.train import TrainRequest, resolve_threads, train_detector
    from components.tune import is_default, open_study, should_prune

    from components.detectors import model_cfg, uses_lam

    from .common import (dataset_dir, dataset_hash, dataset_records, layout, model_data_yaml, split_file, storage_url,
                         trainer_args)

    overrides = json.loads(a.overrides)
    base = load_settings(a.params)
    tcfg = base.tune
    study = open_study(a.study, storage_url(base), tcfg.seed, tcfg.pruner, tcfg.epochs, tcfg.warmup_epochs)
    trial = optuna.trial.Trial(study, int(a.trial_id))
    model = a.model
    try:                       # a point the settings refuse (a value outside loss.iou's choices...) is a
        params, refused = base.override(overrides, f"trial {trial.number} of study {a.study}"), None
    except ConfigError as e:   # failed trial, recorded with its reason like any other failure
        params, refused = base, e
    ds = dataset_dir(params)
    work = layout(params).scratch(f"tune-{model}", f"trial-{trial.number}")
    cfg = model_cfg(model, params, len(load_manifest(ds)["classes"]), work)
    data_yaml = model_data_yaml(model, params, write_yolo_data_yaml(ds, load_split(split_file(params)), work / "data"))
    args, device, seed = trainer_args(params)
    args["epochs"] = tcfg.epochs
    if args.get("threads") == "auto":                 # tcfg.parallel trials share the cores
        args["threads"] = resolve_threads("auto", tcfg.parallel)
    run = start_stage_run(f"trial:{model}:{trial.number}", params.tracking.plain(),
                          {"trial": overrides, "train": args, model: params.get(model)},
                          {"mlflow.parentRunId": a.parent_run, "optuna_study": a.study,
                           "optuna_trial": trial.number, "optuna_default": is_default(trial), "model": model,
                           "dataset_hash": dataset_hash(ds)})
    for record in dataset_records(params):
        run.log_dataset(**record, context="train")
    best = {"value": None}

    def failed(e: Exception) -> int:
        run.set_tags({"optuna_state": "FAIL", "reason": f"{type(e).__name__}: {e}"[:500]})
        run.end("FAILED")
        Path(a.out).write_text(json.dumps({"state": "FAIL", "reason": f"{type(e).__name__}: {e}"}))
        return 1

    if refused is not None:
        return failed(refused)

    def on_epoch(epoch, metrics):
        run.log_metrics(metrics, step=epoch)
        if epoch is None:
            best["value"] = metrics.get("best/metrics/mAP50(B)")
            return
        value = float(metrics.get("metrics/mAP50(B)", 0.0))
        trial.report(value, epoch)
        if should_prune(trial):
            raise _Pruned(f"pruned at epoch {epoch} (val mAP50 {value:.4f})")

    try:
        res = train_detector(TrainRequest(cfg, data_yaml, work / "train", args, device, seed, params.loss.iou,
                                          uses_lam(model, params)), on_epoch)
    except _Pruned as e:
        run.set_tags({"optuna_state": "PRUNED", "reason": str(e)})
        run.end("KILLED")
        Path(a.out).write_text(json.dumps({"state": "PRUNED", "reason": str(e)}))
        return PRUNED
    except Exception as e:  # noqa: BLE001  (recorded, the study goes on)
        return failed(e)
    value = best["value"] if best["value"] is not None else res.final.get("metrics/mAP50(B)", 0.0)
    run.log_metrics({"objective": value})
    run.set_tags({"optuna_state": "COMPLETE"})
    run.end("FINISHED")
    Path(a.out).write_text(json.dumps({"state": "COMPLETE", "value": value, "epochs": res.epochs_run,
                                       "mlflow_run_id": run.run_id}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
