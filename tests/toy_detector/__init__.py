"""A toy fourth detector, as one package: its model-config builder (``config``) and its spec.

``tests/test_toy_detector.py`` adds it to the catalogue with ``components.detectors.register(SPEC)``
and runs it through the flows (train, evaluate, promote) exactly as a shipped detector, with no
change to ``pipelines/``. A fourth shipped detector is the same package under
``components/detectors/`` plus its entry in ``CATALOGUE``.
"""

from __future__ import annotations

from pathlib import Path

from components.detectors import DetectorSpec


def _cfg(params, nc: int, work: Path) -> str:
    from .config import write_toy_yaml

    return str(write_toy_yaml(work, nc))


SPEC = DetectorSpec(key="toy", build=_cfg, name=lambda params: "ToyNet",
                    deviations="a test's toy: five strided convolutions and ultralytics' Detect head.")
