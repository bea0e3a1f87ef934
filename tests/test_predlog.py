"""The prediction log (components/monitor/predlog.py): records round-trip with their real values on
SQLite and PostgreSQL, the registered pyfunc logs what it answered (and answers the same without a
log, or with a log that is down), the image store stays under its cap, concurrent writers lose
nothing, and a writer killed with SIGKILL loses no committed record."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.monitor import predlog
from components.monitor.predlog import ModelRef, PredictionLog, PredictionRecord, image_stats, record_for
from conftest import isolate_mlflow, make_image, tiny_detector

REPO = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("DEFECTOPS_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def pg_admin():
    """The PostgreSQL server at DEFECTOPS_TEST_PG (a superuser there), or a skip with the reason."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as c:
            c.execute(sa.text("SELECT 1"))
    except Exception as e:          # noqa: BLE001
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN.split('@')[-1]}: {type(e).__name__}")
    yield admin
    admin.dispose()


@pytest.fixture
def pg_url(pg_admin):
    """A fresh database for one test, dropped after."""
    import sqlalchemy as sa

    name = f"predlog_{uuid.uuid4().hex[:10]}"
    with pg_admin.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    yield sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    with pg_admin.connect() as c:
        c.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/log/predlog.db"
    return request.getfixturevalue("pg_url")


def _record(i: int, model: str = "defect-detector", ts: datetime | None = None) -> PredictionRecord:
    return PredictionRecord(
        id=None, ts=ts or datetime.now(timezone.utc), model_name=model, model_version=str(i % 3 + 1),
        model_alias="champion" if i % 2 else None, image_sha256=hashlib.sha256(f"img{i}".encode()).hexdigest(),
        width=200 + i, height=100 + i, verdict="NG" if i % 2 else "OK",
        boxes=[{"cls": i % 6, "name": f"c{i % 6}", "conf": 0.25 + i / 1000, "xyxy": [1.5, 2.0, 30.25 + i, 40.0]}],
        latency_ms=10.0 + i / 7, source="serve" if i % 2 else "predict",
        stats={"brightness": 100.0 + i, "contrast": 20.5, "sharpness": 1234.5 + i}, image_kept=False)


def test_records_round_trip_with_their_values(url):
    log = PredictionLog(url)
    t0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    sent = [_record(i, "defect-detector" if i < 5 else "other", t0 + timedelta(minutes=i)) for i in range(8)]
    ids = [log.append(r) for r in sent]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 8
    got = log.window(model_name="defect-detector")
    assert [r.id for r in got] == ids[:5]
    for r, s in zip(got, sent):
        assert r == s                     # every field as sent: ts (aware UTC), boxes, stats, floats
        assert r.ts.tzinfo is not None and r.ts.utcoffset() == timedelta(0)
    # the window: since <= ts < until (naive = UTC), the latest `limit`, oldest first
    w = log.window(since=t0 + timedelta(minutes=2), until=(t0 + timedelta(minutes=6)).replace(tzinfo=None))
    assert [r.image_sha256 for r in w] == [s.image_sha256 for s in sent[2:6]]
    assert [r.id for r in log.window(limit=3)] == ids[-3:]
    assert log.count() == 8 and log.window(model_name="nobody") == []
    log.close()
    assert PredictionLog(url).count() == 8          # another process's view: committed


def test_reading_a_log_that_does_not_exist_creates_nothing(tmp_path):
    log = PredictionLog(f"sqlite:///{tmp_path}/none/predlog.db")
    assert log.window() == [] and log.count() == 0 and not (tmp_path / "none").exists()
    with pytest.raises(predlog.PredictionLogError, match="cannot read the prediction log at postgresql"):
        PredictionLog("postgresql+psycopg2://nobody@127.0.0.1:1/x").window()


def test_image_stats_are_brightness_contrast_and_laplacian_variance():
    rng = np.random.default_rng(3)
    bgr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    gray = (0.114 * bgr[..., 0] + 0.587 * bgr[..., 1] + 0.299 * bgr[..., 2]).round().astype(np.float64)
    s = image_stats(bgr)
    assert s["brightness"] == pytest.approx(gray.mean(), abs=0.05)
    assert s["contrast"] == pytest.approx(gray.std(), abs=0.05)
    g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64)
    pad = np.pad(g, 1, mode="reflect")              # OpenCV's default border (BORDER_REFLECT_101)
    lap = pad[:-2, 1:-1] + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:] - 4 * g
    assert s["sharpness"] == pytest.approx(lap.var(), rel=1e-9)
    assert image_stats(g.astype(np.uint8)) == s                         # grey in, same figures
    flat = image_stats(np.full((10, 10), 7, np.uint8))
    assert flat == {"brightness": 7.0, "contrast": 0.0, "sharpness": 0.0}


