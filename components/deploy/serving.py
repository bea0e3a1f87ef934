"""A self-contained detector: the end-to-end ONNX graph (letterboxed batch in, boxes after NMS out)
and the little around it that every consumer needs: the letterbox, the inverse mapping of the
boxes to image pixels, the class names. Used by ``defectops predict`` and by the MLflow pyfunc
wrapper (:class:`ServingModel`) that ``mlflow models serve`` runs.

The graph is ultralytics' own ``export(format="onnx", nms=True)`` (its ``NMSModel`` wrapper):
input ``images`` ``(B, 3, S, S)`` RGB in [0, 1] letterboxed to ``S``; output ``output0``
``(B, max_det, 6)`` rows ``x1, y1, x2, y2, score, class`` in input (letterboxed) pixels, zero rows
after the last box. Its ONNX metadata holds ``names``, ``imgsz``, ``stride``, the NMS settings
(``args``: ``nms``, ``conf``, ``iou``, ``max_det``) and the letterbox rule (``letterbox``, JSON,
see :data:`LETTERBOX`).

This module needs numpy, OpenCV and ONNX Runtime only (and MLflow for :class:`ServingModel`): it
is shipped as the pyfunc model's code, so the served model does not import the project.
"""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path

import cv2
import numpy as np

# the letterbox every exported model was trained / validated / exported with (ultralytics' LetterBox,
# auto=False, scaleup=True, center=True): recorded as JSON in the ONNX metadata under "letterbox"
LETTERBOX = {
    "rule": "r = min(S/h, S/w); resize to (round(w*r), round(h*r)) bilinear; pad to S x S with "
            "value 114, left = round((S - round(w*r))/2 - 0.1), top = round((S - round(h*r))/2 - 0.1); "
            "BGR -> RGB, HWC -> CHW, /255; boxes back: x = (x' - left)/r, y = (y' - top)/r, clipped to the image",
    "pad_value": 114, "center": True, "scaleup": True, "interpolation": "linear", "channels": "RGB",
    "scale": 1 / 255,
}


def read_meta(onnx_path: str | Path) -> dict:
    """The ONNX metadata as Python values (``names`` a dict, ``imgsz`` a list, ``args`` a dict...)."""
    import onnx

    raw = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    out: dict = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v) if k == "letterbox" else ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def has_nms(meta: dict) -> bool:
    """Whether the graph ends with NMS (ultralytics' ``nms=True`` export)."""
    args = meta.get("args")
    return isinstance(args, dict) and bool(args.get("nms"))


def letterbox(img: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """A BGR image as the graph's input ``(1, 3, size, size)`` float32, with the scale ``r`` and the
    padding ``(left, top)`` that map its boxes back (:func:`unletterbox`). Same pixels as
    ultralytics' ``LetterBox((size, size), auto=False)``."""
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nw, nh = int(round(w * r)), int(round(h * r))
    if (nw, nh) != (w, h):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - nw) / 2, (size - nh) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    x = np.ascontiguousarray(img[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    return x, r, (left, top)


def unletterbox(rows: np.ndarray, r: float, pad: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Boxes ``(n, 4)`` x1 y1 x2 y2 from letterboxed to image pixels (``shape``: h, w), clipped."""
    b = rows[:, :4].astype(np.float64).copy()
    b[:, [0, 2]] = (b[:, [0, 2]] - pad[0]) / r
    b[:, [1, 3]] = (b[:, [1, 3]] - pad[1]) / r
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, shape[1])
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, shape[0])
    return b


def decode_image(data: bytes | str) -> np.ndarray:
    """Encoded image bytes (or their base64 text) as a BGR array; ValueError when it is not one."""
    if isinstance(data, str):
        data = base64.b64decode(data.split(",", 1)[1] if data.startswith("data:") else data, validate=False)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise ValueError("not a decodable image (OpenCV cannot decode it)")
    return img


class BoxModel:
    """The end-to-end ONNX graph on ONNX Runtime: ``model(img_bgr, conf)`` -> boxes in image pixels."""

    def __init__(self, onnx_path: str | Path, providers: list[str] | None = None):
        import onnxruntime as ort

        self.path = Path(onnx_path)
        self.meta = read_meta(self.path)
        if not has_nms(self.meta):
            raise ValueError(f"{self.path.name} has no NMS in its graph (export it with nms=True)")
        self.names = {int(k): str(v) for k, v in self.meta.get("names", {}).items()}
        imgsz = self.meta.get("imgsz", [640, 640])
        self.imgsz = int(imgsz[0] if isinstance(imgsz, (list, tuple)) else imgsz)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), sess_options=opts,
                                            providers=providers or ["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.provider = self.session.get_providers()[0]

    def rows(self, img: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
        """The graph's rows for one BGR image (non-empty rows only), with the letterbox's r and pad."""
        x, r, pad = letterbox(img, self.imgsz)
        out = self.session.run(None, {self.input: x})[0][0]
        return out[out[:, 4] > 0], r, pad

    def __call__(self, img: np.ndarray, conf: float = 0.25) -> list[dict]:
        rows, r, pad = self.rows(img)
        rows = rows[rows[:, 4] >= conf]
        boxes = unletterbox(rows, r, pad, img.shape[:2])
        return [{"class": self.names.get(int(c), str(int(c))), "class_id": int(c), "confidence": round(float(s), 4),
                 "box_xyxy": [round(float(v), 1) for v in b]}
                for b, s, c in zip(boxes, rows[:, 4], rows[:, 5])]


def __getattr__(name: str):
    """``ServingModel`` is made on first use (PEP 562): importing this module for ``predict`` does
    not import MLflow's pyfunc (nor print its advice on type hints)."""
    if name != "ServingModel":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = globals()["ServingModel"] = _serving_model()
    return cls


def _serving_model() -> type:
    from mlflow.pyfunc import PythonModel

    class ServingModel(PythonModel):
        """MLflow pyfunc: a table with an ``image`` column (base64 of a PNG / JPEG / ... file) -> per
        row ``{"detections": [{class, class_id, confidence, box_xyxy}], "width", "height"}`` (or
        ``{"error": ...}`` for a row that is not an image). Param ``conf`` (default: predict.conf at
        logging time). The ONNX file is the ``onnx`` artifact."""

        def __init__(self, conf: float = 0.25):
            self.conf = conf

        def load_context(self, context):
            self.model = BoxModel(context.artifacts["onnx"])

        def predict(self, context, model_input, params=None):
            conf = float((params or {}).get("conf", self.conf))
            if hasattr(model_input, "to_dict"):             # DataFrame
                images = list(model_input["image"])
            else:
                images = [m["image"] if isinstance(m, dict) else m for m in model_input]
            out = []
            for data in images:
                try:
                    img = decode_image(data)
                except Exception as e:
                    out.append({"error": f"{type(e).__name__}: {e}"})
                    continue
                out.append({"detections": self.model(img, conf), "width": int(img.shape[1]),
                            "height": int(img.shape[0])})
            return out

    ServingModel.__module__, ServingModel.__qualname__ = __name__, "ServingModel"   # pickled by reference
    return ServingModel
