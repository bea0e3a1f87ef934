"""Shared by every benchmark: machine description, timing a command, writing JSON + markdown."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    from components.config import git_commit

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_commit": git_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def timed(argv: list[str], log: Path) -> dict:
    """Run ``argv`` (output to ``log``), return wall seconds and exit code."""
    t = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT).returncode
    return {"command": " ".join(argv), "seconds": round(time.perf_counter() - t, 2), "rc": rc}


def write(name: str, payload: dict, table: list[dict], columns: list[str], title: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    m = payload["machine"]
    lines = [f"# {title}", "",
             f"{m['date']}, commit `{m['git_commit'][:12]}`, {m['cpu_count']} CPU cores "
             f"({m['torch_threads']} torch threads), GPU: {m['gpu'] or 'none'}, torch {m['torch']}", "",
             f"Command: `{payload['command']}`", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in table]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def cli() -> str:
    return " ".join([Path(sys.executable).name, "-m", *sys.argv])
