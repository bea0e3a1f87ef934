"""Where everything lives: one object built from params ``paths`` and ``data.name`` that names
every folder and file the stages read and write, instead of ``paths.*`` lookups and hand-built
``weights/best.pt`` paths in each flow.

    <datasets>/<data.name>/                  canonical dataset (manifest, images, summary.json)
    <splits>/<data.name>.json                train / val / test split
    <lams>/<data.name>/                      LAMs for LAGNet (stage lam)
    <models>/<model>/weights/best.pt         trained weights, train_info.json beside weights/
    <models>/tuned/<model>.json              a tuning study's decision
    <metrics>/<model>.json                   evaluation metrics (DVC metrics)
    <plots>/<model>/                         DVC plots data
    <reports>/<model>/                       evaluation plots and per-image predictions
    <reports>/promotion.json                 the last promotion's decision
    <exports>/<model>/best.onnx              ONNX export (best_nms.onnx beside it)
    <work>/<name>/                           scratch, not versioned
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import ConfigError, section

WEIGHTS = Path("weights") / "best.pt"
_ROOTS = ("datasets", "splits", "models", "metrics", "plots", "reports", "exports", "lams", "work")


@dataclass(frozen=True)
class Layout:
    """Built from the settings (:meth:`from_params`, ``components.settings.Settings``) or a params
    dict; a ``paths`` key or ``data.name`` a partial params dict lacks is an error naming it when a
    path needs it (it serves what it has)."""

    paths: dict[str, Any]
    name: str | None

    @classmethod
    def from_params(cls, params: Any) -> "Layout":
        if not isinstance(params, dict):                 # Settings
            return cls(params.paths.plain(), params.data.name)
        data = params.get("data")
        return cls(dict(section(params, "paths")), data.get("name") if isinstance(data, dict) else None)

    def _root(self, key: str) -> Path:
        if key not in self.paths:
            raise ConfigError(f"params.yaml has no key 'paths.{key}'")
        return Path(self.paths[key])

    def __getattr__(self, key: str) -> Path:          # lay.datasets, lay.models, ... (params paths.*)
        if key in _ROOTS:
            return self._root(key)
        raise AttributeError(key)

    @property
    def data_name(self) -> str:
        if self.name is None:
            raise ConfigError("params.yaml has no key 'data.name'")
        return str(self.name)

    @property
    def dataset(self) -> Path:
        return self.datasets / self.data_name

    @property
    def split_file(self) -> Path:
        return self.splits / f"{self.data_name}.json"

    @property
    def lam_dir(self) -> Path:
        return self.lams / self.data_name

    @property
    def promotion(self) -> Path:
        return self.reports / "promotion.json"

    def model_dir(self, model: str) -> Path:
        return self.models / model

    def weights(self, model: str) -> Path:
        return self.models / model / WEIGHTS

    def train_info(self, model: str) -> Path:
        return self.models / model / "train_info.json"

    def tuned(self, model: str) -> Path:
        return self.models / "tuned" / f"{model}.json"

    def metrics_file(self, model: str) -> Path:
        return self.metrics / f"{model}.json"

    def plots_dir(self, model: str) -> Path:
        return self.plots / model

    def report_dir(self, model: str) -> Path:
        return self.reports / model

    def export(self, model: str) -> Path:
        return self.exports / model / "best.onnx"

    def scratch(self, *parts: str) -> Path:
        return self.work.joinpath(*parts)
