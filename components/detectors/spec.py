"""``DetectorSpec``: what one detector is to the rest of the project (its package declares it,
``components.detectors`` collects them). Light: no torch, no ultralytics, no settings import."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

# roles a detector can play for the others (``components.detectors.by_role``)
REFERENCE = "reference"      # the detector every other one's gain is measured against (evaluate, model card)
LAM_MAKER = "lam_maker"      # the detector whose trained weights make the LAMs LAGNet reads (stage lam, served graph)
ROLES = (REFERENCE, LAM_MAKER)


def _never(params: Any) -> bool:
    return False


def _no_blocks() -> tuple[type, ...]:
    return ()


@dataclass(frozen=True)
class DetectorSpec:
    """One detector. ``params`` below is the parsed :class:`~components.settings.Settings` (the
    components never read params.yaml themselves)."""

    key: str                                      # params section, DVC stage suffix, MLflow run / tag name
    build: Callable[[Any, int, Path], str]        # (params, classes, work folder) -> model YAML (a file or ultralytics' name)
    name: Callable[[Any], str]                    # params -> "YOLO11n", "DASC-YOLO-n", "LAGNet-s"...
    paper: str | None = None                      # ../shared/papers/<paper>; None: no paper of its own
    section: str | None = None                    # its params.yaml section (None: only the shared sections configure it)
    reads_lam: Callable[[Any], bool] = _never     # params -> does it take RGB + LAM (6 channels)
    tune_space: str | None = None                 # the params key of its Optuna space (None: not tuned)
    tune_keys: Mapping[str, str] = field(default_factory=dict)   # its Optuna space keys -> params leaves, fully qualified
    roles: frozenset[str] = frozenset()           # of ROLES
    blocks: Callable[[], tuple[type, ...]] = _no_blocks          # its layers, for ultralytics' model-YAML parser
    dvc_deps: tuple[str, ...] = ()                # what its train stage depends on beyond the shared code (dvc.yaml)
    seconds_per_image_224: float | None = None    # CPU training time per image and epoch at 224 px (profile proposals)
    deviations: str = ""                          # how it departs from its paper (model card; docs/detectors.md)

    def __post_init__(self) -> None:
        unknown = set(self.roles) - set(ROLES)
        if unknown:
            raise ValueError(f"detector '{self.key}': unknown role(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(ROLES)})")

    @property
    def sections(self) -> tuple[str, ...]:
        """The params sections that configure it beyond the shared ones (``train``, ``loss``...)."""
        return (self.section,) if self.section else ()

    def channels(self, params: Any) -> int:
        """Input channels of the trained network: 6 (RGB + the JET-coded LAM) or 3."""
        return 6 if self.reads_lam(params) else 3

    def export(self, params: Any) -> str:
        """``pipeline``: exported as one graph with the LAM maker (``components.detectors.lagnet.export``);
        ``single``: the network alone (``components.deploy.export``)."""
        return "pipeline" if self.reads_lam(params) else "single"
