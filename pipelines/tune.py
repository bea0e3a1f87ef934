"""Tuning flow (``defectops tune MODEL``): an Optuna study over ``tune.space.<model>``.

This process is one *worker*: it asks the study for trials and runs each in its own process
(``pipelines/trial.py``) until the study holds ``tune.trials`` trials. Start the same command on
more machines with ``OPTUNA_STORAGE`` pointing at one PostgreSQL database and they share the
study (Optuna's RDB storage hands out trials). A failed trial is recorded as FAIL with its reason
and the study goes on. One MLflow run per study (``tune:<model>``), every trial a child run.
At the end the best overrides go to ``<paths.models>/tuned/<model>.json`` and the study plots
(optimisation history, parameter importances) to MLflow and ``<paths.reports>/tune/<model>/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger

from components.config import section
from components.tune import finished, open_study, suggest

from .common import dataset_dir, dataset_hash, log_outputs, read_params, stage_run
from .trial import PRUNED


def storage_url(params: dict) -> str:
    """``OPTUNA_STORAGE`` (e.g. ``postgresql://user@db/optuna``; credentials stay in the
    environment) wins over ``tune.storage``."""
    return os.environ.get("OPTUNA_STORAGE") or section(params, "tune.storage")


def _plots(study, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization.matplotlib as ov

    out.mkdir(parents=True, exist_ok=True)
    made = []
    for name, fn in (("history", ov.plot_optimization_history), ("importances", ov.plot_param_importances),
                     ("intermediate", ov.plot_intermediate_values)):
        try:
            ax = fn(study)
            fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
            fig.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
            made.append(out / f"{name}.png")
        except (ValueError, RuntimeError) as e:      # e.g. importances need 2+ complete trials
            get_run_logger().warning("no %s plot: %s", name, e)
    return made


@flow(name="tune")
def tune_flow(model: str, trials: int | None = None, params_file: str = "params.yaml") -> dict:
    import optuna

    params = read_params(params_file)
    log = get_run_logger()
    cfg = section(params, "tune")
    n = trials or cfg["trials"]
    space = cfg["space"].get(model)
    if not space:
        raise ValueError(f"tune.space has no entry for '{model}'")
    study_name = f"{cfg['study']}-{model}"
    study = open_study(study_name, storage_url(params), cfg["seed"], cfg["pruner"], cfg["epochs"])
    ds = dataset_dir(params)
    with stage_run(f"tune:{model}", params, ["tune", "train", "loss", model], dataset_hash(ds),
                   {"optuna_study": study_name, "model": model}) as run:
        while len(study.get_trials(deepcopy=False)) < n:
            trial = study.ask()
            overrides = suggest(trial, space)
            log.info("trial %d: %s", trial.number, overrides)
            with tempfile.TemporaryDirectory() as tmp:
                res_file = Path(tmp) / "result.json"
                p = subprocess.run([sys.executable, "-m", "pipelines.trial", "--params", params_file, "--model", model,
                                    "--study", study_name, "--trial-id", str(trial._trial_id), "--parent-run",
                                    run.run_id, "--out", str(res_file), "--overrides", json.dumps(overrides)])
                res = json.loads(res_file.read_text()) if res_file.is_file() else {"state": "FAIL",
                                                                                    "reason": f"exit {p.returncode}"}
            if p.returncode == 0 and res["state"] == "COMPLETE":
                study.tell(trial, res["value"])
                log.info("trial %d: val mAP50 %.4f", trial.number, res["value"])
            elif p.returncode == PRUNED:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                log.info("trial %d %s", trial.number, res.get("reason", "pruned"))
            else:
                trial.set_user_attr("fail_reason", res.get("reason", ""))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                log.warning("trial %d failed: %s", trial.number, res.get("reason"))
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise RuntimeError(f"study {study_name}: no trial completed ({finished(study)} finished)")
        best = study.best_trial
        overrides = suggest(optuna.trial.FixedTrial(best.params), space)
        counts = {s.name: sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState}
        result = {"model": model, "study": study_name, "best_value": best.value, "best_trial": best.number,
                  "overrides": overrides, "trials": counts,
                  "epochs_spent": sum(len(t.intermediate_values) for t in study.trials)}
        out = Path(section(params, "paths.models")) / "tuned" / f"{model}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        plots = _plots(study, Path(section(params, "paths.reports")) / "tune" / model)
        log_outputs(run, metrics={"best_value": best.value, **{f"trials.{k}": v for k, v in counts.items()},
                                  "epochs_spent": result["epochs_spent"]},
                    artifacts=[(str(out), None)] + [(str(p), "plots") for p in plots],
                    tags={"best_params": json.dumps(overrides)})
    return result
