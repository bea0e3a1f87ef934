"""The self-contained ONNX model (issue 13 item 2): the end-to-end graph (ultralytics'
``export(nms=True)``: letterboxed batch in, boxes after NMS out, names / size / stride / letterbox
rule in its metadata), ``predict`` on it, and the MLflow pyfunc wrapper answering encoded images
under a real ``mlflow models serve --env-manager local`` on 127.0.0.1.

The model is a real (untrained) YOLO11n at 64 px with raised class biases (``conftest.tiny_detector``)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import isolate_mlflow, make_image, tiny_detector
from headless import free_port, stop_group, wait_http

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("detector")
    raw = tiny_detector(d, "raw.onnx")
    nms = d / "nms.onnx"
    from components.deploy.export import NmsSpec, export_onnx

    export_onnx(d / "w.pt", nms, 64, 17, False, nms=NmsSpec())           # the same weights, end to end
    return {"raw": raw, "nms": nms, "weights": d / "w.pt"}


def test_end_to_end_graph_has_boxes_metadata_and_matches_pytorch(models, tmp_path):
    import onnxruntime as ort

    from components.deploy.export import letterbox_batch, nms_parity
    from components.deploy.serving import LETTERBOX, read_meta

    meta = read_meta(models["nms"])
    assert meta["names"] == {0: "scratch", 1: "hole"} and meta["imgsz"] == [64, 64] and meta["stride"] == 32
    assert meta["letterbox"] == LETTERBOX and meta["letterbox"]["pad_value"] == 114
    assert meta["args"]["nms"] is True and meta["args"]["iou"] == 0.7 and meta["args"]["max_det"] == 300
    s = ort.InferenceSession(str(models["nms"]), providers=["CPUExecutionProvider"])
    assert [i.shape for i in s.get_inputs()] == [[1, 3, 64, 64]]
    imgs = [tmp_path / f"{i}.jpg" for i in range(3)]
    for i, f in enumerate(imgs):
        make_image(f, seed=i, size=(96 + 20 * i, 80))
    x = letterbox_batch(imgs, 64)
    out = s.run(None, {"images": x[:1]})[0]
    assert out.shape == (1, 300, 6)
    p = nms_parity(models["weights"], models["nms"], x)
    assert p["nms_images"] == 3 and p["nms_same_count"] == 3 and p["nms_boxes"] > 0 and p["nms_unmatched"] == 0
    assert p["nms_min_matched_iou"] > 0.999


def test_predict_on_the_end_to_end_graph_matches_the_raw_graph(models, tmp_path):
    """Boxes straight from the graph, mapped back with the metadata's letterbox rule, are the boxes
    of ultralytics' path (letterbox, raw graph, NMS, scale back) in the image's pixels."""
    from components.deploy.predict import Detector, predict

    img = tmp_path / "imgs" / "part.jpg"
    make_image(img, seed=7, size=(96, 80))
    res = {k: predict(Detector(models[k]), [img], tmp_path / k, conf=0.25, iou=0.7) for k in ("raw", "nms")}
    a, b = (res[k]["images"][0]["detections"] for k in ("raw", "nms"))
    assert res["nms"]["failed"] == 0 and b and len(a) == len(b)
    key = lambda d: (d["class_id"], -d["confidence"], d["box_xyxy"])   # noqa: E731
    for da, db in zip(sorted(a, key=key), sorted(b, key=key)):
        assert da["class"] == db["class"] and abs(da["confidence"] - db["confidence"]) < 1e-3
        assert np.allclose(da["box_xyxy"], db["box_xyxy"], atol=1.0)
        x1, y1, x2, y2 = db["box_xyxy"]
        assert 0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 80
    assert (tmp_path / "nms" / "annotated" / "part.jpg").is_file()


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=60) as r:
        return json.loads(r.read())


def test_mlflow_models_serve_answers_an_encoded_image_with_boxes(models, tmp_path, monkeypatch):
    """The registered wrapper, served from the registry by ``mlflow models serve --env-manager
    local`` (offline), answers a base64 JPEG / PNG with boxes in the image's pixels and class names."""
    from components.deploy.registry import CHAMPION, ONNX_FILE, download_onnx, log_detector_model, register, set_alias
    from components.tracking import start_stage_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking = isolate_mlflow(monkeypatch, uri)
    monkeypatch.chdir(tmp_path)                 # the store's default artifact root (./mlruns) is here
    img = tmp_path / "part.jpg"
    make_image(img, seed=7, size=(96, 80))
    # the promotion writes the operating point into the graph's metadata: scratch at 0.3, hole at 0.6
    from components.deploy.export import write_onnx_metadata
    from components.deploy.serving import BoxModel

    shipped = tmp_path / "shipped.onnx"
    shipped.write_bytes(Path(models["nms"]).read_bytes())
    thresholds = {"scratch": 0.3, "hole": 0.6}
    write_onnx_metadata(shipped, {"decision": json.dumps({"rule": "recall", "target": 0.9, "thresholds": thresholds})})
    local = BoxModel(shipped).judge(cv2.imread(str(img)))
    everything = BoxModel(shipped)(cv2.imread(str(img)), 0.001)
    assert local["thresholds"] == {"source": "per-class operating point"}
    assert len(local["detections"]) == sum(d["confidence"] >= thresholds[d["class"]] for d in everything)
    run = start_stage_run("promote", tracking, {}, {"model": "baseline"})
    version = register(uri, log_detector_model(uri, run.run_id, shipped, None, img), "defect-detector",
                       {"model": "baseline"})
    set_alias(uri, "defect-detector", CHAMPION, version)
    run.end()
    # the same version holds the end-to-end graph itself, for any ONNX runtime (predict, re-scoring)
    import mlflow

    info = mlflow.models.get_model_info("models:/defect-detector@champion")
    assert info.metadata["onnx"] == ONNX_FILE and info.signature.inputs.input_names() == ["image"]
    onnx_file = download_onnx(uri, "models:/defect-detector@champion", tmp_path / "dl")
    assert onnx_file.as_posix().endswith(ONNX_FILE) and onnx_file.read_bytes() == shipped.read_bytes()
    assert info.metadata["thresholds"] == thresholds

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_REGISTRY_URI", None)
    log = tmp_path / "serve.log"
    cwd = tmp_path / "elsewhere"                # not the repository: the model needs no project code
    cwd.mkdir()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                                 "models:/defect-detector@champion", "--env-manager", "local",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/ping", proc, timeout=120, log=log)
        jpg = base64.b64encode(img.read_bytes()).decode()
        png = base64.b64encode(cv2.imencode(".png", cv2.imread(str(img)))[1].tobytes()).decode()
        r1 = _post(f"{url}/invocations", {"dataframe_records": [{"image": jpg}, {"image": png}]})["predictions"]
        r2 = _post(f"{url}/invocations", {"inputs": {"image": [jpg]}, "params": {"conf": 0.9}})["predictions"]
        bad = _post(f"{url}/invocations", {"dataframe_records": [{"image": base64.b64encode(b"no").decode()}]})
    finally:
        stop_group(proc)
    assert len(r1) == 2 and all(r["width"] == 96 and r["height"] == 80 and r["detections"] for r in r1), r1
    # served at the shipped thresholds: the verdict and boxes of the graph with its metadata, locally
    assert r1[0]["verdict"] == local["verdict"] == "NG" and r1[0]["thresholds"] == local["thresholds"]
    assert [d["confidence"] for d in r1[0]["detections"]] == [d["confidence"] for d in local["detections"]]
    for d in r1[0]["detections"]:
        x1, y1, x2, y2 = d["box_xyxy"]
        assert d["class"] in ("scratch", "hole") and thresholds[d["class"]] <= d["confidence"] <= 1
        assert 0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 80
    assert len(r1[1]["detections"]) == len(r1[0]["detections"])           # PNG and JPEG of the same pixels
    assert r2[0]["detections"] and all(d["confidence"] >= 0.9 for d in r2[0]["detections"])
    assert r2[0]["thresholds"] == {"source": "conf override", "conf": 0.9}
    assert "error" in bad["predictions"][0]


