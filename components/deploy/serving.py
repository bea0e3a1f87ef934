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

This module needs numpy, OpenCV, Pillow and ONNX Runtime only (and MLflow for :class:`ServingModel`):
it is shipped as the pyfunc model's code, so the served model does not import the project. The
prediction log (``components/monitor/predlog.py``, SQLAlchemy) is shipped beside it as
``defectops_predlog``: the served model appends one record per image (:func:`log_prediction`).

**One pixel limit for every decoder** (:data:`MAX_PIXELS`): ``data import`` (``components.data.canonical``),
``defectops predict``, ``defectops serve`` and this wrapper under ``mlflow models serve`` all refuse an
image whose *header* declares more pixels (:func:`check_pixels`, Pillow's ``Image.open``, which reads
the header only) before anything decodes it: a 200 KB PNG that declares 12000 x 12000 pixels (a
decompression bomb) or a JPEG whose header lies never reaches ``cv2.imdecode``.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import re
import sys
import time
import warnings
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


JSON_META = ("letterbox", "decision")    # metadata values written as JSON (the rest: Python literals, ultralytics')


def read_meta(onnx_path: str | Path) -> dict:
    """The ONNX metadata as Python values (``names`` a dict, ``imgsz`` a list, ``args`` a dict...)."""
    import onnx

    raw = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    out: dict = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v) if k in JSON_META else ast.literal_eval(v)
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


# The most pixels (width x height, from the header) any decoder of the project accepts: import,
# predict and serving. 40 MP is a 7300 x 5500 camera frame, 120 MB as a BGR array; a 12000 x 12000
# "image" (432 MB decoded) is refused before it is decoded.
MAX_PIXELS = 40_000_000


class ImageTooLarge(ValueError):
    """The image's header declares more than :data:`MAX_PIXELS` pixels (a decompression bomb, or
    just too large to decode safely); it was not decoded."""


