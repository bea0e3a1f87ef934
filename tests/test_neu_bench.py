"""The NEU-DET benchmark's protocol resolution (--profile) and the paper-protocol table's naming."""

from __future__ import annotations

import pytest

from studies import neu_cpu
from studies.neu_paper_gpu import name_of


@pytest.fixture
def profiles(monkeypatch):
    def use(*names):
        monkeypatch.setattr(neu_cpu, "PROFILES", list(names))
        return neu_cpu.protocol_params({})
    return use


def test_default_protocol_is_the_cpu_profile(profiles):
    p = profiles("neu-cpu")
    assert (p.train.imgsz, p.train.epochs, p.baseline.scale, p.dasc.proto_loss) == (224, 60, "n", 1.0)


def test_paper_profile_resolves_to_the_papers_protocol(profiles):
    p = profiles("neu-paper-gpu")
    train = p.get("train")
    assert (train["imgsz"], train["epochs"], train["optimizer"], train["lr0"]) == (640, 300, "AdamW", 0.001)
    assert (p.baseline.scale, p.dasc.scale, p.lagnet.variant, p.lagnet.width) == ("l", "l", "large", 264)
    assert p.dasc.proto_loss == 0.0                         # the paper's unsupervised ProtoNets


def test_later_profile_wins_and_sets_win_over_profiles(profiles, monkeypatch):
    p = profiles("neu-paper-gpu", "smoke")
    assert p.train.epochs == 2 and p.train.imgsz == 640
    monkeypatch.setattr(neu_cpu, "PROFILES", ["neu-paper-gpu"])
    assert neu_cpu.protocol_params({"train.epochs": 20}).train.epochs == 20


def test_paper_table_names_the_detector_and_its_scale():
    run = {"model": "dasc", "params_used": {"dasc": {"scale": "l", "proto_loss": 1.0}}}
    assert name_of(run) == "DASC-YOLO-l + box-supervised ProtoNet (ours)"
    run["params_used"]["dasc"]["proto_loss"] = 0.0
    assert name_of(run) == "DASC-YOLO-l (ours)"
    assert name_of({"model": "baseline", "params_used": {"baseline": {"scale": "l"}}}) == "YOLO11l (ours)"
