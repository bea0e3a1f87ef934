"""One home per detector: the catalogue, its roles and seams, and the proof that a fourth detector
is one package plus one catalogue entry: a toy detector (``tests/toy_detector/``, added with
``register``) is trained, evaluated against the reference and promoted by the flows as they are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from components.detectors import (CATALOGUE, LAM_MAKER, MODELS, REFERENCE, DetectorSpec, by_role, lam_maker, reference,
                                  register, spec, unregister)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def toy():
    from toy_detector import SPEC

    yield register(SPEC)
    unregister(SPEC.key)


def _spec(key: str, **kw) -> DetectorSpec:
    return DetectorSpec(key=key, build=lambda params, nc, work: "x.yaml", name=lambda params: key, **kw)


def test_each_role_is_played_by_one_detector_and_looked_up_by_role():
    assert reference() is spec("baseline") and lam_maker() is spec("baseline")
    assert by_role(REFERENCE) is reference() and by_role(LAM_MAKER) is lam_maker()
    assert [m for m in MODELS if spec(m).roles] == ["baseline"]
    with pytest.raises(ValueError, match="unknown role 'judge'"):
        by_role("judge")
    with pytest.raises(ValueError, match="unknown role"):
        _spec("x", roles=frozenset({"judge"}))


def test_register_adds_a_detector_and_refuses_a_taken_key_or_role(toy):
    assert spec("toy") is toy and list(CATALOGUE)[-1] == "toy" and "toy" not in MODELS   # MODELS: the shipped ones
    with pytest.raises(ValueError, match="'toy' is already registered"):
        register(toy)
    with pytest.raises(ValueError, match="role reference is already played by 'baseline'"):
        register(_spec("other", roles=frozenset({REFERENCE})))
    with pytest.raises(TypeError, match="DetectorSpec"):
        register({"key": "other"})
    with pytest.raises(ValueError, match="shipped detector"):
        unregister("dasc")
    assert "other" not in CATALOGUE


def test_tune_spaces_map_to_fully_qualified_params_keys(toy):
    from components.tune import targets

    assert targets("lagnet") == {"iou": "loss.iou", "lr0": "train.lr0", "weight_decay": "train.weight_decay",
                                 "k": "lagnet.k", "n": "lagnet.n"}
    assert targets("dasc")["protonet_k"] == "dasc.protonet_k" and "k" not in targets("dasc")
    assert targets()["k"] == "lagnet.k"                    # every detector's keys at once, as before the catalogue
    register(_spec("other", tune_keys={"k": "other.k"}))
    try:
        assert targets("other")["k"] == "other.k" and targets("lagnet")["k"] == "lagnet.k"
        with pytest.raises(ValueError, match="'k' means lagnet.k and other.k"):
            targets()
    finally:
        unregister("other")


def test_each_detector_train_stage_depends_on_its_package():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for m in MODELS:
        deps = stages[f"train_{m}"]["deps"]
        assert spec(m).dvc_deps and set(spec(m).dvc_deps) <= set(deps), (m, spec(m).dvc_deps)
        assert (REPO / spec(m).dvc_deps[0]).is_dir()


def test_profile_epoch_times_come_from_the_catalogue():
    from components.dataprofile import epochs_for

    per_image = sum(spec(m).seconds_per_image_224 for m in MODELS)
    assert per_image == pytest.approx((93 + 109 + 112) / 1260)
    assert epochs_for(1, 1000, 224)[0] == 14                 # 3600 s / (1000 images x 0.249 s per epoch)


TINY = {"data": {"synth": {"images": 30, "size": 64}},
        "train": {"epochs": 1, "imgsz": 64, "batch": 8, "workers": 0, "threads": 1, "warmup_epochs": 0,
                  "close_mosaic": 0},
        "evaluate": {"batch": 8, "latency": {"runs": 1, "warmup": 0}, "bootstrap": {"resamples": 1000}},
        "export": {"parity_images": 4},
        "promote": {"candidates": ["toy"], "require": {}},
        "retrain": {"warm_start": False}}


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) and v else v
    return base


@pytest.mark.slow
def test_a_fourth_detector_trains_evaluates_and_promotes_through_the_flows_as_they_are(
        toy, tracking, tmp_path, monkeypatch, prefect_server):
    from mlflow.tracking import MlflowClient

    from pipelines.data import prepare_flow, split_flow
    from pipelines.evaluate import evaluate_flow
    from pipelines.promote import promote_flow
    from pipelines.train import train_flow

    monkeypatch.chdir(tmp_path)                    # params.yaml's relative paths: everything under tmp_path
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    pf = str(tmp_path / "params.yaml")
    Path(pf).write_text(yaml.safe_dump(params, sort_keys=False))
    prepare_flow(pf)
    split_flow(pf)
    ref = reference().key                          # the toy's gain is measured against the reference
    for model in (ref, "toy"):
        info = train_flow(model, pf)
        assert info["model"] == model and info["epochs_run"] == 1
        evaluate_flow(model, pf)
    cfg = yaml.safe_load((tmp_path / "models" / "toy" / "toynet.yaml").read_text())      # the YAML it trained
    assert cfg["toy"] == {"width": 16} and cfg["head"][-1][2] == "Detect"           # the toy's own architecture
    metrics = json.loads((tmp_path / "metrics" / "toy.json").read_text())
    assert metrics["model"] == "toy" and 0 <= metrics["val"]["mAP50"] <= 1
    assert metrics["gain_vs_baseline"]["mAP50_a"] == pytest.approx(
        json.loads((tmp_path / "metrics" / f"{ref}.json").read_text())["mAP50"], abs=1e-4)

    res = promote_flow(pf)
    assert res["model"] == "toy" and res["alias"] == "champion" and res["champion_before"] is None
    assert res["parity"]["nms_images"] == 4
    mv = MlflowClient(tracking["uri"]).get_model_version(params["promote"]["registered_model"], res["version"])
    assert mv.tags["model"] == "toy" and mv.description.startswith("**ToyNet** defect detector (`toy`)")
    assert "gain over the baseline: mAP50" in mv.description
    card = res["model_card_inputs"]
    assert card["detector"] == "ToyNet" and card["deviations"] == toy.deviations
    assert set(card["training"]) == {"train", "loss", "imgsz_trained"}               # no params section of its own