def _header(data: bytes):
    """Pillow's view of ``data``'s header (``Image.open`` reads the header only, no pixels)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # our own limit decides
        return Image.open(io.BytesIO(data))


def check_pixels(data: bytes, limit: int = MAX_PIXELS) -> tuple[int, int] | None:
    """``(width, height)`` as the image header in ``data`` declares them, read without decoding the
    pixels; :class:`ImageTooLarge` when ``width * height`` exceeds ``limit``; None when Pillow does
    not recognise a header (then the bytes are no image any decoder here should be handed)."""
    from PIL import Image

    try:
        with _header(data) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:       # Pillow's own hard stop (2 x its limit): above ours
        m = re.search(r"\((\d+) pixels\)", str(e))
        n = f"{int(m.group(1)):,}" if m else f"more than {limit:,}"
        raise ImageTooLarge(f"image too large: its header declares {n} pixels, more than the limit of "
                            f"{limit:,} (not decoded)") from None
    except Exception:     # noqa: BLE001  unidentified, or a plug-in failing on a hostile header: none to trust
        return None
    if w * h > limit:
        raise ImageTooLarge(f"image too large: its header declares {w} x {h} = {w * h:,} pixels, more than "
                            f"the limit of {limit:,} (not decoded)")
    return w, h


def b64decode(data: str) -> bytes:
    """Base64 text (or a ``data:`` URL) as bytes; ValueError with a short reason (never the text)."""
    import binascii

    text = "".join((data.split(",", 1)[1] if data.startswith("data:") else data).split())   # line breaks allowed
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not base64 ({' '.join(str(e).split())[:120]})") from None


def decode_image(data: bytes | str) -> np.ndarray:
    """Encoded image bytes (or their base64 text) as a BGR array; ValueError when it is not one,
    :class:`ImageTooLarge` (before any decoding) when its header declares more than :data:`MAX_PIXELS`."""
    if isinstance(data, str):
        data = b64decode(data)
    if not data:
        raise ValueError("empty image")
    if check_pixels(data) is None:
        raise ValueError("not a decodable image (no image header)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a decodable image (OpenCV cannot decode it)")
    return img


OK, NG = "OK", "NG"
DEFAULT_CONF = 0.25     # a model without shipped thresholds (registered before operating points)


def verdict(detections: list[dict], thresholds: dict[str, float] | None, conf: float | None = None) -> dict:
    """The verdict of one image's ``detections`` (dicts with ``class`` and ``confidence``): NG when
    one reaches its class's threshold (``thresholds``, the shipped operating point), or one global
    ``conf`` when given (an override; also the fallback without thresholds). Returns the verdict,
    the detections that caused it (``because``) and which thresholds decided (``thresholds``)."""
    if conf is not None or not thresholds:
        cut = float(conf if conf is not None else DEFAULT_CONF)
        fired = [d for d in detections if d["confidence"] >= cut]
        used = {"source": "conf override" if conf is not None else "default conf", "conf": cut}
    else:
        unknown = {d["class"] for d in detections} - set(thresholds)
        if unknown:
            raise ValueError(f"no threshold for class(es) {', '.join(sorted(unknown))}")
        fired = [d for d in detections if d["confidence"] >= thresholds[d["class"]]]
        used = {"source": "per-class operating point"}
    return {"verdict": NG if fired else OK, "because": fired, "thresholds": used}


def judgement(detections: list[dict], thresholds: dict[str, float] | None, conf: float | None = None) -> dict:
    """:func:`verdict` as an image's answer: ``verdict``, the ``detections`` that caused it and
    the ``thresholds`` used (what predict and the served model return per image)."""
    v = verdict(detections, thresholds, conf)
    return {"verdict": v["verdict"], "detections": v["because"], "thresholds": v["thresholds"]}


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
        decision = self.meta.get("decision")          # the shipped operating point (components.decision)
        self.thresholds = ({str(k): float(v) for k, v in decision["thresholds"].items()}
                           if isinstance(decision, dict) and decision.get("thresholds") else None)

    def rows(self, img: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
        """The graph's rows for one BGR image (non-empty rows only), with the letterbox's r and pad."""
        x, r, pad = letterbox(img, self.imgsz)
        out = self.session.run(None, {self.input: x})[0][0]
        return out[out[:, 4] > 0], r, pad

    def __call__(self, img: np.ndarray, conf: float | None = DEFAULT_CONF) -> list[dict]:
        """Detections scoring at least ``conf``, or, with ``conf=None``, at least their class's
        shipped threshold (``DEFAULT_CONF`` for a model that ships none)."""
        rows, r, pad = self.rows(img)
        if conf is None and self.thresholds:
            cut = np.array([self.thresholds.get(self.names.get(int(c), str(int(c))), DEFAULT_CONF) for c in rows[:, 5]])
        else:
            cut = np.full(len(rows), DEFAULT_CONF if conf is None else conf)
        rows = rows[rows[:, 4] >= cut]
        boxes = unletterbox(rows, r, pad, img.shape[:2])
        return [{"class": self.names.get(int(c), str(int(c))), "class_id": int(c), "confidence": round(float(s), 4),
                 "box_xyxy": [round(float(v), 1) for v in b]}
                for b, s, c in zip(boxes, rows[:, 4], rows[:, 5])]

    def judge(self, img: np.ndarray, conf: float | None = None) -> dict:
        """One image's verdict (:func:`verdict`) at the shipped thresholds, or at ``conf`` when
        given: ``verdict``, the detections that caused it (``detections``), ``thresholds`` used."""
        return judgement(self(img, conf), self.thresholds, conf)


# ---- the prediction log (components/monitor/predlog.py, shipped beside this module as defectops_predlog)

def _predlog_module():
    """The prediction log's module: the copy shipped with the registered model, else the project's;
    None (no logging) where neither imports."""
    try:
        import defectops_predlog as module          # the registered pyfunc's code (registry.log_detector_model)
    except ImportError:
        try:
            from components.monitor import predlog as module
        except ImportError:
            return None
    return module


def _served_model(pl, onnx_path: str | Path):
    """Which model the records name: ``DEFECTOPS_PREDLOG_MODEL`` (``models:/NAME@ALIAS``) and
    ``DEFECTOPS_PREDLOG_MODEL_VERSION`` (both set by ``defectops serve``; an alias without a version
    is resolved in the registry at ``MLFLOW_TRACKING_URI``), else the registered version made from
    this model's run (looked up by its ``run_id`` where ``MLFLOW_TRACKING_URI`` is set), else
    ``run:<run_id>``."""
    import os

    ref, run_id, tracking = pl.served_from_env(), None, os.environ.get("MLFLOW_TRACKING_URI")
    if ref is not None and ref.version:
        return ref
    try:
        from mlflow.models import Model

        run_id = Model.load(str(Path(onnx_path).parent.parent)).run_id
        if tracking:
            from mlflow import MlflowClient

            c = MlflowClient(tracking, registry_uri=tracking)
            if ref is not None and ref.alias and not ref.version:
                ref = pl.ModelRef(ref.name, str(c.get_model_version_by_alias(ref.name, ref.alias).version), ref.alias)
            elif ref is None and run_id:
                mv = next(iter(c.search_model_versions(f"run_id='{run_id}'")), None)
                if mv is not None:
                    ref = pl.ModelRef(mv.name, str(mv.version), ",".join(getattr(mv, "aliases", None) or []) or None)
    except Exception as e:                  # noqa: BLE001  the records then name less, the model still serves
        warnings.warn(f"prediction log: cannot tell the served model's registered version ({type(e).__name__})",
                      stacklevel=2)
    return ref or pl.ModelRef(f"run:{run_id}" if run_id else Path(onnx_path).stem)


def _prediction_log(onnx_path: str | Path):
    """The served model's prediction log (from the environment, ``predlog.from_env``) and the
    model the records name; ``(None, None)`` when logging is off or unavailable."""
    pl = _predlog_module()
    if pl is None:
        return None, None
    plog = pl.from_env()
    return (plog, _served_model(pl, onnx_path)) if plog is not None else (None, None)


def log_prediction(plog, model, data: bytes, img: np.ndarray, answer: dict, seconds: float, source: str = "serve"):
    """Append one prediction to ``plog`` (a ``predlog.PredictionLog``; None: nothing); never raises
    and never touches ``answer``."""
    if plog is None:
        return None
    try:
        pl = sys.modules[type(plog).__module__]
        return plog.append(pl.record_for(model, data, img, answer, seconds * 1000, source), data)
    except Exception as e:                  # noqa: BLE001  logging never fails a prediction
        import logging

        logging.getLogger(__name__).debug("prediction not logged: %s: %s", type(e).__name__, e)
        return None


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
        row ``{"verdict": "OK" | "NG", "detections": [{class, class_id, confidence, box_xyxy}],
        "thresholds", "width", "height"}``: the detections that reach their class's shipped threshold
        (the operating point in the ONNX metadata) and so make the verdict; ``{"error": ...}`` for a
        row that is not an image. Param ``conf`` (a number > 0) overrides the thresholds with one
        confidence for every class (``thresholds`` then says so). The ONNX file is the ``onnx`` artifact."""

        def __init__(self, conf: float | None = None):
            self.conf = conf

        def load_context(self, context):
            self.model = BoxModel(context.artifacts["onnx"])
            self.predlog, self.served = _prediction_log(context.artifacts["onnx"])

        def predict(self, context, model_input, params=None):
            conf = (params or {}).get("conf", self.conf)
            conf = float(conf) if conf is not None and float(conf) > 0 else None    # <= 0: the shipped thresholds
            if hasattr(model_input, "to_dict"):             # DataFrame
                images = list(model_input["image"])
            else:
                images = [m["image"] if isinstance(m, dict) else m for m in model_input]
            out = []
            for data in images:
                t0 = time.perf_counter()
                try:
                    data = b64decode(data) if isinstance(data, str) else data
                    img = decode_image(data)
                except Exception as e:
                    out.append({"error": f"{type(e).__name__}: {e}"})
                    continue
                out.append({**self.model.judge(img, conf), "width": int(img.shape[1]), "height": int(img.shape[0])})
                log_prediction(getattr(self, "predlog", None), getattr(self, "served", None), data, img, out[-1],
                               time.perf_counter() - t0)
            return out

    ServingModel.__module__, ServingModel.__qualname__ = __name__, "ServingModel"   # pickled by reference
    return ServingModel
