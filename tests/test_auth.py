"""Only who may promote can promote (issue 32 item 1): a real ``mlflow server --app-name basic-auth``
(MLflow's own basic-auth app; SQLite backend and its own auth database in a temporary folder, the
admin from a config file named by ``MLFLOW_AUTH_CONFIG_PATH``) on 127.0.0.1, its identities made by
``infra/create_identities.py``: the ``pipeline`` identity registers versions and moves the
``champion`` alias, a read-only user reads (and ``defectops predict`` downloads the champion with
it) but cannot move the alias, an anonymous client gets 401, and a wrong password is one
``error:`` line through ``defectops predict``. Started once for the module (about 40 s on CPU)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, make_image, tiny_detector
from headless import free_port, stop_group, wait_http

ADMIN = ("admin", "admin-password-for-tests")        # exists only in this test's temporary config file
PIPELINE = ("pipeline", "pipeline-password-for-tests")
READER = ("alice", "reader-password-for-tests")
MODEL = "defect-detector"


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_REGISTRY_", "DEFECTOPS_PIPELINE", "DEFECTOPS_READERS"))}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "OMP_NUM_THREADS": "1",
                "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra})
    return env


def _identities(url: str, admin=ADMIN) -> subprocess.CompletedProcess:
    env = _clean_env(MLFLOW_TRACKING_URI=url, MLFLOW_TRACKING_USERNAME=admin[0], MLFLOW_TRACKING_PASSWORD=admin[1],
                     DEFECTOPS_PIPELINE_PASSWORD=PIPELINE[1], DEFECTOPS_READERS=f"{READER[0]}:{READER[1]}")
    return subprocess.run([sys.executable, str(REPO / "infra" / "create_identities.py")], env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    config = tmp / "basic_auth.ini"
    config.write_text("[mlflow]\ndefault_permission = READ\n"
                      f"database_uri = sqlite:///{tmp}/basic_auth.db\n"
                      f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    port, log = free_port(), tmp / "mlflow.log"
    env = _clean_env(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_FLASK_SERVER_SECRET_KEY="secret-for-this-test-only")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                                 "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
                                 "--artifacts-destination", str(tmp / "artifacts")],
                                cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc, timeout=180, log=log)
        made = _identities(url)
        assert made.returncode == 0, made.stderr
        yield {"url": url, "tmp": tmp, "identities": made}
    finally:
        stop_group(proc)


def _http(url: str, path: str, user=None, body: dict | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    req = urllib.request.Request(url + path, json.dumps(body).encode() if body is not None else None, headers,
                                 method="POST" if body is not None else "GET")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def champion(server):
    """The pipeline identity registers the tiny end-to-end detector and gives it ``champion``,
    with the project's own registry functions (what the promote stage runs)."""
    from components.deploy.registry import CHAMPION, log_detector_model, register, set_alias
    from components.tracking import start_stage_run

    onnx = tiny_detector(server["tmp"] / "model", "nms.onnx", nms=True)
    url = server["url"]
    with pytest.MonkeyPatch.context() as mp:
        from conftest import isolate_mlflow

        tracking = isolate_mlflow(mp, url)
        mp.setenv("MLFLOW_TRACKING_USERNAME", PIPELINE[0])
        mp.setenv("MLFLOW_TRACKING_PASSWORD", PIPELINE[1])
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        run = start_stage_run("promote", tracking, {}, {"model": "baseline"})
        version = register(url, log_detector_model(url, run.run_id, onnx), MODEL, {"model": "baseline"})
        set_alias(url, MODEL, CHAMPION, version)
        run.end()
    return version


def test_the_identities_script_is_idempotent_and_refuses_in_one_line(server):
    out = server["identities"].stdout.splitlines()
    assert out[0].startswith("pipeline: created; EDIT on experiment 'defectops'") and "registered model 'defect-detector'" in out[0]
    assert out[1].startswith("alice: created; READ on experiment 'defectops'")
    again = _identities(server["url"])
    assert again.returncode == 0 and "pipeline: password set; EDIT" in again.stdout, again.stderr
    wrong = _identities(server["url"], admin=(ADMIN[0], "not-the-admin-password"))
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: the MLflow server at") and "401" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1 and "Traceback" not in wrong.stderr


def test_only_the_pipeline_identity_moves_the_champion(server, champion):
    url, alias = server["url"], "/api/2.0/mlflow/registered-models/alias"
    move = {"name": MODEL, "alias": "champion", "version": champion}
    assert _http(url, alias, None, move)[0] == 401                        # anonymous
    assert _http(url, alias, (READER[0], "wrong-password-for-alice"), move)[0] == 401
    assert _http(url, alias, READER, move)[0] == 403                      # read-only
    assert _http(url, "/api/2.0/mlflow/model-versions/create", READER,
                 {"name": MODEL, "source": f"models:/{MODEL}/{champion}"})[0] == 403
    assert _http(url, "/api/2.0/mlflow/registered-models/delete", PIPELINE, {"name": MODEL})[0] == 403   # EDIT, not MANAGE
    status, body = _http(url, f"/api/2.0/mlflow/registered-models/get?name={MODEL}", READER)
    assert status == 200 and json.loads(body)["registered_model"]["aliases"] == [{"alias": "champion", "version": champion}]
    assert _http(url, f"/api/2.0/mlflow/registered-models/get?name={MODEL}")[0] == 401
    assert _http(url, alias, PIPELINE, {**move, "alias": "challenger"})[0] == 200
    assert _http(url, alias, PIPELINE, move)[0] == 200


def _predict(server, tmp_path, user=None, password=None):
    make_image(tmp_path / "part.jpg", seed=1, size=(96, 80))
    extra = {"MLFLOW_TRACKING_URI": server["url"]}
    if user:
        extra["MLFLOW_TRACKING_USERNAME"] = user
    if password:
        extra["MLFLOW_TRACKING_PASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "defectops.cli", "--params", str(REPO / "params.yaml"), "predict",
                           "--model", f"models:/{MODEL}@champion", "part.jpg", "--out", "out"],
                          cwd=tmp_path, env=_clean_env(**extra), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("who", ["wrong password", "no credentials"])
def test_predict_refused_by_the_server_is_one_line_naming_the_variables(server, champion, tmp_path, who):
    p = _predict(server, tmp_path, *((READER[0], "wrong-password-for-alice") if who == "wrong password" else ()))
    assert p.returncode == 2, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the MLflow server at {server['url']} refused the "
                                                   f"credentials (401, "), p.stderr
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in lines[0]
    assert ("user 'alice': wrong password" in lines[0]) == (who == "wrong password")
    assert not (tmp_path / "out").exists()


def test_a_read_only_identity_downloads_the_champion_through_predict(server, champion, tmp_path):
    p = _predict(server, tmp_path, *READER)
    assert p.returncode == 0, p.stderr
    det = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert len(det["images"]) == 1 and "verdict" in det["images"][0]
