"""End to end on loopback, with real servers: a ``prefect server`` on PostgreSQL, a ``mlflow server``
(PostgreSQL backend, local artifact store), the work pools and every deployment of
``infra/prefect.yaml`` (``defectops deploy``), and a process worker. The ``retrain`` deployment
runs through the worker on the tiny profile: a dropped batch (some samples corrupt) -> new dataset
version -> baseline -> LAM -> tune (2 trials per detector) -> DASC-YOLO, LAGNet -> promote; then
``defectops predict`` serves ``models:/defect-detector@champion`` from the tracking server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from test_pipeline import _drop_batch, make_project

BIN = Path(sys.executable).parent
PG = "postgresql://postgres@127.0.0.1:5432/test"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def databases():
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        conn = psycopg2.connect(PG)
    except psycopg2.OperationalError as e:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {e}")
    conn.autocommit = True
    names = {k: f"{k}_{uuid.uuid4().hex[:8]}" for k in ("prefect", "mlflow")}
    with conn.cursor() as cur:
        for n in names.values():
            cur.execute(f"CREATE DATABASE {n}")
    yield names
    with conn.cursor() as cur:
        for n in names.values():
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (n,))
            cur.execute(f"DROP DATABASE IF EXISTS {n}")
    conn.close()


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    t = time.time()
    while time.time() - t < timeout:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:3]} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    pytest.fail(f"{url} not up after {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory, databases):
    tmp = tmp_path_factory.mktemp("servers")
    pp, mp = _port(), _port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PREFECT_HOME": str(tmp / "prefect"),
           "PREFECT_API_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{databases['prefect']}",
           "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    logs = {k: tmp / f"{k}.log" for k in ("prefect", "mlflow")}
    procs = {
        "prefect": subprocess.Popen(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(pp)], env=env,
                                    stdout=logs["prefect"].open("w"), stderr=subprocess.STDOUT),
        "mlflow": subprocess.Popen(["mlflow", "server", "--host", "127.0.0.1", "--port", str(mp), "--workers", "1",
                                    "--backend-store-uri",
                                    f"postgresql+psycopg2://postgres@127.0.0.1:5432/{databases['mlflow']}",
                                    "--artifacts-destination", str(tmp / "artifacts")], env=env,
                                   stdout=logs["mlflow"].open("w"), stderr=subprocess.STDOUT),
    }
    try:
        _wait(f"http://127.0.0.1:{pp}/api/health", procs["prefect"], logs["prefect"])
        _wait(f"http://127.0.0.1:{mp}/health", procs["mlflow"], logs["mlflow"])
        yield {"prefect": f"http://127.0.0.1:{pp}/api", "mlflow": f"http://127.0.0.1:{mp}", "logs": logs}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def project(tmp_path_factory, servers):
    return make_project(tmp_path_factory.mktemp("deploy") / "defectops",
                        {"PREFECT_API_URL": servers["prefect"], "MLFLOW_TRACKING_URI": servers["mlflow"]})


def _run(project, *cmd: str) -> str:
    root, env = project
    p = subprocess.run(list(cmd), cwd=root, env=env, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.mark.slow
@pytest.mark.nightly     # make test-nightly: minutes of training or servers
def test_retrain_deployment_runs_through_a_worker_and_serves_the_champion(project, servers):
    from mlflow.tracking import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root, env = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    out = _run(project, "defectops", "deploy")
    assert "retrain schedule: 0 3 * * *" in out
    with temporary_settings({PREFECT_API_URL: servers["prefect"]}), get_client(sync_client=True) as c:
        deps = {d.name: d for d in c.read_deployments()}
        assert {"retrain", "repro", "data", "split", "train", "lam", "tune", "evaluate", "export", "promote",
                "ablate-dasc", "ablate-lagnet", "monitor"} <= set(deps)
        sched = deps["retrain"].schedules[0].schedule
        assert deps["monitor"].schedules[0].schedule.cron == params["monitor"]["schedule"]
        assert sched.cron == params["retrain"]["schedule"] and sched.timezone == params["retrain"]["timezone"]
        assert deps["retrain"].work_pool_name == "gpu" and deps["promote"].work_pool_name == "cpu"
        assert {p.name for p in c.read_work_pools()} >= {"cpu", "gpu"}

        dropped = _drop_batch(root)
        run = c.create_flow_run_from_deployment(deps["retrain"].id)
        wlog = root.parent / "worker.log"
        worker = subprocess.Popen(["prefect", "worker", "start", "--pool", "gpu", "--type", "process", "--limit", "1"],
                                  cwd=root.parent, env=env, stdout=wlog.open("w"), stderr=subprocess.STDOUT)
        try:
            t = time.time()
            while time.time() - t < 1800:
                state = c.read_flow_run(run.id).state
                if state is not None and state.is_final():
                    break
                time.sleep(5)
        finally:
            worker.terminate()
            worker.wait(60)
        assert state.is_completed(), f"{state}\n{wlog.read_text()[-6000:]}"

    # the batch: a new DVC-tracked dataset version with its quarantine report; the inbox archived
    (batch,) = [d.name for d in (root / "data" / "raw" / "increments").iterdir() if d.is_dir()]
    summary = json.loads((root / "data" / "datasets" / "synth" / "summary.json").read_text())
    assert summary["images"] == 48 + 5 and summary["increments"] == {batch: 5}
    q = json.loads((root / "data" / "raw" / "increments" / batch / "quarantine.json").read_text())
    assert len(q) == 3
    assert not [p for p in (root / "data" / "inbox").rglob("*") if p.is_file()]
    archived = root / "data" / "inbox-archive" / batch / "files"
    assert {p.relative_to(archived).as_posix() for p in archived.rglob("*") if p.is_file()} == set(dropped)
    log = subprocess.run(["git", "log", "--format=%s"], cwd=root, capture_output=True, text=True).stdout
    assert f"data: add inbox batch(es) {batch}" in log and "retrain: " in log

    # the registry on the tracking server: version 1, champion, tagged with the new dataset version
    client = MlflowClient(tracking_uri=servers["mlflow"], registry_uri=servers["mlflow"])
    versions = client.search_model_versions("name='defect-detector'")
    assert [str(v.version) for v in versions] == ["1"]
    assert {k: str(v) for k, v in client.get_registered_model("defect-detector").aliases.items()} == {"champion": "1"}
    assert versions[0].tags["dataset_hash"] == summary["content_hash"]
    exp = client.get_experiment_by_name("defectops")
    rs = client.search_runs([exp.experiment_id], max_results=500)
    names = [r.info.run_name for r in rs]
    for n in ("retrain", "train:baseline", "tune:dasc", "tune:lagnet", "train:dasc", "train:lagnet", "promote"):
        assert n in names
    tune = next(r for r in rs if r.info.run_name == "tune:dasc")
    assert sum(r.data.tags.get("mlflow.parentRunId") == tune.info.run_id for r in rs) == 2

    # serving: the champion from the tracking server finds boxes on a test image
    split = json.loads((root / "data" / "splits" / "synth.json").read_text())
    img = next((root / "data" / "datasets" / "synth" / "images").glob(f"{split['test'][0]}.*"))
    out = _run(project, "defectops", "predict", "--model", "models:/defect-detector@champion", str(img),
               "--conf", "0.001", "--out", "served")
    det = json.loads((root / "served" / "detections.json").read_text())
    assert len(det["images"]) == 1 and len(det["images"][0]["detections"]) > 0
    assert "ONNX Runtime" in out
