"""``train.init``: a training starts from another one's weights (``components.transfer``): a
committed NEU-DET checkpoint (other classes, another dataset) into a synthetic-data training, a
plain state dict, a registered version by ``models:/`` URI; the tensors that match in name and
shape come over (counted against an independent count), the rest start fresh; a bad ``init`` is
one error line before training."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "studies" / "results" / "neu_cpu" / "weights"     # committed NEU-DET checkpoints
BASE = WEIGHTS / "cpu-base-mosaic.pt"                                # YOLO11n, NEU-DET's 6 classes
LAGNET = WEIGHTS / "cpu-lagnet-s-60.pt"                              # LAGNet-s, RGB + LAM
SYNTH = ["scratch", "inclusion", "patch", "pits", "crazing", "scale"]


def _source(path: Path) -> tuple[dict, dict]:
    """A checkpoint's tensors and class names, read with plain torch (not through components.transfer)."""
    import torch

    from components.detectors import legacy

    legacy.install()                        # the checkpoints pickle classes by their pre-move module paths
    from ultralytics.nn import tasks

    ck = tasks.torch_safe_load(str(path))[0]
    model = ck.get("ema") or ck["model"]
    return {k: v.float() for k, v in model.state_dict().items()}, dict(model.names)


def _matches(src: dict, model_state: dict) -> int:
    """Tensors of ``model_state`` that ``src`` has under the same name with the same shape."""
    return sum(k in src and src[k].shape == v.shape for k, v in model_state.items())


def _fresh(cfg, nc: int):
    from components.models.detect import DefectDetectionModel

    return DefectDetectionModel(cfg, nc=nc, verbose=False)


def _tiny_data(root: Path) -> Path:
    from components.data.canonical import load_manifest
    from components.data.split import SplitSpec, make_split
    from components.data.synth import SynthConfig, write_synth_dataset
    from components.data.views import write_yolo_data_yaml

    write_synth_dataset(SynthConfig(seed=0, images=24, size=64, min_defects=1, max_defects=2, contrast=(0.5, 0.9),
                                    leather_fraction=0.3, jpeg_quality=95, bold=True, clean_fraction=0.0),
                        root, "synth")
    m = load_manifest(root / "synth")
    assert m["classes"] == SYNTH
    return write_yolo_data_yaml(root / "synth", make_split(m["images"], m["classes"], SplitSpec(0.25, 0.25, 0, 0)),
                                root / "view")


TINY = {"epochs": 1, "imgsz": 64, "batch": 8, "workers": 0, "deterministic": True, "mosaic": 0.0, "amp": False,
        "val": True}


@pytest.mark.slow
def test_a_synthetic_training_starts_from_a_neu_det_checkpoint(tmp_path, monkeypatch):
    import torch
    from ultralytics.utils.callbacks import base

    from components.train import TrainRequest, train_detector
    from components.transfer import plan_init

    src, src_names = _source(BASE)
    assert set(src_names.values()) != set(SYNTH)               # other classes: two names shared, four not
    seen = {}

    def before_training(trainer):                              # the model as the first epoch gets it
        seen["state"] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        seen["transferred"] = trainer.transferred

    monkeypatch.setitem(base.default_callbacks, "on_pretrain_routine_end",
                        [*base.default_callbacks["on_pretrain_routine_end"], before_training])
    data_yaml = _tiny_data(tmp_path)
    res = train_detector(TrainRequest("yolo11n.yaml", data_yaml, tmp_path / "run", TINY, "cpu", 0, "ciou",
                                      init_weights=str(BASE), threads=1))
    assert res.epochs_run == 1 and res.best.is_file()

    expected = _matches(src, _fresh("yolo11n.yaml", len(SYNTH)).state_dict())
    assert expected == len(seen["state"])                      # same architecture: every tensor has its match
    assert res.init == seen["transferred"]
    assert (res.init.tensors, res.init.total) == (expected, len(seen["state"]))
    assert res.init.source == str(BASE)
    # the dry run the train flow makes before training counts the same
    assert plan_init(BASE, "yolo11n.yaml", SYNTH)[1].tensors == res.init.tensors

    state = seen["state"]
    for k in ("model.0.conv.weight", "model.9.cv2.conv.weight", "model.23.cv2.0.0.bn.running_mean"):
        assert torch.equal(state[k], src[k]), k                # transferred as they were, before any step
    # the class-logit rows: a class the source knew by name starts from its row, the others fresh
    cls = "model.23.cv3.0.2.weight"
    by_name = {v: k for k, v in src_names.items()}
    assert torch.equal(state[cls][SYNTH.index("crazing")], src[cls][by_name["crazing"]])
    assert torch.equal(state[cls][SYNTH.index("inclusion")], src[cls][by_name["inclusion"]])
    assert not any(torch.equal(state[cls][SYNTH.index("scratch")], row) for row in src[cls])
    assert res.init.partial == 6                               # cv3.{0,1,2}.2.{weight,bias}: rows by name

    # the weights moved on from there in the epoch: it trained
    trained = torch.load(res.last, map_location="cpu", weights_only=False)["model"].float().state_dict()
    assert not torch.equal(trained["model.0.conv.weight"], src["model.0.conv.weight"])


