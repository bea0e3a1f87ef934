"""``defectops serve``: a registered version of ``defect-detector`` (the MLflow pyfunc that
``mlflow models serve`` serves) behind an HTTP edge that hostile requests cannot take down.

Same contract as ``mlflow models serve``: ``POST /invocations`` with MLflow's JSON
(``dataframe_records``, ``dataframe_split``, ``inputs`` or ``instances``; an ``image`` column of
base64 image files; ``params.conf``) answers ``{"predictions": [...]}``; ``GET /ping`` (and
``/health``) 200 while the model is loaded. The model is loaded with ``mlflow.pyfunc.load_model``
and run as MLflow runs it. What this edge adds, and MLflow's scoring server (3.17) has no option for:

* a **request size cap**: a body above ``max_request_bytes`` gets 413 (from ``Content-Length``
  before the body is read; a chunked body is counted as it arrives and never held beyond the cap);
  more than ``max_rows`` rows get 413 too;
* **error messages that never echo the request** (MLflow's put the parsed input into its 400s:
  a 20 MB junk body came back in the error): a short reason, MLflow's ``{"error_code", "message"}`` shape;
* **the pixel limit before decoding** (``serving.MAX_PIXELS``, the limit of every decoder in the
  project): each row's image header is read with Pillow (no pixels) and a row declaring more is an
  error row, whatever code the registered version carries (versions registered before the limit too);
* **a request whose every row fails answers 422** (with the per-row errors); a partly failed one
  200 with the per-row ``{"error": ...}`` records and their count (``"errors": k``, only when k > 0);
* predictions run one request at a time in a worker thread (``concurrency``), so ``/ping`` answers
  while a batch runs and memory stays bounded by one request's images.
"""

# no ``from __future__ import annotations``: FastAPI reads the handlers' annotations (Request) at runtime

import asyncio
import json
import logging
from typing import Any

MAX_REQUEST_MB = 16          # default request body cap (MiB): a 40 MP JPEG in base64 is ~ 10 MB
MAX_ROWS = 64                # default rows per request
INPUT_KEYS = ("dataframe_records", "dataframe_split", "inputs", "instances")

log = logging.getLogger(__name__)


class BadRequest(Exception):
    """A request the server refuses: ``status`` and a short message that quotes nothing of the body."""

    def __init__(self, status: int, message: str, error_code: str = "BAD_REQUEST"):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


