"""What Optuna's pruner saves: epochs spent by a pruned study vs the same trials unpruned.

    python -m studies.pruning [--model baseline] [--trials 8] [--epochs 6] [--pruner median]

1. A study of ``--trials`` trials with ``--pruner`` (the tune flow, as ``defectops tune`` runs it:
   one process per trial, ``tune.parallel`` side by side, per-epoch val mAP50 reported).
2. The same trials (each one's sampled params, enqueued in order) in a second study without a
   pruner: every trial trains all ``--epochs``.
Reported: epochs spent by each, the saving, and whether pruning lost the best trial (best value of
the pruned study vs best of the unpruned one, and which trials the pruner stopped that would have
won). The search space is ``tune.space.<model>`` plus an lr0 range (so some trials are clearly
bad). Data: the project's dataset and split (run ``make run`` or ``dvc repro split`` first).
MLflow runs and the Optuna storage go to ``.cache/bench/pruning/``. Writes ``results/pruning.{json,md}``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from .common import cli, machine, write

WORK = Path(".cache/bench/pruning")


def _params(params_file: str, model: str, trials: int, epochs: int, pruner: str) -> dict:
    """``params_file`` resolved as the stages resolve it, with this study's layer over it."""
    from components.settings import load_settings, resolve

    space = {**load_settings(params_file).get(f"tune.space.{model}"), "lr0": {"low": 0.0003, "high": 0.03}}
    return resolve(params_file, [(f"study pruning ({pruner})", {
        "paths.models": str(WORK / f"models-{pruner}"), "paths.reports": str(WORK / f"reports-{pruner}"),
        "paths.work": str(WORK / f"work-{pruner}"), "tracking.uri": f"sqlite:///{WORK}/mlflow.db",
        "retrain.warm_start": False, "tune.trials": trials, "tune.epochs": epochs, "tune.pruner": pruner,
        "tune.study": "bench", "tune.storage": f"sqlite:///{WORK}/optuna.db", "tune.space": {model: space}})]).plain()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="baseline")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--pruner", default="median", choices=["median", "hyperband"])
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args()

    import optuna
    import os

    from components.settings import load_settings
    from components.data.views import load_split  # noqa: F401  (fails early without a split)
    from components.tune import open_study
    from pipelines.common import dataset_dir, dataset_hash
    from pipelines.tune import study_name, tune_flow

    os.environ.pop("OPTUNA_STORAGE", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    WORK.mkdir(parents=True, exist_ok=True)
    files = {}
    for pr in (a.pruner, "none"):
        files[pr] = WORK / f"params-{pr}.yaml"
        files[pr].write_text(yaml.safe_dump(_params(a.params, a.model, a.trials, a.epochs, pr), sort_keys=False))

    pruned = tune_flow(a.model, None, str(files[a.pruner]))
    pp = load_settings(files[a.pruner])
    s1 = optuna.load_study(study_name=pruned["study"], storage=pp.tune.storage)
    # the same trials, unpruned: enqueue each trial's params in order, then let the flow run them
    up = load_settings(files["none"])
    name2 = study_name(up, a.model, dataset_hash(dataset_dir(up)))
    s2 = open_study(name2, up.tune.storage, up.tune.seed, "none", a.epochs)
    if not s2.trials:
        for t in sorted(s1.trials, key=lambda t: t.number):
            s2.enqueue_trial(t.params)
    unpruned = tune_flow(a.model, None, str(files["none"]))
    s2 = optuna.load_study(study_name=unpruned["study"], storage=up.tune.storage)

    full = {t.number: t for t in s2.trials}
    rows = []
    for t in sorted(s1.trials, key=lambda t: t.number):
        u = full[t.number]
        rows.append({"trial": t.number, "iou": t.params.get("iou"), "lr0": round(t.params.get("lr0", 0), 5),
                     "state": t.state.name, "epochs": len(t.intermediate_values),
                     "value": None if t.value is None else round(t.value, 4),
                     "unpruned_epochs": len(u.intermediate_values),
                     "unpruned_value": None if u.value is None else round(u.value, 4)})
    e1, e2 = sum(r["epochs"] for r in rows), sum(r["unpruned_epochs"] for r in rows)
    best_unpruned = max(rows, key=lambda r: r["unpruned_value"] or -1)
    lost = best_unpruned["state"] == "PRUNED"
    summary = {"epochs_pruned_study": e1, "epochs_unpruned": e2, "saving": round(1 - e1 / e2, 3),
               "pruned_trials": sum(r["state"] == "PRUNED" for r in rows),
               "best_pruned_study": pruned["best_value"], "best_unpruned": unpruned["best_value"],
               "best_trial_unpruned": best_unpruned["trial"], "pruner_stopped_the_best": lost}
    payload = {"machine": machine(), "command": cli(), "model": a.model, "pruner": a.pruner, "trials": a.trials,
               "epochs": a.epochs, "rows": rows, "summary": summary}
    notes = (f"Epochs spent: {e1} with the pruner vs {e2} for the same trials unpruned "
             f"(saving {summary['saving']:.0%}, {summary['pruned_trials']} trials pruned). Best val mAP50: "
             f"{summary['best_pruned_study']:.4f} (pruned study) vs {summary['best_unpruned']:.4f} (unpruned); "
             f"the pruner {'stopped' if lost else 'kept'} the trial that is best when run to the end "
             f"(trial {best_unpruned['trial']}).")
    md = write("pruning", payload, rows, ["trial", "iou", "lr0", "state", "epochs", "value", "unpruned_epochs",
                                          "unpruned_value"],
               f"Optuna {a.pruner} pruner: {a.model}, {a.trials} trials x {a.epochs} epochs", notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