def test_a_store_that_is_down_warns_once_and_costs_no_latency(caplog, monkeypatch, tmp_path):
    monkeypatch.setattr(predlog, "_warned", False)
    blocked = tmp_path / "file"
    blocked.write_text("x")                                   # a file where the database's folder should be
    caplog.set_level(logging.WARNING, logger=predlog.__name__)
    for url in ("postgresql+psycopg2://nobody@127.0.0.1:1/x", f"sqlite:///{blocked}/sub/p.db", "nonsense://what"):
        log = PredictionLog(url)
        t = time.perf_counter()
        assert [log.append(_record(i)) for i in range(20)] == [None] * 20
        assert time.perf_counter() - t < 3.0, url             # one attempt, then dropped until RETRY_S
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "records are dropped" in warnings[0].getMessage()
    assert "postgresql+psycopg2://nobody@127.0.0.1:1/x unavailable" in warnings[0].getMessage()


def test_a_store_that_comes_back_is_used_again(tmp_path, monkeypatch):
    monkeypatch.setattr(predlog, "_warned", False)
    monkeypatch.setattr(predlog, "RETRY_S", 0.2)
    folder = tmp_path / "db"
    folder.write_text("in the way")
    log = PredictionLog(f"sqlite:///{folder}/p.db")
    assert log.append(_record(0)) is None
    folder.unlink()
    time.sleep(0.3)
    assert log.append(_record(1)) == 1 and [r.width for r in log.window()] == [201]


def _png(seed: int, n: int = 48) -> tuple[bytes, np.ndarray]:
    img = np.random.default_rng(seed).integers(0, 256, (n, n, 3), dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes(), img


def test_the_image_store_is_content_addressed_and_evicts_the_oldest_beyond_its_cap(tmp_path):
    images = [_png(i) for i in range(6)]
    size = len(images[0][0])
    assert all(abs(len(b) - size) < size // 10 for b, _ in images)
    cap_mb = 3.5 * size / 2**20                              # room for 3 images
    log = PredictionLog(f"sqlite:///{tmp_path}/p.db", tmp_path / "images", cap_mb)
    ref = ModelRef("defect-detector", "2", "champion")
    ids = []
    for k, (data, img) in enumerate(images):
        ids.append(log.append(record_for(ref, data, img, {"verdict": "OK", "detections": []}, 5.0, "serve"), data))
        os.utime(log.image_file(hashlib.sha256(data).hexdigest()), (1000 + k, 1000 + k))   # a clear order
        if k == 3:                                            # image 1 seen again: now the most recent
            again = log.append(record_for(ref, images[1][0], images[1][1], {"verdict": "OK"}, 5.0, "serve"),
                               images[1][0])
            os.utime(log.image_file(hashlib.sha256(images[1][0]).hexdigest()), (1003.5, 1003.5))
    files = [p for p in (tmp_path / "images").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert sum(p.stat().st_size for p in files) <= cap_mb * 2**20 and len(files) == 3
    shas = [hashlib.sha256(b).hexdigest() for b, _ in images]
    kept = {s for s in shas if log.image_file(s) is not None}
    assert kept == {shas[1], shas[4], shas[5]}                # 0, 2, 3 were the least recently seen
    for s in kept:
        p = log.image_file(s)
        assert p.name == f"{s}.png" and p.parent.name == s[:2] and hashlib.sha256(p.read_bytes()).hexdigest() == s
    recs = {r.id: r for r in log.window()}
    assert len(recs) == 7 and again in recs                   # every record kept, with or without its image
    assert {r.image_sha256 for r in recs.values() if r.image_kept} == kept
    assert not any(recs[i].image_kept for i in (ids[0], ids[2], ids[3]))
    # an image larger than the whole cap is not kept, its record is
    big, img = _png(99, 200)
    rid = log.append(record_for(ref, big, img, {"verdict": "NG"}, 1.0, "predict"), big)
    assert rid is not None and not log.window()[-1].image_kept and log.image_file(hashlib.sha256(big).hexdigest()) is None


def test_a_log_without_an_image_store_keeps_no_image(tmp_path):
    data, img = _png(1)
    log = PredictionLog(f"sqlite:///{tmp_path}/p.db")
    log.append(record_for(ModelRef("m"), data, img, {"verdict": "OK"}, 1.0, "predict"), data)
    assert log.window()[0].image_kept is False and log.image_file(hashlib.sha256(data).hexdigest()) is None
    assert not any(p.is_dir() for p in tmp_path.iterdir())


WRITER = """
import sys
from datetime import datetime, timezone
from components.monitor.predlog import PredictionLog, PredictionRecord
log, tag, n = PredictionLog(sys.argv[1]), sys.argv[2], int(sys.argv[3])
i = 0
while n < 0 or i < n:
    rid = log.append(PredictionRecord(None, datetime.now(timezone.utc), "m", tag, None, "%064d" % i, i, 1, "OK",
                                      [], 1.0, "serve", {}, False))
    if rid is None:
        sys.exit(3)
    print(rid, flush=True)
    i += 1
"""


def test_concurrent_appends_from_threads_and_processes_lose_nothing(url):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, f"p{k}", "60"], cwd=REPO, stdout=subprocess.PIPE,
                              text=True) for k in range(3)]
    log = PredictionLog(url)
    got: list[int | None] = []

    def work(k: int) -> None:
        for i in range(40):
            got.append(log.append(_record(1000 * k + i)))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert None not in got and len(set(got)) == 160
    recs = log.window()
    assert len(recs) == 160 + 180 == log.count()
    assert len({r.id for r in recs}) == len(recs)
    for k, out in enumerate(outs):
        mine = sorted(r.width for r in recs if r.model_version == f"p{k}")
        assert mine == list(range(60)) and len(out) == 60


