"""S3 for real, on loopback: the DVC remote and the MLflow server's artifact store on an
S3-compatible server (moto's server mode on 127.0.0.1, ``tests/s3server.py``), as they run on MinIO
with ``infra/docker-compose.yml`` (infra/README.md, *S3 / MinIO*).

* DVC: a small git + DVC repository (a ``dvc add``-ed folder and a two-stage pipeline) pushed to
  the remote ``s3://BUCKET/dvc`` (``dvc-s3``, ``endpointurl``); a fresh ``git clone`` pulls
  everything from the bucket and then neither ``dvc status`` nor ``dvc repro`` finds anything to do.
* MLflow: ``mlflow server --artifacts-destination s3://BUCKET/mlflow`` (artifacts proxied through
  the server, as in the compose file), the project's own ``registry.log_detector_model`` / ``register`` /
  ``set_alias`` register a tiny real detector as ``defect-detector@champion``; its ONNX file is in the
  bucket; ``defectops predict --model models:/defect-detector@champion``, run from another folder with
  only ``MLFLOW_TRACKING_URI`` (no S3 credentials), downloads it through the server and runs it. The
  same with ``--default-artifact-root s3://BUCKET/mlflow-direct --no-serve-artifacts`` (clients write
  and read the bucket themselves through MLflow's boto3 artifact repository, ``MLFLOW_S3_ENDPOINT_URL``).

The credentials are dummies set for these tests only (the environment of the test and of the
processes it starts); nothing is written to a committed file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from conftest import isolate_mlflow, make_image, tiny_detector
from headless import free_port, stop_group, wait_http
from s3server import DUMMY_SECRET, S3, moto_s3, subprocess_env

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PARAMS = str(REPO / "params.yaml")
MODEL = "defect-detector"


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[S3]:
    pytest.importorskip("moto.server", reason="moto[server] not installed (requirements.lock has it)")
    pytest.importorskip("boto3")
    with moto_s3(tmp_path_factory.mktemp("moto")) as server:
        yield server


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 300) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p.stdout + p.stderr


# ---- DVC remote on S3

MAKE = """import json, pathlib, yaml
p = yaml.safe_load(open("params.yaml"))["make"]
raw = sorted(pathlib.Path("raw").iterdir())
out = pathlib.Path("out/data"); out.mkdir(parents=True, exist_ok=True)
for i in range(p["parts"]):
    (out / f"part{i}.txt").write_text(f"{p['prefix']} {i}: " + ",".join(f.name for f in raw) + "\\n")
"""
COUNT = """import json, pathlib
parts = sorted(pathlib.Path("out/data").iterdir())
pathlib.Path("out/summary.txt").write_text("".join(f.read_text() for f in parts))
pathlib.Path("metrics.json").write_text(json.dumps({"parts": len(parts)}))
"""
DVC_YAML = """stages:
  make:
    cmd: python make.py
    deps: [make.py, raw]
    params: [make]
    outs: [out/data]
  count:
    cmd: python count.py
    deps: [count.py, out/data]
    outs: [out/summary.txt]
    metrics:
      - metrics.json:
          cache: false
