"""Issue 32 item 4, the small ones: a bad params file stops every command before any flow, server
or registry starts (one ``error:`` line naming the file given, in well under 2 s); ``predict`` /
``serve`` with a ``runs:/`` URI never create a SQLite registry; a ``predict`` interrupted mid-batch
leaves ``annotated/`` (and ``detections.json``) as the previous run left them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, make_image, snapshot, tiny_detector


def _cli(*args: str, cwd: Path, env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, **(env or {})}
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(k, None)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "defectops.cli", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=120)
    return p, time.perf_counter() - t


def _params(tmp: Path, name: str, edit) -> Path:
    text = (REPO / "params.yaml").read_text()
    f = tmp / name
    f.write_text(edit(text))
    return f


BAD = {
    "misspelt section": (lambda t: t + "\ntrian: {epochs: 3}\n", "other.yaml: unknown key 'trian'"),
    "bad loss.iou": (lambda t: t.replace("\nloss:\n  iou: ", "\nloss:\n  iou: foo # was ", 1),
                     "other.yaml: loss.iou must be one of"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("command", [["train", "baseline"], ["promote"], ["data", "split"],
                                     ["predict", "--model", "models:/defect-detector@champion", "x.jpg"],
                                     ["serve", "--model", "models:/defect-detector@champion"]])
def test_a_bad_params_file_stops_every_command_at_once(tmp_path, case, command):
    edit, expected = BAD[case]
    f = _params(tmp_path, "other.yaml", edit)
    assert f.read_text() != (REPO / "params.yaml").read_text()
    p, secs = _cli("--params", str(f.name), *command, cwd=tmp_path)
    assert p.returncode == 2, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {expected}"), p.stderr
    assert "EventsWorker" not in p.stderr + p.stdout and "Traceback" not in p.stderr
    assert secs < 2, f"{secs:.1f} s"
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".prefect").exists()


def test_a_missing_params_file_is_one_line(tmp_path):
    p, _ = _cli("--params", "nowhere.yaml", "report", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("error: params file not found:") and "nowhere.yaml" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("model", ["runs:/0123456789abcdef0123456789abcdef/model", "models:/defect-detector@champion",
                                   "models:/defect-detector/1"])
def test_predict_and_serve_never_create_a_registry(tmp_path, model):
    """On a fresh clone (no mlflow.db): one ``error:`` line, exit 2, and still no mlflow.db."""
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    make_image(tmp_path / "part.jpg", seed=0)
    for args in (["predict", "--model", model, "part.jpg"], ["serve", "--model", model, "--port", "1"]):
        p, secs = _cli(*args, cwd=tmp_path)
        assert p.returncode == 2, p
        assert p.stderr.startswith("error: no MLflow registry at sqlite:///mlflow.db"), p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from components.deploy.predict import Detector

    return Detector(tiny_detector(tmp_path_factory.mktemp("det"), "nms.onnx", nms=True))


def test_an_interrupted_predict_leaves_the_previous_outputs(detector, tmp_path):
    """``annotated/`` is written aside and swapped in as a whole: a run stopped after two of four
    images leaves the previous run's ``annotated/`` and ``detections.json`` byte for byte; the
    next complete run replaces ``annotated/`` with exactly its own images."""
    from components.deploy.predict import predict

    out = tmp_path / "out"
    first = [tmp_path / "a" / f"old{i}.jpg" for i in range(3)]
    second = [tmp_path / "b" / f"new{i}.jpg" for i in range(4)]
    for i, f in enumerate(first + second):
        make_image(f, seed=i, size=(80, 64))
    r = predict(detector, first, out, conf=0.25, iou=0.7)
    assert r["failed"] == 0 and sorted(p.name for p in (out / "annotated").iterdir()) == ["old0.jpg", "old1.jpg", "old2.jpg"]
    before = snapshot(out)

    done = []

    def killed_after_two(n):
        done.append(n)
        if len(done) == 2:
            raise KeyboardInterrupt                 # as Ctrl-C / a kill would stop it

    with pytest.raises(KeyboardInterrupt):
        predict(detector, second, out, conf=0.25, iou=0.7, progress=killed_after_two)
    assert snapshot(out) == before                  # no new image in annotated/, no half run, no temp folder

    (out / ".annotated.999999999.part").mkdir()     # what a kill -9 leaves: cleaned by the next run
    (out / ".annotated.999999999.part" / "new0.jpg").write_bytes(b"partial")
    r = predict(detector, second, out, conf=0.25, iou=0.7)
    assert sorted(p.name for p in out.iterdir()) == ["annotated", "detections.json"]
    assert sorted(p.name for p in (out / "annotated").iterdir()) == [f"new{i}.jpg" for i in range(4)]
    det = json.loads((out / "detections.json").read_text())
    assert [Path(i["annotated"]) for i in det["images"]] == [out / "annotated" / f"new{i}.jpg" for i in range(4)]
    assert all(Path(i["annotated"]).is_file() for i in det["images"])
