"""Serve a detector: an ONNX model (a file, or a registry URI such as
``models:/defect-detector@champion``) over images with ONNX Runtime.

An end-to-end graph (``export_onnx(nms=NmsSpec(...))``, what the promotion registers: boxes after NMS
come out of the graph) runs on ONNX Runtime directly (``components.deploy.serving.BoxModel``): letterbox
by the rule in its metadata, boxes mapped back to image pixels, class names from its metadata;
the IoU of its NMS is the one baked into the graph. A raw graph (``(B, 4 + nc, anchors)``, older
versions) goes through ultralytics' ONNX backend (letterbox, inference, NMS). The execution
provider is chosen deliberately: CUDA only when torch sees a GPU *and* onnxruntime offers the
CUDA provider, otherwise the CPU provider alone (no fallback error spam).
Each image gives a JSON record (class, confidence, box in original pixels) and an annotated copy.

A file that cannot be read or decoded (corrupt, truncated, not an image) gets a record with a
one-line ``error`` instead and the batch goes on; so does an image whose header declares more than
``serving.MAX_PIXELS`` pixels (refused before decoding: the limit of every decoder in the project).
A model that cannot be found or loaded (a missing file, no such registered model / alias /
version, an unreachable registry, a server that refuses the credentials) raises
:class:`ModelError`, whose message is one line that says what to do. The outputs are written
atomically (temporary file, then ``os.replace``; ``annotated/`` as a temporary sibling folder swapped
in as a whole): an interrupted batch leaves the previous ``detections.json`` and ``annotated/``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MODEL_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
NOT_PROMOTED = "run `dvc repro` (or `defectops promote`) first"
MODEL_CACHE = Path(".cache/models")   # registry models downloaded by predict, relative to where it runs

log = logging.getLogger(__name__)


class ModelError(Exception):
    """The model cannot be found or loaded; the message is one line that says what to do."""


class ImageError(Exception):
    """One input file cannot be read as an image; the message is the one-line reason."""


def one_line(e: BaseException | str, limit: int = 300) -> str:
    """An exception (or text) as one line: whitespace collapsed, cut at ``limit`` characters."""
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= limit else s[:limit - 3] + "..."


def expand(paths: list[str | Path]) -> list[Path]:
    """Files as given (each is predicted or gets an error record, whatever its type), folders
    expanded to the image files in them (by suffix, recursively, sorted; hidden files and folders
    skipped), so the labels or notes beside the images of a dataset folder are not errors; an
    image file that does not decode still gets an error record."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return out


def read_image(f: Path) -> np.ndarray:
    """The image as a BGR array (what ultralytics takes), or :class:`ImageError` with the reason;
    an image whose header declares more than ``serving.MAX_PIXELS`` pixels (the limit of every
    decoder in the project) is refused before it is decoded."""
    try:
        data = Path(f).read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read the file: {e.strerror or one_line(e)}") from e
    if not data:
        raise ImageError("empty file")
    from .serving import ImageTooLarge, check_pixels

    try:                                # the header's size, before anything decodes (serving.MAX_PIXELS)
        size = check_pixels(data)
    except ImageTooLarge as e:
        raise ImageError(str(e)) from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if size is not None else None
    if img is None:
        from components.data.canonical import image_format

        suffix = Path(f).suffix.lower()
        if suffix in IMAGE_SUFFIXES and image_format(data):
            raise ImageError(f"corrupt or truncated {suffix[1:]} image (OpenCV cannot decode it)")
        raise ImageError(f"not an image ({suffix or 'no suffix'}; its first bytes match no image format)")
    return img


def device_for_onnx() -> str:
    """ultralytics device string that makes its ONNX backend pick the provider we want."""
    from .export import ort_providers

    return "0" if ort_providers()[0] == "CUDAExecutionProvider" else "cpu"


# ---- the model: a local file or a registry URI

def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store URI (relative or absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _unreachable(uri: str, e: BaseException) -> ModelError:
    msg, full = one_line(e, 200), str(e).lower()
    for cause in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                  "timed out", "unable to open database file", "Max retries exceeded"):
        if cause.lower() in full:
            msg = cause
            break
    return ModelError(f"cannot reach the MLflow registry at {uri} ({msg}): start the tracking server, or point "
                      f"MLFLOW_TRACKING_URI / tracking.uri at the right one")


