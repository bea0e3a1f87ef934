"""Render ``results/synth_lagnet_width.{json,md}`` from the runs ``studies/synth_lagnet_width.sh``
kept: LAGNet-s validation and test mAP50 per neck width and seed on the embedded synthetic default,
beside the baseline its LAMs come from. The width is chosen on validation (mean over the seeds);
test is reported only.

    bash studies/synth_lagnet_width.sh "32 48" "0 1 2"
    python -m studies.synth_lagnet_width
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

from .common import RESULTS, cli, machine, write

RUNS = RESULTS / "synth_lagnet_width"


def main() -> None:
    base = json.loads((RUNS / "baseline.json").read_text())
    runs = []
    for f in sorted(RUNS.glob("lagnet-w*-s*.json")):
        w, s = map(int, re.fullmatch(r"lagnet-w(\d+)-s(\d+)\.json", f.name).groups())
        d = json.loads(f.read_text())
        runs.append({"width": w, "seed": s, "params": d.get("params"), "val_mAP50": d["val"]["mAP50"],
                     "test_mAP50": d["mAP50"], "gain_vs_baseline": d.get("gain_vs_baseline")})
    if not runs:
        raise SystemExit(f"no runs in {RUNS}: run studies/synth_lagnet_width.sh first")
    table = [{"width": r["width"], "seed": r["seed"], "params": f"{r['params'] / 1e6:.2f}M",
              "val mAP50": round(r["val_mAP50"], 3), "test mAP50": round(r["test_mAP50"], 3),
              "test gain vs baseline [95 % CI]": "{:+.3f} [{:+.3f}, {:+.3f}]".format(
                  r["gain_vs_baseline"]["mAP50"], *r["gain_vs_baseline"]["ci95"])} for r in runs]
    means = {}
    for w in sorted({r["width"] for r in runs}):
        rs = [r for r in runs if r["width"] == w]
        means[w] = {"seeds": len(rs), "val_mean": round(statistics.mean(r["val_mAP50"] for r in rs), 4),
                    "val_min": min(r["val_mAP50"] for r in rs), "val_max": max(r["val_mAP50"] for r in rs),
                    "test_mean": round(statistics.mean(r["test_mAP50"] for r in rs), 4)}
        table.append({"width": w, "seed": f"mean of {len(rs)}", "params": "", "val mAP50": means[w]["val_mean"],
                      "test mAP50": means[w]["test_mean"], "test gain vs baseline [95 % CI]": ""})
    chosen = max(means, key=lambda w: means[w]["val_mean"])
    notes = (f"Baseline (YOLO11n, seed 0, the one every LAM here comes from): val mAP50 {base['val']['mAP50']:.3f}, "
             f"test {base['mAP50']:.3f}. Highest mean validation mAP50: width {chosen}. Every run trains with "
             "train.threads 1 and the default's other settings (15 epochs, 128 px); the seed is train.seed, the "
             "baseline and its LAMs are the same for every row. Gains: paired bootstrap of the 144 test images.")
    write("synth_lagnet_width", {"runs": runs, "means": means, "chosen_on_val": chosen,
                                 "baseline": {"val_mAP50": base["val"]["mAP50"], "test_mAP50": base["mAP50"]},
                                 "machine": machine(), "command": cli()},
          table, ["width", "seed", "params", "val mAP50", "test mAP50", "test gain vs baseline [95 % CI]"],
          "LAGNet-s neck width on the synthetic default", notes)
    print(json.dumps({"means": means, "chosen_on_val": chosen}))


if __name__ == "__main__":
    main()