def test_lagnet_end_to_end_graph_matches_the_pipeline(tmp_path):
    """LAGNet's one graph (baseline -> LAM -> LAGNet) with ultralytics' NMSModel after it: the boxes
    of the PyTorch pipeline + ultralytics' NMS, on tiny random models."""
    import onnxruntime as ort
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from components.deploy.export import boxes_parity
    from components.detectors.lagnet.export import LagnetPipeline, export_pipeline_nms
    from components.deploy.serving import read_meta
    from test_lagnet_modules import _model

    torch.manual_seed(0)
    base = DetectionModel("yolo11n.yaml", nc=6, verbose=False).fuse().eval()
    lag = _model(width=16, tmp=tmp_path).fuse().eval()
    with torch.no_grad():                                  # class logits raised: boxes on random input
        for branch in lag.model[-1].cv3:
            branch[-1].bias.fill_(3.0)
    pipe = LagnetPipeline(base, lag).eval()
    path = export_pipeline_nms(pipe, tmp_path / "lagnet_nms.onnx", 96, 17, conf=0.001, iou=0.7, max_det=300)
    meta = read_meta(path)
    assert meta["args"]["nms"] is True and meta["imgsz"] == [96, 96] and "letterbox" in meta
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((2, 3, 96, 96), dtype=np.float32)
    assert s.run(None, {"images": x[:1]})[0].shape == (1, 300, 6)
    # the graph against the same wrapper in PyTorch (a random LAGNet gives dozens of overlapping
    # boxes per image: against ultralytics' NMS on the raw output, a box on the 0.7 IoU edge may
    # survive in one runtime only; export_model checks that on trained models, like the raw graph)
    from types import SimpleNamespace

    from ultralytics.engine.exporter import NMSModel

    from components.detectors.lagnet.export import _XyxyPipeline, box_agreement

    args = SimpleNamespace(format="onnx", dynamic=False, batch=1, conf=0.001, iou=0.7, max_det=300,
                           agnostic_nms=False, opset=17, quantize=None)
    ref_model = NMSModel(_XyxyPipeline(pipe), args).eval()
    ref, got = [], []
    for i in range(len(x)):
        with torch.inference_mode():
            t = ref_model(torch.from_numpy(x[i:i + 1]))[0]
        o = torch.from_numpy(s.run(None, {"images": x[i:i + 1]})[0][0])
        ref.append(t[t[:, 4] >= 0.25])
        got.append(o[o[:, 4] >= 0.25])
    r = box_agreement(ref, got)
    # ONNX Runtime's and PyTorch's raw outputs differ within export.pipeline_rtol (the LAM's JET
    # coding): with ~50 overlapping random boxes an image may keep one box more on the IoU edge
    assert r["same_count"] >= 1 and r["unmatched"] == 0 and r["boxes"] > 0, r
    assert all(abs(len(a) - len(b)) <= 1 for a, b in zip(ref, got)) and r["mean_matched_iou"] > 0.9, r
    p = boxes_parity(pipe, path, x, conf=0.25)                    # runs; its figures are for trained models
    assert p["nms_images"] == 2 and p["nms_boxes"] > 0
