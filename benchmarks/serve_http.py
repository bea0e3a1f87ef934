"""HTTP serving on CPU: ``mlflow models serve --env-manager local`` of the registered pyfunc wrapper
(``registry.log_detector_model``: base64 image in, boxes out) around the end-to-end ONNX graph,
``--requests`` sequential requests of one NEU-DET-sized image (200 x 200 JPEG, grey) after a
warm-up: requests/s and latency p50 / p95 / max, as a client on 127.0.0.1 sees them (decode,
letterbox, ONNX Runtime, JSON both ways).

**The prediction log's overhead** (``components/monitor/predlog.py``): the same registered version
is served by two (``--keep-images``: three) servers at once, one with the log off
(``DEFECTOPS_PREDLOG_URL=off``), one logging every image to a SQLite file (``--log-url`` for another
store), and with ``--keep-images`` one that also keeps every image in the capped store. The
requests go to them in alternating blocks of ``--block`` (the first server of each round rotates),
so a load that changes on the machine falls on every variant alike; requests/s of each, and the
ratio with / without the log. The logged records are counted afterwards (one per request).

The model is an untrained YOLO11n (6 NEU-DET classes, class biases raised so every image gets
boxes: the reply carries boxes, as a trained model's would; each record then holds its 300 boxes)
exported end to end at ``--imgsz``.

    python -m benchmarks.serve_http [--requests 100] [--block 10] [--keep-images]   # -> results/serve_http.{json,md}
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

    from components.deploy.export import NmsSpec, export_onnx

    model = DetectionModel("yolo11n.yaml", nc=len(NAMES), verbose=False)
    model.names = dict(NAMES)
    with torch.no_grad():
        for branch in model.model[-1].cv3:
            branch[-1].bias.fill_(3.0)
    torch.save({"model": model, "train_args": {}}, folder / "w.pt")
    return export_onnx(folder / "w.pt", folder / "model.onnx", imgsz, 17, False, nms=NmsSpec())


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


def start_server(tmp: Path, name: str, env: dict) -> tuple[subprocess.Popen, str, Path]:
    """``mlflow models serve`` of the champion on a free port, with ``env``; (process, URL, its log)."""
    port = free_port()
    log = tmp / f"serve-{name}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                                 f"models:/{MODEL}@champion", "--env-manager", "local", "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"], cwd=tmp, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}", log


def wait_ready(opener, proc: subprocess.Popen, url: str, log: Path, timeout: float = 180) -> float:
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited:\n{log.read_text()[-3000:]}")
        try:
            with opener.open(f"{url}/ping", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            time.sleep(0.3)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"mlflow models serve did not answer /ping within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def summary(lat: list[float]) -> dict:
    ms = sorted(x * 1000 for x in lat)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"requests": len(ms), "requests_per_s": round(len(ms) / sum(lat), 2), "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(q[94], 1), "max_ms": round(ms[-1], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=100, help="per variant")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--block", type=int, default=10, help="requests in a row to one variant")
    ap.add_argument("--log-url", default=None, help="the log's store (default: a SQLite file in the run's folder)")
    ap.add_argument("--keep-images", action="store_true", help="a third variant that also keeps the images")
    ap.add_argument("--notes", default="", help="a paragraph appended to the markdown (e.g. machine load)")
    a = ap.parse_args()
    import cv2

    from components.deploy.registry import CHAMPION, log_detector_model, register, set_alias
    from components.monitor.predlog import PredictionLog, env_for

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
        base = {**os.environ, "MLFLOW_TRACKING_URI": uri, "DO_NOT_TRACK": "true",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        log_url = a.log_url or f"sqlite:///{tmp}/predlog.db"
        model_uri = f"models:/{MODEL}@{CHAMPION}"
        variants = {"log off": env_for(None),
                    "log": env_for(log_url, False, None, 512, model_uri)}
        if a.keep_images:
            variants["log + images"] = env_for(log_url, True, tmp / "images", 512, model_uri)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        servers = {}
        try:
            for name, env in variants.items():
                servers[name] = start_server(tmp, name.replace(" ", "-").replace("+", ""), {**base, **env})
            startup = {n: round(wait_ready(opener, *s), 1) for n, s in servers.items()}
            body = json.dumps({"dataframe_records": [{"image": base64.b64encode(jpg.read_bytes()).decode()}]}).encode()
            for _, url, _ in servers.values():
                for _ in range(a.warmup):
                    post(opener, f"{url}/invocations", body)
            names = list(servers)
            lat = {n: [] for n in names}
            boxes = {}
            for k in range(-(-a.requests // a.block)):
                order = names[k % len(names):] + names[:k % len(names)]
                for n in order:
                    for _ in range(min(a.block, a.requests - k * a.block)):
                        s, out = post(opener, f"{servers[n][1]}/invocations", body)
                        lat[n].append(s)
                        boxes[n] = len(out["predictions"][0]["detections"])
        finally:
            for proc, _, _ in servers.values():
                stop(proc)
        logged = PredictionLog(log_url).count()
    expected = (len(variants) - 1) * (a.requests + a.warmup)
    if logged != expected:
        raise SystemExit(f"the log holds {logged} records, {expected} expected (one per request)")
    res = {n: {**summary(lat[n]), "boxes_per_reply": boxes[n], "server_startup_s": startup[n]} for n in names}
    off = res["log off"]["requests_per_s"]
    for n in names:
        res[n]["ratio_vs_off"] = round(res[n]["requests_per_s"] / off, 3)
    payload = {"machine": machine(), "command": cli(), "imgsz": a.imgsz, "image": "200x200 JPEG", "warmup": a.warmup,
               "block": a.block, "log_url": "SQLite file (run folder)" if a.log_url is None else a.log_url,
               "records_logged": logged, "cpu_load_1min": round(os.getloadavg()[0], 2), "result": res,
               "log_overhead_pct": round(100 * (1 - res["log"]["ratio_vs_off"]), 1)}
    rows = [{"variant": n, "requests": r["requests"], "imgsz": a.imgsz, "req/s": r["requests_per_s"],
             "vs log off": r["ratio_vs_off"], "p50 ms": r["p50_ms"], "p95 ms": r["p95_ms"], "max ms": r["max_ms"],
             "boxes/reply": r["boxes_per_reply"]} for n, r in res.items()]
    notes = (f"Prediction log overhead (log vs log off, same run, interleaved blocks of {a.block}): "
             f"{payload['log_overhead_pct']} % of requests/s; {logged} records logged; load (1 min) at the end "
             f"{payload['cpu_load_1min']}.")
    md = write("serve_http", payload, rows, list(rows[0]),
               "mlflow models serve (pyfunc + end-to-end ONNX, CPU): sequential requests, one 200x200 image, "
               "with and without the prediction log", notes + ("\n\n" + a.notes if a.notes else ""))
    print(md.read_text())


if __name__ == "__main__":
    main()
