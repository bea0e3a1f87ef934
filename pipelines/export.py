"""Export flow: a trained detector to ONNX, checked against PyTorch with ONNX Runtime.

LAGNet (with its LAM branch) is exported as one graph holding the baseline, the LAM step and
LAGNet (``components/lagnet_export.py``): serving takes the RGB image only. Besides the raw
output tolerance, its check compares the boxes after NMS (count and matched IoU at conf 0.25).
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task

from components.config import section
from components.data.canonical import load_manifest
from components.data.views import load_split
from components.export import export_onnx, letterbox_batch, onnx_parity

from .train import uses_lam
from .common import COMPUTE, dataset_dir, dataset_hash, log_outputs, read_params, split_file, stage_run


class ParityError(RuntimeError):
    """ONNX Runtime disagrees with PyTorch beyond the tolerance from params."""


@task(name="export-onnx", **COMPUTE)
def export_task(weights: str, out: str, imgsz: int, cfg: dict) -> str:
    return str(export_onnx(weights, out, imgsz, cfg["opset"], cfg["dynamic"]))


@task(name="onnx-parity", **COMPUTE)
def parity_task(weights: str, onnx_path: str, images: list[str], imgsz: int) -> dict:
    return onnx_parity(weights, onnx_path, letterbox_batch(images, imgsz))


@task(name="export-lagnet-pipeline", **COMPUTE)
def lagnet_export_task(baseline: str, weights: str, out: str, imgsz: int, cfg: dict, lam: dict,
                       images: list[str]) -> dict:
    from components.lagnet_export import export_pipeline, load_pipeline, pipeline_parity

    pipe = load_pipeline(baseline, weights, lam["alpha"], lam["beta"], lam["normalize"], lam["quantile"])
    path = export_pipeline(pipe, out, imgsz, cfg["opset"])
    return {"onnx": str(path), **pipeline_parity(pipe, path, letterbox_batch(images, imgsz))}


@flow(name="export")
def export_flow(model: str = "baseline", params_file: str = "params.yaml") -> dict:
    """Export ``paths.models/model/weights/best.pt`` to ``paths.exports/model/best.onnx`` (outside
    the DVC-tracked model folder); fail, and keep nothing, when ONNX Runtime and PyTorch disagree
    on test images."""
    params = read_params(params_file)
    cfg = section(params, "export")
    model_dir = Path(section(params, "paths.models")) / model
    weights = model_dir / "weights" / "best.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: run `dvc repro train_{model}` first")
    info = json.loads((model_dir / "train_info.json").read_text())
    ds = dataset_dir(params)
    manifest = load_manifest(ds)
    image_of = {e["name"]: str(ds / e["image"]) for e in manifest["images"]}
    images = [image_of[n] for n in load_split(split_file(params))["test"][: cfg["parity_images"]]]
    out = Path(section(params, "paths.exports")) / model / "best.onnx"
    with stage_run(f"export:{model}", params, ["export"], dataset_hash(ds),
                   {"model": model, "train_run_id": info["mlflow_run_id"]}) as run:
        if uses_lam(model, params):
            baseline = Path(section(params, "paths.models")) / "baseline" / "weights" / "best.pt"
            parity = lagnet_export_task(str(baseline), str(weights), str(out), info["imgsz"], cfg,
                                        section(params, "lam"), images)
            path = parity.pop("onnx")
        else:
            path = export_task(str(weights), str(out), info["imgsz"], cfg)
            parity = parity_task(str(weights), path, images, info["imgsz"])
        log_outputs(run, metrics={k: float(v) for k, v in parity.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)},
                    tags={"onnx_provider": parity["provider"]})
        boxes_differ = "same_count" in parity and (parity["same_count"] != parity["images"] or (
            parity["min_matched_iou"] is not None and parity["min_matched_iou"] < 0.99))
        rtol = cfg["pipeline_rtol"] if uses_lam(model, params) else cfg["parity_rtol"]
        if parity["max_rel_diff"] > rtol or boxes_differ:
            Path(path).unlink(missing_ok=True)
            raise ParityError(f"ONNX Runtime differs from PyTorch by {parity['max_rel_diff']:.2e} "
                              f"(relative; tolerance {rtol} from params export)"
                              + (f", boxes: {parity}" if boxes_differ else ""))
        log_outputs(run, artifacts=[(path, "onnx")])
    return {"onnx": path, **parity}
