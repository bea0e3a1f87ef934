"""NEU-DET at the papers' GPU protocol (``profiles/neu-paper-gpu.yaml``: DASC-YOLO's 640 px, large
models, AdamW, batch 16, AMP): the runs trained on a GPU worker with ``studies.neu_cpu --profile
neu-paper-gpu --device 0`` (evaluated there, on val and test), beside dasc-yolo.md Table 4.

    python -m studies.neu_paper_gpu --baseline gpu-paper-base-l-e20 \\
        dasc=gpu-paper-dasc-l-e20 dasc_proto=gpu-paper-dasc-proto-l-e20

Every detector other than the baseline gets its test mAP50 gain over the baseline with a
paired-bootstrap 95 % interval over the test images (``components.bootstrap.paired_bootstrap``,
2000 resamples). The runs may be shortened (``train.epochs`` overridden): the table says how many
epochs each had and extrapolates the full protocol's training time from the measured epoch time.
Written to ``results/neu_paper_gpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import json

from .common import RESULTS, cli, machine, write
from .neu import PAPER
from .neu_cpu import RUNS, profile_params
from .neu_cpu_table import CLASSES

SHORT = {"crazing": "Cr", "inclusion": "In", "patches": "Pa", "pitted_surface": "Pi", "rolled-in_scale": "Ro",
         "scratches": "Sc"}
COLUMNS = ["detector", "run", "epochs", "val mAP50", "test mAP50", "gain vs baseline [95 % CI]", "mAP50-95",
           *SHORT.values(), "params (M)", "GFLOPs", "epoch s", "full protocol (h)"]


def name_of(r: dict) -> str:
    scale = r["params_used"].get(r["model"], {}).get("scale", "")
    base = {"baseline": f"YOLO11{scale}", "dasc": f"DASC-YOLO-{scale}"}.get(r["model"], r["model"])
    if r["model"] == "dasc" and float(r["params_used"]["dasc"].get("proto_loss", 0) or 0) > 0:
        base += " + box-supervised ProtoNet"
    return base + " (ours)"


def main() -> None:
    from components.bootstrap import ImageStats, paired_bootstrap

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="the baseline run")
    ap.add_argument("roles", nargs="+", metavar="ROLE=RUN")
    a = ap.parse_args()
    roles = {"baseline": a.baseline, **dict(x.split("=", 1) for x in a.roles)}
    full_epochs = profile_params(["neu-paper-gpu"]).train.epochs
    base_stats = ImageStats.load(RUNS / f"{a.baseline}-test.npz")
    rows, models = [], {}
    for role, run in roles.items():
        r = json.loads((RUNS / f"{run}.json").read_text())
        t = r["test"]
        g = None if role == "baseline" else paired_bootstrap(base_stats, ImageStats.load(RUNS / f"{run}-test.npz"),
                                                             2000, 0)
        models[role] = {"run": run, "profiles": r.get("profiles"), "overrides": r["overrides"],
                        "epochs": r["epochs_run"], "epoch_s": r["epoch_s"], "device": r["device"],
                        "val_mAP50": r["val"]["mAP50"], "mAP50": t["mAP50"], "mAP50-95": t["mAP50-95"],
                        "per_class_ap50": t["per_class_AP50"], "params": t["params"], "gflops": t["GFLOPs"],
                        "fps": t["fps"], "fps_device": t["latency_device"], "gain_vs_baseline": g}
        rows.append({"detector": name_of(r), "run": run, "epochs": r["epochs_run"],
                     "val mAP50": round(100 * r["val"]["mAP50"], 1), "test mAP50": round(100 * t["mAP50"], 1),
                     "gain vs baseline [95 % CI]": "" if g is None else
                     f"{100 * g['mAP50']:+.1f} [{100 * g['ci95'][0]:+.1f}, {100 * g['ci95'][1]:+.1f}]",
                     "mAP50-95": round(100 * t["mAP50-95"], 1),
                     **{SHORT[c]: round(100 * t["per_class_AP50"][c], 1) for c in CLASSES},
                     "params (M)": round(t["params"] / 1e6, 2), "GFLOPs": round(t["GFLOPs"], 1),
                     "epoch s": r["epoch_s"], "full protocol (h)": round(full_epochs * r["epoch_s"] / 3600, 1)})
    for name, p in PAPER.items():
        rows.append({"detector": name, "run": "dasc-yolo.md Table 4", "epochs": 300, "val mAP50": "",
                     "test mAP50": p["mAP50"], "gain vs baseline [95 % CI]": "", "mAP50-95": "",
                     **{SHORT[c]: p[c] for c in CLASSES}, "params (M)": "", "GFLOPs": "", "epoch s": "",
                     "full protocol (h)": ""})
    payload = {"machine": machine(), "command": cli(), "protocol_profile": "profiles/neu-paper-gpu.yaml",
               "full_protocol_epochs": full_epochs, "models": models, "paper": PAPER, "rows": rows}
    notes = ("Test mAP50 of each run's best epoch on val (ultralytics' AP; the served square letterbox). "
             "Gain: paired bootstrap of the 360 test images, 2000 resamples, one run per detector (no seed "
             "spread in the interval). 'epoch s' is the run's mean epoch time on its GPU, including the "
             "per-epoch validation, with whatever ran beside it (see each run's JSON); 'full protocol (h)' "
             f"is that time {full_epochs} times. The papers' rows are at their own protocol and split.")
    print(write("neu_paper_gpu", payload, rows, COLUMNS,
                "NEU-DET at the papers' GPU protocol (neu-paper-gpu), as run", notes))


if __name__ == "__main__":
    main()
