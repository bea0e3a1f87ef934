"""The hardened serving edge (issue 32 item 3): one pixel limit for every decoder (import, predict,
serving), checked from the image header before anything decodes, and ``defectops serve`` (the
registered pyfunc behind a FastAPI app: request size cap, 4xx answers that never echo the body,
all-bad batches refused) as a real process on 127.0.0.1, started once for the module.

The payloads are ``benchmarks/hostile_requests.py``'s (which records the same requests' status,
time and RSS in ``benchmarks/results/hostile_requests.md``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from benchmarks.hostile_requests import b64, good_jpeg, lying_jpeg, png_bomb, post, records, tree_rss
from conftest import REPO, isolate_mlflow, tiny_detector
from headless import free_port, stop_group, wait_http

MB = 1 << 20
THRESHOLDS = {"scratch": 0.3, "hole": 0.6}


def _register(tmp: Path) -> str:
    """The tiny end-to-end detector registered as ``defect-detector@champion`` in a SQLite store in ``tmp``."""
    from components.deploy.export import write_onnx_metadata
    from components.deploy.registry import CHAMPION, log_detector_model, register, set_alias
    from components.tracking import start_stage_run

    onnx = tiny_detector(tmp / "model", "nms.onnx", nms=True)
    write_onnx_metadata(onnx, {"decision": json.dumps({"rule": "recall", "target": 0.9, "thresholds": THRESHOLDS})})
    uri = f"sqlite:///{tmp}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        tracking = isolate_mlflow(mp, uri)
        mp.chdir(tmp)
        run = start_stage_run("promote", tracking, {}, {"model": "baseline"})
        version = register(uri, log_detector_model(uri, run.run_id, onnx), "defect-detector", {"model": "baseline"})
        set_alias(uri, "defect-detector", CHAMPION, version)
        run.end()
    return uri


def _env(uri: str) -> dict:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    return env


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``defectops serve --model models:/defect-detector@champion`` on a free port of 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("serve")
    uri = _register(tmp)
    port, log, cwd = free_port(), tmp / "serve.log", tmp / "elsewhere"
    cwd.mkdir()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "defectops.cli", "--params", str(REPO / "params.yaml"), "serve",
                                 "--model", "models:/defect-detector@champion", "--port", str(port)],
                                cwd=cwd, env=_env(uri), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/ping", proc, timeout=180, log=log)
        yield {"url": url, "proc": proc, "uri": uri, "tmp": tmp, "log": log}
    finally:
        stop_group(proc)


def _json(reply: bytes) -> dict:
    return json.loads(reply)


# ---- the pixel limit, the same for every decoder

def test_every_decoder_refuses_a_bomb_from_its_header_before_decoding(monkeypatch, tmp_path):
    """import (``canonical.decode_image``), predict (``read_image``) and serving (``serving.decode_image``)
    refuse a 140 KB PNG declaring 12000 x 12000, a JPEG whose header lies and an 875 KB-class PNG
    declaring 30000 x 30000 with the one limit, ``serving.MAX_PIXELS``, and OpenCV never sees them."""
    import cv2

    from components.data import canonical
    from components.deploy import predict, serving

    assert serving.MAX_PIXELS == 40_000_000
    bombs = {"bomb.png": png_bomb(12000, 12000), "lying.jpg": lying_jpeg(), "huge.png": png_bomb(30000, 30000, rows=3)}
    seen = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda buf, flags: seen.append(len(buf)) or real(buf, flags))
    for name, data in bombs.items():
        t = time.perf_counter()
        with pytest.raises(serving.ImageTooLarge, match="image too large: its header declares .* 40,000,000"):
            serving.decode_image(data)
        with pytest.raises(serving.ImageTooLarge):
            serving.decode_image(b64(data))                         # as the pyfunc gets it: base64 text
        with pytest.raises(ValueError, match="image too large"):
            canonical.decode_image(data)
        (tmp_path / name).write_bytes(data)
        with pytest.raises(predict.ImageError, match="image too large"):
            predict.read_image(tmp_path / name)
        assert time.perf_counter() - t < 2, name                  # from the header: no decoding
    assert seen == []                                              # cv2.imdecode never got a bomb
    ok = good_jpeg()
    assert serving.decode_image(ok).shape == (200, 200, 3) and seen == [len(ok)]
    assert serving.check_pixels(png_bomb(8000, 5000, rows=1)) == (8000, 5000)      # 40 MP: at the limit, allowed
    with pytest.raises(serving.ImageTooLarge):
        serving.check_pixels(png_bomb(8000, 5001, rows=1))
    from components.deploy.registry import _serving_requirements

    assert any(r.startswith("pillow==") for r in _serving_requirements())    # the served model reads headers too


def test_serve_answers_as_mlflow_models_serve_does(served, tmp_path):
    import cv2
    import numpy as np

    url = served["url"] + "/invocations"
    img = cv2.imdecode(np.frombuffer(good_jpeg(7, (96, 80)), np.uint8), cv2.IMREAD_COLOR)
    jpg, png = cv2.imencode(".jpg", img)[1].tobytes(), cv2.imencode(".png", img)[1].tobytes()
    status, reply, _ = post(url, records(jpg, png))
    assert status == 200, reply
    preds = _json(reply)["predictions"]
    assert set(_json(reply)) == {"predictions"} and len(preds) == 2
    for p in preds:
        assert p["width"] == 96 and p["height"] == 80 and p["verdict"] in ("OK", "NG")
        assert p["thresholds"] == {"source": "per-class operating point"}
        assert all(THRESHOLDS[d["class"]] <= d["confidence"] for d in p["detections"])
    status, reply, _ = post(url, json.dumps({"inputs": {"image": [b64(jpg)]}, "params": {"conf": 0.9}}).encode())
    assert status == 200 and _json(reply)["predictions"][0]["thresholds"] == {"source": "conf override", "conf": 0.9}
    status, reply, _ = post(url, json.dumps({"dataframe_split": {"columns": ["image"], "data": [[b64(jpg)]]}}).encode())
    assert status == 200 and len(_json(reply)["predictions"]) == 1


def test_hostile_requests_get_short_4xx_and_the_server_stays_small(served):
    """Bombs, a 20 MB junk body (with and without a length), an empty body, too many rows, an
    all-bad and a half-bad batch: the right status each, replies that quote nothing of the body,
    ``/ping`` still 200, and the server's RSS grows by less than 100 MB (decoding one 12000 x 12000
    bomb alone would take 432 MB)."""
    url, proc = served["url"] + "/invocations", served["proc"]
    post(url, records(good_jpeg(3)))                                # warm: the first request allocates
    before = tree_rss(proc.pid)
    junk = os.urandom(20 * 10 ** 6)
    t0 = time.perf_counter()
    for body in (records(png_bomb(12000, 12000)), records(lying_jpeg()), records(png_bomb(30000, 30000, rows=3))):
        status, reply, secs = post(url, body)
        r = _json(reply)
        assert status == 422 and r["errors"] == 1 and "image too large" in r["predictions"][0]["error"], reply
        assert "none of the 1 row(s)" in r["message"] and secs < 5
    for opts in ({}, {"chunked": True}):
        status, reply, secs = post(url, junk, **opts)
        assert status == 413, (opts, status, reply[:300])
        assert len(reply) < 500 and junk[:16] not in reply and b"larger than the limit" in reply
    status, reply, _ = post(url, b"")
    assert status == 400 and b"empty request body" in reply
    status, reply, _ = post(url, b"{" + b"x" * 1000)
    assert status == 400 and b"not JSON" in reply and b"xxxx" not in reply
    status, reply, _ = post(url, records(*[good_jpeg()] * 70))
    assert status == 413 and b"70 rows" in reply
    status, reply, _ = post(url, records(good_jpeg()), content_type="text/csv")
    assert status == 415
    status, reply, _ = post(url, records("@@@", b"just text", png_bomb(12000, 12000)))
    r = _json(reply)
    assert status == 422 and r["errors"] == 3 and [("error" in p) for p in r["predictions"]] == [True] * 3
    assert [p["error"].split(" (")[0] for p in r["predictions"][:2]] == ["not base64", "not an image"]
    assert "image too large" in r["predictions"][2]["error"] and "row 0: not base64" in r["message"]
    status, reply, _ = post(url, records(good_jpeg(0), b"just text", good_jpeg(1), lying_jpeg()))
    r = _json(reply)
    assert status == 200 and r["errors"] == 2, reply
    assert ["error" in p for p in r["predictions"]] == [False, True, False, True]
    assert r["predictions"][0]["width"] == 200 and "verdict" in r["predictions"][2]
    assert time.perf_counter() - t0 < 60
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(served["url"] + "/ping", timeout=10) as r:
        assert r.status == 200 and proc.poll() is None
    grown = tree_rss(proc.pid) - before
    assert grown < 100 * MB, f"the server grew by {grown / MB:.0f} MB"


def test_bombs_through_defectops_predict_are_per_image_errors_in_seconds(served, tmp_path):
    """The same bombs as files through ``defectops predict --model models:/defect-detector@champion``:
    an error record each (``image too large``), the good image predicted, exit 3, in seconds."""
    files = tmp_path / "in"
    files.mkdir()
    (files / "bomb.png").write_bytes(png_bomb(12000, 12000))
    (files / "huge.png").write_bytes(png_bomb(30000, 30000, rows=3))
    (files / "lying.jpg").write_bytes(lying_jpeg())
    (files / "good.jpg").write_bytes(good_jpeg())
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "defectops.cli", "--params", str(REPO / "params.yaml"), "predict",
                          "--model", "models:/defect-detector@champion", str(files), "--out", str(tmp_path / "out")],
                         cwd=served["tmp"], env=_env(served["uri"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=300)
    secs = time.perf_counter() - t
    assert p.returncode == 3, (out, err)
    det = json.loads((tmp_path / "out" / "detections.json").read_text())
    by = {Path(r["image"]).name: r for r in det["images"]}
    for name in ("bomb.png", "huge.png", "lying.jpg"):
        assert by[name]["error"].startswith("image too large: its header declares"), by[name]
    assert "verdict" in by["good.jpg"] and det["failed"] == 3
    assert b"3 of 4 file(s) failed" in err and secs < 120        # mostly the start (torch); the bombs: milliseconds
