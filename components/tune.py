"""Hyper-parameter search with Optuna (its samplers, pruners and storages; nothing home-made).

The search space comes from ``params.yaml: tune.space`` per detector: categorical lists (ProtoNet
K, SCEM k and n, the IoU loss) and optional ``[low, high]`` log-uniform ranges (lr0,
weight_decay). A trial's values are *overrides* of params.yaml leaves (``dasc.protonet_k``,
``loss.iou``, ``train.lr0``...), so a trial trains exactly like the pipeline does, with those
leaves changed. Storage is any SQLAlchemy URL: SQLite for one machine, PostgreSQL for several
workers sharing one study.

Every study contains the *default* point (params.yaml's values of the searched leaves) as a
trial, enqueued once by the worker that creates the study and never pruned: it is the reference
of :func:`decide`, which keeps the defaults unless the best trial beats that reference on
validation by more than ``tune.min_gain`` (the run-to-run noise) and reaches ``tune.min_score``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna


# user attribute of the default trial (enqueued with it, so every worker can tell it)
DEFAULT_ATTR = "default"

# space keys every detector's study may search -> params.yaml leaves; each detector adds its own,
# fully qualified, in its DetectorSpec (``tune_keys``: ``{"k": "lagnet.k"}``)
SHARED = {"iou": "loss.iou", "lr0": "train.lr0", "weight_decay": "train.weight_decay"}


def targets(model: str | None = None) -> dict[str, str]:
    """Space keys -> params.yaml leaves of ``model``'s study: the shared keys and the detector's own.
    ``None``: every catalogued detector's (a key two detectors map to different leaves is an error)."""
    from .detectors import CATALOGUE, spec

    out = dict(SHARED)
    for s in [spec(model)] if model else CATALOGUE.values():
        for key, leaf in s.tune_keys.items():
            if out.setdefault(key, leaf) != leaf:
                raise ValueError(f"tune space key '{key}' means {out[key]} and {leaf} ({s.key}): pass the model")
    return out


def searched(space: dict[str, Any], model: str | None = None):
    """The ``(key, spec)`` pairs of ``tune.space`` that are searched (``None``: fixed at
    params.yaml's value, left out); a key unknown to ``model`` (:func:`targets`) is an error."""
    known = targets(model)
    for key, spec in space.items():
        if spec is None:
            continue
        if key not in known:
            raise ValueError(f"tune.space: unknown key '{key}' (known: {', '.join(known)})")
        yield key, spec


def suggest(trial: optuna.Trial, space: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """Draw one point: lists are categorical, ``{low, high}`` maps log-uniform floats; ``None``
    entries are left out (fixed at params.yaml's value). Returns ``{params leaf: value}``."""
    out, leaf = {}, targets(model)
    for key, spec in searched(space, model):
        if isinstance(spec, dict):
            out[leaf[key]] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=True)
        elif isinstance(spec, list) and spec:
            out[leaf[key]] = trial.suggest_categorical(key, spec)
        else:
            raise ValueError(f"tune.space.{key}: a non-empty list or {{low, high}}, got {spec!r}")
    return out


def make_pruner(name: str, epochs: int, warmup_epochs: int = 0) -> optuna.pruners.BasePruner:
    """The study's pruner on the per-epoch val mAP50 (steps are epochs, 1-based). No trial is
    pruned during its first ``warmup_epochs`` epochs: the earliest prune is at epoch
    ``warmup_epochs + 1`` (MedianPruner ``n_warmup_steps``, Hyperband ``min_resource``); with
    ``warmup_epochs >= epochs`` nothing can be pruned."""
    if name not in ("median", "hyperband", "none"):
        raise ValueError(f"tune.pruner must be median, hyperband or none (got '{name}')")
    warmup = int(warmup_epochs)
    if warmup < 0:
        raise ValueError(f"tune.warmup_epochs must be >= 0 (got {warmup_epochs})")
    if name == "none" or warmup >= epochs:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup + 1)
    return optuna.pruners.HyperbandPruner(min_resource=warmup + 1, max_resource=epochs)


def default_point(space: dict[str, Any], params, model: str | None = None) -> dict[str, Any]:
    """params.yaml's values of the searched leaves, as Optuna params (``{space key: value}``):
    the trial every study contains. The space must contain them (a list holding the value, a
    range around it), else the default could not be a trial of the study. ``params``: the
    settings (``components.settings.Settings``); ``model``: whose space (:func:`targets`)."""
    out, leaf = {}, targets(model)
    for key, spec in searched(space, model):
        value = params.get(leaf[key])
        inside = (float(spec["low"]) <= float(value) <= float(spec["high"]) if isinstance(spec, dict)
                  else isinstance(spec, list) and value in spec)
        if not inside:
            raise ValueError(f"tune.space.{key} ({spec!r}) must contain params.yaml's {leaf[key]} ({value!r}): "
                             "the default is a trial of every study")
        out[key] = float(value) if isinstance(spec, dict) else value
    return out


