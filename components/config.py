"""The one config source: ``params.yaml`` (DVC params).

Flows read params here and hand explicit values to components; components never read
``params.yaml`` themselves. Secrets never live in params: credentials come from the
environment (``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL``, AWS_* ...). Also here: what identifies
an execution (the git commit, the pipeline-run id shared by the stages of one ``dvc repro``, the
command that ran).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"
PIPELINE_RUN_ENV = "DEFECTOPS_PIPELINE_RUN"   # the pipeline-run id, passed down to subprocesses


class ConfigError(ValueError):
    """A params file is missing, malformed, or lacks a required key."""


class StopError(RuntimeError):
    """A run stopped for a reason the user can act on (a source that cannot be imported, an ONNX
    export that disagrees with PyTorch): the CLI prints it as one line and exits 1."""


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path.resolve()} (run from the repository root)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def section(params: dict[str, Any], dotted: str) -> Any:
    """``section(p, "train.baseline")`` with a clear error naming the missing key."""
    node: Any = params
    for i, key in enumerate(dotted.split(".")):
        if not isinstance(node, dict) or key not in node:
            where = ".".join(dotted.split(".")[:i + 1])
            raise ConfigError(f"params.yaml has no key '{where}'")
        node = node[key]
    return node


def apply_overrides(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with ``dotted.key: value`` leaves replaced (a profile, tuned values,
    ``--set``). A key params.yaml does not have is an error, never a silent new param."""
    import copy

    p = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = section(p, ".".join(parents)) if parents else p
        if not isinstance(node, dict) or leaf not in node:
            raise ConfigError(f"params.yaml has no key '{dotted}'")
        node[leaf] = copy.deepcopy(value)
    return p


def trainer_args(params) -> tuple[dict[str, Any], str, int]:
    """The settings' ``train`` section (``components.settings.Settings``) as ultralytics train
    arguments, minus ``device`` and ``seed``, which the caller passes itself: ``(args, device, seed)``."""
    t = params.train
    return t.ultralytics(), t.device, t.seed


def load_profile(path: str | Path) -> dict[str, Any]:
    """A profile file: ``dotted.key: value`` overrides of params.yaml (``profiles/*.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"profile not found: {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected 'dotted.key: value' lines")
    return data


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists are kept as JSON strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def params_hash(d: dict[str, Any]) -> str:
    """Stable short hash of a params (sub)tree, independent of key order."""
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def git_commit(cwd: str | Path = ".") -> str:
    """HEAD commit, suffixed ``-dirty`` when tracked files differ; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _dvc_process():
    """The ``dvc`` process (``dvc repro``, ``dvc exp run``) this process runs under, or None."""
    import psutil

    try:
        for p in psutil.Process().parents():
            try:
                cmd = p.cmdline()
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            names = [os.path.basename(c) for c in cmd[:3]]
            if any(n in ("dvc", "dvc.exe") for n in names) or (len(cmd) > 2 and cmd[1:3] == ["-m", "dvc"]):
                return p
    except psutil.Error:
        pass
    return None


def pipeline_run_id() -> str:
    """The id that groups the runs of one pipeline execution (tag ``defectops.pipeline_run``).

    ``DEFECTOPS_PIPELINE_RUN`` wins (a caller that starts stages in subprocesses passes its own id
    down); else, in a stage command DVC runs (``DVC_STAGE`` is set), the ``dvc`` process that runs
    every stage of this ``dvc repro`` / ``dvc exp run``: its start time and pid, the same in each
    stage's process and new for the next repro; else this process's own start time and pid."""
    import psutil

    if os.environ.get(PIPELINE_RUN_ENV):
        return os.environ[PIPELINE_RUN_ENV]
    proc, kind = (_dvc_process(), "dvc") if os.environ.get("DVC_STAGE") else (None, "")
    if proc is None:
        proc, kind = psutil.Process(), "proc"
    started = time.strftime("%Y%m%dT%H%M%S", time.localtime(proc.create_time()))
    return f"{kind}-{started}-{proc.pid}"


def source_name() -> str:
    """``mlflow.source.name``: ``dvc.yaml:<stage>`` for a stage DVC runs, else the command line."""
    if os.environ.get("DVC_STAGE"):
        return f"dvc.yaml:{os.environ['DVC_STAGE']}"
    return " ".join([os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python",
                     *sys.argv[1:]])[:500]   # an MLflow tag value, kept short