def test_other_classes_leave_the_class_tensors_fresh():
    """A model with another class count: the head's class-dependent tensors do not match in shape
    and keep their fresh values; everything else comes over."""
    import torch

    from components.transfer import load_weights, transfer

    src, _ = _source(BASE)
    model = _fresh("yolo11n.yaml", 3)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    t = transfer(model, load_weights(BASE), str(BASE))
    expected = _matches(src, fresh)
    assert t.tensors == expected == t.total - 6 and t.partial == 0
    after = model.state_dict()
    for k, v in after.items():
        if k in src and src[k].shape == v.shape:
            assert torch.equal(v, src[k]), k
        else:
            assert k.startswith("model.23.cv3.") and torch.equal(v, fresh[k]), k


def test_a_plain_state_dict_and_a_lagnet_checkpoint(tmp_path):
    """A plain state dict on disk (as torchvision's weights files are) transfers what matches; so does
    a checkpoint of another detector (LAGNet-s, 6 input channels) into its own architecture."""
    import torch

    from components.transfer import load_weights, plan_init, transfer

    src, _ = _source(BASE)
    sd = tmp_path / "yolo11n-neu.pth"
    torch.save(src, sd)
    _, t = plan_init(sd, "yolo11n.yaml", ["a", "b", "c"])
    assert t.tensors == _matches(src, _fresh("yolo11n.yaml", 3).state_dict()) and t.source == str(sd)
    assert isinstance(load_weights(sd), dict)

    lag, _ = _source(LAGNET)
    w = load_weights(LAGNET)
    model = _fresh(dict(w.yaml), 2)
    expected = _matches(lag, model.state_dict())
    t = transfer(model, w, str(LAGNET))
    assert t.tensors == expected and 0 < expected < t.total
    assert torch.equal(model.state_dict()["model.0.branches.1.0.0.0.weight"], lag["model.0.branches.1.0.0.0.weight"])


def test_bad_inits_are_one_line_errors(tmp_path):
    import torch

    from components.transfer import InitError, load_weights, plan_init, resolve_init, transfer

    with pytest.raises(InitError, match=r"init 'nope/missing.pt': no such file$"):
        resolve_init("nope/missing.pt")
    text = tmp_path / "notes.pt"
    text.write_text("not weights\n")
    with pytest.raises(InitError, match="not a PyTorch weights file"):
        load_weights(text)
    other = tmp_path / "other.pt"
    torch.save({"epoch": 3, "note": "no tensors"}, other)
    with pytest.raises(InitError, match="holds neither a model nor a state dict"):
        load_weights(other)
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"encoder.weight": torch.ones(4, 4)}, unrelated)
    with pytest.raises(InitError, match=r"no tensor matches the model by name and shape .*'encoder.weight'"):
        plan_init(unrelated, "yolo11n.yaml", SYNTH)
    model = _fresh("yolo11n.yaml", 6)                          # a failed transfer leaves the model as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InitError):
        transfer(model, load_weights(unrelated), "unrelated")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(InitError, match="expected models:/<name>@<alias> or models:/<name>/<version>"):
        resolve_init("models:/defect-detector")
    assert issubclass(InitError, ValueError)                   # the CLI prints a ValueError as one line