"""


def _cache_objects(repo: Path) -> set[str]:
    """The DVC cache's objects as remote keys relative to the remote's root (``files/md5/ab/cdef...``)."""
    cache = repo / ".dvc" / "cache"
    return {f.relative_to(cache).as_posix() for f in cache.rglob("*") if f.is_file() and "files" in f.parts}


def _tree(root: Path, *paths: str) -> dict[str, bytes]:
    return {f.relative_to(root).as_posix(): f.read_bytes()
            for p in paths for f in sorted([root / p] if (root / p).is_file() else (root / p).rglob("*"))
            if f.is_file()}


def test_dvc_push_to_s3_then_a_fresh_clone_pulls_and_reproduces_nothing(s3, tmp_path):
    env = subprocess_env(s3, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
                         DVC_GLOBAL_CONFIG_DIR=str(tmp_path / "dvc-global"),     # no user/system DVC config
                         DVC_SYSTEM_CONFIG_DIR=str(tmp_path / "dvc-system"),
                         GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
                         GIT_COMMITTER_EMAIL="t@t")
    origin = tmp_path / "origin"
    origin.mkdir()
    (origin / "params.yaml").write_text("make:\n  parts: 3\n  prefix: part\n")
    (origin / "make.py").write_text(MAKE)
    (origin / "count.py").write_text(COUNT)
    (origin / "dvc.yaml").write_text(DVC_YAML)
    rng = np.random.default_rng(0)
    (origin / "raw").mkdir()                             # a dataset folder, versioned with `dvc add`
    for i in range(3):
        (origin / "raw" / f"sample{i}.bin").write_bytes(rng.bytes(50_000 + i))
    run(["git", "init", "-q"], origin, env)
    run(["dvc", "init", "-q"], origin, env)
    run(["dvc", "add", "raw"], origin, env)
    out = run(["dvc", "repro"], origin, env)
    assert "Running stage 'make'" in out and "Running stage 'count'" in out
    # the remote as infra/README.md sets it up; the credentials stay in the environment
    run(["dvc", "remote", "add", "-d", "storage", f"s3://{s3.bucket}/dvc"], origin, env)
    run(["dvc", "remote", "modify", "storage", "endpointurl", s3.endpoint], origin, env)
    config = (origin / ".dvc" / "config").read_text()
    assert f"s3://{s3.bucket}/dvc" in config and s3.endpoint in config and DUMMY_SECRET not in config
    run(["git", "add", "-A"], origin, env)
    run(["git", "commit", "-qm", "pipeline + S3 remote"], origin, env)

    out = run(["dvc", "push"], origin, env)
    # every object of the cached outputs (3 samples, 3 parts, the summary, 2 folder listings); the
    # run cache's copy of metrics.json (cache: false, in git) stays local
    metrics = hashlib.md5((origin / "metrics.json").read_bytes()).hexdigest()
    objects = _cache_objects(origin) - {f"files/md5/{metrics[:2]}/{metrics[2:]}"}
    assert len(objects) == 9 and f"{len(objects)} files pushed" in out, out
    remote = s3.keys("dvc/")
    assert {k.removeprefix("dvc/") for k in remote} == objects
    assert sum(remote.values()) > 150_000                             # the raw samples themselves
    assert "in sync" in run(["dvc", "status", "--cloud"], origin, env)

    # a fresh clone: git has the metafiles, the bucket the data
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    paths = ("raw", "out/data", "out/summary.txt")
    assert not any((clone / p).exists() for p in (*paths, ".dvc/cache"))
    out = run(["dvc", "pull"], clone, env)
    assert "fetched" in out, out
    paths += ("metrics.json",)                                        # (from git)
    assert _tree(clone, *paths) == _tree(origin, *paths)
    assert _cache_objects(clone) == objects                        # all of it from the bucket
    out = run(["dvc", "status"], clone, env)
    assert "Data and pipelines are up to date." in out, out
    out = run(["dvc", "repro"], clone, env)
    assert "Running stage" not in out and "Data and pipelines are up to date." in out, out
    assert "didn't change, skipping" in out


# ---- MLflow server with its artifacts on S3

@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """A real (untrained) YOLO11n detector exported to ONNX at 64 px, every image gets boxes
    (``conftest.tiny_detector``)."""
    return tiny_detector(tmp_path_factory.mktemp("detector"))


@contextmanager
def mlflow_server(tmp: Path, s3: S3, *artifact_args: str) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 (a free port), a SQLite store in ``tmp``, S3 for the artifacts
    (``MLFLOW_S3_ENDPOINT_URL`` and the credentials in its environment); its process group is
    stopped on exit."""
    port = free_port()
    env = subprocess_env(s3, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true",
                         DO_NOT_TRACK="true")
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(k, None)
    log = tmp / "mlflow-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                 f"sqlite:///{tmp}/mlflow.db", *artifact_args, "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"],
                                cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc, timeout=180, log=log)
        yield url
    finally:
        stop_group(proc)


def register_champion(url: str, detector: Path, mp: pytest.MonkeyPatch) -> tuple[str, str]:
    """What the promote stage does, with the project's functions: a run, the ONNX model logged in
    it, a new registered version, ``champion`` on it. Returns (version, the run's artifact URI)."""
    from mlflow.tracking import MlflowClient

    from components.deploy.registry import CHAMPION, alias_version, log_detector_model, register, set_alias
    from components.tracking import start_stage_run

    tracking = isolate_mlflow(mp, url)
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    run = start_stage_run("promote", tracking, {}, {"model": "baseline"})
    model_uri = log_detector_model(url, run.run_id, detector)
    version = register(url, model_uri, MODEL, {"model": "baseline", "imgsz": 64}, "tiny untrained YOLO11n")
    set_alias(url, MODEL, CHAMPION, version)
    run.end()
    assert str(alias_version(url, MODEL, CHAMPION).version) == version
    return version, MlflowClient(url).get_run(run.run_id).info.artifact_uri


