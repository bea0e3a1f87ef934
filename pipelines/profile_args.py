"""Turn a profile file (``dotted.key: value`` overrides of params.yaml) into ``dvc exp run``
``-S`` arguments: ``python -m pipelines.profile_args profiles/paper-gpu.yaml``.

Not ``profile.py``: Prefect loads flow entrypoints with ``pipelines/`` on ``sys.path``, where that
name would shadow the standard library's ``profile`` module."""

from __future__ import annotations

import shlex
import sys

import yaml

from components.config import load_params, load_profile, section


def set_args(profile_path: str, params_path: str = "params.yaml") -> list[str]:
    overrides = load_profile(profile_path)
    params = load_params(params_path)
    args = []
    for key, value in overrides.items():
        section(params, key)  # unknown keys are an error, not a silent new param
        args += ["-S", f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
    return args


if __name__ == "__main__":
    print(" ".join(shlex.quote(a) for a in set_args(sys.argv[1])))