AUTH_VARS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"


def _auth_error(uri: str, e: BaseException, what: str) -> ModelError | None:
    """A server with authentication (``mlflow server --app-name basic-auth``) that refused: 401 (no
    or wrong credentials) or 403 (this identity may not read ``what``) as one line naming the
    variables to set; None for any other error."""
    code, text = getattr(e, "error_code", None), str(e)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if code == "UNAUTHENTICATED" or "error code 401" in text:
        who = (f"user '{user}': wrong password, or no such user" if user and os.environ.get("MLFLOW_TRACKING_PASSWORD")
               else "no credentials given" if not user else f"user '{user}' without MLFLOW_TRACKING_PASSWORD")
        return ModelError(f"the MLflow server at {uri} refused the credentials (401, {who}): set {AUTH_VARS} to an "
                          f"identity of that server (infra/README.md, *Identities*)")
    if code == "PERMISSION_DENIED" or "error code 403" in text:
        return ModelError(f"the MLflow identity '{user or '?'}' may not read {what} at {uri} (403): ask the server's "
                          f"admin for READ on it (infra/create_identities.py), or set {AUTH_VARS} to another identity")
    return None


def _require_store(uri: str) -> None:
    """:class:`ModelError` when ``uri`` is a SQLite store whose file does not exist (MLflow would
    create an empty one: predict and serve never create a registry)."""
    db = _sqlite_file(uri)
    if db is not None and not db.is_file():
        raise ModelError(f"no MLflow registry at {uri} ({db} does not exist): {NOT_PROMOTED}")


def check_registered(uri: str, model: str) -> None:
    """Check that ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` exists in the registry at
    ``uri`` (without creating a store): :class:`ModelError` with what to do, else None."""
    from mlflow.exceptions import MlflowException

    from .registry import client

    rest = model[len("models:/"):].strip("/")
    name, alias, version = rest, None, None
    if "@" in rest:
        name, alias = rest.split("@", 1)
    elif "/" in rest:
        name, version = rest.split("/", 1)
    if not name:
        raise ModelError(f"{model}: not a registry URI; use models:/NAME@ALIAS or models:/NAME/VERSION")
    _require_store(uri)
    c = client(uri)
    try:
        rm = c.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            try:
                names = sorted(m.name for m in c.search_registered_models(max_results=20))
            except Exception:
                names = []
            has = f" (registered: {', '.join(names)})" if names else ""
            raise ModelError(f"no registered model '{name}' in the registry at {uri}{has}: {NOT_PROMOTED}") from e
        raise (_auth_error(uri, e, f"model '{name}'") or _unreachable(uri, e)) from e
    except Exception as e:                      # sqlalchemy / requests errors that MLflow does not wrap
        raise _unreachable(uri, e) from e
    if alias is not None:
        aliases = dict(getattr(rm, "aliases", None) or {})
        if alias not in aliases:
            has = f" (its aliases: {', '.join(f'{k} -> v{v}' for k, v in sorted(aliases.items()))})" if aliases else ""
            raise ModelError(f"no model '{name}' with alias '{alias}' in the registry at {uri}{has}: {NOT_PROMOTED}")
    elif version is not None and version.isdigit():
        try:
            c.get_model_version(name, version)
        except MlflowException as e:
            if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise (_auth_error(uri, e, f"model '{name}'") or _unreachable(uri, e)) from e
            have = sorted(int(mv.version) for mv in c.search_model_versions(f"name='{name}'"))
            hint = f"latest is v{have[-1]}" if have else "it has no versions yet"
            raise ModelError(f"no version {version} of model '{name}' in the registry at {uri} ({hint}): use an "
                             f"existing version or alias (models:/{name}@champion), or {NOT_PROMOTED}") from e


def check_model(model: str, uri: str) -> None:
    """Before anything is downloaded from the store at ``uri``: a SQLite store that does not exist
    is :class:`ModelError` (MLflow would create an empty one: predict and serve never create a
    registry, whatever the URI: ``models:/``, ``runs:/``...), and a ``models:/`` URI must name an
    existing model, alias or version (:func:`check_registered`)."""
    if model.startswith("models:/"):
        check_registered(uri, model)
    else:
        _require_store(uri)


