"""Params, GFLOPs and inference speed of every detector a profile trains, at the profile's input
size, on one device, beside the papers' figures.

    python -m benchmarks.profile_fps --profile neu-paper-gpu --device 0     # on a GPU worker
    python -m benchmarks.profile_fps --profile neu-cpu                      # the CPU protocol, here

Each detector is built from the profile's params (the model YAML the pipeline trains, 6 NEU-DET
classes, untrained weights: speed does not depend on them), fused as for inference, and timed by
``components.evaluate.measure_latency``: median eager forward of a batch of 1 (and of 16), fp32,
no pre/post-processing, no NMS. LAGNet's time excludes making its LAM (the baseline's forward);
``served`` adds that forward. The papers' FPS are theirs, on their GPUs (DASC-YOLO: RTX 3090,
LAGNet: RTX 4090), at their own settings; they are beside ours for scale, not as a like-for-like
comparison. Written to ``results/profile_fps_<profiles>.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from ultralytics.utils.torch_utils import get_num_params

from components.detectors import display_name, model_cfg
from components.evaluate import measure_latency, model_gflops
from components.models.detect import DefectDetectionModel

from .common import cli, machine, profile_params, write

NC = 6
# (params M, FPS, GPU) as the papers report them: dasc-yolo.md Table 4 (NEU-DET, large; FPS only,
# no params) and Table 3 (n scale, on its leather set); lagnet.md Table 1 (NEU-DET)
PAPER = {
    ("baseline", "l"): (None, 72.9, "RTX 3090 (dasc-yolo.md Table 4, YOLO11)"),
    ("dasc", "l"): (None, None, "dasc-yolo.md Table 4 gives no FPS for its own large model"),
    ("dasc", "n"): (3.02, 70.3, "RTX 3090 (dasc-yolo.md Table 3, leather, 2048 px)"),
    ("baseline", "n"): (2.59, 87.1, "RTX 3090 (dasc-yolo.md Table 3, leather, 2048 px)"),
    ("lagnet", "large"): (31.9, 45.1, "RTX 4090 (lagnet.md Table 1)"),
    ("lagnet", "small"): (8.9, 73.6, "RTX 4090 (lagnet.md Table 1)"),
}
COLUMNS = ["model", "params (M)", "GFLOPs", "imgsz", "ms/img b1", "FPS b1", "FPS b16", "served FPS b1",
           "paper params (M)", "paper FPS", "paper GPU"]


def size_key(model: str, params) -> str:
    return {"baseline": params.baseline.scale, "dasc": params.dasc.scale}.get(model, params.lagnet.variant)


def build(model: str, params, work: Path) -> torch.nn.Module:
    cfg = model_cfg(model, params, NC, work)
    m = DefectDetectionModel(cfg, nc=NC, verbose=False)
    return m.fuse().eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", nargs="+", default=["neu-paper-gpu"], metavar="NAME")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=50)
    a = ap.parse_args()
    params = profile_params(a.profile)
    imgsz = params.train.imgsz
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("baseline", "dasc", "lagnet"):
            m = build(model, params, Path(tmp) / model)
            b1 = measure_latency(m, imgsz, 1, a.runs, 10, a.device)
            b16 = measure_latency(m, imgsz, 16, max(5, a.runs // 5), 3, a.device)
            key = (model, size_key(model, params))
            paper = PAPER.get(key, (None, None, ""))
            rows.append({"model": display_name(model, params), "params (M)": round(get_num_params(m) / 1e6, 3),
                         "GFLOPs": round(model_gflops(m.cpu(), imgsz), 2), "imgsz": imgsz,
                         "ms/img b1": b1["latency_ms_per_image"], "FPS b1": b1["fps"], "FPS b16": b16["fps"],
                         "served FPS b1": "", "paper params (M)": paper[0] or "", "paper FPS": paper[1] or "",
                         "paper GPU": paper[2], "device": b1["latency_device"]})
        # LAGNet as served: the baseline's forward (its LAM) and LAGNet's, one image at a time
        lag = next(r for r in rows if r["model"] == display_name("lagnet", params))
        base_ms = rows[0]["ms/img b1"]
        lag["served FPS b1"] = round(1000 / (base_ms + lag["ms/img b1"]), 2)
    payload = {"machine": machine(), "command": cli(), "profiles": a.profile, "device": rows[0]["device"],
               "imgsz": imgsz, "precision": "fp32, eager, fused", "rows": rows}
    name = "profile_fps_" + "_".join(p.replace("-", "_") for p in a.profile)
    print(write(name, payload, rows, COLUMNS,
                f"Params, GFLOPs and FPS at {'+'.join(a.profile)} ({imgsz} px) on {rows[0]['device']}"))


if __name__ == "__main__":
    main()