def is_default(trial: optuna.Trial | optuna.trial.FrozenTrial) -> bool:
    return bool(trial.user_attrs.get(DEFAULT_ATTR))


def should_prune(trial: optuna.Trial) -> bool:
    """The pruner's verdict, except for the default trial: the reference runs to the end."""
    return not is_default(trial) and trial.should_prune()


def open_study(name: str, storage: str, seed: int, pruner: str, epochs: int, warmup_epochs: int = 0,
               default: dict[str, Any] | None = None) -> optuna.Study:
    """Create or join the study ``name`` (seeded TPE, maximise val mAP50). ``default`` (see
    :func:`default_point`) is enqueued only by the process that creates the study (the storage
    refuses a second study of that name), so it is in the study exactly once however many
    workers start together; it is the first WAITING trial, hence the first one asked."""
    kw = {"sampler": optuna.samplers.TPESampler(seed=seed), "pruner": make_pruner(pruner, epochs, warmup_epochs)}
    try:
        if storage.startswith("sqlite:///"):            # a fresh checkout has no .cache/ yet
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", **kw)
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=name, storage=storage, **kw)
    if default is not None:
        study.enqueue_trial(default, user_attrs={DEFAULT_ATTR: True})
    return study


def decide(default_value: float | None, best_value: float, min_gain: float, min_score: float) -> tuple[bool, str]:
    """Apply the best trial's values, or keep params.yaml's? ``(True, "tuned")`` only if the best
    trial's val mAP50 reaches ``min_score`` (below it the study saw no signal) and beats the
    default trial's by more than ``min_gain`` (the run-to-run noise); else ``(False, "default
    (<why>)")``."""
    if default_value is None:
        return False, "default (no reference: the default trial did not complete)"
    if best_value < min_score:
        return False, f"default (no signal: best {best_value:.4f} < min_score {min_score:g})"
    gain = best_value - default_value
    if gain <= min_gain:
        return False, f"default (gain {gain:.4f} {'below' if gain < min_gain else 'not above'} min_gain {min_gain:g})"
    return True, "tuned"


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def finished(study: optuna.Study) -> int:
    """Trials that are over: complete, pruned or failed."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def started(study: optuna.Study) -> int:
    """Trials that count towards ``tune.trials``: running or finished (enqueued ones, still
    WAITING, are not started: they run first)."""
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING, *FINISHED)))


def full(study: optuna.Study, n: int) -> bool:
    """The study needs no more trials: ``n`` started and the default trial is not still waiting
    (a worker that joined in the moment between the study's creation and the default's enqueue
    may have taken the first slots; the reference runs anyway, one trial over ``n`` at most)."""
    if started(study) < n:
        return False
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    return not any(is_default(t) for t in waiting)


def default_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's first complete default trial (None: it failed, or the study predates it)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if is_default(t)]
    return min(done, key=lambda t: t.number) if done else None


def study_result(study: optuna.Study, model: str, space: dict[str, Any], default: dict[str, Any], cfg) -> dict:
    """What a finished study decided (:func:`decide` with ``cfg``, the ``tune`` settings: the best
    trial's overrides, or none) and its record (``<paths.models>/tuned/<model>.json``): the best and
    the default trial, their values and points, the gain, the trial counts by state and the epochs
    spent. ``RuntimeError`` when no trial completed."""
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RuntimeError(f"study {study.study_name}: no trial completed ({finished(study)} finished)")
    best = study.best_trial
    best_params = suggest(optuna.trial.FixedTrial(best.params), space, model)
    ref = default_trial(study)
    default_value = ref.value if ref else None
    use_best, decision = decide(default_value, best.value, cfg.min_gain, cfg.min_score)
    return {"model": model, "study": study.study_name, "decision": decision, "overrides": best_params if use_best else {},
            "default_value": default_value, "best_value": best.value,
            "gain": None if default_value is None else best.value - default_value,
            "min_gain": cfg.min_gain, "min_score": cfg.min_score,
            "best_trial": best.number, "best_params": best_params,
            "default_trial": ref.number if ref else None,
            "default_params": suggest(optuna.trial.FixedTrial(default), space, model),
            "trials": {s.name: sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState},
            "epochs_spent": sum(len(t.intermediate_values) for t in study.trials)}
