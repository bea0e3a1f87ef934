"""What makes the embedded synthetic default learnable within ``make run``'s budget (issue 10
item 7): one YOLO11n training on the synthetic set per call, with ``--set`` overrides of
params.yaml (``data.synth.*``, ``train.*``), scored on the synthetic val split (every choice is
made there) and test split (reported only). Appends a row to ``results/synth_budget.json`` and
re-renders ``results/synth_budget.md``.

    python -m benchmarks.synth_budget --label default
    python -m benchmarks.synth_budget --label strong --set "data.synth.contrast=[0.5, 0.9]" train.mosaic=1.0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from components.config import trainer_args
from components.settings import resolve

from .common import RESULTS, cli, machine, write
from .neu_cpu import parse_sets

WORK = Path(".cache/bench/synth_budget")
OUT = RESULTS / "synth_budget.json"


def synth_data_yaml(params, out: Path) -> Path:
    """The embedded synthetic set of ``params.data.synth`` (generated once per params and generator
    code under ``WORK``), split as ``params.split``, as an ultralytics data YAML in ``out``."""
    from components.data.canonical import load_manifest
    from components.data.split import make_split
    from components.data.synth import SynthConfig, write_synth_dataset
    from components.data.views import write_yolo_data_yaml

    syn = params.data.synth.plain()
    code = (Path(__file__).resolve().parents[1] / "components" / "data" / "synth.py").read_bytes()
    key = hashlib.sha256(json.dumps(syn, sort_keys=True).encode() + code).hexdigest()[:10]   # params + generator
    root = WORK / f"synth-{key}"
    if not (root / "synth" / "manifest.json").is_file():
        write_synth_dataset(SynthConfig(**{**syn, "contrast": tuple(syn["contrast"])}), root, "synth")
    m = load_manifest(root / "synth")
    s = params.split
    split = make_split(m["images"], m["classes"], s.test_ratio, s.val_ratio, s.seed, 0)
    return write_yolo_data_yaml(root / "synth", split, out)


def run(label: str, sets: dict, device: str = "cpu") -> dict:
    from components.evaluate import evaluate_detector
    from components.train import baseline_cfg, train_detector

    params = resolve("params.yaml", [("--set", sets)])
    work = WORK / label
    data_yaml = synth_data_yaml(params, work / "data")
    args, _, seed = trainer_args(params)
    t = time.time()
    res = train_detector(baseline_cfg(params.baseline.scale), data_yaml, work / "train", args, device,
                         seed, params.loss.iou)
    secs = time.time() - t
    ev = params.evaluate
    scores = {part: evaluate_detector(res.best, data_yaml, part, args["imgsz"], ev.batch, ev.conf, ev.iou,
                                      device, {**ev.latency.plain(), "runs": 3}, work / f"eval-{part}",
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
          "Command: `python -m benchmarks.synth_budget --label L --set ...` (one row per call). Choices are "
          "made on val; test is reported only. Train seconds depend on what else the machine ran.")
    print(json.dumps({k: row[k] for k in ("label", "train_seconds", "val_mAP50", "test_mAP50")}))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--label", required=True)
    ap.add_argument("--set", nargs="*", default=[], help="dotted.key=value overrides of params.yaml")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    run(a.label, parse_sets(a.set), a.device)


if __name__ == "__main__":
    main()
