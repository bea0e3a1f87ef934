"""Detectors on the real NEU-DET (from ../shared) at the CPU protocol, beside the papers' numbers.

    python -m benchmarks.neu --model baseline            # one model per process (run several at once)
    python -m benchmarks.neu --model dasc
    python -m benchmarks.neu --table                     # merge into results/neu_dasc.{json,md}

Protocol (issue 3): imgsz 224, 60 epochs, seed 0, 8:2 stratified train/test split (no
validation split: ultralytics' per-epoch validation runs on the test images for the curves,
but the reported numbers are the *last* epoch's weights on the test split, so no model
selection ever sees the test set). Every other training setting is params.yaml's ``train``
section; the model is params.yaml's ``baseline``/``dasc`` section and ``loss.iou``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from components.config import load_params, section
from components.data.canonical import load_manifest
from components.data.importers import import_dataset
from components.data.split import make_split
from components.data.views import write_yolo_data_yaml
from components.evaluate import evaluate_detector
from components.train import train_detector
from pipelines.common import trainer_args

from .common import RESULTS, cli, machine, write

NEU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det"
WORK = Path(".cache/bench/neu")
NAMES = {"baseline": "YOLO11n (ours)", "dasc": "DASC-YOLO-n (ours)"}
# dasc-yolo.md Table 4 (NEU-DET, large models at the paper's own protocol): AP per class, mAP
PAPER = {
    "YOLO11 (paper, large)": {"crazing": 49.8, "inclusion": 76.7, "patches": 93.7, "pitted_surface": 85.2,
                              "rolled-in_scale": 64.3, "scratches": 84.2, "mAP50": 75.6},
    "DASC-YOLO (paper, large)": {"crazing": 55.7, "inclusion": 79.6, "patches": 94.9, "pitted_surface": 84.9,
                                 "rolled-in_scale": 68.5, "scratches": 91.8, "mAP50": 79.2},
}


def dataset(test_ratio: float, seed: int) -> tuple[Path, dict]:
    ds = WORK / "neu-det"
    if not (ds / "manifest.json").is_file():
        import_dataset(NEU, "neu-det", WORK, "voc", clip_px=2)
    m = load_manifest(ds)
    split = make_split(m["images"], m["classes"], test_ratio, 0.0, seed, 0)
    split["val"] = split["test"]          # curves only; see the module docstring
    return ds, split


def split_tag(test_ratio: float) -> str:
    """``0.2`` -> ``r82`` (the 8:2 split of DASC-YOLO), ``0.3`` -> ``r73`` (LAGNet's 7:3)."""
    t = round(test_ratio * 10)
    return f"r{10 - t}{t}"


def run_model(model: str, epochs: int, imgsz: int, test_ratio: float, seed: int) -> dict:
    from pipelines.train import model_cfg

    params = load_params()
    ds, split = dataset(test_ratio, seed)
    tag = split_tag(test_ratio)
    work = WORK / tag / f"run-{model}"
    data_yaml = write_yolo_data_yaml(ds, split, work / "data")
    cfg = model_cfg(model, params, len(load_manifest(ds)["classes"]), work)
    args, _, _ = trainer_args(params)
    args.update(epochs=epochs, imgsz=imgsz)
    t = time.time()
    res = train_detector(cfg, data_yaml, work / "train", args, "cpu", seed, section(params, "loss.iou"))
    train_s = time.time() - t
    ev = section(params, "evaluate")
    metrics = evaluate_detector(res.last, data_yaml, "test", imgsz, ev["batch"], ev["conf"], ev["iou"],
                                "cpu", ev["latency"], work / "eval", work / "eval-plots")
    out = {"model": model, "epochs": epochs, "imgsz": imgsz, "test_ratio": test_ratio, "seed": seed,
           "iou_loss": section(params, "loss.iou"), "train_args": args, "train_seconds": round(train_s),
           "weights": "last epoch", "metrics": metrics,
           "model_params": section(params, model), "command": cli()}
    (RESULTS / "neu" / tag).mkdir(parents=True, exist_ok=True)
    (RESULTS / "neu" / tag / f"{model}.json").write_text(json.dumps(out, indent=2))
    return out


def table() -> None:
    rows, runs = [], {}
    for f in sorted((RESULTS / "neu" / "r82").glob("*.json")):
        r = json.loads(f.read_text())
        runs[r["model"]] = r
        m = r["metrics"]
        rows.append({"model": NAMES.get(r["model"], r["model"]), "mAP50": round(100 * m["mAP50"], 1),
                     "P": round(100 * m["precision"], 1), "R": round(100 * m["recall"], 1),
                     "F1": round(100 * m["F1"], 1), "params": f"{m['params'] / 1e6:.2f}M",
                     "GFLOPs@640": m["GFLOPs"], "FPS (CPU, b1)": m["fps"],
                     **{c: round(100 * v, 1) for c, v in m["per_class_AP50"].items()},
                     "train min": round(r["train_seconds"] / 60, 1)})
    for name, p in PAPER.items():
        rows.append({"model": name, **p, "P": "", "R": "", "F1": ""})
    classes = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    cols = ["model", "mAP50", "P", "R", "F1", *classes, "params", "GFLOPs@640", "FPS (CPU, b1)", "train min"]
    command = "; ".join([*(f"python -m benchmarks.neu --model {m} --epochs {r['epochs']} --imgsz {r['imgsz']} "
                           f"--test-ratio {r['test_ratio']} --seed {r['seed']}" for m, r in runs.items()),
                         "python -m benchmarks.neu --table"])
    payload = {"machine": machine(), "command": command, "runs": runs, "paper": PAPER}
    md = write("neu_dasc", payload, rows, cols,
               "NEU-DET, CPU protocol (imgsz 224, 60 epochs, seed 0, 8:2 split): baseline vs DASC-YOLO")
    threads = sorted({r["metrics"]["latency_threads"] for r in runs.values()})
    md.write_text(md.read_text() + (
        "\nNotes: AP50 in %, last-epoch weights on the 360 test images (no model selection on them). "
        "Training settings = params.yaml `train` (AdamW lr0 0.003, no mosaic, batch 16), box loss "
        f"{next(iter(runs.values()))['iou_loss'] if runs else ''}, n scale, from scratch. FPS: eager "
        f"PyTorch forward, batch 1, {threads} torch thread(s) (ultralytics' CPU default on this 2-core "
        "machine); the two models trained at the same time, one per core, so timings include that load. "
        "The paper rows are its Table 4: large models, 640 px, its own training protocol.\n"))
    print(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["baseline", "dasc"])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--imgsz", type=int, default=224)
    ap.add_argument("--test-ratio", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", action="store_true", help="merge results/neu/*.json into neu_dasc.md")
    a = ap.parse_args()
    if not (NEU / "ANNOTATIONS").is_dir():
        raise SystemExit(f"NEU-DET not found at {NEU}")
    if a.model:
        r = run_model(a.model, a.epochs, a.imgsz, a.test_ratio, a.seed)
        print(json.dumps({k: r["metrics"][k] for k in ("mAP50", "precision", "recall", "F1")}))
    if a.table:
        table()


if __name__ == "__main__":
    main()