def resolve_model(model: str, uri: str, cache: Path) -> Path:
    """A local ``.onnx`` path, or an MLflow model URI downloaded into ``cache``; :class:`ModelError`
    (one line, what to do) when there is no such model."""
    if model.startswith(MODEL_URI_SCHEMES):
        from .registry import download_onnx

        check_model(model, uri)
        try:
            return download_onnx(uri, model, cache)
        except ModelError:
            raise
        except Exception as e:
            raise (_auth_error(uri, e, model)
                   or ModelError(f"cannot download {model} from the registry at {uri}: {one_line(e)}")) from e
    p = Path(model)
    if not p.exists():
        raise ModelError(f"no model file {model}: give a .onnx file (e.g. exports/<model>/best.onnx, written by "
                         f"`dvc repro`) or a registry URI such as models:/defect-detector@champion")
    if p.suffix.lower() != ".onnx" or not p.is_file():
        raise ModelError(f"{model}: not an .onnx file; give a .onnx file or a registry URI such as "
                         f"models:/defect-detector@champion")
    return p


@contextmanager
def quiet_registry():
    """While a model is looked up: an unreachable registry answers after a few retries, not after
    MLflow's default of minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES in the environment wins), and
    MLflow's / urllib3's chatter stays out of the one-line error."""
    key, had = "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_MAX_RETRIES" in os.environ
    os.environ.setdefault(key, "2")
    levels = {n: logging.getLogger(n).level for n in ("mlflow", "alembic", "urllib3")}
    for n, level in (("mlflow", logging.WARNING), ("alembic", logging.WARNING), ("urllib3", logging.ERROR)):
        logging.getLogger(n).setLevel(level)
    try:
        yield
    finally:
        if not had:
            os.environ.pop(key, None)
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def open_detector(model: str, uri: str, cache: Path = MODEL_CACHE) -> Detector:
    """``defectops predict``'s model: a ``.onnx`` file or a registry URI (downloaded into ``cache``)
    from the store at ``uri``, loaded; :class:`ModelError` (one line) when there is no such model."""
    with quiet_registry():
        onnx = resolve_model(model, uri, cache)
    return Detector(onnx)


def served_model(model: str, uri: str):
    """Which model the prediction log's records name (``predlog.ModelRef``): a registry URI's name,
    alias and version (an alias resolved in the registry at ``uri``; unknown if that fails), or the
    ``.onnx`` path as given."""
    from ..monitor.predlog import ModelRef, model_ref

    ref = model_ref(model)
    if ref.alias and not ref.version:
        from .registry import alias_version

        try:
            _require_store(uri)                 # never create a store (MLflow would make an empty SQLite one)
            with quiet_registry():
                mv = alias_version(uri, ref.name, ref.alias)
            ref = ModelRef(ref.name, str(mv.version) if mv is not None else None, ref.alias)
        except Exception as e:                  # noqa: BLE001  the records then lack the version
            log.debug("cannot resolve %s to a version: %s", model, one_line(e))
    return ref


def attach_log(det: Detector, settings, model: str, uri: str) -> Detector:
    """Make ``det`` append one record per predicted image to the prediction log that ``settings``
    (the ``predlog`` section) names (``DEFECTOPS_PREDLOG_URL`` wins; ``off``: none), naming ``model``
    (resolved in the registry at ``uri``). Returns ``det``."""
    from ..monitor.predlog import open_log

    det.predlog = open_log(settings.url, settings.keep_images, settings.image_dir, settings.image_cap_mb)
    det.served = served_model(model, uri) if det.predlog is not None else None
    return det


def open_pyfunc(model: str, uri: str):
    """``defectops serve``'s model: the registered MLflow pyfunc (as ``mlflow models serve`` loads
    it) of a registry URI or a local model folder; :class:`ModelError` (one line) when there is no
    such model or it cannot be loaded."""
    from .server import load

    with quiet_registry():
        if model.startswith(MODEL_URI_SCHEMES):
            check_model(model, uri)
        try:
            return load(model, uri)
        except Exception as e:
            raise ModelError(f"cannot load {model} as an MLflow pyfunc model ({one_line(e, 200)}): give a "
                             f"registered version (models:/defect-detector@champion) or a model folder") from e


def export_imgsz(onnx_path: Path) -> list[int] | None:
    """The input size recorded in the ONNX metadata (``imgsz``) by the exporter, if any."""
    import ast

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    return list(ast.literal_eval(meta["imgsz"])) if "imgsz" in meta else None


