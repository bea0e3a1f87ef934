"""`defectops predict`: bad input files get an error entry and the rest are predicted (exit 3);
an unknown model file, registry, registered model, alias or version is one line (exit 2).

The model is a real (untrained) YOLO11n exported to ONNX at 64 px: seconds, no training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_image
from defectops.cli import main

REPO = Path(__file__).resolve().parents[1]
PARAMS = str(REPO / "params.yaml")
ALIAS_HINT = "run `dvc repro` (or `defectops promote`) first"


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from components.deploy.export import export_onnx

    d = tmp_path_factory.mktemp("model")
    model = DetectionModel("yolo11n.yaml", nc=2, verbose=False)
    model.names = {0: "scratch", 1: "hole"}
    torch.save({"model": model, "train_args": {}}, d / "w.pt")
    return export_onnx(d / "w.pt", d / "tiny.onnx", 64, 17, False)


def _cli(cwd: Path, *args: str, uri: str | None = None) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a fresh process, from another folder."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri} if uri else {**os.environ}
    if not uri:
        env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "defectops.cli", "--params", PARAMS, "predict", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_bad_files_get_an_error_entry_and_the_rest_is_predicted(tmp_path, tiny_onnx, capsys):
    imgs, out = tmp_path / "imgs", tmp_path / "out"
    make_image(imgs / "good.jpg", seed=0)
    (imgs / "broken.jpg").write_bytes(make_image(tmp_path / "whole.jpg", seed=1)[:40])   # truncated JPEG
    (imgs / "notes.txt").write_text("not an image\n")
    (imgs / ".hidden.jpg").write_bytes(b"")                                               # hidden: skipped
    out.mkdir()
    (out / "detections.json").write_text('{"old": true}')
    # the folder (its images; notes.txt beside them is not an image of the folder) and, named
    # explicitly, the text file: a named file is always predicted or reported
    rc = main(["--params", PARAMS, "predict", "--model", str(tiny_onnx), str(imgs), str(imgs / "notes.txt"),
               "--out", str(out), "--conf", "0.001"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "error: 2 of 3 file(s) failed" in err and "Traceback" not in err
    res = json.loads((out / "detections.json").read_text())
    by_name = {Path(r["image"]).name: r for r in res["images"]}
    assert sorted(by_name) == ["broken.jpg", "good.jpg", "notes.txt"] and res["failed"] == 2
    assert "corrupt or truncated jpg" in by_name["broken.jpg"]["error"]
    assert "not an image" in by_name["notes.txt"]["error"]
    assert all("\n" not in r["error"] and "detections" not in r for r in (by_name["broken.jpg"], by_name["notes.txt"]))
    good = by_name["good.jpg"]
    assert "error" not in good and isinstance(good["detections"], list)
    assert Path(good["annotated"]).is_file() and sorted(p.name for p in (out / "annotated").iterdir()) == ["good.jpg"]
    assert not [p for p in out.rglob("*.part")]                                          # nothing half-written


def test_all_good_exits_0(tmp_path, tiny_onnx, capsys):
    make_image(tmp_path / "a" / "x.jpg", seed=2)
    make_image(tmp_path / "b" / "x.png", seed=3)
    rc = main(["--params", PARAMS, "predict", "--model", str(tiny_onnx), str(tmp_path / "a"), str(tmp_path / "b"),
               "--out", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert res["failed"] == 0 and len(res["images"]) == 2
    assert sorted(Path(r["annotated"]).name for r in res["images"]) == ["x-1.jpg", "x.jpg"]   # no overwrite


@pytest.mark.parametrize("model, expect", [
    ("missing.onnx", "error: no model file missing.onnx: give a .onnx file"),
    ("params.yaml", "error: params.yaml: not an .onnx file"),
    ("garbage.onnx", "error: cannot load garbage.onnx as an ONNX detector"),
])
def test_a_bad_model_file_is_one_line(tmp_path, model, expect, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("x: 1\n")
    (tmp_path / "garbage.onnx").write_bytes(b"\x00not a model")
    make_image(tmp_path / "a.jpg", seed=0)
    rc = main(["--params", PARAMS, "predict", "--model", model, "a.jpg", "--out", "out"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(expect) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "detections.json").exists()


def _registry(tmp_path: Path, versions: int = 0) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    c.create_registered_model("defect-detector")
    for _ in range(versions):
        c.create_model_version("defect-detector", source=str(tmp_path / "nowhere"))
    return uri


def test_unknown_alias_on_a_fresh_registry_is_one_line_exit_2(tmp_path):
    uri = _registry(tmp_path)
    make_image(tmp_path / "a.jpg", seed=0)
    p = _cli(tmp_path, "--model", "models:/defect-detector@champion", "a.jpg", uri=uri)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.strip() == (f"error: no model 'defect-detector' with alias 'champion' in the registry at {uri}: "
                                f"{ALIAS_HINT}")
    assert not (tmp_path / "predictions").exists()


def test_no_registry_at_all_is_one_line_exit_2(tmp_path):
    """A fresh clone: params' sqlite:///mlflow.db does not exist yet (and is not created)."""
    make_image(tmp_path / "a.jpg", seed=0)
    p = _cli(tmp_path, "--model", "models:/defect-detector@champion", "a.jpg")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip() == f"error: no MLflow registry at sqlite:///mlflow.db (mlflow.db does not exist): {ALIAS_HINT}"
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("model, expect", [
    ("models:/defect-detector/7", "error: no version 7 of model 'defect-detector' in the registry at {uri} (latest is v2)"),
    ("models:/other@champion", "error: no registered model 'other' in the registry at {uri} (registered: "
                               "defect-detector): " + ALIAS_HINT),
])
def test_unknown_version_or_model_is_one_line(tmp_path, model, expect, capsys, monkeypatch):
    uri = _registry(tmp_path, versions=2)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    make_image(tmp_path / "a.jpg", seed=0)
    capsys.readouterr()                         # MLflow's own log lines while the test made the registry
    rc = main(["--params", PARAMS, "predict", "--model", model, str(tmp_path / "a.jpg"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(expect.format(uri=uri)) and len(err.strip().splitlines()) == 1, err


def test_unreachable_registry_is_one_line(tmp_path, capsys, monkeypatch):
    import socket

    with socket.socket() as s:                  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    make_image(tmp_path / "a.jpg", seed=0)
    rc = main(["--params", PARAMS, "predict", "--model", "models:/defect-detector@champion", str(tmp_path / "a.jpg")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: cannot reach the MLflow registry at http://127.0.0.1:{port} "
                                      "(Connection refused)"), err
