"""Tuning without training: the default trial in every study (enqueued once), the pruner's
warm-up, the decision rule (defaults kept unless the best trial beats them by more than the
noise) and the tuned JSON the flow writes, with the trial process replaced by a fake."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import threading
import types
from pathlib import Path

import optuna
import pytest
import yaml

from components.settings import Settings
from components.tune import (DEFAULT_ATTR, decide, default_point, default_trial, full, make_pruner, open_study,
                             should_prune)

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
SPACE = {"protonet_k": [2, 4, 8], "iou": ["ciou", "eiou", "siou"], "lr0": None}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _defaults(study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(DEFAULT_ATTR)]


# ---- the decision rule

@pytest.mark.parametrize("default, best, tuned, why", [
    (0.50, 0.51, False, "default (gain 0.0100 below min_gain 0.02)"),
    (0.50, 0.50, False, "default (gain 0.0000 below min_gain 0.02)"),        # the default is the best trial
    (0.50, 0.53, True, "tuned"),
    (0.016, 0.05, False, "default (no signal: best 0.0500 < min_score 0.1)"),  # gain above min_gain, but noise
    (0.0, 0.0, False, "default (no signal: best 0.0000 < min_score 0.1)"),
    (None, 0.60, False, "default (no reference: the default trial did not complete)"),
])
def test_decide(default, best, tuned, why):
    assert decide(default, best, 0.02, 0.1) == (tuned, why)


# ---- the default point, the pruner

def test_default_point_is_params_values_and_must_be_in_the_space():
    settings = Settings.parse(PARAMS)
    assert default_point(SPACE, settings) == {"protonet_k": PARAMS["dasc"]["protonet_k"], "iou": PARAMS["loss"]["iou"]}
    assert default_point({"lr0": {"low": 1e-4, "high": 1e-1}}, settings) == {"lr0": PARAMS["train"]["lr0"]}
    with pytest.raises(ValueError, match="must contain params.yaml's loss.iou"):
        default_point({"iou": ["eiou", "siou"]}, settings.override({"loss.iou": "ciou"}, "test"))
    with pytest.raises(ValueError, match="must contain params.yaml's train.lr0"):
        default_point({"lr0": {"low": 0.01, "high": 0.1}}, settings.override({"train.lr0": 0.003}, "test"))


def test_pruner_warmup():
    assert make_pruner("median", 10, 3)._n_warmup_steps == 4            # epochs 1-3 never pruned
    assert make_pruner("hyperband", 10, 3)._min_resource == 4
    assert isinstance(make_pruner("median", 4, 4), optuna.pruners.NopPruner)   # nothing left to prune
    assert isinstance(make_pruner("none", 10, 0), optuna.pruners.NopPruner)
    with pytest.raises(ValueError):
        make_pruner("sometimes", 10, 0)

    # median pruner, warm-up 2: a bad trial survives epochs 1-2, is pruned at 3; the default never
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", 5, 2))
    for _ in range(2):
        t = study.ask()
        for e in range(1, 6):
            t.report(0.5, e)
        study.tell(t, 0.5)
    study.enqueue_trial({}, user_attrs={DEFAULT_ATTR: True})
    ref, bad = study.ask(), study.ask()
    for e in (1, 2):
        bad.report(0.1, e)
        assert not should_prune(bad)
    bad.report(0.1, 3)
    assert should_prune(bad)
    for e in range(1, 6):
        ref.report(0.1, e)
        assert not should_prune(ref) and ref.should_prune() == (e >= 3)


# ---- the default trial: enqueued once per study

def test_default_enqueued_once_by_the_study_creator(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    point = default_point(SPACE, Settings.parse(PARAMS))
    for _ in range(3):                         # three workers start on the same study
        study = open_study("s", url, 0, "median", 4, 2, default=point)
    open_study("s", url, 0, "median", 4, 2)   # a trial process joins
    assert len(study.trials) == 1
    (t,) = _defaults(study)
    assert t.state == optuna.trial.TrialState.WAITING and t.system_attrs["fixed_params"] == point
    first = study.ask()                        # the first trial asked is the default
    assert first.number == 0 and first.params == {} and first.user_attrs[DEFAULT_ATTR]
    assert first.suggest_categorical("iou", SPACE["iou"]) == PARAMS["loss"]["iou"]


def test_a_waiting_default_trial_runs_even_when_the_study_is_full(tmp_path):
    study = open_study("s", f"sqlite:///{tmp_path}/optuna.db", 0, "none", 4, 0)
    for _ in range(2):                         # another worker took the slots before the enqueue
        study.tell(study.ask(), 0.1)
    assert full(study, 2)
    study.enqueue_trial({"iou": "ciou"}, user_attrs={DEFAULT_ATTR: True})
    assert not full(study, 2)
    t = study.ask()
    assert t.user_attrs[DEFAULT_ATTR]
    study.tell(t, 0.3)
    assert full(study, 2) and default_trial(study).value == 0.3


def test_default_enqueued_once_with_concurrent_workers_on_postgresql():
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        psycopg2.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=3).close()
    except psycopg2.OperationalError as e:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {e}")
    import uuid

    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
    name = f"enqueue-{uuid.uuid4().hex[:8]}"
    point = default_point(SPACE, Settings.parse(PARAMS))
    optuna.storages.RDBStorage(url)    # the schema first (its creation is not safe against concurrent workers)
    go, errors = threading.Barrier(6), []

    def worker():
        try:
            go.wait()
            open_study(name, url, 0, "median", 4, 2, default=point)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        assert len(_defaults(optuna.load_study(study_name=name, storage=url))) == 1
    finally:
        optuna.delete_study(study_name=name, storage=url)


# ---- the flow, trials faked: the tuned JSON and its decision

class _Run:
    run_id = "parent"

    def __init__(self):
        self.metrics, self.tags = {}, {}

    def log_metrics(self, m, step=None):
        self.metrics.update(m)

    def set_tags(self, t):
        self.tags.update(t)

    def log_artifact(self, path, dest=None):
        pass


@pytest.fixture()
def fake_tune(tmp_path, monkeypatch):
    """``run(values, **tune)``: the tune flow on tmp paths, every trial a fake process whose val
    mAP50 is ``values[loss.iou]``. Returns (result, parent run, study, argv of the trials)."""
    import pipelines.tune as pt

    calls = []

    def fake_trial(argv, **kw):
        a = dict(zip(argv[3::2], argv[4::2]))
        overrides = json.loads(a["--overrides"])
        calls.append(overrides)
        Path(a["--out"]).write_text(json.dumps({"state": "COMPLETE", "value": values[overrides["loss.iou"]]}))
        return subprocess.CompletedProcess(argv, 0)

    run = _Run()

    @contextlib.contextmanager
    def fake_stage_run(*a, **kw):
        yield run

    monkeypatch.setattr(pt, "subprocess", types.SimpleNamespace(run=fake_trial))   # only the flow's calls
    monkeypatch.setattr(pt, "stage_run", fake_stage_run)
    monkeypatch.setattr(pt, "log_outputs", pt.log_outputs.fn)                      # no Prefect task run
    monkeypatch.setattr(pt, "get_run_logger", lambda: logging.getLogger("tune-test"))
    monkeypatch.setattr(pt, "_plots", lambda study, out: [])
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    values: dict[str, float] = {}

    def run_flow(v: dict[str, float], **tune):
        values.clear()
        values.update(v)
        params = yaml.safe_load(yaml.safe_dump(PARAMS))
        params["loss"]["iou"], params["dasc"]["protonet_k"] = "ciou", 4          # the default point
        params["tune"].update(trials=4, parallel=2, storage=f"sqlite:///{tmp_path}/optuna.db", study="t",
                              space={"dasc": {"protonet_k": [4], "iou": ["ciou", "eiou", "siou"]}},
                              **{"min_gain": 0.02, **tune})      # the rule's own figures, not params.yaml's
        params["paths"].update(models=str(tmp_path / "models"), reports=str(tmp_path / "reports"),
                               datasets=str(tmp_path / "datasets"))
        pf = tmp_path / "params.yaml"
        pf.write_text(yaml.safe_dump(params))
        calls.clear()
        res = pt.tune_flow.fn("dasc", None, str(pf))
        written = json.loads((tmp_path / "models" / "tuned" / "dasc.json").read_text())
        assert written == json.loads(json.dumps(res))
        study = optuna.load_study(study_name=res["study"], storage=f"sqlite:///{tmp_path}/optuna.db")
        return res, run, study, list(calls)

    return run_flow


def test_gain_within_noise_keeps_the_defaults(fake_tune):
    res, run, study, calls = fake_tune({"ciou": 0.40, "eiou": 0.41, "siou": 0.41})
    assert len(study.trials) == 4 and len(calls) == 4
    (ref,) = _defaults(study)
    assert ref.number == 0 and ref.params == {"protonet_k": 4, "iou": "ciou"} and ref.value == 0.40
    assert res["overrides"] == {} and res["decision"].startswith("default (gain 0.0100 below min_gain 0.02")
    assert res["default_value"] == 0.40 and res["best_value"] == 0.41 and res["default_trial"] == 0
    assert res["best_params"]["loss.iou"] in ("eiou", "siou")
    assert res["default_params"] == {"dasc.protonet_k": 4, "loss.iou": "ciou"}
    assert run.tags["decision"] == res["decision"] and run.tags["overrides"] == "{}"
    assert run.metrics["default_value"] == 0.40 and run.metrics["best_value"] == 0.41


def test_clear_gain_applies_the_best_trial(fake_tune):
    res, run, study, _ = fake_tune({"ciou": 0.40, "eiou": 0.45, "siou": 0.45})
    assert res["decision"] == "tuned" and res["overrides"] == res["best_params"] != {}
    assert res["overrides"]["loss.iou"] in ("eiou", "siou") and run.tags["decision"] == "tuned"

    # a second worker on the finished study: no trial run, no second default, same decision
    res2, _, study2, calls = fake_tune({"ciou": 0.40, "eiou": 0.45, "siou": 0.45})
    assert res2["study"] == res["study"] and not calls and len(_defaults(study2)) == 1 and len(study2.trials) == 4
    assert res2["overrides"] == res["overrides"]


def test_no_signal_keeps_the_defaults(fake_tune):
    res, run, _, _ = fake_tune({"ciou": 0.0, "eiou": 0.016, "siou": 0.016})   # the tiny profile's numbers
    assert res["overrides"] == {} and res["decision"] == "default (no signal: best 0.0160 < min_score 0.1)"
    assert res["best_params"]["loss.iou"] != "ciou"      # recorded, not applied


def test_a_changed_rule_decides_again_on_the_same_study(fake_tune):
    res, *_ = fake_tune({"ciou": 0.40, "eiou": 0.43, "siou": 0.43})
    assert res["decision"] == "tuned"
    res2, _, _, calls = fake_tune({"ciou": 0.40, "eiou": 0.43, "siou": 0.43}, min_gain=0.05)
    assert res2["study"] == res["study"] and not calls
    assert res2["overrides"] == {} and res2["decision"].startswith("default (gain 0.0300 below min_gain 0.05")


def test_train_applies_an_empty_override_set():
    from components.settings import apply_overrides as apply

    assert apply(PARAMS, {}) == PARAMS


# ---- the guard's figure on NEU-DET: studies/neu_trial_noise.py

def test_trial_noise_pooled_sd_and_the_guard_a_null_study_needs(tmp_path):
    import numpy as np

    from studies.neu_trial_noise import best_up_to, max_gap, pooled_sd

    # deviations from each group's own mean: (1+1) + (4+0+4) = 10 over 1 + 2 degrees of freedom
    sd, df = pooled_sd({"a": [1.0, 3.0], "b": [2.0, 4.0, 6.0]})
    assert df == 3 and sd == pytest.approx((10 / 3) ** 0.5)
    with pytest.raises(SystemExit):
        pooled_sd({"a": [1.0]})
    # one other trial: the gap of two draws, 95th percentile 1.645 * sqrt(2) sd
    assert float(np.quantile(max_gap(1.0, 1), 0.95)) == pytest.approx(1.645 * 2 ** 0.5, abs=0.03)
    # the best of five others against the default needs a larger guard than one comparison
    assert float(np.quantile(max_gap(1.0, 5), 0.95)) > 1.645 * 2 ** 0.5 + 0.5
    f = tmp_path / "results.csv"          # ultralytics pads its column names
    f.write_text("                  epoch,   metrics/mAP50(B)\n1,0.1\n2,0.4\n3,0.3\n")
    assert best_up_to(f, 3) == 0.4 and best_up_to(f, 1) == 0.1
    with pytest.raises(SystemExit, match="fewer than 4"):
        best_up_to(f, 4)


def test_pace_window_mean_and_welch_interval_against_hand_values(tmp_path):
    import numpy as np

    from studies.neu_pace import read_curves, welch, window_mean

    assert window_mean(np.array([0.1, 0.2, 0.3, 0.4]), 4, 2) == pytest.approx(0.35)
    with pytest.raises(SystemExit):
        window_mean(np.array([0.1, 0.2]), 3, 2)
    # means 2 and 3, variances 1 and 1, 3 runs each: se sqrt(2/3), Welch df 4, t(0.975, 4) = 2.7764
    d, lo, hi = welch([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert d == pytest.approx(1.0)
    assert (lo, hi) == pytest.approx((1 - 2.7764 * (2 / 3) ** 0.5, 1 + 2.7764 * (2 / 3) ** 0.5), abs=1e-3)
    f = tmp_path / "results.csv"                     # ultralytics pads its column names
    f.write_text("  epoch,  train/box_loss,  train/cls_loss,  train/dfl_loss,  metrics/mAP50(B),"
                 "  val/box_loss,  val/cls_loss,  val/dfl_loss\n1,1,2,3,0.25,2,2,2\n")
    c = read_curves(f)
    assert c["train_loss"].tolist() == [6.0] and c["val_loss"].tolist() == [6.0] and c["val_map50"].tolist() == [0.25]
