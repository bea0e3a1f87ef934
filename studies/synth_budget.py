"""What makes the embedded synthetic default learnable within ``make run``'s budget (issue 10
item 7): one YOLO11n training on the synthetic set per call, with ``--set`` overrides of
params.yaml (``data.synth.*``, ``train.*``), scored on the synthetic val split (every choice is
made there) and test split (reported only). Appends a row to ``results/synth_budget.json`` and
re-renders ``results/synth_budget.md``.

    python -m studies.synth_budget --label default
    python -m studies.synth_budget --label strong --set "data.synth.contrast=[0.5, 0.9]" train.mosaic=1.0
    python -m studies.synth_budget --errors default e20

``--errors LABEL...``: where each run's YOLO11n loses its validation mAP50, per class, from its kept
weights: every ground-truth box as found (a same-class box at conf >= 0.25 with IoU >= 0.5), badly
placed (same class, IoU 0.2-0.5), taken for another class (IoU >= 0.5), or missed; and for the
boxes not found, the highest score of a same-class box at IoU >= 0.5 below that threshold (is the
detector unsure, or blind?). Needs the run's weights under ``.cache/bench/synth_budget/LABEL``.
Writes ``results/synth_budget_errors.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from components.settings import trainer_args
from components.settings import resolve

from .common import RESULTS, SYNTH_WORK, cli, machine, parse_sets, synth_data_yaml, write

WORK = SYNTH_WORK
OUT = RESULTS / "synth_budget.json"


def run(label: str, sets: dict, device: str = "cpu") -> dict:
    from components.evaluate import EvalRequest, evaluate_detector
    from components.detectors.yolo11.config import baseline_cfg
    from components.train import TrainRequest, train_detector

    params = resolve("params.yaml", [("--set", sets)])
    work = WORK / label
    data_yaml = synth_data_yaml(params, work / "data")
    args, _, seed = trainer_args(params)
    t = time.time()
    res = train_detector(TrainRequest(baseline_cfg(params.baseline.scale), data_yaml, work / "train", args, device,
                                      seed, params.loss.iou))
    secs = time.time() - t
    ev = params.evaluate
    scores = {part: evaluate_detector(EvalRequest(res.best, data_yaml, part, args["imgsz"], ev.batch, ev.conf, ev.iou,
                                                  device), {**ev.latency.plain(), "runs": 3}, work / f"eval-{part}",
                                      work / f"plots-{part}")
              for part in ("val", "test")}
    row = {"label": label, "overrides": sets, "train_seconds": round(secs, 1), "epochs_run": res.epochs_run,
           "val_mAP50": scores["val"]["mAP50"], "test_mAP50": scores["test"]["mAP50"],
           "val_per_class_AP50": scores["val"]["per_class_AP50"], "machine": machine(), "command": cli()}
    rows = json.loads(OUT.read_text())["rows"] if OUT.is_file() else []
    rows = [r for r in rows if r["label"] != label] + [row]
    table = [{"label": r["label"], "overrides": ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "-",
              "train s": r["train_seconds"], "epochs": r["epochs_run"], "val mAP50": round(r["val_mAP50"], 3),
              "test mAP50": round(r["test_mAP50"], 3)} for r in rows]
    write("synth_budget", {"rows": rows, "machine": machine(), "command": cli()}, table, ["label", "overrides", "train s", "epochs", "val mAP50", "test mAP50"],
          "Synthetic default: YOLO11n learnability at the make-run budget",
          "Command: `python -m studies.synth_budget --label L --set ...` (one row per call). Choices are "
          "made on val; test is reported only. Train seconds depend on what else the machine ran.")
    print(json.dumps({k: row[k] for k in ("label", "train_seconds", "val_mAP50", "test_mAP50")}))
    return row


def errors(label: str, conf: float = 0.25) -> dict:
    """Per-class outcome of every validation box for the kept weights of run ``label`` (see the
    module docstring); IoU is ultralytics' own ``box_iou``."""
    import numpy as np
    import torch
    from ultralytics import YOLO
    from ultralytics.data.utils import img2label_paths
    from ultralytics.utils.metrics import box_iou
    from ultralytics.utils.ops import xywh2xyxy

    work = WORK / label
    weights = work / "train" / "weights" / "best.pt"
    if not weights.is_file():
        raise SystemExit(f"no kept weights for {label!r} at {weights}: run --label {label} first")
    row = next(r for r in json.loads(OUT.read_text())["rows"] if r["label"] == label)
    imgsz = int(row["overrides"].get("train.imgsz", resolve("params.yaml", []).train.imgsz))
    model = YOLO(str(weights))
    names = model.names
    images = [ln.strip() for ln in (work / "data" / "val.txt").read_text().splitlines() if ln.strip()]
    out = {n: {"boxes": 0, "found": 0, "misplaced": 0, "other_class": 0, "missed": 0, "unfound_scores": []}
           for n in names.values()}
    for img, lab in zip(images, img2label_paths(images)):
        gt = np.loadtxt(lab, ndmin=2)
        if not gt.size:
            continue
        r = model.predict(img, imgsz=imgsz, conf=0.001, verbose=False)[0]
        h, w = r.orig_shape
        gtb = xywh2xyxy(torch.tensor(gt[:, 1:], dtype=torch.float32) * torch.tensor([w, h, w, h]))
        pb, pc, pf = r.boxes.xyxy.cpu(), r.boxes.cls.cpu().int(), r.boxes.conf.cpu()
        iou, kept = box_iou(gtb, pb), pf >= conf
        for i, c in enumerate(gt[:, 0].astype(int)):
            o = out[names[c]]
            o["boxes"] += 1
            same = max((iou[i] * ((pc == c) & kept)).tolist(), default=0.0)
            other = max((iou[i] * ((pc != c) & kept)).tolist(), default=0.0)
            if same >= 0.5:
                o["found"] += 1
                continue
            o["misplaced" if same >= 0.2 else "other_class" if other >= 0.5 else "missed"] += 1
            placed = (iou[i] >= 0.5) & (pc == c)        # same class, well placed, any score
            o["unfound_scores"].append(round(float(pf[placed].max()), 3) if placed.any() else None)
    res = {"label": label, "conf": conf, "val_images": len(images), "classes": out, "machine": machine(),
           "command": cli()}
    allf = RESULTS / "synth_budget_errors.json"
    runs = json.loads(allf.read_text())["runs"] if allf.is_file() else []
    runs = [r for r in runs if r["label"] != label] + [res]
    table = []
    for r in runs:
        for n, o in r["classes"].items():
            sc = [v for v in o["unfound_scores"] if v is not None]
            table.append({"run": r["label"], "class": n, "boxes": o["boxes"], "found": o["found"],
                          "misplaced": o["misplaced"], "other class": o["other_class"], "missed": o["missed"],
                          "unfound, well placed at a lower score": f"{len(sc)} (scores {min(sc):.2f}-{max(sc):.2f})"
                          if sc else "0"})
    write("synth_budget_errors", {"runs": runs, "machine": machine(), "command": cli()}, table,
          ["run", "class", "boxes", "found", "misplaced", "other class", "missed",
           "unfound, well placed at a lower score"],
          "Synthetic default: where YOLO11n loses its validation mAP50",
          f"Command: `python -m studies.synth_budget --errors LABEL...` (runs of `--label`, their kept best.pt). "
          f"Every validation box: found = a same-class box at conf >= {conf} with IoU >= 0.5; misplaced = same "
          "class, best IoU 0.2-0.5; other class = a box of another class at IoU >= 0.5; missed = none of these. "
          "Last column: of the boxes not found, how many have a same-class box at IoU >= 0.5 below the "
          "confidence threshold, and its score range (the detector saw them, unsure).")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label")
    ap.add_argument("--errors", nargs="+", metavar="LABEL", help="per-class error breakdown of these runs")
    ap.add_argument("--set", nargs="*", default=[], help="dotted.key=value overrides of params.yaml")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.errors:
        for label in a.errors:
            errors(label)
    elif a.label:
        run(a.label, parse_sets(a.set), a.device)
    else:
        ap.error("--label or --errors is required")


if __name__ == "__main__":
    main()
