"""HTTP serving on CPU: ``mlflow models serve --env-manager local`` of the registered pyfunc wrapper
(``registry.log_detector_model``: base64 image in, boxes out) around the end-to-end ONNX graph,
``--requests`` sequential requests of one NEU-DET-sized image (200 x 200 JPEG, grey) after a
warm-up: requests/s and latency p50 / p95 / max, as a client on 127.0.0.1 sees them (decode,
letterbox, ONNX Runtime, JSON both ways).

The model is an untrained YOLO11n (6 NEU-DET classes, class biases raised so every image gets
boxes: the reply carries boxes, as a trained model's would) exported end to end at ``--imgsz``.

    python -m benchmarks.serve_http [--requests 100] [--imgsz 640]   # -> results/serve_http.{json,md}
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from .common import cli, machine, write

NAMES = {0: "crazing", 1: "inclusion", 2: "patches", 3: "pitted_surface", 4: "rolled-in_scale", 5: "scratches"}
MODEL = "defect-detector"


def tiny_model(folder: Path, imgsz: int) -> Path:
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from components.deploy.export import export_onnx

    model = DetectionModel("yolo11n.yaml", nc=len(NAMES), verbose=False)
    model.names = dict(NAMES)
    with torch.no_grad():
        for branch in model.model[-1].cv3:
            branch[-1].bias.fill_(3.0)
    torch.save({"model": model, "train_args": {}}, folder / "w.pt")
    return export_onnx(folder / "w.pt", folder / "model.onnx", imgsz, 17, False, nms=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(opener, url: str, body: bytes) -> tuple[float, dict]:
    t = time.perf_counter()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with opener.open(req, timeout=120) as r:
        out = json.loads(r.read())
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--notes", default="", help="a paragraph appended to the markdown (e.g. machine load)")
    a = ap.parse_args()
    import cv2

    from components.deploy.registry import CHAMPION, log_detector_model, register, set_alias

    with tempfile.TemporaryDirectory(prefix="serve-http-") as tmp:
        tmp = Path(tmp)
        uri = f"sqlite:///{tmp}/mlflow.db"
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        rng = np.random.default_rng(0)
        img = np.repeat(rng.integers(60, 200, (200, 200, 1), dtype=np.uint8), 3, 2)   # grey, like NEU-DET
        jpg = tmp / "neu.jpg"
        cv2.imwrite(str(jpg), img)
        onnx_path = tiny_model(tmp, a.imgsz)
        import mlflow

        mlflow.set_tracking_uri(uri)
        exp = mlflow.create_experiment("serve-http", artifact_location=(tmp / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp) as run:
            pass
        version = register(uri, log_detector_model(uri, run.info.run_id, onnx_path, 0.25, jpg), MODEL, {})
        set_alias(uri, MODEL, CHAMPION, version)
        port = free_port()
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "DO_NOT_TRACK": "true",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        log = tmp / "serve.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                                     f"models:/{MODEL}@{CHAMPION}", "--env-manager", "local", "--host", "127.0.0.1",
                                     "--port", str(port), "--workers", "1"], cwd=tmp, env=env, stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            url = f"http://127.0.0.1:{port}"
            t0 = time.monotonic()
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"mlflow models serve exited:\n{log.read_text()[-3000:]}")
                try:
                    with opener.open(f"{url}/ping", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    time.sleep(0.3)
                if time.monotonic() - t0 > 180:
                    raise TimeoutError("mlflow models serve did not answer /ping within 180 s")
            startup = time.monotonic() - t0
            body = json.dumps({"dataframe_records": [{"image": base64.b64encode(jpg.read_bytes()).decode()}]}).encode()
            for _ in range(a.warmup):
                post(opener, f"{url}/invocations", body)
            lat, boxes = [], 0
            t = time.perf_counter()
            for _ in range(a.requests):
                s, out = post(opener, f"{url}/invocations", body)
                lat.append(s)
                boxes = len(out["predictions"][0]["detections"])
            wall = time.perf_counter() - t
        finally:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
    ms = sorted(x * 1000 for x in lat)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    res = {"requests": a.requests, "warmup": a.warmup, "imgsz": a.imgsz, "image": "200x200 JPEG",
           "requests_per_s": round(a.requests / wall, 2), "p50_ms": round(statistics.median(ms), 1),
           "p95_ms": round(q[94], 1), "max_ms": round(ms[-1], 1), "boxes_per_reply": boxes,
           "server_startup_s": round(startup, 1), "cpu_load_1min": round(os.getloadavg()[0], 2)}
    rows = [{"requests": res["requests"], "imgsz": res["imgsz"], "req/s": res["requests_per_s"],
             "p50 ms": res["p50_ms"], "p95 ms": res["p95_ms"], "max ms": res["max_ms"],
             "boxes/reply": boxes, "load (1 min)": res["cpu_load_1min"]}]
    md = write("serve_http", {"machine": machine(), "command": cli(), "result": res}, rows, list(rows[0]),
               "mlflow models serve (pyfunc + end-to-end ONNX, CPU): sequential requests, one 200x200 image",
               a.notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
