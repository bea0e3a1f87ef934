"""ONNX export (ultralytics' exporter) and an ONNX Runtime parity check against PyTorch.

ONNX Runtime providers are chosen deliberately: CUDA only when torch sees a GPU *and* the
installed onnxruntime offers the CUDA provider, else CPU alone, so onnxruntime-gpu never falls
back with an error on a CPU machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from .yolo import YOLO


def ort_providers() -> list[str]:
    import onnxruntime as ort

    if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_session(path: str | Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=opts, providers=ort_providers())


def export_onnx(weights: str | Path, out: str | Path, imgsz: int, opset: int, dynamic: bool) -> Path:
    """Export ``weights`` to ONNX at ``out`` (fixed opset; ``dynamic`` = dynamic batch and size)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # ultralytics writes the .onnx beside the weights: export a private copy (never inside the
    # DVC-tracked model folder, never racing another export), then replace `out` atomically
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        w = Path(tmp) / "model.pt"
        shutil.copyfile(weights, w)
        f = YOLO(str(w)).export(format="onnx", imgsz=imgsz, opset=opset, dynamic=dynamic, simplify=True,
                                device="cpu")
        os.replace(f, out)
    return out


def letterbox_batch(paths: list[str | Path], imgsz: int) -> np.ndarray:
    """Images as the model's input: letterboxed to ``imgsz``, RGB, CHW, float32 in [0, 1]."""
    import cv2
    from ultralytics.data.augment import LetterBox

    lb = LetterBox((imgsz, imgsz), auto=False)
    batch = [lb(image=cv2.imread(str(p)))[..., ::-1].transpose(2, 0, 1) for p in paths]
    return np.ascontiguousarray(np.stack(batch), dtype=np.float32) / 255.0


def onnx_parity(weights: str | Path, onnx_path: str | Path, x: np.ndarray) -> dict:
    """Raw detection outputs of PyTorch (fused, eval) and ONNX Runtime on the same input ``x``."""
    model = YOLO(str(weights)).model.float().fuse().eval()
    with torch.inference_mode():
        ref = model(torch.from_numpy(x))
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    sess = ort_session(onnx_path)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = np.abs(ref - got)
    scale = np.abs(ref).max()
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "max_rel_diff": float(diff.max() / max(scale, 1e-9)), "shape": list(got.shape),
            "provider": sess.get_providers()[0]}