def test_a_writer_killed_with_sigkill_loses_no_committed_record(tmp_path):
    db = tmp_path / "predlog.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url, "k", "-1"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    reported = []
    for line in proc.stdout:                  # each line: a record committed
        reported.append(int(line))
        if len(reported) >= 300:
            os.kill(proc.pid, signal.SIGKILL)
            break
    reported += [int(x) for x in proc.stdout.read().split()]
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as con:            # the file opens clean
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = [r[0] for r in con.execute("SELECT id FROM predictions ORDER BY id")]
    assert set(reported) <= set(rows)                       # nothing reported as committed is lost
    assert len(rows) - len(reported) in (0, 1)              # at most the one committed as the kill came
    assert rows == list(range(1, len(rows) + 1))
    log = PredictionLog(url)                                # and the log goes on
    assert log.append(_record(1)) == len(rows) + 1 and log.count() == len(rows) + 1


def test_configuration_from_settings_and_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(predlog.ENV["url"], raising=False)
    assert predlog.open_log("off") is None and predlog.open_log("") is None and predlog.open_log(None) is None
    log = predlog.open_log("sqlite:///x.db", True, tmp_path / "imgs", 2)
    assert log.url == "sqlite:///x.db" and log.images.root == tmp_path / "imgs" and log.images.cap == 2 * 2**20
    env = predlog.env_for("sqlite:///y.db", True, tmp_path / "i", 3, "models:/defect-detector@champion")
    log = predlog.from_env(env)
    assert log.url == "sqlite:///y.db" and log.images.root == tmp_path / "i" and log.images.cap == 3 * 2**20
    assert predlog.from_env({}).url == predlog.DEFAULT_URL and predlog.from_env({}).images is None
    assert predlog.from_env({predlog.ENV["url"]: "off"}) is None
    assert predlog.model_ref(env[predlog.ENV["model"]]) == ModelRef("defect-detector", None, "champion")
    assert predlog.model_ref("models:/defect-detector/4") == ModelRef("defect-detector", "4", None)
    assert predlog.model_ref("exports/baseline/best_nms.onnx") == ModelRef("exports/baseline/best_nms.onnx", None, None)
    monkeypatch.setenv(predlog.ENV["url"], "sqlite:///from-env.db")           # the environment wins
    assert predlog.open_log("sqlite:///x.db").url == "sqlite:///from-env.db"
    with predlog.disabled():
        assert predlog.from_env() is None and predlog.open_log("sqlite:///x.db") is None
    assert os.environ[predlog.ENV["url"]] == "sqlite:///from-env.db"
    monkeypatch.delenv(predlog.ENV["url"])
    assert os.environ.get(predlog.ENV["url"]) != "off"


# ---- the served model (the registered pyfunc) logs one record per image

