"""params.yaml handling, profiles, flattening/hashing, and the MLflow run helper."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.settings import ConfigError, flatten, load_params, params_hash, section
from components.tracking import start_stage_run
from defectops.profile_args import set_args

REPO = Path(__file__).resolve().parents[1]


def test_flatten_and_hash():
    d = {"a": {"b": 1, "c": {"d": "x"}}, "e": [1, 2]}
    assert flatten(d) == {"a.b": 1, "a.c.d": "x", "e": "[1, 2]"}
    assert params_hash({"x": 1, "y": 2}) == params_hash({"y": 2, "x": 1})
    assert params_hash({"x": 1}) != params_hash({"x": 2})


def test_section_names_the_missing_key():
    p = {"train": {"epochs": 3}}
    assert section(p, "train.epochs") == 3
    with pytest.raises(ConfigError, match="'train.lr0'"):
        section(p, "train.lr0")


def test_load_params_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_repo_params_have_every_section_the_flows_read():
    p = load_params(REPO / "params.yaml")
    for key in ("paths.datasets", "paths.splits", "paths.models", "paths.metrics", "paths.plots", "paths.reports",
                "data.name", "data.source", "data.synth.seed", "split.test_ratio", "train.epochs",
                "train.device", "train.seed", "baseline.scale", "evaluate.latency.batch",
                "tracking.uri", "tracking.experiment"):
        section(p, key)
    assert p["train"]["device"] == "cpu", "the default profile must run without a GPU"


@pytest.mark.parametrize("profile", sorted((REPO / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_profiles_only_override_existing_keys(profile):
    args = set_args(str(profile), str(REPO / "params.yaml"))
    assert args[0] == "-S"
    if profile.stem == "smoke":                                 # layered on another profile: keeps its size
        assert not any(a.startswith("train.imgsz=") for a in args) and "train.epochs=2" in args
        return
    expected = 224 if profile.stem == "neu-cpu" else 640        # the CPU protocol / the papers' size
    assert f"train.imgsz={expected}" in args


def test_profile_with_unknown_key_is_rejected(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text("train.no_such_key: 1\n")
    with pytest.raises(ConfigError, match="train.no_such_key"):
        set_args(str(prof), str(REPO / "params.yaml"))


def test_stage_run_logs_flat_params_and_tags(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking = {"uri": f"sqlite:///{tmp_path}/m.db", "experiment": "t"}
    params = {"train": {"epochs": 3, "aug": {"mosaic": 0.5}}, "many": {f"k{i}": i for i in range(150)}}
    run = start_stage_run("train:x", tracking, params, {"git_commit": "abc", "dataset_hash": "h"})
    run.log_metrics({"metrics/mAP50(B)": 0.5, "not_a_number": "x"}, step=2)
    run.end()
    r = MlflowClient(tracking["uri"]).get_run(run.run_id)
    assert r.data.params["train.aug.mosaic"] == "0.5" and r.data.params["many.k149"] == "149"
    assert len(r.data.params) == 152
    assert r.data.tags["stage"] == "train:x" and r.data.tags["dataset_hash"] == "h"
    assert r.data.metrics == {"metrics/mAP50B": 0.5}
    assert r.info.status == "FINISHED" and r.info.run_name == "train:x"


def test_env_tracking_uri_wins(tmp_path, monkeypatch):
    from components.tracking import tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri({"uri": "sqlite:///x.db"}) == "http://mlflow.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri({"uri": "sqlite:///x.db"}) == "sqlite:///x.db"


def test_train_threads_resolve_to_a_count(monkeypatch):
    """``train.threads``: auto = the cores, shared among trainings side by side; ints kept; bad
    values refused with the param's name."""
    import os

    from components.train import resolve_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert resolve_threads("auto") == 16 and resolve_threads("auto", share=2) == 8
    assert resolve_threads("auto", share=32) == 1 and resolve_threads(3) == 3 and resolve_threads(None) is None
    for bad in (0, -2, "two", 1.5, True):
        with pytest.raises(ValueError, match="train.threads"):
            resolve_threads(bad)


def test_train_threads_from_params_reach_torch(tmp_path, monkeypatch):
    """``train.threads`` travels from the settings through ``trainer_args`` into the training: the
    callback ``train_detector`` registers sets torch's thread count, and ultralytics never sees the
    key (a silently dropped key would leave trainings on ultralytics' cores - 1)."""
    import torch

    import components.train as train
    from components.settings import trainer_args
    from conftest import settings

    seen = {}

    class FakeYOLO:                                      # records what train_detector hands ultralytics
        def __init__(self, cfg):
            self.callbacks = {}

        def add_callback(self, event, fn):
            self.callbacks[event] = fn

        def train(self, **kw):
            seen["kwargs"] = kw
            before = torch.get_num_threads()
            try:
                self.callbacks["on_pretrain_routine_start"](None)
                seen["threads"] = torch.get_num_threads()
            finally:
                torch.set_num_threads(before)

    monkeypatch.setattr(train, "DefectYOLO", FakeYOLO)
    monkeypatch.setattr(train, "model_yaml", lambda cfg, iou, out: cfg)
    args, device, seed = trainer_args(settings({"train.threads": 3}))
    assert args["threads"] == 3
    with pytest.raises(RuntimeError, match="without"):    # the fake writes no best.pt
        train.train_detector(train.TrainRequest("yolo11n.yaml", tmp_path / "data.yaml", tmp_path / "run", args, device,
                                                seed, "ciou"))
    assert seen["threads"] == 3 and "threads" not in seen["kwargs"]
