"""Throughput of the promoted model: ONNX Runtime vs eager PyTorch, same inputs, one run.

    python -m benchmarks.onnx_vs_eager [--images 64] [--batches 1,8] [--repeats 3] [--conf 0.05]

Reads ``reports/promotion.json`` (the last ``defectops promote``): the registered ONNX file and
the PyTorch model it was exported from (LAGNet: baseline -> LAM -> LAGNet as one module, the same
graph the ONNX file holds). Inputs: the test split's images, letterboxed once (the input
pipeline is not timed: both runtimes take the same array). Each batch size is timed for both
runtimes alternately ``--repeats`` times (median images/s reported) after one warm-up pass.
Device: CUDA (PyTorch) and the CUDA execution provider when a GPU is usable, else CPU for both.
Parity on the same images: raw output difference and boxes after the same NMS (count per image,
matched IoU). Writes ``results/onnx_vs_eager.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from .common import cli, machine, write


def _pytorch_model(promo: dict, params) -> torch.nn.Module:
    from components.layout import Layout
    from components.yolo import YOLO

    lay = Layout.from_params(params)
    if promo["model"] == "lagnet":
        from components.detectors import lam_maker
        from components.detectors.lagnet import LamCoding
        from components.detectors.lagnet.export import load_pipeline

        return load_pipeline(lay.weights(lam_maker().key), lay.weights("lagnet"), LamCoding.of(params.lam))
    return YOLO(str(lay.weights(promo["model"]))).model.float().fuse().eval()


def _raw(out) -> torch.Tensor:
    return out[0] if isinstance(out, (list, tuple)) else out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--conf", type=float, default=0.05)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args()

    from components.data.views import load_split
    from components.layout import Layout
    from components.settings import load_settings
    from components.deploy.export import letterbox_batch, ort_session
    from components.detectors.lagnet.export import box_agreement
    from ultralytics.utils.nms import non_max_suppression

    params = load_settings(a.params)
    lay = Layout.from_params(params)
    promo = json.loads(lay.promotion.read_text())
    info = json.loads(lay.train_info(promo["model"]).read_text())
    imgsz = info["imgsz"]
    ds = lay.dataset
    split = load_split(lay.split_file)
    names = split["test"][: a.images]
    files = [next((ds / "images").glob(f"{n}.*")) for n in names]
    x = letterbox_batch(files, imgsz)

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda:0" if cuda else "cpu")
    model = _pytorch_model(promo, params).to(dev)
    sess = ort_session(promo["onnx"])
    provider = sess.get_providers()[0]
    inp = sess.get_inputs()[0].name

    def run_torch(b: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = _raw(model(torch.from_numpy(b).to(dev)))
            if cuda:
                torch.cuda.synchronize()
            return y.float().cpu().numpy()

    def run_ort(b: np.ndarray) -> np.ndarray:
        return sess.run(None, {inp: b})[0]

    rows, timings = [], {}
    for bs in [int(b) for b in a.batches.split(",")]:
        chunks = [x[i:i + bs] for i in range(0, len(x) - len(x) % bs or len(x), bs)]
        n = sum(len(c) for c in chunks)
        for fn in (run_torch, run_ort):
            fn(chunks[0])                                       # warm-up (allocations, CUDA graphs/kernels)
        per = {"pytorch": [], "onnxruntime": []}
        for _ in range(a.repeats):
            for name, fn in (("pytorch", run_torch), ("onnxruntime", run_ort)):
                t = time.perf_counter()
                for c in chunks:
                    fn(c)
                per[name].append(n / (time.perf_counter() - t))
        pt, ort_ = statistics.median(per["pytorch"]), statistics.median(per["onnxruntime"])
        timings[bs] = per
        rows.append({"batch": bs, "images": n, "pytorch_img_s": round(pt, 1), "onnxruntime_img_s": round(ort_, 1),
                     "speedup": round(ort_ / pt, 2)})

    ref, got = run_torch(x), run_ort(x)
    diff = np.abs(ref - got)
    agree = box_agreement(non_max_suppression(torch.from_numpy(ref), a.conf, 0.7),
                          non_max_suppression(torch.from_numpy(got), a.conf, 0.7))
    parity = {"max_abs_diff": float(diff.max()), "max_rel_diff": float(diff.max() / max(float(np.abs(ref).max()), 1e-9)),
              "conf": a.conf, **agree}
    payload = {"machine": machine(), "command": cli(), "model": promo["model"], "version": promo["version"],
               "onnx": promo["onnx"], "imgsz": imgsz, "pytorch_device": str(dev), "ort_provider": provider,
               "rows": rows, "timings": timings, "parity": parity}
    notes = (f"Parity on the same {len(x)} test images: raw max |diff| {parity['max_abs_diff']:.3g} "
             f"(relative {parity['max_rel_diff']:.2g}); boxes at conf {a.conf}: {parity['boxes']}, same count on "
             f"{parity['same_count']}/{parity['images']} images, {parity['unmatched']} unmatched, min matched IoU "
             f"{parity['min_matched_iou']}")
    md = write("onnx_vs_eager", payload, rows, ["batch", "images", "pytorch_img_s", "onnxruntime_img_s", "speedup"],
               f"ONNX Runtime ({provider}) vs eager PyTorch ({dev}): promoted {promo['model']} "
               f"v{promo['version']}, {imgsz}px", notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
