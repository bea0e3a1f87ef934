"""Serve a detector: an ONNX model (a file, or a registry URI such as
``models:/defect-detector@champion``) over images with ONNX Runtime.

ultralytics' ONNX backend does the letterbox, the inference and the NMS (nothing re-written
here); the execution provider is chosen deliberately: CUDA only when torch sees a GPU *and*
onnxruntime offers the CUDA provider, otherwise the CPU provider alone (no fallback error spam).
Each image gives a JSON record (class, confidence, box in original pixels) and an annotated copy.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def expand(paths: list[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images (recursively, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return out


def device_for_onnx() -> str:
    """ultralytics device string that makes its ONNX backend pick the provider we want."""
    from .export import ort_providers

    return "0" if ort_providers()[0] == "CUDAExecutionProvider" else "cpu"


def resolve_model(model: str, uri: str, cache: Path) -> Path:
    """A local ``.onnx`` path, or an MLflow model URI downloaded into ``cache``."""
    if model.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        from .registry import download_onnx

        return download_onnx(uri, model, cache)
    p = Path(model)
    if p.suffix != ".onnx" or not p.is_file():
        raise FileNotFoundError(f"{model}: not an .onnx file nor an MLflow model URI (models:/NAME@ALIAS)")
    return p


def export_imgsz(onnx_path: Path) -> list[int] | None:
    """The input size recorded in the ONNX metadata (``imgsz``) by the exporter, if any."""
    import ast

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    return list(ast.literal_eval(meta["imgsz"])) if "imgsz" in meta else None


def predict(onnx_path: Path, images: list[Path], out_dir: Path, conf: float, iou: float, imgsz: int | None = None,
            progress=None) -> dict:
    """Detections for every image -> ``out_dir/detections.json`` and ``out_dir/annotated/``."""
    from .yolo import YOLO

    out_dir = Path(out_dir)
    (out_dir / "annotated").mkdir(parents=True, exist_ok=True)
    yolo = YOLO(str(onnx_path), task="detect")
    device = device_for_onnx()
    imgsz = imgsz or export_imgsz(onnx_path)
    records, provider = [], None
    for f in images:
        kw = {"imgsz": imgsz} if imgsz else {}
        r = yolo.predict(str(f), conf=conf, iou=iou, device=device, verbose=False, **kw)[0]
        if provider is None:
            session = getattr(getattr(yolo.predictor.model, "backend", None), "session", None)
            provider = session.get_providers()[0] if session is not None else "unknown"
        names = r.names
        dets = [{"class": names[int(c)], "class_id": int(c), "confidence": round(float(s), 4),
                 "box_xyxy": [round(float(v), 1) for v in b]}
                for b, s, c in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist())]
        records.append({"image": str(f), "detections": dets})
        cv2.imwrite(str(out_dir / "annotated" / f"{f.stem}.jpg"), r.plot())
        if progress is not None:
            progress(1)
    result = {"model": str(onnx_path), "provider": provider, "conf": conf, "iou": iou, "images": records}
    (out_dir / "detections.json").write_text(json.dumps(result, indent=1))
    return result