class Detector:
    """An ONNX detector: an end-to-end graph on ONNX Runtime, else a raw graph loaded for
    ultralytics' predictor (:class:`ModelError` if it cannot be)."""

    def __init__(self, onnx_path: Path, imgsz: int | None = None):
        from ..yolo import YOLO

        self.path = Path(onnx_path)
        self.boxes = None
        self.predlog, self.served = None, None          # the prediction log, set by attach_log
        try:
            from .serving import has_nms, read_meta

            meta = read_meta(self.path)
        except Exception:
            meta = {}                   # not an ONNX file: the loader below says so
        if has_nms(meta):
            from .export import ort_providers
            from .serving import BoxModel

            try:
                self.boxes = BoxModel(self.path, providers=ort_providers())
            except Exception as e:
                raise ModelError(f"cannot load {self.path} as an ONNX detector ({one_line(e)}): give a model "
                                 f"exported by `defectops export` / `dvc repro`") from e
            self.imgsz, self.provider, self.nms_iou = self.boxes.imgsz, self.boxes.provider, meta["args"].get("iou")
            return
        self.nms_iou = None
        try:
            self.imgsz = imgsz or export_imgsz(self.path)
            self.yolo = YOLO(str(self.path), task="detect")
            self.device = device_for_onnx()
            size = self.imgsz if isinstance(self.imgsz, int) else (self.imgsz or [64])[0]
            self._predict(np.zeros((size, size, 3), np.uint8), 0.5, 0.7)      # loads the session now
        except Exception as e:
            raise ModelError(f"cannot load {self.path} as an ONNX detector ({one_line(e)}): give a model "
                             f"exported by `defectops export` / `dvc repro`") from e
        session = getattr(getattr(self.yolo.predictor.model, "backend", None), "session", None)
        self.provider = session.get_providers()[0] if session is not None else "unknown"

    def _predict(self, img: np.ndarray, conf: float, iou: float):
        kw = {"imgsz": self.imgsz} if self.imgsz else {}
        return self.yolo.predict(img, conf=conf, iou=iou, device=self.device, verbose=False, **kw)[0]

    def __call__(self, img: np.ndarray, conf: float, iou: float):
        return self._predict(img, conf, iou)

    @property
    def thresholds(self) -> dict[str, float] | None:
        """The per-class thresholds the model ships with (its ONNX metadata), or None."""
        return self.boxes.thresholds if self.boxes is not None else None

    def detect(self, img: np.ndarray, conf: float | None, iou: float) -> tuple[dict, np.ndarray]:
        """The image's verdict (``components.deploy.serving.verdict``: ``verdict``, the
        ``detections`` that made it (class, class_id, confidence, box_xyxy in the image's pixels),
        the ``thresholds`` used: the shipped per-class ones, or ``conf`` when given) and the image
        annotated with those boxes and the verdict."""
        from ultralytics.utils.plotting import Annotator, colors

        from .serving import DEFAULT_CONF, judgement

        if self.boxes is not None:
            v = self.boxes.judge(img, conf)
        else:
            r = self(img, DEFAULT_CONF if conf is None else conf, iou)
            names = r.names
            dets = [{"class": names[int(c)], "class_id": int(c), "confidence": round(float(s), 4),
                     "box_xyxy": [round(float(v), 1) for v in b]}
                    for b, s, c in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist())]
            v = judgement(dets, None, conf)
        ann = Annotator(img.copy(), line_width=max(1, round(sum(img.shape[:2]) / 600)))
        for d in v["detections"]:
            ann.box_label(d["box_xyxy"], f"{d['class']} {d['confidence']:.2f}", color=colors(d["class_id"], True))
        ng = v["verdict"] == "NG"
        ann.text([4, 4], v["verdict"], txt_color=(255, 255, 255), anchor="top",
                 box_color=(40, 40, 220) if ng else (40, 160, 40))
        return v, ann.result()


