"""One deployable graph for LAGNet: RGB image -> baseline -> LAM -> LAGNet -> detections.

LAGNet needs a LAM made by another detector; serving two models and the glue between them is
what the paper leaves as future work. ``LagnetPipeline`` holds both networks and the LAM step
(``lam.LamMap``: confidence maps, level fusion, JET lookup table as a buffer,
eq. 1 blend) in one ``nn.Module``, exported to one ONNX graph whose input is the letterboxed RGB
batch in [0, 1] and whose output is the usual ``(B, 4 + nc, anchors)`` detection tensor (same
NMS as every other detector). The image size is fixed at export (the LAM's level split depends
on it); the batch is dynamic.

The LAM inside the graph is blended at the network's input resolution, the training LAMs were
blended at the image's own resolution and then letterboxed: the two differ by interpolation
order only. ``evaluate lagnet`` scores the served path (``lagnet.data.ServedLamValidator`` computes
the LAM of every validation batch with this same ``LamMap``), so its figures are the exported
model's; ``benchmarks/neu_cpu.py --served-check`` measures files vs served boxes on NEU-DET.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ...deploy.export import box_agreement  # noqa: F401  (used below; benchmarks import it from here too)
from .coding import LamCoding
from .lam import LamMap, head_output


class LagnetPipeline(nn.Module):
    """``baseline`` (3-channel YOLO) + ``lagnet`` (6-channel LAGNet): RGB in, detections out."""

    def __init__(self, baseline: nn.Module, lagnet: nn.Module, coding: LamCoding = LamCoding()):
        super().__init__()
        self.lam = LamMap(baseline, coding)
        self.lagnet = lagnet
        self.stride = lagnet.stride
        self.names = getattr(lagnet, "names", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return head_output(self.lagnet(torch.cat([x, self.lam(x)], 1)))


def load_pipeline(baseline_weights: str | Path, lagnet_weights: str | Path,
                  coding: LamCoding = LamCoding()) -> LagnetPipeline:
    """Both checkpoints, fused (Conv+BN) and in eval mode, as one module (the LAM coded per ``coding``)."""
    from ...yolo import YOLO

    base = YOLO(str(baseline_weights)).model.float().fuse().eval()
    lag = YOLO(str(lagnet_weights)).model.float().fuse().eval()
    return LagnetPipeline(base, lag, coding).eval()


def export_pipeline(pipe: LagnetPipeline, out: str | Path, imgsz: int, opset: int) -> Path:
    """ONNX graph ``images (B, 3, imgsz, imgsz) -> output0 (B, 4 + nc, anchors)``, dynamic batch."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=".export-", suffix=".onnx")   # private, then atomic
    os.close(fd)
    tmp = Path(name)
    x = torch.zeros(1, 3, imgsz, imgsz)
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(pipe.eval(), (x,), str(tmp), opset_version=opset, input_names=["images"],
                          output_names=["output0"], dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
                          dynamo=False)
    import onnx

    m = onnx.load(str(tmp))
    meta = {"stride": str(int(pipe.stride.max())), "imgsz": str([imgsz, imgsz]), "task": "detect",
            "names": str(dict(pipe.names) if pipe.names else {}), "pipeline": "baseline -> LAM -> LAGNet",
            "channels": "3", "batch": "1",
            "args": str({"batch": 1, "dynamic": False, "nms": False, "imgsz": [imgsz, imgsz]})}  # H, W fixed
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(m, str(tmp))
    os.replace(tmp, out)
    return out


class _XyxyPipeline(nn.Module):
    """The pipeline with its boxes as x1 y1 x2 y2 (what ultralytics' ``NMSModel`` takes; its exporter
    sets ``Detect.xyxy`` for the same reason)."""

    def __init__(self, pipe: LagnetPipeline):
        super().__init__()
        self.pipe, self.names, self.task, self.stride = pipe, pipe.names or {}, "detect", pipe.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pipe(x)
        xy, wh = y[:, :2], y[:, 2:4] / 2
        return torch.cat([xy - wh, xy + wh, y[:, 4:]], 1)


def export_pipeline_nms(pipe: LagnetPipeline, out: str | Path, imgsz: int, opset: int, conf: float, iou: float,
                        max_det: int) -> Path:
    """The end-to-end graph: ``images (1, 3, imgsz, imgsz) -> output0 (1, max_det, 6)`` (boxes after
    NMS: ultralytics' ``NMSModel`` around the pipeline, as ``export(nms=True)`` does for the
    other detectors; batch 1, its NMS loop is unrolled at the export batch)."""
    from types import SimpleNamespace

    from ultralytics.engine.exporter import NMSModel

    from ...deploy.export import add_metadata, nms_metadata

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=".export-", suffix=".onnx")
    os.close(fd)
    tmp = Path(name)
    args = SimpleNamespace(format="onnx", dynamic=False, batch=1, conf=conf, iou=iou, max_det=max_det,
                           agnostic_nms=False, opset=opset, quantize=None)
    model = NMSModel(_XyxyPipeline(pipe.eval()), args).eval()
    x = torch.zeros(1, 3, imgsz, imgsz)
    try:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(model, (x,), str(tmp), opset_version=opset, input_names=["images"],
                              output_names=["output0"], dynamo=False)
        meta = {"stride": str(int(pipe.stride.max())), "imgsz": str([imgsz, imgsz]), "task": "detect",
                "names": str(dict(pipe.names) if pipe.names else {}), "pipeline": "baseline -> LAM -> LAGNet -> NMS",
                "channels": "3", "batch": "1", "end2end": "False",
                "args": str({"batch": 1, "dynamic": False, "nms": True, "imgsz": [imgsz, imgsz], "conf": conf,
                             "iou": iou, "max_det": max_det}),
                **nms_metadata(conf, iou, max_det)}
        add_metadata(tmp, meta)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def pipeline_parity(pipe: LagnetPipeline, onnx_path: str | Path, x: np.ndarray, conf: float = 0.25,
                    iou: float = 0.7) -> dict:
    """PyTorch vs ONNX Runtime on the same batch: raw output differences, and the boxes after
    the same NMS: equal count per image and the IoU of matched boxes."""
    from ultralytics.utils.nms import non_max_suppression

    from ...deploy.export import ort_session

    with torch.inference_mode():
        ref = pipe(torch.from_numpy(x)).numpy()
    sess = ort_session(onnx_path)
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = np.abs(ref - got)
    det_ref = non_max_suppression(torch.from_numpy(ref), conf, iou)
    det_got = non_max_suppression(torch.from_numpy(got), conf, iou)
    agree = box_agreement(det_ref, det_got)
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "max_rel_diff": float(diff.max() / max(float(np.abs(ref).max()), 1e-9)), "shape": list(got.shape),
            "provider": sess.get_providers()[0], **agree}
