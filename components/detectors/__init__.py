"""The detector catalogue: one package per detector, one :class:`DetectorSpec` each.

``components/detectors/<package>/`` holds a detector's layers, its model-config builder, its data
and export seams, and its ``SPEC``: the params section and DVC stage suffix it goes by (``key``:
``baseline``, ``dasc``, ``lagnet``), the paper, how its model YAML is built from params, its name
as the papers give it, whether it reads a LAM (and so how many input channels it takes, its data
path, how it is exported: alone, or as the one graph LAM maker -> LAM -> LAGNet), its Optuna
space with fully qualified params keys, its roles (``reference``: the detector gains are measured
against; ``lam_maker``: the one whose weights make LAGNet's LAMs) and its extra DVC deps.

Flows, benchmarks and trials ask here (by key or by role) instead of naming a detector. A fourth
detector is one more package plus one entry in ``CATALOGUE`` (or ``register(spec)`` at run time:
an out-of-tree detector, a test's toy). ``params`` is the already-parsed
:class:`~components.settings.Settings` (components never read params.yaml themselves). Importing
this module stays light (the CLI's choices): torch / ultralytics are imported when a config is built.
Checkpoints that pickled a layer under a module path it has since left load through ``legacy``.
"""

from __future__ import annotations

from pathlib import Path

from . import dasc, lagnet, yolo11
from .spec import LAM_MAKER, REFERENCE, ROLES, DetectorSpec

__all__ = ["DetectorSpec", "CATALOGUE", "MODELS", "ROLES", "REFERENCE", "LAM_MAKER", "register", "unregister",
           "spec", "by_role", "reference", "lam_maker", "model_cfg", "display_name", "uses_lam"]

CATALOGUE: dict[str, DetectorSpec] = {s.key: s for s in (yolo11.SPEC, dasc.SPEC, lagnet.SPEC)}
MODELS = tuple(CATALOGUE)           # the detectors this project ships (the CLI's choices, DVC's stages)


def register(new: DetectorSpec) -> DetectorSpec:
    """Add a detector to the catalogue (of this process): flows, trials and benchmarks then take
    its key like a shipped one's. A key already taken, or a role another detector already plays,
    is refused (roles are unique: ``reference()`` must name one detector)."""
    if not isinstance(new, DetectorSpec):
        raise TypeError(f"register() takes a DetectorSpec, got {type(new).__name__}")
    if new.key in CATALOGUE:
        raise ValueError(f"a detector '{new.key}' is already registered")
    taken = {r: s.key for s in CATALOGUE.values() for r in s.roles}
    clash = sorted(r for r in new.roles if r in taken)
    if clash:
        raise ValueError(f"detector '{new.key}': role {clash[0]} is already played by '{taken[clash[0]]}'")
    CATALOGUE[new.key] = new
    return new


def unregister(key: str) -> DetectorSpec:
    """Remove a detector that :func:`register` added (the shipped ones stay)."""
    if key in MODELS:
        raise ValueError(f"'{key}' is a shipped detector: it cannot be unregistered")
    return CATALOGUE.pop(spec(key).key)


def spec(model: str) -> DetectorSpec:
    if model not in CATALOGUE:
        raise ValueError(f"unknown model '{model}' (choose from {', '.join(CATALOGUE)})")
    return CATALOGUE[model]


def by_role(role: str) -> DetectorSpec:
    """The detector that plays ``role`` (one of ``ROLES``)."""
    if role not in ROLES:
        raise ValueError(f"unknown role '{role}' (known: {', '.join(ROLES)})")
    found = [s for s in CATALOGUE.values() if role in s.roles]
    if len(found) != 1:
        raise LookupError(f"{len(found)} detectors play the role '{role}' (the catalogue needs exactly one)")
    return found[0]


def reference() -> DetectorSpec:
    """The detector every other detector's mAP50 gain is measured against (``gain_vs_baseline``)."""
    return by_role(REFERENCE)


def lam_maker() -> DetectorSpec:
    """The detector whose trained weights make the LAMs (stage ``lam``, the served one-graph model)."""
    return by_role(LAM_MAKER)


def model_cfg(model: str, params, nc: int, work: Path) -> str:
    """The model YAML to train: ultralytics' own for YOLO11, generated ones (written into
    ``work``) for DASC-YOLO and LAGNet."""
    return spec(model).build(params, nc, work)


def display_name(model: str, params) -> str:
    """The detector as the papers name it, with its size: ``YOLO11n``, ``DASC-YOLO-n``, ``LAGNet-s``
    (``LAGNet`` for the large variant; ``(RGB only)`` without the LAM branch)."""
    return spec(model).name(params)


def uses_lam(model: str, params) -> bool:
    """Does ``model`` read RGB + LAM (LAGNet with its LAM branch on)?"""
    return spec(model).reads_lam(params)
