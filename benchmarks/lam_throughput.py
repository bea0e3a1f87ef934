"""LAM generation throughput vs the baseline's plain batched inference, same images, one run.

    python -m benchmarks.lam_throughput [--images 256] [--batch 32] [--imgsz 224] [--repeats 3]

* plain: read + letterbox + one batched forward pass of the baseline (what inference costs
  before NMS);
* LAM: ``components.detectors.lagnet.lam.make_lams`` as the LAM stage runs it: the same read + letterbox +
  forward, then per-level confidence maps, level fusion, un-letterbox, 8-bit grey map, PNG write;
* in-graph: ``LamMap`` (the ONNX pipeline's LAM step) vs the detector's forward alone, tensors only.

Images: NEU-DET from ``../shared`` when present (else the synthetic generator). Weights: the NEU
benchmark's 7:3 baseline when it exists (else an untrained YOLO11n: speed does not depend on the
weights). Target (issue 4): LAM <= 1.3x plain. The two are run alternately ``--repeats`` times;
the ratio of medians is reported. Writes ``results/lam_throughput.{json,md}``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from .common import cli, machine, write

NEU_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det" / "IMAGES"
NEU_BASELINE = Path(".cache/bench/neu/r73/run-baseline/train/weights/last.pt")


def _images(n: int, tmp: Path) -> tuple[list[Path], str]:
    if NEU_IMAGES.is_dir():
        files = sorted(NEU_IMAGES.glob("*.jpg"))[:n]
        if files:
            return files, f"NEU-DET ({len(files)} images, 200x200)"
    from components.data.synth import SynthConfig, render_sample

    rng = np.random.default_rng(0)
    cfg = SynthConfig(0, n, 200, 1, 3, (0.25, 0.5), 0.3, 95, False)
    files = []
    for i in range(n):
        s = render_sample(rng, cfg, i)
        f = tmp / f"s{i}.png"
        cv2.imwrite(str(f), s.image)
        files.append(f)
    return files, f"synthetic ({n} images, 200x200)"


def _plain(model, files: list[Path], imgsz: int, batch: int) -> float:
    from components.detectors.lagnet.lam import _letterbox

    t = time.perf_counter()
    for i in range(0, len(files), batch):
        xs = [_letterbox(cv2.imread(str(f)), imgsz)[0][..., ::-1].transpose(2, 0, 1) for f in files[i:i + batch]]
        x = torch.from_numpy(np.ascontiguousarray(np.stack(xs))).float() / 255.0
        with torch.inference_mode():
            model(x)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--imgsz", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from components.detectors.lagnet.lam import LamMap, lam_map, make_lams
    from components.yolo import YOLO

    weights = str(NEU_BASELINE) if NEU_BASELINE.is_file() else "yolo11n.yaml"
    model = YOLO(weights).model.float().fuse().eval()
    tmp = Path(tempfile.mkdtemp(prefix="lambench-"))
    try:
        files, source = _images(a.images, tmp)
        plain, lam = [], []
        _plain(model, files[: a.batch], a.imgsz, a.batch)                    # warm-up
        for _ in range(a.repeats):
            plain.append(_plain(model, files, a.imgsz, a.batch))
            t = time.perf_counter()
            make_lams(lam_map(model), files, tmp / "lams", a.imgsz, a.batch)
            lam.append(time.perf_counter() - t)
        # tensor level: the in-graph LAM step vs the detector alone
        x = torch.rand(a.batch, 3, a.imgsz, a.imgsz)
        lm = LamMap(model).eval()
        det, ing = [], []
        with torch.inference_mode():
            for _ in range(a.repeats + 1):
                t = time.perf_counter()
                model(x)
                det.append(time.perf_counter() - t)
                t = time.perf_counter()
                lm(x)
                ing.append(time.perf_counter() - t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(files)
    p, q = statistics.median(plain), statistics.median(lam)
    d, g = statistics.median(det[1:]), statistics.median(ing[1:])
    rows = [{"what": "plain batched inference (read + letterbox + forward)", "images/s": round(n / p, 1),
             "seconds": round(p, 2), "x plain": 1.0},
            {"what": "LAM generation (make_lams: + fuse, un-letterbox, 8-bit map, PNG write)", "images/s": round(n / q, 1),
             "seconds": round(q, 2), "x plain": round(q / p, 3)},
            {"what": f"detector forward only (tensor batch {a.batch})", "images/s": round(a.batch / d, 1),
             "seconds": round(d, 3), "x plain": ""},
            {"what": "in-graph LAM (LamMap: forward + maps + JET blend)", "images/s": round(a.batch / g, 1),
             "seconds": round(g, 3), "x plain": f"{g / d:.3f} x forward"}]
    payload = {"machine": machine(), "command": cli(), "source": source, "weights": weights, "imgsz": a.imgsz,
               "batch": a.batch, "repeats": a.repeats, "plain_s": plain, "lam_s": lam, "ratio": q / p,
               "target_ratio": 1.3, "forward_s": det, "ingraph_s": ing}
    md = write("lam_throughput", payload, rows, ["what", "images/s", "seconds", "x plain"],
               f"LAM throughput vs plain inference: {source}, imgsz {a.imgsz}, batch {a.batch}, "
               f"median of {a.repeats}",
               f"LAM / plain = {q / p:.3f} (target <= 1.3): {'met' if q / p <= 1.3 else 'NOT met'}. "
               f"Weights: `{weights}`.")
    print(md.read_text())


if __name__ == "__main__":
    main()
