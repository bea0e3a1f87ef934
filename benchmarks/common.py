"""Shared by every benchmark and study (``studies/``): machine description, timing a command,
writing JSON + markdown, the params a profile resolves to, the embedded synthetic set."""

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
PROFILE_DIR = Path(__file__).resolve().parents[1] / "profiles"
SYNTH_WORK = Path(".cache/bench/synth_budget")   # the embedded synthetic set, generated once per params
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

    from components.tracking import git_commit

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


def write(name: str, payload: dict, table: list[dict], columns: list[str], title: str, notes: str = "",
          root: Path = RESULTS) -> Path:
    """``<root>/<name>.{md,json}``: title, machine, command, the table, then ``notes`` (a paragraph)."""
    from components.report import write_table

    m = payload["machine"]
    preamble = (f"{m['date']}, commit `{m['git_commit'][:12]}`, {m['cpu_count']} CPU cores"
                f"{' (' + m['cpu_model'] + ', ' + m['cpu_capability'] + ')' if m.get('cpu_model') else ''} "
                f"({m['torch_threads']} torch threads), GPU: {m['gpu'] or 'none'}, torch {m['torch']}\n\n"
                f"Command: `{payload['command']}`")
    md, _ = write_table(root / name, title, preamble, table, columns, payload)
    if notes:
        md.write_text(md.read_text() + "\n" + notes + "\n")
    return md


def cli() -> str:
    """The command line that is running, as ``python -m benchmarks.X args`` (or ``studies.X``)."""
    script = Path(sys.argv[0]).resolve()
    try:
        module = ".".join(script.relative_to(Path.cwd().resolve()).with_suffix("").parts)
    except ValueError:
        module = script.stem
    return " ".join(["python", "-m", module, *sys.argv[1:]])


def parse_sets(items: list[str]) -> dict:
    """``--set key=value`` items as a dict, each value parsed as YAML."""
    import yaml

    out = {}
    for it in items:
        if "=" not in it:
            raise SystemExit(f"--set wants key=value, got '{it}'")
        k, v = it.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def profile_params(names: list[str], sets: dict | None = None):
    """params.yaml + ``profiles/<name>.yaml`` for each of ``names`` (later wins, as ``make run
    PROFILE="a b"``) + ``sets`` (``components.settings.resolve``)."""
    from components.settings import load_profile, resolve

    layers = [(f"profile {n}.yaml", load_profile(PROFILE_DIR / f"{n}.yaml")) for n in names]
    return resolve("params.yaml", [*layers, ("--set", sets or {})])


def synth_data_yaml(params, out: Path) -> Path:
    """The embedded synthetic set of ``params.data.synth`` (generated once per params and generator
    code under ``SYNTH_WORK``), split as ``params.split``, as an ultralytics data YAML in ``out``."""
    import hashlib
    import json

    from components.data.canonical import load_manifest
    from components.data.split import SplitSpec, make_split
    from components.data.synth import SynthConfig, write_synth_dataset
    from components.data.views import write_yolo_data_yaml

    syn = params.data.synth.plain()
    code = (Path(__file__).resolve().parents[1] / "components" / "data" / "synth.py").read_bytes()
    key = hashlib.sha256(json.dumps(syn, sort_keys=True).encode() + code).hexdigest()[:10]   # params + generator
    root = SYNTH_WORK / f"synth-{key}"
    if not (root / "synth" / "manifest.json").is_file():
        write_synth_dataset(SynthConfig(**{**syn, "contrast": tuple(syn["contrast"])}), root, "synth")
    m = load_manifest(root / "synth")
    s = params.split
    split = make_split(m["images"], m["classes"], SplitSpec(s.test_ratio, s.val_ratio, s.seed, 0))
    return write_yolo_data_yaml(root / "synth", split, out)
