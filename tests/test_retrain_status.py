"""The retrain flow's outcome comes from the registry (the ``champion`` alias and the latest
version before and after the promote step), not from the git-tracked ``reports/promotion.json``:
on a fresh clone that file describes another registry and must not hide a new champion."""

from __future__ import annotations

import json
import os
import time

import pytest

from components.deploy.registry import champion_version, latest_version
from components.deploy.promotion import promotion_of, registry_state, retrain_status

NAME = "defect-detector"


@pytest.fixture()
def registry(tmp_path):
    """A fresh SQLite registry in tmp_path and a way to register a version as the promote stage does."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def promote(alias: str, model: str = "dasc") -> str:
        try:
            c.get_registered_model(NAME)
        except Exception:
            c.create_registered_model(NAME)
        v = c.create_model_version(NAME, source=str(tmp_path / "nowhere"), tags={"model": model}).version
        c.set_registered_model_alias(NAME, alias, v)
        c.set_model_version_tag(NAME, v, "promotion", f"{alias}: test")
        return str(v)

    return uri, promote


@pytest.mark.parametrize("before, after, hashes, status, version", [
    ({"champion": None, "latest": None}, {"champion": "1", "latest": "1"}, ("a", "b"), "retrained", "1"),
    ({"champion": "1", "latest": "1"}, {"champion": "1", "latest": "2"}, ("a", "b"), "retrained", "2"),   # challenger
    ({"champion": "1", "latest": "2"}, {"champion": "3", "latest": "3"}, ("a", "a"), "retrained", "3"),
    ({"champion": "1", "latest": "2"}, {"champion": "2", "latest": "2"}, ("a", "a"), "retrained", "2"),   # moved
    ({"champion": "1", "latest": "2"}, {"champion": "1", "latest": "2"}, ("a", "b"), "dataset updated", None),
    ({"champion": "1", "latest": "2"}, {"champion": "1", "latest": "2"}, ("a", "a"), "up to date", None),
    ({"champion": None, "latest": None}, {"champion": None, "latest": None}, ("a", "b"), "dataset updated", None),
])
def test_status_from_the_registry_before_and_after(before, after, hashes, status, version):
    d = retrain_status(before, after, *hashes)
    assert (d["status"], d["version"]) == (status, version)
    assert d["new_champion"] == (before["champion"] != after["champion"])


def test_registry_helpers_on_a_fresh_registry(tmp_path, registry):
    uri, promote = registry
    assert champion_version(uri, NAME) is None and latest_version(uri, NAME) is None       # no model at all
    promote("challenger")
    assert champion_version(uri, NAME) is None and latest_version(uri, NAME) == "1"        # a model, no champion
    promote("champion")
    assert registry_state(uri, NAME) == {"champion": "2", "latest": "2"}


def test_first_retrain_on_a_fresh_clone_reports_the_new_champion(tmp_path, registry):
    """The clone's git-tracked report says version 1 became champion (in its author's registry);
    this clone's registry is empty; the retrain's promote step registers version 1 as champion:
    the flow must report `retrained` (and so commit the model), with the registry's promotion."""
    uri, promote = registry
    report = tmp_path / "reports" / "promotion.json"
    report.parent.mkdir()
    report.write_text(json.dumps({"model": "lagnet", "version": "1", "alias": "champion", "reason": "theirs"}))
    old = time.time() - 3600
    os.utime(report, (old, old))                                   # as a checkout leaves it: before the run

    before, started = registry_state(uri, NAME), time.time()
    promote("champion", model="dasc")                               # what `dvc repro` did
    after = registry_state(uri, NAME)
    d = retrain_status(before, after, "h0", "h1")
    assert d == {"status": "retrained", "version": "1", "new_champion": True}
    p = promotion_of(uri, NAME, d["version"], report, started)
    assert p == {"model": "dasc", "version": "1", "alias": "champion", "reason": "champion: test"}

    # the promote stage rewrote the report during the run: its details are used
    before, started = registry_state(uri, NAME), time.time()
    v = promote("challenger", model="baseline")
    report.write_text(json.dumps({"model": "baseline", "version": v, "alias": "challenger", "reason": "ours",
                                  "candidate": {"mAP50": 0.5}}))
    d = retrain_status(before, registry_state(uri, NAME), "h1", "h2")
    assert d == {"status": "retrained", "version": "2", "new_champion": False}
    assert promotion_of(uri, NAME, d["version"], report, started)["reason"] == "ours"

    # nothing registered this time: the dataset changed, the model did not
    before = registry_state(uri, NAME)
    assert retrain_status(before, registry_state(uri, NAME), "h2", "h3")["status"] == "dataset updated"

