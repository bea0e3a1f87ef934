"""Evaluation flows (DVC stages ``evaluate@<model>``): test-split metrics, plots, speed, and for
every detector but the baseline its mAP50 gain over the baseline with a paired-bootstrap 95 %
interval (``gain_vs_baseline``, from both detectors' per-image stats on the same test images).
The same scores on the validation split (``val``, no plots or timing) are what ``promote``
chooses its candidate by: the test split is reported, never used to choose.

Every evaluation run logs the same metric names, so the MLflow UI compares them side by side: the
baseline's run logs its gain over itself (the same paired bootstrap, 0 on identical stats); its
metrics JSON has no ``gain_vs_baseline``."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger

from components.data.views import load_split, write_yolo_data_yaml
from components.detectors import reference, uses_lam
from components.data.canonical import load_manifest
from components.decision import flat_metrics
from components.evaluate import PREDICTIONS, VAL_PREDICTIONS

from .common import dataset_hash, layout, log_outputs, model_data_yaml, numeric, read_params, served_lam, stage_run
from .tasks import evaluate_task, gain_task, operating_point_task, val_score_task  # noqa: F401  (gain_task: tests use it from here)


@flow(name="evaluate")
def evaluate_flow(model: str = "baseline", params_file: str = "params.yaml") -> dict:
    """Evaluate ``paths.models/model`` on the held-out split; write DVC metrics + plots."""
    params = read_params(params_file)
    lay = layout(params)
    weights, ref_stats = _inputs(model, lay)
    train_info = json.loads(lay.train_info(model).read_text())
    metrics_file, plots_dir, report_dir = lay.metrics_file(model), lay.plots_dir(model), lay.report_dir(model)
    cfg = params.evaluate
    used = ["evaluate", "decision", "data.name", "split"] + (["lam"] if uses_lam(model, params) else [])
    with stage_run(f"evaluate:{model}", params, used, dataset_hash(lay.dataset),
                   {"model": model, "train_run_id": train_info["mlflow_run_id"]}, dataset=cfg.split) as run:
        work = lay.scratch(f"evaluate-{model}")
        data_yaml = model_data_yaml(model, params, write_yolo_data_yaml(lay.dataset, load_split(lay.split_file), work))
        lam = served_lam(params) if uses_lam(model, params) else None
        metrics = evaluate_task(str(weights), str(data_yaml), cfg, train_info["imgsz"], str(report_dir),
                                str(plots_dir), lam)
        metrics.update(lam_source="in-graph (as served)" if lam else None, model=model)
        logged = numeric(metrics, "test.")
        if cfg.split != "val":              # what `promote` chooses by: never the test split
            metrics["val"] = val_score_task(str(weights), str(data_yaml), cfg, train_info["imgsz"], lam,
                                            keep=str(report_dir / VAL_PREDICTIONS))
            logged.update(numeric(metrics["val"], "val."))
        metrics["operating_point"] = _operating_point(model, params, report_dir)
        logged.update(flat_metrics(metrics["operating_point"]))
        gain = gain_task(str(ref_stats), str(report_dir / PREDICTIONS), cfg.bootstrap.resamples, cfg.bootstrap.seed)
        logged.update(gain_vs_baseline_mAP50=gain["mAP50"], gain_ci95_lo=gain["ci95"][0],
                      gain_ci95_hi=gain["ci95"][1])
        if model != reference().key:
            metrics["gain_vs_baseline"] = gain
            get_run_logger().info("%s mAP50 gain over the baseline: %+.4f, 95%% CI [%+.4f, %+.4f] (%d resamples)",
                                  model, gain["mAP50"], *gain["ci95"], gain["resamples"])
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        metrics_file.write_text(json.dumps(metrics, indent=2))
        log_outputs(run, metrics=logged, artifacts=[(str(metrics_file), None), (str(plots_dir), "plots"),
                                                    (str(report_dir), "plots")])
    return metrics


def _inputs(model: str, lay) -> tuple[Path, Path]:
    """The model's weights and the reference detector's per-image test stats (its gains are
    measured against them; the reference's own are its report's), checked to exist."""
    weights = lay.weights(model)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: run `dvc repro train_{model}` first")
    ref = reference().key
    ref_stats = lay.report_dir(ref) / PREDICTIONS
    if model != ref and not ref_stats.is_file():
        raise FileNotFoundError(f"{ref_stats} not found: run `dvc repro evaluate@{ref}` first")
    return weights, ref_stats


def _operating_point(model: str, params, report_dir: Path) -> dict:
    """The shipped operating point chosen on the validation stats, with its figures on the test
    split (``decision`` settings; the validation stats alone when the evaluation split is ``val``)."""
    cfg = params.evaluate
    val_stats = report_dir / (VAL_PREDICTIONS if cfg.split != "val" else PREDICTIONS)
    names = dict(enumerate(load_manifest(layout(params).dataset)["classes"]))
    op = operating_point_task(str(val_stats), str(report_dir / PREDICTIONS) if cfg.split != "val" else None,
                              names, params.decision, cfg.bootstrap)
    get_run_logger().info("%s at the validation operating point (%s): test escape rate %s, overkill rate %s",
                          model, op["rule"], op.get("test", op["val"])["escape_rate"],
                          op.get("test", op["val"])["overkill_rate"])
    return op