def _write_atomic(path: Path, data: bytes) -> None:
    """``path`` holds either its old content or all of ``data``, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where that is not available."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _replace_dir(new: Path, cur: Path) -> None:
    """Folder ``new`` takes the place of ``cur`` as a whole: swapped in one step where the OS can
    (else two renames a moment apart); the old folder is deleted afterwards."""
    import shutil

    if not cur.exists():
        os.rename(new, cur)
        return
    if _exchange(new, cur):                 # ``new`` now holds the old folder
        shutil.rmtree(new, ignore_errors=True)
        return
    old = cur.with_name(f".{cur.name}.{os.getpid()}.old")
    os.rename(cur, old)
    os.rename(new, cur)
    shutil.rmtree(old, ignore_errors=True)


def _stale_parts(out_dir: Path) -> None:
    """Remove the temporary folders of earlier runs that were killed (their process is gone)."""
    import shutil

    for d in out_dir.glob(".annotated.*.part"):
        try:
            pid = int(d.name.split(".")[2])
            os.kill(pid, 0)
            continue                        # that run is still going
        except (ValueError, IndexError, ProcessLookupError):
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue


def predict(onnx_path: Path | Detector, images: list[Path], out_dir: Path, conf: float | None, iou: float,
            imgsz: int | None = None, progress=None) -> dict:
    """The verdict and detections of every image -> ``out_dir/detections.json`` and
    ``out_dir/annotated/``: at the model's shipped per-class thresholds, or at ``conf`` for every
    class when given. A file that cannot be read or predicted gets ``{"image": ..., "error": "<reason>"}``.
    The annotated images are written into a temporary sibling folder that replaces ``annotated/``
    as a whole at the end (then ``detections.json``): a run killed mid-batch leaves the previous
    ``annotated/`` and ``detections.json`` as they were, never a mix of two runs."""
    import shutil

    det = onnx_path if isinstance(onnx_path, Detector) else Detector(onnx_path, imgsz)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _stale_parts(out_dir)
    final = out_dir / "annotated"
    part = out_dir / f".annotated.{os.getpid()}.part"
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir()
    try:
        result = _predict_into(det, images, part, final, conf, iou, progress)
        _replace_dir(part, final)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    _write_atomic(out_dir / "detections.json", json.dumps(result, indent=1).encode())
    return result


def _log_image(det: Detector, f: Path, img: np.ndarray, answer: dict, seconds: float) -> None:
    """Append one predicted image to ``det``'s prediction log; never raises."""
    from .serving import log_prediction

    try:
        data = f.read_bytes()
    except OSError as e:
        log.debug("not logged, cannot read %s again: %s", f, one_line(e))
        return
    log_prediction(det.predlog, det.served, data, img, answer, seconds, "predict")


def _predict_into(det: Detector, images: list[Path], part: Path, final: Path, conf: float | None, iou: float,
                  progress=None) -> dict:
    """:func:`predict`'s loop: annotated images written into ``part``, recorded under ``final``."""
    records, used = [], set()
    for f in images:
        try:
            t0 = time.perf_counter()
            img = read_image(f)
            v, plotted = det.detect(img, conf, iou)
            if det.predlog is not None:                 # one record per image; never fails the prediction
                _log_image(det, Path(f), img, v, time.perf_counter() - t0)
            stem, k = Path(f).stem, 1
            while stem in used:                         # a/x.jpg and b/x.png: annotated x.jpg, x-1.jpg
                stem, k = f"{Path(f).stem}-{k}", k + 1
            used.add(stem)
            ok, buf = cv2.imencode(".jpg", plotted)
            if ok:
                (part / f"{stem}.jpg").write_bytes(buf.tobytes())
            records.append({"image": str(f), **v, "annotated": str(final / f"{stem}.jpg") if ok else None})
        except ImageError as e:
            records.append({"image": str(f), "error": str(e)})
        except Exception as e:                          # this image only; the batch goes on
            log.debug("prediction failed on %s", f, exc_info=True)
            records.append({"image": str(f), "error": f"prediction failed: {type(e).__name__}: {one_line(e)}"})
        if progress is not None:
            progress(1)
    failed = sum("error" in r for r in records)
    result = {"model": str(det.path), "provider": det.provider, "conf": conf, "thresholds": det.thresholds,
              "ng": sum(r.get("verdict") == "NG" for r in records), "ok": sum(r.get("verdict") == "OK" for r in records),
              "iou": det.nms_iou if det.nms_iou is not None else iou,     # an end-to-end graph: its own NMS
              "failed": failed, "images": records}
    return result
