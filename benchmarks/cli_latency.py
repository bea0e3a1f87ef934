"""How fast the CLI answers before any work: ``defectops --help``, an argument error and a
mistyped source folder (its one ``error:`` line), the median wall time of fresh processes
(nothing heavy may be imported before it is needed).

    python -m benchmarks.cli_latency [--runs 7]     # -> results/cli_latency.{json,md}
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .common import cli, machine, write

CASES = {"defectops --help": ["--help"], "defectops train nosuch (argument error)": ["train", "nosuch"],
         "defectops predict --help": ["predict", "--help"],
         "defectops data import /no/such/folder (error line)": ["data", "import", "/no/such/folder", "--name", "x"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    exe = str(Path(sys.executable).parent / "defectops")
    rows, out = [], {}
    for name, args in CASES.items():
        times, rc = [], None
        for _ in range(a.runs):
            t = time.perf_counter()
            rc = subprocess.run([exe, *args], capture_output=True).returncode
            times.append(time.perf_counter() - t)
        out[name] = {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3), "rc": rc,
                     "runs": a.runs}
        rows.append({"command": name, "median s": out[name]["median_s"], "max s": out[name]["max_s"], "exit": rc})
    md = write("cli_latency", {"machine": machine(), "command": cli(), "cases": out}, rows,
               ["command", "median s", "max s", "exit"], "CLI answer time (fresh processes; target < 2 s)")
    print(md.read_text())


if __name__ == "__main__":
    main()
