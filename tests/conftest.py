"""Shared fixtures: crafted datasets in VOC (NEU and GC10 layouts) and YOLO (Roboflow) layout,
the real NEU-DET when ../shared is present, one temporary Prefect server per session, a fresh
MLflow SQLite store (``tracking``) and a tiny ONNX model to register (``tiny_onnx``)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

import pipelines  # noqa: F401  (project environment defaults before prefect is imported)

# predict / serve in tests never write the repository's prediction log (a test that wants one sets it)
os.environ.setdefault("DEFECTOPS_PREDLOG_URL", "off")

from labelstudio import label_studio  # noqa: E402,F401  (one Label Studio server for the whole session)

REPO = Path(__file__).resolve().parents[1]
NEU = Path(os.environ.get("NEU_DET", REPO.parent / "shared" / "datasets" / "neu-det"))


def settings(overrides: dict | None = None):
    """The repository's params.yaml as parsed settings, with ``{dotted.key: value}`` laid over it
    (``components.settings.resolve``): what a flow would read from such a params file."""
    from components.settings import resolve

    return resolve(REPO / "params.yaml", [("test", overrides or {})])


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


def isolate_mlflow(mp: pytest.MonkeyPatch, uri: str) -> dict:
    """Point MLflow at ``uri`` and clear DVC's stage and the pipeline-run id, through ``mp`` (so
    that all is restored after, MLflow's process-wide URIs too); returns the ``tracking`` params
    section for that store."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from components.tracking import PIPELINE_RUN_ENV

    # registry.* calls mlflow.set_tracking_uri / set_registry_uri: the values before are put back after
    mp.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    mp.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        mp.setenv(k, uri)
    for k in ("DVC_STAGE", PIPELINE_RUN_ENV):     # set then deleted: monkeypatch restores the original value
        mp.setenv(k, "x")
        mp.delenv(k)
    return {"uri": uri, "experiment": "defectops"}


@pytest.fixture
def tracking(tmp_path, monkeypatch) -> dict:
    """A fresh SQLite store; the environment (MLflow's URIs, DVC's stage, the pipeline run) restored after."""
    return isolate_mlflow(monkeypatch, f"sqlite:///{tmp_path}/mlflow.db")


def tiny_onnx(path: Path) -> Path:
    """A one-op ONNX model (Identity on a 1x3x8x8 ``images`` input) at ``path``, to register."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, 8])])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def tiny_detector(folder: Path, name: str = "detector.onnx", nms: bool = False, imgsz: int = 64) -> Path:
    """A real (untrained) YOLO11n detector (classes ``scratch``, ``hole``) exported to ONNX at
    ``imgsz`` px in ``folder`` (seconds, no training), its class biases raised so that every image
    gets boxes; ``nms``: the end-to-end graph (boxes after NMS, ``export_onnx(nms=True)``)."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from components.deploy.export import NmsSpec, export_onnx

    model = DetectionModel("yolo11n.yaml", nc=2, verbose=False)
    model.names = {0: "scratch", 1: "hole"}
    with torch.no_grad():
        for branch in model.model[-1].cv3:                 # class logits of each scale: sigmoid(3) = 0.95
            branch[-1].bias.fill_(3.0)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "train_args": {}}, folder / "w.pt")
    return export_onnx(folder / "w.pt", folder / name, imgsz, 17, False, nms=NmsSpec() if nms else None)


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
