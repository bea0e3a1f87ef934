"""Time the pipeline stages: each DVC stage forced on its own, then a no-op ``dvc repro``,
and (when ../shared has it) ``defectops data import`` of NEU-DET.

    python -m benchmarks.stages [--stages data,split,...] [--no-import]

Writes ``benchmarks/results/stages.json`` and ``stages.md``. Run it after ``dvc repro`` so
each forced stage finds its inputs. Stage outputs are rewritten, not changed: every stage
is deterministic for the same params.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml

from .common import cli, machine, timed, write

NEU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default=None, help="comma-separated DVC stages (default: all in dvc.yaml)")
    ap.add_argument("--no-import", action="store_true", help="skip the NEU-DET import timing")
    a = ap.parse_args()
    stages = a.stages.split(",") if a.stages else list(yaml.safe_load(open("dvc.yaml"))["stages"])
    logs = Path(tempfile.mkdtemp(prefix="bench-stages-"))
    rows = []
    for s in stages:
        r = timed(["dvc", "repro", "--force", "--single-item", s], logs / f"{s}.log")
        rows.append({"job": f"stage {s} (forced)", **r})
        print(rows[-1], flush=True)
    r = timed(["dvc", "repro"], logs / "noop.log")
    r["reran_nothing"] = "Running stage" not in (logs / "noop.log").read_text()
    rows.append({"job": "dvc repro, nothing changed", **r})
    print(rows[-1], flush=True)
    if not a.no_import and (NEU / "ANNOTATIONS").is_dir():
        out = Path(tempfile.mkdtemp(prefix="bench-import-"))
        r = timed(["defectops", "data", "import", str(NEU), "--name", "neu-det", "--root", str(out)],
                  logs / "import.log")
        r["summary"] = json.loads((out / "neu-det" / "summary.json").read_text())
        r["summary"].pop("warnings", None)
        rows.append({"job": "data import NEU-DET (1800 images)", **r})
        print(rows[-1], flush=True)
    metrics = Path("metrics/baseline.json")
    payload = {"machine": machine(), "command": cli(), "jobs": rows, "logs": str(logs),
               "baseline_metrics": json.loads(metrics.read_text()) if metrics.is_file() else None}
    print(write("stages", payload, rows, ["job", "seconds", "rc", "command"], "Pipeline stage timings"))


if __name__ == "__main__":
    main()