def _type(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def parse(body: bytes, max_rows: int = MAX_ROWS) -> tuple[list[Any], dict]:
    """The ``image`` values of an MLflow JSON request and its params (``conf`` only); BadRequest
    (messages name keys and types, never values) otherwise."""
    if not body.strip():
        raise BadRequest(400, 'empty request body: send JSON such as {"dataframe_records": [{"image": "<base64>"}]}')
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest(400, "the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise BadRequest(400, f"the request body is not JSON ({e.msg} at byte {e.pos})") from None
    if not isinstance(payload, dict):
        raise BadRequest(400, f"the request body must be a JSON object, not {_type(payload)}")
    keys = [k for k in INPUT_KEYS if k in payload]
    if len(keys) != 1:
        raise BadRequest(400, f"the request needs exactly one of {', '.join(INPUT_KEYS)} "
                              f"({'found ' + ', '.join(keys) if keys else 'none found'})")
    data = payload[keys[0]]
    if keys[0] == "dataframe_split":
        if not isinstance(data, dict) or not isinstance(data.get("columns"), list) or "image" not in data["columns"] \
                or not isinstance(data.get("data"), list):
            raise BadRequest(400, 'dataframe_split needs "columns" with "image" and "data" (a list of rows)')
        i = data["columns"].index("image")
        rows = data["data"]
        if not all(isinstance(r, list) and len(r) > i for r in rows):
            raise BadRequest(400, "dataframe_split: every row of data must be a list with an image value")
        images = [r[i] for r in rows]
    elif isinstance(data, dict):                          # {"inputs": {"image": [...]}}
        if "image" not in data:
            raise BadRequest(400, f'{keys[0]} needs an "image" column (found: {", ".join(map(str, list(data)[:5]))})')
        images = data["image"] if isinstance(data["image"], list) else [data["image"]]
    elif isinstance(data, list):                          # records: [{"image": ...}], or bare values
        images = [r.get("image") if isinstance(r, dict) else r for r in data]
    else:
        raise BadRequest(400, f"{keys[0]} must be a list of records or an object of columns, not {_type(data)}")
    if not images:
        raise BadRequest(400, "the request has no rows")
    if len(images) > max_rows:
        raise BadRequest(413, f"{len(images)} rows in one request, more than the limit of {max_rows}: send "
                              f"smaller batches", "RESOURCE_LIMIT_EXCEEDED")
    params = payload.get("params") or {}
    if not isinstance(params, dict) or set(params) - {"conf"}:
        raise BadRequest(400, 'params: only {"conf": <number>} is accepted')
    if "conf" in params:
        conf = params["conf"]
        if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
            raise BadRequest(400, "params.conf must be a number in [0, 1] (0: the shipped thresholds)")
        params = {"conf": float(conf)}
    return images, params


def check_row(value: Any, limit: int | None = None) -> str | None:
    """Why one row cannot be predicted (not a base64 string, no image header, more pixels than the
    limit, ``serving.MAX_PIXELS`` by default: from the header, nothing decoded), or None."""
    from .serving import MAX_PIXELS, ImageTooLarge, b64decode, check_pixels

    limit = MAX_PIXELS if limit is None else limit
    if not isinstance(value, str):
        return f"the image must be a base64 string, not {_type(value)}"
    try:
        data = b64decode(value)
    except ValueError as e:
        return str(e)
    if not data:
        return "empty image"
    try:
        if check_pixels(data, limit) is None:
            return "not an image (no image header Pillow can read)"
    except ImageTooLarge as e:
        return str(e)
    return None


def create_app(model, max_request_bytes: int = MAX_REQUEST_MB << 20, max_rows: int = MAX_ROWS,
               concurrency: int = 1, pixel_limit: int | None = None):
    """The FastAPI app serving ``model`` (a loaded ``mlflow.pyfunc`` model, or anything whose
    ``predict(DataFrame, params=...)`` answers one record per row)."""
    import pandas as pd
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    app = FastAPI(title="defectops serve", docs_url=None, redoc_url=None, openapi_url=None)
    slots = asyncio.Semaphore(concurrency)

    def error(status: int, message: str, code: str = "BAD_REQUEST", **extra) -> JSONResponse:
        return JSONResponse({"error_code": code, "message": message, **extra}, status_code=status)

    async def ping():
        return Response(content="\n", status_code=200, media_type="application/json")

    app.get("/ping")(ping)
    app.get("/health")(ping)

    @app.get("/version")
    async def version():
        import mlflow

        return Response(content=mlflow.__version__, media_type="application/json")

    def too_large(n: int | None) -> JSONResponse:
        size = f"{n:,} bytes" if n is not None else f"more than {max_request_bytes:,} bytes"
        return error(413, f"request body of {size} is larger than the limit of {max_request_bytes:,} bytes "
                          f"(defectops serve --max-request-mb)", "RESOURCE_LIMIT_EXCEEDED")

    async def drain(request: Request, budget: int) -> None:
        """Read and drop what is left of the body (at most ``budget`` bytes), so the client reads the
        413 instead of a connection reset; past the budget the connection is simply closed."""
        try:
            async for chunk in request.stream():
                budget -= len(chunk)
                if budget <= 0:
                    break
        except Exception:                   # noqa: BLE001  the client went away: nothing to answer
            pass

    def predict(images: list[Any], params: dict) -> tuple[list[dict], int]:
        why = [check_row(v, pixel_limit) for v in images]
        good = [i for i, w in enumerate(why) if w is None]
        out: list[dict] = [{"error": w} for w in why]
        if good:
            df = pd.DataFrame({"image": [images[i] for i in good]})
            preds = model.predict(df, params=params or None)
            for i, p in zip(good, list(preds)):
                out[i] = p
        return out, sum(isinstance(p, dict) and "error" in p for p in out)

    @app.post("/invocations")
    async def invocations(request: Request):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            await drain(request, 4 * max_request_bytes)
            return error(415, f"send Content-Type: application/json (got {ctype[:60] or 'none'})")
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                declared = int(declared)
            except ValueError:
                return error(400, "bad Content-Length header")
            if declared > max_request_bytes:
                await drain(request, 4 * max_request_bytes)
                return too_large(declared)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_request_bytes:
                del body[:]
                await drain(request, 4 * max_request_bytes)
                return too_large(None)
        try:
            images, params = await asyncio.to_thread(parse, bytes(body), max_rows)
        except BadRequest as e:
            return error(e.status, e.message, e.error_code)
        finally:
            del body[:]
        async with slots:
            try:
                preds, failed = await asyncio.to_thread(predict, images, params)
            except Exception as e:          # noqa: BLE001  the model failed: a short reason, the trace in the log
                log.exception("prediction failed")
                return error(500, f"prediction failed ({type(e).__name__}); see the server log", "INTERNAL_ERROR")
        if failed == len(preds):
            first = next(p["error"] for p in preds)
            return error(422, f"none of the {len(preds)} row(s) is an image that can be predicted "
                              f"(row 0: {first})", "INVALID_PARAMETER_VALUE", predictions=preds, errors=failed)
        return JSONResponse({"predictions": preds, **({"errors": failed} if failed else {})})

    return app


def log_to(settings, served) -> None:
    """Make the pyfunc loaded next append one record per image to the prediction log that
    ``settings`` (the ``predlog`` section) names, the records naming ``served`` (a
    ``predlog.ModelRef``): the environment the served model reads (``predlog.env_for``), each
    variable unless already set (the environment wins, ``DEFECTOPS_PREDLOG_URL=off`` included)."""
    import os

    from ..monitor.predlog import env_for

    for k, v in env_for(settings.url, settings.keep_images, settings.image_dir, settings.image_cap_mb,
                        served).items():
        os.environ.setdefault(k, v)


def load(model_uri: str, tracking_uri: str):
    """The registered pyfunc, as ``mlflow models serve`` loads it."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.pyfunc.load_model(model_uri)


def serve(model, host: str, port: int, max_request_bytes: int = MAX_REQUEST_MB << 20, max_rows: int = MAX_ROWS,
          concurrency: int = 1) -> None:
    """Run the app on uvicorn (one process) until interrupted."""
    import uvicorn

    app = create_app(model, max_request_bytes, max_rows, concurrency)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, workers=1,
                timeout_keep_alive=5, limit_concurrency=64)
