"""Hyper-parameter search with Optuna (its samplers, pruners and storages; nothing home-made).

The search space comes from ``params.yaml: tune.space`` per detector: categorical lists (ProtoNet
K, SCEM k and n, the IoU loss) and optional ``[low, high]`` log-uniform ranges (lr0,
weight_decay). A trial's values are *overrides* of params.yaml leaves (``dasc.protonet_k``,
``loss.iou``, ``train.lr0``...), so a trial trains exactly like the pipeline does, with those
leaves changed. Storage is any SQLAlchemy URL: SQLite for one machine, PostgreSQL for several
workers sharing one study.
"""

from __future__ import annotations

import copy
from typing import Any

import optuna

# space keys -> params.yaml leaves
TARGETS = {"protonet_k": "dasc.protonet_k", "k": "lagnet.k", "n": "lagnet.n", "iou": "loss.iou",
           "lr0": "train.lr0", "weight_decay": "train.weight_decay"}


def suggest(trial: optuna.Trial, space: dict[str, Any]) -> dict[str, Any]:
    """Draw one point: lists are categorical, ``{low, high}`` maps log-uniform floats; ``None``
    entries are left out (fixed at params.yaml's value). Returns ``{params leaf: value}``."""
    out = {}
    for key, spec in space.items():
        if spec is None:
            continue
        if key not in TARGETS:
            raise ValueError(f"tune.space: unknown key '{key}' (known: {', '.join(TARGETS)})")
        if isinstance(spec, dict):
            out[TARGETS[key]] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=True)
        elif isinstance(spec, list) and spec:
            out[TARGETS[key]] = trial.suggest_categorical(key, spec)
        else:
            raise ValueError(f"tune.space.{key}: a non-empty list or {{low, high}}, got {spec!r}")
    return out


def apply(params: dict, overrides: dict[str, Any]) -> dict:
    """A copy of ``params`` with dotted leaves replaced."""
    p = copy.deepcopy(params)
    for dotted, value in overrides.items():
        node = p
        *parents, leaf = dotted.split(".")
        for k in parents:
            node = node[k]
        if leaf not in node:
            raise KeyError(f"params.yaml has no '{dotted}'")
        node[leaf] = value
    return p


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"tune.pruner must be median, hyperband or none (got '{name}')")


def open_study(name: str, storage: str, seed: int, pruner: str, epochs: int) -> optuna.Study:
    """Create or join the study ``name`` (seeded TPE, maximise val mAP50)."""
    return optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                               sampler=optuna.samplers.TPESampler(seed=seed), pruner=make_pruner(pruner, epochs))


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def finished(study: optuna.Study) -> int:
    """Trials that are over: complete, pruned or failed."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def started(study: optuna.Study) -> int:
    """Trials that count towards ``tune.trials``: running or finished (enqueued ones, still
    WAITING, are not started: they run first)."""
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING, *FINISHED)))
