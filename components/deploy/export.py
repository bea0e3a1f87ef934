"""ONNX export (ultralytics' exporter) and an ONNX Runtime parity check against PyTorch.

ONNX Runtime providers are chosen deliberately: CUDA only when torch sees a GPU *and* the
installed onnxruntime offers the CUDA provider, else CPU alone, so onnxruntime-gpu never falls
back with an error on a CPU machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..yolo import YOLO


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


# NMS baked into the end-to-end graph: a low confidence floor (consumers filter at their own
# threshold; the validator scores at 0.001 as well), ultralytics' IoU and max_det for validation
NMS_CONF, NMS_IOU, NMS_MAX_DET = 0.001, 0.7, 300


@dataclass(frozen=True)
class NmsSpec:
    """The NMS an end-to-end graph carries: confidence floor, IoU and most boxes per image."""

    conf: float = NMS_CONF
    iou: float = NMS_IOU
    max_det: int = NMS_MAX_DET


def add_metadata(path: str | Path, meta: dict) -> None:
    """Add / replace ONNX metadata entries (values as ``str``)."""
    import onnx

    m = onnx.load(str(path))
    keep = [(p.key, p.value) for p in m.metadata_props if p.key not in meta]
    del m.metadata_props[:]
    for k, v in keep + [(k, str(v)) for k, v in meta.items()]:
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(path))


def nms_metadata(conf: float, iou: float, max_det: int) -> dict:
    """What the end-to-end graph's metadata says about its output and letterbox."""
    import json

    from .serving import LETTERBOX

    return {"letterbox": json.dumps(LETTERBOX),
            "output": f"output0 (batch, {max_det}, 6): x1, y1, x2, y2, score, class in input (letterboxed) pixels, "
                      f"after class-wise NMS (iou {iou}, score > {conf}); zero rows after the last box"}


def export_onnx(weights: str | Path, out: str | Path, imgsz: int, opset: int, dynamic: bool,
                nms: NmsSpec | None = None) -> Path:
    """Export ``weights`` to ONNX at ``out`` (fixed opset; ``dynamic`` = dynamic batch and size).
    ``nms``: the end-to-end graph with that NMS (ultralytics' ``nms=True``: boxes after NMS,
    ``(B, max_det, 6)``), exported for batch 1 (its NMS loop is unrolled at the export batch) and
    fixed size; None: the raw head output."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # ultralytics writes the .onnx beside the weights: export a private copy (never inside the
    # DVC-tracked model folder, never racing another export), then replace `out` atomically
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        w = Path(tmp) / "model.pt"
        shutil.copyfile(weights, w)
        kw = dict(nms=True, conf=nms.conf, iou=nms.iou, max_det=nms.max_det, batch=1, dynamic=False) if nms else dict(
            dynamic=dynamic)
        f = YOLO(str(w)).export(format="onnx", imgsz=imgsz, opset=opset, simplify=True, device="cpu", **kw)
        if nms:                         # ultralytics records nms=True, not its conf / iou / max_det
            from .serving import read_meta

            args = {**read_meta(f).get("args", {}), "conf": nms.conf, "iou": nms.iou, "max_det": nms.max_det}
            add_metadata(f, {**nms_metadata(nms.conf, nms.iou, nms.max_det), "args": str(args)})
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


def nms_parity(weights: str | Path, onnx_path: str | Path, x: np.ndarray, conf: float = 0.25) -> dict:
    """Boxes of the end-to-end graph (ONNX Runtime, one image at a time) vs the PyTorch path (fused
    model + ultralytics' NMS with the graph's IoU and max_det, one class per box) on ``x``, at
    ``conf``: same count per image, matched IoU (``box_agreement``)."""
    return boxes_parity(YOLO(str(weights)).model.float().fuse().eval(), onnx_path, x, conf)


def boxes_parity(torch_model, onnx_path: str | Path, x: np.ndarray, conf: float = 0.25) -> dict:
    """:func:`nms_parity` for any module giving the raw ``(B, 4 + nc, anchors)`` head output."""
    from ultralytics.utils.nms import non_max_suppression

    from .serving import read_meta

    args = read_meta(onnx_path)["args"]
    with torch.inference_mode():
        raw = torch_model(torch.from_numpy(x))
    raw = raw[0] if isinstance(raw, (list, tuple)) else raw
    ref = non_max_suppression(raw, conf, args.get("iou", NMS_IOU), max_det=args.get("max_det", NMS_MAX_DET))
    sess = ort_session(onnx_path)
    name = sess.get_inputs()[0].name
    got = []
    for i in range(len(x)):
        rows = sess.run(None, {name: x[i:i + 1]})[0][0]
        got.append(torch.from_numpy(rows[rows[:, 4] >= conf]))
    agree = box_agreement(ref, got)
    return {f"nms_{k}": v for k, v in agree.items()}


def box_agreement(a: list[torch.Tensor], b: list[torch.Tensor]) -> dict:
    """Per image: same number of boxes? Each box of ``a`` matched to the same-class box of ``b``
    with the highest IoU (greedy, by score); the minimum matched IoU over all images."""
    from ultralytics.utils.metrics import box_iou

    same_count, ious, unmatched = 0, [], 0
    for da, db in zip(a, b):
        same_count += int(len(da) == len(db))
        used = set()
        for row in da:
            cand = [j for j in range(len(db)) if j not in used and int(db[j, 5]) == int(row[5])]
            if not cand:
                unmatched += 1
                continue
            iou = box_iou(row[None, :4], db[cand, :4])[0]
            k = int(iou.argmax())
            used.add(cand[k])
            ious.append(float(iou[k]))
    return {"images": len(a), "same_count": same_count, "boxes": sum(len(d) for d in a),
            "unmatched": unmatched, "min_matched_iou": min(ious) if ious else None,
            "mean_matched_iou": float(np.mean(ious)) if ious else None}


def write_onnx_metadata(onnx_path: str | Path, values: dict[str, str]) -> Path:
    """Set ``values`` (key -> text) in the ONNX file's metadata, in place (other keys kept): how
    the shipped operating point (``decision``, JSON) travels with the graph."""
    import onnx

    model = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update(values)
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    tmp = Path(onnx_path).with_suffix(".meta.part")
    onnx.save(model, str(tmp))
    os.replace(tmp, onnx_path)
    return Path(onnx_path)
