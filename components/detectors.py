"""What each detector is, in one place: its model config from params, and whether it reads a LAM.

Flows, benchmarks and trials ask here instead of importing the train flow. ``params`` is the
already-parsed params tree (components never read params.yaml themselves).
"""

from __future__ import annotations

from pathlib import Path

from .config import section

MODELS = ("baseline", "dasc", "lagnet")       # importing this module stays light (the CLI's choices):
                                             # torch / ultralytics are imported when a config is built


def model_cfg(model: str, params: dict, nc: int, work: Path) -> str:
    """The model YAML to train: ultralytics' own for the baseline, generated ones (written into
    ``work``) for DASC-YOLO and LAGNet."""
    from .dasc.config import DascToggles, write_dasc_yaml
    from .lagnet.config import write_lagnet_yaml
    from .train import baseline_cfg

    if model == "baseline":
        return baseline_cfg(section(params, "baseline.scale"))
    if model == "dasc":
        d = dict(section(params, "dasc"))
        scale = d.pop("scale")
        return str(write_dasc_yaml(work, scale, nc, DascToggles(**d)))
    if model == "lagnet":
        g = dict(section(params, "lagnet"))
        return str(write_lagnet_yaml(work, nc=nc, **lagnet_kwargs(g)))
    raise ValueError(f"unknown model '{model}' (choose from {', '.join(MODELS)})")


def lagnet_kwargs(g: dict) -> dict:
    """``write_lagnet_yaml`` keyword arguments from the params ``lagnet`` (+ ``lam``) section."""
    from .lagnet.config import LagnetToggles

    return dict(variant=g["variant"], width=g["width"], k=g["k"], n=g["n"],
                toggles=LagnetToggles(g["lam"], g["scem"]))


def display_name(model: str, params: dict) -> str:
    """The detector as the papers name it, with its size: ``YOLO11n``, ``DASC-YOLO-n``, ``LAGNet-s``
    (``LAGNet`` for the large variant; ``(RGB only)`` without the LAM branch)."""
    if model == "baseline":
        return f"YOLO11{section(params, 'baseline.scale')}"
    if model == "dasc":
        return f"DASC-YOLO-{section(params, 'dasc.scale')}"
    if model == "lagnet":
        name = "LAGNet-s" if section(params, "lagnet.variant") == "small" else "LAGNet"
        return name if uses_lam(model, params) else f"{name} (RGB only)"
    raise ValueError(f"unknown model '{model}' (choose from {', '.join(MODELS)})")


def uses_lam(model: str, params: dict) -> bool:
    """Does ``model`` read RGB + LAM (LAGNet with its LAM branch on)?"""
    return model == "lagnet" and bool(section(params, "lagnet.lam"))
