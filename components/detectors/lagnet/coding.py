"""How a confidence map becomes a LAM (``lagnet.md`` eq. 1): one small request object.

``LamCoding(alpha, beta, normalize, quantile)``: ``LAM = alpha * RGB + beta * JET(round(255 c))``
where ``c`` is the detector's confidence map, stretched per ``normalize`` first (a deviation from
eq. 1: ``none`` keeps it, ``image_max`` divides by the image's maximum, ``quantile`` by its
``quantile``-quantile). The defaults are the paper's. The LAM stage, the training data path, the
served one-graph model and its export all take one ``LamCoding``, so the four numbers and their
defaults live here only. Importing this module is light (no torch).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

NORMALIZE = ("none", "image_max", "quantile")   # the one list (params.yaml lam.normalize is one of these)


@dataclass(frozen=True)
class LamCoding:
    alpha: float = 0.5          # weight of the RGB image
    beta: float = 0.5           # weight of the JET-coded confidence
    normalize: str = "none"     # one of NORMALIZE
    quantile: float = 0.99      # the reference quantile of normalize: quantile, in (0, 1]

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZE:
            raise ValueError(f"lam.normalize must be one of {', '.join(NORMALIZE)} (got '{self.normalize}')")
        if not 0 < self.quantile <= 1:
            raise ValueError(f"lam.quantile must be in (0, 1], got {self.quantile}")

    @classmethod
    def of(cls, section: Any) -> "LamCoding":
        """From anything that has the four fields as attributes or keys: the params ``lam`` section,
        a ``lam_info.json`` record, a plain dict (other keys are ignored; a missing one keeps its default)."""
        get = section.get if isinstance(section, Mapping) else (lambda k, d: getattr(section, k, d))
        return cls(**{f.name: get(f.name, f.default) for f in dataclasses.fields(cls)})

    def blend_keys(self) -> dict[str, float]:
        """The blend as the data YAML carries it (``lam_alpha``, ``lam_beta``): the training and
        validation path code the stored maps after augmentation (``data.batch_to_rgb_lam``)."""
        return {"lam_alpha": float(self.alpha), "lam_beta": float(self.beta)}

    @classmethod
    def of_data(cls, data: Mapping[str, Any]) -> "LamCoding":
        """The blend a data YAML carries (:meth:`blend_keys`), the defaults where it says nothing."""
        return cls.of({k: data[f"lam_{k}"] for k in ("alpha", "beta") if f"lam_{k}" in data})
