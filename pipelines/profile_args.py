"""Turn a profile file (``dotted.key: value`` overrides of params.yaml) into ``dvc exp run``
``-S`` arguments: ``python -m pipelines.profile_args profiles/paper-gpu.yaml``.

Not ``profile.py``: Prefect loads flow entrypoints with ``pipelines/`` on ``sys.path``, where that
name would shadow the standard library's ``profile`` module."""

from __future__ import annotations

import shlex
import sys

import yaml

from components.config import load_profile
from components.settings import resolve


def set_args(profile_path: str, params_path: str = "params.yaml") -> list[str]:
    overrides = load_profile(profile_path)
    resolve(params_path, [(f"profile {profile_path}", overrides)])  # an unknown key or a bad value stops here
    args = []
    for key, value in overrides.items():
        args += ["-S", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
    return args


if __name__ == "__main__":
    print(" ".join(shlex.quote(a) for a in set_args(sys.argv[1])))
