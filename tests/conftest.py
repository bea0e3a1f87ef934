"""Shared fixtures: crafted datasets in VOC (NEU and GC10 layouts) and YOLO (Roboflow) layout,
the real NEU-DET when ../shared is present, and one temporary Prefect server per session."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import pipelines  # noqa: F401  (project environment defaults before prefect is imported)

REPO = Path(__file__).resolve().parents[1]
NEU = Path(os.environ.get("NEU_DET", REPO.parent / "shared" / "datasets" / "neu-det"))


@pytest.fixture(scope="session")
def neu_det() -> Path:
    if not (NEU / "ANNOTATIONS").is_dir():
        pytest.skip(f"NEU-DET not found at {NEU}")
    return NEU


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for every flow in the session (instead of one per flow)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def make_image(path: Path, seed: int, size=(64, 48)) -> bytes:
    """Write a distinct random JPEG (w x h = size) and return its bytes."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path.read_bytes()


def voc_xml(filename: str, objects: list[tuple[str, float, float, float, float]], w=64, h=48) -> str:
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>" for n, a, b, c, d in objects)
    return (f"<annotation><folder>x</folder><filename>{filename}</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>1</depth></size>{objs}</annotation>")


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Everything that would show a modification: names, sizes, mtimes, contents."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}