def test_a_bad_init_stops_the_training_before_its_first_epoch(tmp_path):
    from components.train import TrainRequest, train_detector
    from components.transfer import InitError

    data_yaml = _tiny_data(tmp_path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(InitError, match="not a PyTorch weights file"):
        train_detector(TrainRequest("yolo11n.yaml", data_yaml, tmp_path / "run", TINY, "cpu", 0, "ciou",
                                    init_weights=str(bad)))
    assert not (tmp_path / "run" / "results.csv").exists()


def _register(uri: str, train_weights: Path | None, alias: str | None) -> str:
    """A registered version as the promotion makes one: its own run (the promotion's) holds no
    ``.pt``; its ``train_run_id`` tag names the training run that logged ``weights/best.pt``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("defectops") or client.get_experiment(client.create_experiment("defectops"))
    exp_id = exp.experiment_id
    train = client.create_run(exp_id).info.run_id
    if train_weights is not None:
        client.log_artifact(train, str(train_weights), "weights")
    promo = client.create_run(exp_id).info.run_id
    if not client.search_registered_models("name='defect-detector'"):
        client.create_registered_model("defect-detector")
    mv = client.create_model_version("defect-detector", f"runs:/{promo}/model", run_id=promo,
                                     tags={"train_run_id": train})
    if alias:
        client.set_registered_model_alias("defect-detector", alias, mv.version)
    return train


def test_init_from_a_registered_version(tracking, tmp_path):
    import shutil

    from components.transfer import InitError, plan_init, resolve_init

    uri = tracking["uri"]
    best = tmp_path / "logged" / "best.pt"
    best.parent.mkdir()
    shutil.copyfile(BASE, best)
    with pytest.raises(InitError, match="the registry has no alias 'champion' of model 'defect-detector'"):
        resolve_init("models:/defect-detector@champion", uri, tmp_path / "dl")
    train_run = _register(uri, best, "champion")
    src = resolve_init("models:/defect-detector@champion", uri, tmp_path / "dl")
    assert (src.version, src.run_id) == ("1", train_run)
    assert src.path.read_bytes() == BASE.read_bytes()
    assert src.where() == f"models:/defect-detector@champion (version 1, run {train_run})"
    _, t = plan_init("models:/defect-detector/1", "yolo11n.yaml", SYNTH, tracking_uri=uri, dst=tmp_path / "dl2")
    assert t.tensors == t.total == _matches(_source(BASE)[0], _fresh("yolo11n.yaml", 6).state_dict())
    assert t.tags()["init"] == f"models:/defect-detector/1 (version 1, run {train_run})"
    assert t.tags()["init.sha256"] == src.sha256

    _register(uri, None, "bare")                                # a version whose runs keep no weights
    with pytest.raises(InitError, match=r"version 2 keeps no PyTorch weights \(\.pt\) in its runs"):
        resolve_init("models:/defect-detector@bare", uri, tmp_path / "dl3")
    with pytest.raises(InitError, match="the registry has no version 7 of model 'defect-detector'"):
        resolve_init("models:/defect-detector/7", uri, tmp_path / "dl4")


def test_train_init_in_params_and_per_detector():
    """``train.init`` is one value for every detector or a ``{detector: init}`` mapping; it never
    reaches ultralytics' arguments; a mapping key that names no detector is an error."""
    from conftest import settings

    from components.settings import ConfigError, trainer_args
    from components.transfer import InitError, init_for

    assert settings().train.init is None
    shared = settings({"train.init": str(BASE)})
    assert "init" not in trainer_args(shared)[0]
    assert shared.plain()["train"]["init"] == str(BASE)                 # logged with the run's params
    assert init_for(shared.train.init, "lagnet", ["baseline", "lagnet"]) == str(BASE)
    own = settings({"train.init": {"lagnet": "mobilenet_v3_small.pth"}}).train.init
    assert init_for(own, "lagnet", ["baseline", "lagnet"]) == "mobilenet_v3_small.pth"
    assert init_for(own, "baseline", ["baseline", "lagnet"]) is None     # not listed: from scratch
    with pytest.raises(InitError, match=r"train.init: lagnett is no detector \(known: baseline, lagnet\)"):
        init_for({"lagnett": "x.pt"}, "baseline", ["baseline", "lagnet"])
    with pytest.raises(ConfigError, match="train.init"):
        settings({"train.init": 3})


def test_the_train_flow_tries_the_init_before_training(tmp_path):
    """The train flow's start-weights step: ``train.init`` is resolved and transferred into the model
    as a dry run, so a bad one stops the stage before its training, and the count is what it logs."""
    from conftest import settings

    from components.transfer import InitError
    from pipelines.train import warm_start

    path, what = warm_start("baseline", settings({"train.init": str(BASE)}), "yolo11n.yaml", SYNTH, 3, tmp_path)
    assert path == str(BASE)
    assert what.startswith(f"init: transferred 499/499 tensors, 6 in part from {BASE}; 0 start fresh (sha256 ")
    with pytest.raises(InitError, match="no such file"):
        warm_start("baseline", settings({"train.init": str(tmp_path / "gone.pt")}), "yolo11n.yaml", SYNTH, 3, tmp_path)
    assert warm_start("dasc", settings({"train.init": {"baseline": str(BASE)}, "retrain.warm_start": False}),
                      "yolo11n.yaml", SYNTH, 3, tmp_path) == (None, "retrain.warm_start is off")
