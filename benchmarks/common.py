"""Shared by every benchmark: machine description, timing a command, writing JSON + markdown."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NEU_RUNS = RESULTS / "neu_cpu" / "runs"     # the NEU-DET CPU-protocol runs (benchmarks.neu_cpu writes them)
VAL_MAP50 = "metrics/mAP50(B)"              # ultralytics' results.csv column of the validation mAP50


def read_results_csv(path: Path) -> list[dict[str, float]]:
    """An ultralytics results.csv, one dict per epoch; its column names are padded with spaces."""
    import csv

    with open(path) as f:
        return [{k.strip(): float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ('' where there is none). Kernels built for
    different instruction sets round differently, so a training's figures are tied to it."""
    info = Path("/proc/cpuinfo")
    for line in (info.read_text().splitlines() if info.is_file() else []):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def machine() -> dict:
    import torch

    from components.config import git_commit

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def timed(argv: list[str], log: Path) -> dict:
    """Run ``argv`` (output to ``log``), return wall seconds and exit code."""
    venv_bin = str(Path(sys.executable).parent)      # dvc stages call `defectops`: the venv's, first
    env = {**os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
    exe = shutil.which(argv[0], path=env["PATH"]) or argv[0]
    t = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run([exe, *argv[1:]], stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    return {"command": " ".join(argv), "seconds": round(time.perf_counter() - t, 2), "rc": rc}


def write(name: str, payload: dict, table: list[dict], columns: list[str], title: str, notes: str = "") -> Path:
    """``results/<name>.{md,json}``: title, machine, command, the table, then ``notes`` (a paragraph)."""
    from components.report import write_table

    m = payload["machine"]
    preamble = (f"{m['date']}, commit `{m['git_commit'][:12]}`, {m['cpu_count']} CPU cores"
                f"{' (' + m['cpu_model'] + ', ' + m['cpu_capability'] + ')' if m.get('cpu_model') else ''} "
                f"({m['torch_threads']} torch threads), GPU: {m['gpu'] or 'none'}, torch {m['torch']}\n\n"
                f"Command: `{payload['command']}`")
    md, _ = write_table(RESULTS / name, title, preamble, table, columns, payload)
    if notes:
        md.write_text(md.read_text() + "\n" + notes + "\n")
    return md


def cli() -> str:
    """The command line that is running, as ``python -m benchmarks.X args``."""
    script = Path(sys.argv[0]).resolve()
    try:
        module = ".".join(script.relative_to(Path.cwd().resolve()).with_suffix("").parts)
    except ValueError:
        module = script.stem
    return " ".join(["python", "-m", module, *sys.argv[1:]])
