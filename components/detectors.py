"""The detector catalogue: what each detector is, in one place.

One :class:`DetectorSpec` per detector (``CATALOGUE``): the paper it comes from, how its model YAML
is built from params, its name as the papers give it, whether it reads a LAM (and so how many
input channels it takes and so its data path, how it is exported: alone, or as
the one graph baseline -> LAM -> LAGNet), and the Optuna space that tunes it. Flows, benchmarks
and trials ask here instead of importing the train flow. ``params`` is the already-parsed
:class:`~components.settings.Settings` (components never read params.yaml themselves). Importing this module stays light (the CLI's
choices): torch / ultralytics are imported when a config is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .settings import Settings


@dataclass(frozen=True)
class DetectorSpec:
    key: str                                       # the params section / DVC stage suffix
    paper: str | None                              # ../shared/papers/<paper>, None for the baseline
    build: Callable[[Settings, int, Path], str]    # (params, classes, work folder) -> model YAML
    name: Callable[[Settings], str]                # params -> "YOLO11n", "DASC-YOLO-n", "LAGNet-s"...
    reads_lam: Callable[[Settings], bool]          # params -> does it take RGB + LAM
    tune_space: str | None                         # the params key of its Optuna space
    deviations: str = ""                           # how it departs from its paper (model card; docs/detectors.md)

    def channels(self, params: Settings) -> int:
        """Input channels of the trained network: 6 (RGB + the JET-coded LAM) or 3."""
        return 6 if self.reads_lam(params) else 3

    def export(self, params: Settings) -> str:
        """``pipeline``: exported as one graph with the baseline that makes its LAM
        (``components.lagnet.export``); ``single``: the network alone (``components.deploy.export``)."""
        return "pipeline" if self.reads_lam(params) else "single"


def _baseline_cfg(params: Settings, nc: int, work: Path) -> str:
    from .train import baseline_cfg

    return baseline_cfg(params.baseline.scale)


def _dasc_cfg(params: Settings, nc: int, work: Path) -> str:
    from .dasc.config import DascToggles, write_dasc_yaml

    d = params.dasc.plain()
    scale = d.pop("scale")
    return str(write_dasc_yaml(work, scale, nc, DascToggles(**d)))


def _lagnet_cfg(params: Settings, nc: int, work: Path) -> str:
    from .lagnet.config import write_lagnet_yaml

    return str(write_lagnet_yaml(work, nc=nc, **lagnet_kwargs(params.lagnet.plain())))


def _lagnet_name(params: Settings) -> str:
    name = "LAGNet-s" if params.lagnet.variant == "small" else "LAGNet"
    return name if params.lagnet.lam else f"{name} (RGB only)"


CATALOGUE: dict[str, DetectorSpec] = {
    "baseline": DetectorSpec("baseline", None, _baseline_cfg,
                             lambda p: f"YOLO11{p.baseline.scale}", lambda p: False, None,
                             "ultralytics' YOLO11 as published, trained from scratch (no COCO weights)."),
    "dasc": DetectorSpec("dasc", "dasc-yolo.md", _dasc_cfg,
                         lambda p: f"DASC-YOLO-{p.dasc.scale}", lambda p: False, "tune.space.dasc",
                         "YOLO11 + ResCBAM, SCConv, Cross-Scale Attention and ProtoNet as the paper; CSA's global "
                         "branch pools to 1x1; options not in the paper (off unless set): `dasc.gate: zero`, "
                         "`dasc.csa_context: local`, `dasc.proto_loss` (box-supervised prototypes)."),
    "lagnet": DetectorSpec("lagnet", "lagnet.md", _lagnet_cfg, _lagnet_name,
                           lambda p: p.lagnet.lam, "tune.space.lagnet",
                           "ultralytics' anchor-free Detect head instead of the paper's YOLOv5 anchor head; neck width "
                           "`lagnet.width` (the paper gives none); MobileNetV3 backbones from torchvision, from "
                           "scratch; the LAM is computed in the served graph from the RGB image by the baseline."),
}
MODELS = tuple(CATALOGUE)


def spec(model: str) -> DetectorSpec:
    if model not in CATALOGUE:
        raise ValueError(f"unknown model '{model}' (choose from {', '.join(MODELS)})")
    return CATALOGUE[model]


def model_cfg(model: str, params: Settings, nc: int, work: Path) -> str:
    """The model YAML to train: ultralytics' own for the baseline, generated ones (written into
    ``work``) for DASC-YOLO and LAGNet."""
    return spec(model).build(params, nc, work)


def lagnet_kwargs(g: dict) -> dict:
    """``write_lagnet_yaml`` keyword arguments from the params ``lagnet`` (+ ``lam``) section."""
    from .lagnet.config import LagnetToggles

    return dict(variant=g["variant"], width=g["width"], k=g["k"], n=g["n"],
                toggles=LagnetToggles(g["lam"], g["scem"]))


def display_name(model: str, params: Settings) -> str:
    """The detector as the papers name it, with its size: ``YOLO11n``, ``DASC-YOLO-n``, ``LAGNet-s``
    (``LAGNet`` for the large variant; ``(RGB only)`` without the LAM branch)."""
    return spec(model).name(params)


def uses_lam(model: str, params: Settings) -> bool:
    """Does ``model`` read RGB + LAM (LAGNet with its LAM branch on)?"""
    return spec(model).reads_lam(params)
