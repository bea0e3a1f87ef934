"""Export flow: a trained detector to ONNX, checked against PyTorch with ONNX Runtime.

LAGNet (with its LAM branch) is exported as one graph holding the baseline, the LAM step and
LAGNet (``components/detectors/lagnet/export.py``): serving takes the RGB image only. Besides the raw
output tolerance, its check compares the boxes after NMS (count and matched IoU at conf 0.25).
Every detector also gets ``best_nms.onnx``, the end-to-end graph (boxes after NMS) that the
promotion registers, kept only if its boxes match the PyTorch path's (the ``nms_*`` figures).
"""

from __future__ import annotations

from prefect import flow

from .common import read_params
from .tasks import ParityError, export_model  # noqa: F401  (ParityError: the failure callers catch)


@flow(name="export")
def export_flow(model: str = "baseline", params_file: str = "params.yaml") -> dict:
    """``defectops export MODEL``: ``tasks.export_model`` (ONNX export + ONNX Runtime parity)."""
    return export_model(model, read_params(params_file))
