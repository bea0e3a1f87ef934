"""Tuning flow (``defectops tune MODEL``): an Optuna study over ``tune.space.<model>``.

This process is one *worker*: it asks the study for trials and runs each in its own process
(``pipelines/trial.py``) until the study holds ``tune.trials`` trials. Start the same command on
more machines with ``OPTUNA_STORAGE`` pointing at one PostgreSQL database and they share the
study (Optuna's RDB storage hands out trials). A failed trial is recorded as FAIL with its reason
and the study goes on. One MLflow run per study (``tune:<model>``), every trial a child run.
The study's first trial is params.yaml's own point (the default, enqueued by the worker that
creates the study). At the end ``<paths.models>/tuned/<model>.json`` gets the decision
(``components.tune.decide``): the best trial's overrides if they beat the default by more than
``tune.min_gain`` and reach ``tune.min_score``, else no overrides (params.yaml as it is); the
study plots (optimisation history, parameter importances) go to MLflow and
``<paths.reports>/tune/<model>/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from components.settings import Settings, params_hash
from components.tune import default_point, full, open_study, study_result, suggest

from .common import dataset_dir, dataset_hash, layout, log_outputs, pipeline_env, read_params, stage_run, storage_url
from .trial import PRUNED


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


def study_name(params: Settings, model: str, ds_hash: str | None) -> str:
    """``<tune.study>-<model>-<fingerprint>``: a new study whenever the data, the search space,
    the trial budget or the detector's params change (a DVC rerun of ``tune_<model>`` never
    continues a study made for other data), while every worker started on the same data and
    params joins the same one. The decision rule (``min_gain``, ``min_score``) is not part of it: a
    changed rule decides again on the finished study."""
    used = {k: params.get(k) for k in ("tune", "train", "loss", model)}
    used["tune"] = {k: v for k, v in used["tune"].items() if k not in ("storage", "parallel", "min_gain", "min_score")}
    return f"{params.tune.study}-{model}-{params_hash({'params': used, 'data': ds_hash})[:8]}"


@dataclass(frozen=True)
class TrialWorker:
    """What this worker's threads share: the ``study`` (named ``name``) over ``space`` for
    ``model``, the params file a trial reads, the study's MLflow run (``parent_run``: every trial
    a child run), the study's size ``n``, the lock around asking, the flow's logger."""

    study: Any
    name: str
    model: str
    space: dict
    params_file: str
    parent_run: str
    n: int
    lock: Any = field(default_factory=threading.Lock)
    log: Any = None

    def run_all(self) -> None:
        while self.run_one():
            pass

    def run_one(self) -> bool:
        """Ask one trial (if the study still needs one), train it in its own process, tell the
        result. Returns False when the study is full."""
        import optuna

        study, log = self.study, self.log
        with self.lock:                              # one ask at a time from this worker's threads
            if full(study, self.n):
                return False
            trial = study.ask()
            overrides = suggest(trial, self.space, self.model)
        log.info("trial %d: %s", trial.number, overrides)
        with tempfile.TemporaryDirectory() as tmp:
            res_file = Path(tmp) / "result.json"
            p = subprocess.run([sys.executable, "-m", "pipelines.trial", "--params", self.params_file, "--model",
                                self.model, "--study", self.name, "--trial-id", str(trial._trial_id), "--parent-run",
                                self.parent_run, "--out", str(res_file), "--overrides", json.dumps(overrides)],
                               env=pipeline_env())        # the trial's run joins this pipeline run
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
        return True


@flow(name="tune")
def tune_flow(model: str, trials: int | None = None, params_file: str = "params.yaml") -> dict:
    params = read_params(params_file)
    log = get_run_logger()
    cfg = params.tune
    space = params.get("tune.space").get(model)          # as params.yaml writes it (lists, mappings)
    if not space:
        raise ValueError(f"tune.space has no entry for '{model}'")
    ds = dataset_dir(params)
    name = study_name(params, model, dataset_hash(ds))
    default = default_point(space, params, model)
    study = open_study(name, storage_url(params), cfg.seed, cfg.pruner, cfg.epochs, cfg.warmup_epochs,
                       default=default)
    parallel = max(1, cfg.parallel)
    with stage_run(f"tune:{model}", params, ["tune", "train", "loss", model], dataset_hash(ds),
                   {"optuna_study": name, "model": model}, dataset="train") as run:
        worker = TrialWorker(study, name, model, space, params_file, run.run_id, trials or cfg.trials, log=log)
        with ThreadPoolExecutor(parallel) as pool:   # trial processes side by side (one core each)
            for f in [pool.submit(worker.run_all) for _ in range(parallel)]:
                f.result()
        result = study_result(study, model, space, default, cfg)
        log.info("study %s: best val mAP50 %.4f (trial %d), default %s: %s", name, result["best_value"],
                 result["best_trial"], "n/a" if result["default_value"] is None else f"{result['default_value']:.4f}",
                 result["decision"])
        out = layout(params).tuned(model)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        plots = _plots(study, layout(params).reports / "tune" / model)
        refs = {} if result["default_value"] is None else {k: result[k] for k in ("default_value", "gain")}
        log_outputs(run, metrics={"best_value": result["best_value"], **refs, "epochs_spent": result["epochs_spent"],
                                  **{f"trials.{k}": v for k, v in result["trials"].items()}},
                    artifacts=[(str(out), None)] + [(str(p), "plots") for p in plots],
                    tags={"decision": result["decision"], "overrides": json.dumps(result["overrides"]),
                          "best_params": json.dumps(result["best_params"])})
    return result
