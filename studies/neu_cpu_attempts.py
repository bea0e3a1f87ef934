"""The ledger of every NEU-DET CPU-protocol attempt (issue 10), and of the shortened paper-protocol
runs on a GPU: what changed, its figures, and whether it was kept. Figures are read from the files
the runs wrote (ultralytics' results.csv of every run, complete or cut off; ``runs/<run>.json`` of
the evaluated ones); only the change and the decision are written by hand, in
``results/neu_cpu/attempts_ledger.yaml``.

    python -m studies.neu_cpu_attempts      # -> results/neu_cpu/attempts.{md,json}
"""

from __future__ import annotations

import json
from operator import itemgetter
from pathlib import Path

import yaml

from components.report import write_table

from .common import RESULTS, VAL_MAP50, cli, read_results_csv
from .neu_cpu import RUNS

DEVICE = RESULTS / "neu_cpu" / "device"
LEDGER = RESULTS / "neu_cpu" / "attempts_ledger.yaml"   # each attempt's change and decision (data, not code)
FIELDS = itemgetter("attempt", "results", "run", "epochs", "change", "decision")   # of one ledger entry


# pairs cut off at different epochs are compared at the last epoch both logged
COMPARE_AT = {"lag-none-e36": 31, "lag-imax-e36": 31}


def _curve(path: Path) -> list[float]:
    return [r[VAL_MAP50] for r in read_results_csv(path)]


def main() -> None:
    rows, payload = [], {"attempts": [], "command": cli()}
    for label, csv_rel, run, planned, change, decision in map(FIELDS, yaml.safe_load(LEDGER.read_text())):
        csv_path = DEVICE / csv_rel if csv_rel and csv_rel.endswith(".csv") else (
            RUNS / f"{csv_rel}-results.csv" if csv_rel else None)
        curve = _curve(csv_path) if csv_path and csv_path.is_file() else []
        ev = json.loads((RUNS / f"{run}.json").read_text()) if run and (RUNS / f"{run}.json").is_file() else None
        if csv_rel and not curve and not ev:
            continue                                            # not run (yet)
        rec = {"attempt": label, "change": change, "decision": decision, "epochs_logged": len(curve),
               "epochs_planned": planned, "last_val_mAP50": round(curve[-1], 4) if curve else None,
               "val_mAP50": ev["val"]["mAP50"] if ev else None, "test_mAP50": ev["test"]["mAP50"] if ev else None,
               "source": str(csv_path.relative_to(RESULTS)) if curve else None}
        at = COMPARE_AT.get(label)
        if at and len(curve) >= at:
            rec[f"val_mAP50_epoch{at}"] = round(curve[at - 1], 4)
        payload["attempts"].append(rec)
        rows.append({"attempt": label, "change": change,
                     "epochs": f"{len(curve)}/{planned}" if curve else f"0/{planned}",
                     "val mAP50 (last logged epoch)": round(100 * curve[-1], 1) if curve else "",
                     "val mAP50 at a common epoch": (f"{100 * curve[at - 1]:.1f} (epoch {at})"
                                                     if at and len(curve) >= at else ""),
                     "val mAP50 (best.pt)": round(100 * ev["val"]["mAP50"], 1) if ev else "",
                     "test mAP50": round(100 * ev["test"]["mAP50"], 1) if ev else "", "decision": decision})
    cols = ["attempt", "change", "epochs", "val mAP50 (last logged epoch)", "val mAP50 at a common epoch",
            "val mAP50 (best.pt)", "test mAP50",
            "decision"]
    md, _ = write_table(RESULTS / "neu_cpu" / "attempts",
                        "NEU-DET: every attempt (CPU protocol; 'paper protocol' rows: neu-paper-gpu on a GPU)",
                        f"Command: `{cli()}`. Validation: 180 images carved from the training part; test: 360 "
                        "images, used for no decision. Runs marked 'cut off' stopped at the device's time "
                        "limit: their last logged epoch is shown for the record only.", rows, cols, payload)
    print(md.read_text())


if __name__ == "__main__":
    main()