def predict_champion(url: str, cwd: Path, env: dict) -> tuple[str, dict]:
    """``defectops predict --model models:/defect-detector@champion`` as a user runs it, from
    ``cwd`` (not the repository), with ``MLFLOW_TRACKING_URI`` pointing at ``url``."""
    img = cwd / "images" / "part.jpg"
    make_image(img, seed=7, size=(96, 80))
    env = {**env, "MLFLOW_TRACKING_URI": url, "MLFLOW_DISABLE_TELEMETRY": "true",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    out = run(["defectops", "--params", PARAMS, "predict", "--model", f"models:/{MODEL}@champion", str(img),
               "--out", "pred"], cwd, env)
    return out, json.loads((cwd / "pred" / "detections.json").read_text())


def check_served(out: str, result: dict, cwd: Path, onnx_key: bytes) -> None:
    """The CLI ran the champion it downloaded into ``cwd/.cache/models`` (the bucket's bytes) on the image."""
    assert f"models:/{MODEL}@champion (model.onnx, ONNX Runtime CPUExecutionProvider): 1 image(s)" in out, out
    downloaded = sorted((cwd / ".cache" / "models").rglob("*.onnx"))
    assert len(downloaded) == 1 and hashlib.sha256(downloaded[0].read_bytes()).hexdigest() == onnx_key
    assert Path(result["model"]).resolve() == downloaded[0].resolve() and result["failed"] == 0
    (rec,) = result["images"]
    assert (cwd / rec["annotated"]).is_file() and rec["detections"], rec   # boxes, in the image's pixels
    for d in rec["detections"]:
        x1, y1, x2, y2 = d["box_xyxy"]
        assert d["class"] in ("scratch", "hole") and 0 < d["confidence"] <= 1
        assert 0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 80                  # the 96 x 80 image


def onnx_in_bucket(s3: S3, prefix: str) -> tuple[str, str]:
    """The one ``.onnx`` object under ``prefix``: (key, sha256 of its bytes)."""
    onnx = [k for k in s3.keys(prefix) if k.endswith(".onnx")]
    assert len(onnx) == 1, onnx
    return onnx[0], hashlib.sha256(s3.read(onnx[0])).hexdigest()


def test_mlflow_server_keeps_the_champion_in_s3_and_predict_serves_it(s3, detector, tmp_path, monkeypatch):
    """The compose setup: ``--artifacts-destination s3://...``, artifacts through the server. The
    client side needs only ``MLFLOW_TRACKING_URI``: no S3 credentials, no S3 endpoint."""
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    with mlflow_server(server_dir, s3, "--serve-artifacts", "--artifacts-destination",
                       f"s3://{s3.bucket}/mlflow") as url:
        for k in [k for k in os.environ if k.startswith("AWS_")] + ["MLFLOW_S3_ENDPOINT_URL"]:
            monkeypatch.delenv(k, raising=False)          # this process is a client without S3 access
        version, artifact_uri = register_champion(url, detector, monkeypatch)
        assert version == "1" and artifact_uri.startswith("mlflow-artifacts:/")
        key, digest = onnx_in_bucket(s3, "mlflow/")
        assert key.endswith("/model.onnx") and os.path.getsize(detector) > 1_000_000
        assert not (server_dir / "mlartifacts").exists()             # nothing kept on the server's disk
        cwd = tmp_path / "elsewhere"
        cwd.mkdir()
        env = {k: v for k, v in subprocess_env(s3).items()
               if not k.startswith("AWS_") and k != "MLFLOW_S3_ENDPOINT_URL"}
        out, result = predict_champion(url, cwd, env)                  # and so is the CLI
        check_served(out, result, cwd, digest)


def test_mlflow_clients_read_and_write_s3_artifacts_directly(s3, detector, tmp_path, monkeypatch):
    """``--default-artifact-root s3://... --no-serve-artifacts``: the server stores only the
    metadata; the clients (this process logging, the CLI downloading) use MLflow's boto3 artifact
    repository with ``MLFLOW_S3_ENDPOINT_URL`` and the credentials."""
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    with mlflow_server(server_dir, s3, "--no-serve-artifacts", "--default-artifact-root",
                       f"s3://{s3.bucket}/mlflow-direct") as url:
        for k, v in s3.env.items():
            monkeypatch.setenv(k, v)
        version, artifact_uri = register_champion(url, detector, monkeypatch)
        assert artifact_uri.startswith(f"s3://{s3.bucket}/mlflow-direct/")
        key, digest = onnx_in_bucket(s3, "mlflow-direct/")
        cwd = tmp_path / "elsewhere"
        cwd.mkdir()
        out, result = predict_champion(url, cwd, subprocess_env(s3))
        check_served(out, result, cwd, digest)