@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A registry with a tiny end-to-end detector as ``defect-detector`` v1 @champion."""
    d = tmp_path_factory.mktemp("registry")
    onnx_file = tiny_detector(d, "nms.onnx", nms=True)
    img = d / "part.jpg"
    make_image(img, seed=5, size=(96, 80))
    return {"dir": d, "onnx": onnx_file, "img": img}


def _load_served(registered, tmp_path, monkeypatch, env: dict):
    import mlflow

    from components.deploy.registry import CHAMPION, log_detector_model, register, set_alias

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    isolate_mlflow(monkeypatch, uri)
    mlflow.set_tracking_uri(uri)                    # an earlier test's process-wide URI must not win
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(predlog.ENV["url"], raising=False)
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        pass
    version = register(uri, log_detector_model(uri, run.info.run_id, registered["onnx"], None, registered["img"]),
                       "defect-detector", {})
    set_alias(uri, "defect-detector", CHAMPION, version)
    assert not (tmp_path / ".cache").exists()       # MLflow's check of the input example logged nothing
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return mlflow.pyfunc.load_model("models:/defect-detector@champion")


def _request(registered) -> tuple[list[str], list[bytes]]:
    jpg = registered["img"].read_bytes()
    png = cv2.imencode(".png", cv2.imread(str(registered["img"])))[1].tobytes()
    other = make_image(registered["dir"] / "other.jpg", seed=11, size=(64, 48))
    files = [jpg, png, other]
    return [base64.b64encode(b).decode() for b in files] + [base64.b64encode(b"no image").decode()], files


def test_the_served_model_logs_each_image_as_it_answered(registered, tmp_path, monkeypatch):
    import pandas as pd

    db, store = tmp_path / "log" / "p.db", tmp_path / "imgs"
    env = predlog.env_for(f"sqlite:///{db}", True, store, 64, "models:/defect-detector@champion")
    model = _load_served(registered, tmp_path, monkeypatch, env)
    served = model.unwrap_python_model()
    assert type(served.predlog).__module__ == "defectops_predlog"      # the copy shipped with the model
    rows, files = _request(registered)
    t0 = datetime.now(timezone.utc)
    out = model.predict(pd.DataFrame({"image": rows}), params={"conf": 0.0})
    assert [("error" in o) for o in out] == [False, False, False, True]
    recs = PredictionLog(f"sqlite:///{db}", store).window()
    assert len(recs) == 3                                                # the error row is not logged
    for rec, answer, data in zip(recs, out, files):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert (rec.model_name, rec.model_version, rec.model_alias, rec.source) == \
            ("defect-detector", "1", "champion", "serve")
        assert rec.image_sha256 == hashlib.sha256(data).hexdigest()
        assert (rec.width, rec.height) == (answer["width"], answer["height"]) == (img.shape[1], img.shape[0])
        assert rec.verdict == answer["verdict"] and answer["detections"]
        assert rec.boxes == [{"cls": d["class_id"], "name": d["class"], "conf": d["confidence"], "xyxy": d["box_xyxy"]}
                             for d in answer["detections"]]
        assert rec.stats == image_stats(img) and 0 < rec.latency_ms < 60_000
        assert t0 <= rec.ts <= datetime.now(timezone.utc) and rec.image_kept
        assert PredictionLog(f"sqlite:///{db}", store).image_file(rec.image_sha256).read_bytes() == data
    # the same model without a log answers exactly the same
    monkeypatch.setenv(predlog.ENV["url"], "off")
    served.load_context(type("Ctx", (), {"artifacts": {"onnx": str(served.model.path)}})())
    assert served.predlog is None
    assert model.predict(pd.DataFrame({"image": rows}), params={"conf": 0.0}) == out
    assert len(PredictionLog(f"sqlite:///{db}").window()) == 3


def test_the_served_model_answers_when_its_log_is_down(registered, tmp_path, monkeypatch, caplog):
    import pandas as pd

    env = predlog.env_for("postgresql+psycopg2://nobody@127.0.0.1:1/nowhere", False)
    model = _load_served(registered, tmp_path, monkeypatch, env)
    served = model.unwrap_python_model()
    monkeypatch.setattr(sys.modules[type(served.predlog).__module__], "_warned", False)
    rows, _ = _request(registered)
    caplog.set_level(logging.WARNING)
    first = model.predict(pd.DataFrame({"image": rows}))
    second = model.predict(pd.DataFrame({"image": rows}))
    assert first == second and [("error" in o) for o in first] == [False, False, False, True]
    warned = [r for r in caplog.records if "prediction log" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(warned) == 1 and "unavailable" in warned[0].getMessage()
    # and answers as the model without any log does
    monkeypatch.setenv(predlog.ENV["url"], "off")
    served.load_context(type("Ctx", (), {"artifacts": {"onnx": str(served.model.path)}})())
    assert model.predict(pd.DataFrame({"image": rows})) == first


# ---- defectops predict and defectops serve log one record per image

def test_defectops_predict_logs_each_image_as_it_answered(registered, tmp_path, monkeypatch):
    import json

    from components.deploy.predict import Detector, attach_log, predict
    from conftest import settings

    monkeypatch.delenv(predlog.ENV["url"], raising=False)
    db = tmp_path / "p.db"
    section = settings({"predlog.url": f"sqlite:///{db}", "predlog.keep_images": True,
                        "predlog.image_dir": str(tmp_path / "imgs")}).predlog
    files = [registered["img"], registered["dir"] / "other.jpg", tmp_path / "broken.jpg"]
    make_image(files[1], seed=11, size=(64, 48))
    files[2].write_bytes(b"\xff\xd8\xff not really")
    det = attach_log(Detector(registered["onnx"]), section, str(registered["onnx"]), f"sqlite:///{tmp_path}/none.db")
    r = predict(det, files, tmp_path / "out", 0.3, 0.7)
    assert r["failed"] == 1
    plain = predict(Detector(registered["onnx"]), files, tmp_path / "out2", 0.3, 0.7)   # without a log
    strip = [{k: v for k, v in i.items() if k != "annotated"} for i in r["images"]]
    assert strip == [{k: v for k, v in i.items() if k != "annotated"} for i in plain["images"]]
    assert json.loads((tmp_path / "out" / "detections.json").read_text())["images"][0]["detections"]
    log = PredictionLog(f"sqlite:///{db}", tmp_path / "imgs")
    recs = log.window()
    assert len(recs) == 2
    for rec, answer, f in zip(recs, r["images"], files):
        data = f.read_bytes()
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert (rec.model_name, rec.model_version, rec.model_alias, rec.source) == \
            (str(registered["onnx"]), None, None, "predict")
        assert rec.image_sha256 == hashlib.sha256(data).hexdigest() and (rec.width, rec.height) == img.shape[1::-1]
        assert rec.verdict == answer["verdict"] == "NG"
        assert rec.boxes == [{"cls": d["class_id"], "name": d["class"], "conf": d["confidence"], "xyxy": d["box_xyxy"]}
                             for d in answer["detections"]]
        assert rec.stats == image_stats(img) and rec.image_kept and log.image_file(rec.image_sha256).read_bytes() == data


def test_defectops_serve_logs_each_image_with_the_registered_version(registered, tmp_path, monkeypatch):
    import json
    import urllib.request

    from components.deploy.registry import CHAMPION, log_detector_model, register, set_alias
    from headless import free_port, stop_group, wait_http

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    import mlflow

    isolate_mlflow(monkeypatch, uri)
    mlflow.set_tracking_uri(uri)                    # an earlier test's process-wide URI must not win
    monkeypatch.chdir(tmp_path)
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        pass
    for _ in range(2):                                    # v2 is the champion
        v = register(uri, log_detector_model(uri, run.info.run_id, registered["onnx"]), "defect-detector", {})
    set_alias(uri, "defect-detector", CHAMPION, v)
    db, port, out = tmp_path / "served.db", free_port(), tmp_path / "serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1",
           predlog.ENV["url"]: f"sqlite:///{db}"}
    for k in ("MLFLOW_REGISTRY_URI", predlog.ENV["model"], predlog.ENV["model_version"]):
        env.pop(k, None)
    with open(out, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "defectops.cli", "--params", str(REPO / "params.yaml"), "serve",
                                 "--model", "models:/defect-detector@champion", "--port", str(port)], cwd=tmp_path,
                                env=env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    rows, files = _request(registered)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, timeout=180, log=out)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                     json.dumps({"dataframe_records": [{"image": x} for x in rows]}).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=120) as r:
            preds = json.loads(r.read())["predictions"]
    finally:
        stop_group(proc)
    recs = PredictionLog(f"sqlite:///{db}").window()
    assert len(recs) == 3 and "error" in preds[3]
    for rec, answer, data in zip(recs, preds, files):
        assert (rec.model_name, rec.model_version, rec.model_alias, rec.source) == \
            ("defect-detector", "2", "champion", "serve")
        assert rec.image_sha256 == hashlib.sha256(data).hexdigest() and rec.verdict == answer["verdict"]
        assert [b["conf"] for b in rec.boxes] == [d["confidence"] for d in answer["detections"]]
