"""Profiles as DVC experiments that leave params.yaml alone.

``python -m defectops.profile_args --run neu-cpu smoke`` (what ``make run PROFILE="neu-cpu smoke"``
calls) lays ``profiles/neu-cpu.yaml`` then ``profiles/smoke.yaml`` over params.yaml (a later
profile wins on a shared key; an unknown key or a bad value stops here, before DVC starts), runs
``dvc exp run -n <profiles>-<UTC time> -S key=value ...`` in the workspace, then writes
params.yaml's original bytes back, whether the run succeeded or not. The run's values stay
recorded in the experiment's commit (``dvc exp show``), in the workspace's dvc.lock and in each
stage's MLflow run. ``python -m defectops.profile_args profiles/paper-gpu.yaml`` only prints the
``-S`` arguments.

Not ``profile.py``: wherever its folder is on ``sys.path`` (Prefect puts a flow's folder there), a
module of that name shadows the standard library's ``profile``."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

from components.settings import ConfigError, load_profile, resolve


def profile_path(name: str, root: str | Path = ".") -> Path:
    """``neu-cpu`` -> ``<root>/profiles/neu-cpu.yaml``; a path (``.yaml`` or with a ``/``) as given."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    return Path(root) / "profiles" / f"{name}.yaml"


def merged_overrides(profiles: list[str | Path], params_path: str | Path = "params.yaml") -> dict:
    """The profiles' ``{dotted.key: value}`` laid in order (the later wins), checked against params.yaml."""
    layers = [(f"profile {p}", load_profile(p)) for p in profiles]
    resolve(params_path, layers)                  # an unknown key or a bad value stops here
    merged: dict = {}
    for _, values in layers:
        merged.update(values)
    return merged


def _arg(key: str, value) -> list[str]:
    return ["-S", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]


def set_args(profile_path: str, params_path: str = "params.yaml") -> list[str]:
    """``dvc exp run`` ``-S key=value`` arguments for one profile file."""
    return [a for k, v in merged_overrides([profile_path], params_path).items() for a in _arg(k, v)]


def experiment_name(names: list[str]) -> str:
    """``neu-cpu-smoke-20261206-221500``: the profiles and the UTC start (DVC wants unique names)."""
    return "-".join(Path(n).stem for n in names) + time.strftime("-%Y%m%d-%H%M%S", time.gmtime())


def run_profiles(names: list[str], repo: str | Path = ".") -> int:
    """Run the DVC pipeline in ``repo`` as one experiment with the profiles' values, then restore
    params.yaml's bytes; return ``dvc exp run``'s exit code."""
    repo = Path(repo)
    params = repo / "params.yaml"
    overrides = merged_overrides([profile_path(n, repo) for n in names], params)
    original = params.read_bytes()
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "-n", experiment_name(names)]
    cmd += [a for k, v in overrides.items() for a in _arg(k, v)]
    print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=repo)
    try:
        try:
            return proc.wait()
        except KeyboardInterrupt:        # Ctrl-C reached DVC too: let it stop cleanly (a second one leaves)
            proc.wait()
            return 130
    finally:
        if params.read_bytes() != original:
            params.write_bytes(original)
            print("params.yaml restored (the run's values: `dvc exp show`, dvc.lock)", flush=True)


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["--run"]:
            if len(argv) < 2:
                raise ConfigError("usage: python -m defectops.profile_args --run PROFILE [PROFILE ...]")
            return run_profiles(argv[1:])
        if len(argv) != 1:
            raise ConfigError("usage: python -m defectops.profile_args profiles/NAME.yaml")
        print(" ".join(shlex.quote(a) for a in set_args(argv[0])))
        return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
