"""Typed settings: params.yaml parsed once into frozen sections, overrides merged by one function
(``resolve``) that remembers which layer set what, bad values stopped with one line naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from components.settings import IOU_LOSSES, ConfigError, Settings, load_profile, load_settings, resolve

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_params_yaml_parses_into_typed_sections_and_back():
    s = load_settings(REPO / "params.yaml")
    assert s.plain() == PARAMS                               # nothing lost, nothing added
    assert s.train.imgsz == PARAMS["train"]["imgsz"] and isinstance(s.evaluate.conf, float)
    assert s.data.synth.contrast == tuple(PARAMS["data"]["synth"]["contrast"])
    assert s.evaluate.bootstrap.resamples == PARAMS["evaluate"]["bootstrap"]["resamples"]
    assert s.promote.candidates == ("baseline", "dasc", "lagnet") and s.overrides == ()
    args = s.train.ultralytics()                              # ultralytics' own args pass through
    assert args["lr0"] == PARAMS["train"]["lr0"] and "device" not in args and "seed" not in args


def test_settings_are_frozen():
    s = load_settings(REPO / "params.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.loss.iou = "siou"
    with pytest.raises(TypeError):
        s.tune.space["dasc"] = {}                            # a read-only mapping


@pytest.mark.parametrize("profile", sorted((REPO / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_profile_resolves(profile):
    over = load_profile(profile)
    s = resolve(REPO / "params.yaml", [(f"profile {profile.name}", over)])
    assert {o.key for o in s.overrides} == set(over)
    for key, value in over.items():
        assert s.get(key) == value


def test_layers_later_wins_and_the_record_says_who_set_what():
    s = resolve(REPO / "params.yaml", [("profile p", {"train.epochs": 60, "loss.iou": "eiou"}),
                                       ("tuned t.json", {"loss.iou": "siou"})])
    assert s.train.epochs == 60 and s.loss.iou == "siou"
    assert s.overrides_record() == {"train.epochs": {"value": 60, "source": "profile p"},
                                    "loss.iou": {"value": "siou", "source": "tuned t.json"}}
    t = s.override({"dasc.protonet_k": 8}, "trial 3")       # on top: the earlier record is kept
    assert t.dasc.protonet_k == 8 and t.loss.iou == "siou" and len(t.overrides) == 4


@pytest.mark.parametrize("over, message", [
    ({"loss.iou": "giou"}, "loss.iou must be one of ciou, eiou"),
    ({"train.epochs": "60"}, "train.epochs must be an integer"),
    ({"dasc.protonet_k": True}, "dasc.protonet_k must be an integer"),
    ({"lam.alpha": "half"}, "lam.alpha must be a number"),
    ({"promote.gate": "interval"}, "promote.gate must be one of margin, bootstrap"),
    ({"data.synth.contrast": [0.5]}, "data.synth.contrast must be a list of 2"),
    ({"data.classes": "crazing"}, "data.classes = 'crazing' is none of a list | null"),
    ({"lagnet.widht": 48}, "no key 'lagnet.widht'"),
])
def test_a_bad_value_is_one_line_naming_the_key(over, message):
    with pytest.raises(ConfigError, match=message) as e:
        resolve(REPO / "params.yaml", [("--set", over)])
    assert "\n" not in str(e.value)


def test_missing_and_unknown_keys_in_the_file_itself():
    broken = yaml.safe_load(yaml.safe_dump(PARAMS))
    del broken["export"]["opset"]
    with pytest.raises(ConfigError, match="params.yaml has no key 'export.opset'"):
        Settings.parse(broken)
    extra = yaml.safe_load(yaml.safe_dump(PARAMS))
    extra["lam"]["colour"] = "jet"
    with pytest.raises(ConfigError, match="unknown key 'lam.colour'"):
        Settings.parse(extra)
    any_arg = yaml.safe_load(yaml.safe_dump(PARAMS))
    any_arg["train"]["shear"] = 2.0                          # any ultralytics train arg is welcome
    assert Settings.parse(any_arg).train.ultralytics()["shear"] == 2.0


def test_one_list_of_iou_losses():
    from components.models.iou import IOU_LOSSES as used_by_the_loss

    assert used_by_the_loss is IOU_LOSSES


@pytest.mark.parametrize("key, module, name", [
    ("loss.iou", "components.models.iou", "IOU_LOSSES"),
    ("lam.normalize", "components.detectors.lagnet.coding", "NORMALIZE"),
    ("promote.gate", "components.deploy.registry", "GATES"),
    ("decision.rule", "components.decision", "RULES"),
    ("baseline.scale", "components.detectors.yolo11.config", "SCALES"),
    ("data.format", "components.data.importers", "FORMATS"),
    ("data.follow_symlinks", "components.data.importers", "FOLLOW"),
    ("evaluate.split", "components.data.views", "SPLITS"),
])
def test_each_choice_list_is_the_one_its_module_declares(key, module, name):
    """params.yaml is checked against the list the implementing module declares (one list)."""
    import importlib

    choices = getattr(importlib.import_module(module), name)
    with pytest.raises(ConfigError, match=f"{key} must be one of {', '.join(choices)} "):
        resolve(REPO / "params.yaml", [("--set", {key: "no-such-choice"})])
    assert load_settings(REPO / "params.yaml").get(key) in choices


def test_importing_the_settings_stays_light():
    """The CLI checks a params file before anything heavy loads (tests/test_cli_guards.py)."""
    import subprocess
    import sys

    code = ("import sys; import components.settings as s; s.load_settings('params.yaml'); "
            "print(sorted(m for m in ('torch', 'ultralytics', 'optuna', 'mlflow', 'prefect', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
