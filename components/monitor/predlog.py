"""The prediction log: one record per image that ``defectops predict``, ``defectops serve`` or
``mlflow models serve`` (the registered pyfunc) predicted, in a SQL database through SQLAlchemy:
a SQLite file by default, PostgreSQL (or any SQLAlchemy URL) by URL.

A record (:class:`PredictionRecord`) holds the time (UTC), the model (registered name, version,
alias), the image's SHA-256 and size, the verdict and the boxes it answered with (class, name,
score, box in image pixels), the latency, where it came from (``predict`` / ``serve``) and the
image's statistics (:func:`image_stats`: brightness, contrast, sharpness, computed here, in one
place, for the log and for the drift reference alike). Optionally the image itself goes into a
content-addressed store (``<dir>/<sha[:2]>/<sha>.<ext>``) capped in MB: beyond the cap the least
recently seen images are deleted and their records say ``image_kept = False``.

**Logging never fails a prediction.** :meth:`PredictionLog.append` never raises: a bad URL, a
database that is down or full, a store that cannot be written is one warning per process
(``logging``), the record is dropped and the prediction answers; after a failure the log waits
:data:`RETRY_S` seconds before it tries the database again, so a down store costs no latency.

**Nothing committed is lost.** Each record is its own transaction, committed before the
prediction answers; SQLite runs in WAL mode with a busy timeout (several server workers append
to one file; a process killed mid-append loses at most the record it had not committed), and the
database file opens cleanly after a ``kill -9``.

This module imports nothing of the project (SQLAlchemy, numpy, OpenCV only): the registered
pyfunc ships it beside its own code (``defectops_predlog``), so a served model logs without the
project installed. Where the served model logs is read from the environment (:func:`from_env`,
:data:`ENV`); ``defectops serve`` sets it from ``params.yaml``'s ``predlog`` section.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///.cache/predlog.db"        # relative to where predict / serve runs (the project root)
DEFAULT_IMAGE_DIR = ".cache/predlog-images"
DEFAULT_CAP_MB = 512.0
RETRY_S = 30.0               # after a failure, appends are dropped (no connection attempt) for this long
CONNECT_TIMEOUT_S = 3        # PostgreSQL: a server that does not answer costs at most this, once per RETRY_S
SQLITE_BUSY_S = 30.0         # SQLite: how long a writer waits for another's lock
OFF = ("", "off", "none", "false", "0")

# the environment a served model reads (:func:`from_env`); ``defectops serve`` sets it (:func:`env_for`)
ENV = {"url": "DEFECTOPS_PREDLOG_URL", "keep_images": "DEFECTOPS_PREDLOG_KEEP_IMAGES",
       "image_dir": "DEFECTOPS_PREDLOG_IMAGE_DIR", "image_cap_mb": "DEFECTOPS_PREDLOG_IMAGE_CAP_MB",
       "model": "DEFECTOPS_PREDLOG_MODEL", "model_version": "DEFECTOPS_PREDLOG_MODEL_VERSION"}

_warned = False              # one warning per process, whatever the number of logs
_warned_store = False        # the same for an image store that cannot be written
_warn_lock = threading.Lock()


class PredictionLogError(Exception):
    """Reading the log failed (:meth:`PredictionLog.window`); the message is one line."""


@dataclass
class PredictionRecord:
    """One predicted image. ``boxes``: ``{"cls": int, "name": str, "conf": float, "xyxy": [x1, y1,
    x2, y2]}`` in image pixels, the detections the prediction answered with; ``stats``:
    :func:`image_stats` of the image; ``ts`` in UTC."""

    id: int | None
    ts: datetime
    model_name: str
    model_version: str | None
    model_alias: str | None
    image_sha256: str
    width: int
    height: int
    verdict: str | None
    boxes: list[dict] = field(default_factory=list)
    latency_ms: float = 0.0
    source: str = "predict"
    stats: dict = field(default_factory=dict)
    image_kept: bool = False


@dataclass(frozen=True)
class ModelRef:
    """Which model predicted: registered name, version and alias (None where unknown)."""

    name: str
    version: str | None = None
    alias: str | None = None


def model_ref(uri: str, version: str | None = None) -> ModelRef:
    """A :class:`ModelRef` from a model URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``) or
    a file path (as given); ``version`` fills in what an alias resolved to."""
    if uri.startswith("models:/"):
        rest = uri[len("models:/"):].strip("/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return ModelRef(name, version, alias)
        if "/" in rest:
            name, ver = rest.split("/", 1)
            return ModelRef(name, ver, None)
        return ModelRef(rest, version, None)
    return ModelRef(uri, version, None)


def image_stats(gray_or_bgr: np.ndarray) -> dict:
    """Brightness (mean grey level), contrast (its standard deviation) and sharpness (variance of
    the Laplacian, OpenCV's 3 x 3 kernel, in float64) of an image: grey ``(H, W)`` or BGR ``(H, W, 3)``
    uint8 as OpenCV decodes it. The one definition for the log and for any reference it is compared with."""
    import cv2

    img = np.asarray(gray_or_bgr)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    gray = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    mean, std = cv2.meanStdDev(gray)
    lap = cv2.Laplacian(gray, cv2.CV_64F)
    return {"brightness": float(mean[0, 0]), "contrast": float(std[0, 0]), "sharpness": float(lap.var())}


def boxes_of(detections: list[dict]) -> list[dict]:
    """The project's detections (``class``, ``class_id``, ``confidence``, ``box_xyxy``: what
    predict and the served model answer) as the log's boxes (``cls``, ``name``, ``conf``, ``xyxy``)."""
    return [{"cls": int(d["class_id"]), "name": str(d["class"]), "conf": float(d["confidence"]),
             "xyxy": list(map(float, d["box_xyxy"]))} for d in detections]


def record_for(model: ModelRef, data: bytes, img: np.ndarray, answer: Mapping, latency_ms: float,
               source: str) -> PredictionRecord:
    """The record of one prediction: ``data`` the encoded image file (hashed), ``img`` its decoded
    pixels (size, :func:`image_stats`), ``answer`` what the prediction answered (``verdict``,
    ``detections``), ``latency_ms`` how long it took (decoding included)."""
    return PredictionRecord(
        id=None, ts=datetime.now(timezone.utc), model_name=model.name, model_version=model.version,
        model_alias=model.alias, image_sha256=hashlib.sha256(data).hexdigest(), width=int(img.shape[1]),
        height=int(img.shape[0]), verdict=answer.get("verdict"), boxes=boxes_of(answer.get("detections") or []),
        latency_ms=float(latency_ms), source=source, stats=image_stats(img), image_kept=False)


# ---- the schema (SQLAlchemy Core; created when absent)

def _tables():
    import sqlalchemy as sa

    md = sa.MetaData()
    t = sa.Table(
        "predictions", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("model_name", sa.String(200), nullable=False, index=True),
        sa.Column("model_version", sa.String(64)),
        sa.Column("model_alias", sa.String(200)),
        sa.Column("image_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("verdict", sa.String(8)),
        sa.Column("boxes", sa.JSON, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("stats", sa.JSON, nullable=False),
        sa.Column("image_kept", sa.Boolean, nullable=False, default=False),
    )
    return md, t


_MD, _T = None, None


def _schema():
    global _MD, _T
    if _T is None:
        _MD, _T = _tables()
    return _MD, _T


def _utc(ts: datetime | None) -> datetime | None:
    """Aware UTC (a naive datetime is taken as UTC, as SQLite gives them back)."""
    if ts is None:
        return None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _db_value(ts: datetime, sqlite: bool) -> datetime:
    ts = _utc(ts)
    return ts.replace(tzinfo=None) if sqlite else ts        # SQLite: naive UTC (it drops offsets anyway)


def _one_line(e: BaseException, limit: int = 240) -> str:
    s = " ".join(str(getattr(e, "orig", None) or e).split()) or type(e).__name__
    return s if len(s) <= limit else s[:limit - 3] + "..."


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:                    # noqa: BLE001  not a URL at all
        return url.split("@")[-1][:120]


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for another backend or an in-memory database)."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if not u.get_backend_name() == "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


# ---- the content-addressed image store

_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"BM", ".bmp"), (b"II*\x00", ".tif"),
          (b"MM\x00*", ".tif"), (b"GIF8", ".gif"))


def _suffix(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return next((s for m, s in _MAGIC if data.startswith(m)), ".bin")


class ImageStore:
    """Encoded image files by content (``<root>/<sha[:2]>/<sha><ext>``), at most ``cap_mb`` MB: past
    the cap the least recently seen files are deleted (a file seen again is touched). Writers in
    several processes share it through a lock file (``<root>/.lock``); the running total lives in
    ``<root>/.size`` (re-measured when missing or at each eviction)."""

    def __init__(self, root: str | Path, cap_mb: float):
        self.root, self.cap = Path(root), int(float(cap_mb) * 1024 * 1024)

    def path(self, sha256: str) -> Path | None:
        d = self.root / sha256[:2]
        try:
            return next((p for p in d.iterdir() if p.stem == sha256 and not p.name.startswith(".")), None)
        except OSError:
            return None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def files(self) -> list[tuple[float, int, Path]]:
        out = []
        for d in self.root.iterdir():
            if d.is_dir() and len(d.name) == 2:
                for p in d.iterdir():
                    if not p.name.startswith("."):
                        with contextlib.suppress(OSError):
                            st = p.stat()
                            out.append((st.st_mtime, st.st_size, p))
        return out

    def _total(self) -> int | None:
        try:
            return int((self.root / ".size").read_text())
        except (OSError, ValueError):
            return None

    def _set_total(self, n: int) -> None:
        tmp = self.root / f".size.{os.getpid()}"
        tmp.write_text(str(n))
        os.replace(tmp, self.root / ".size")

    def put(self, sha256: str, data: bytes) -> bool:
        """Store ``data`` (call under :meth:`locked`); False when it alone is larger than the cap."""
        if len(data) > self.cap:
            return False
        old = self.path(sha256)
        if old is not None:
            os.utime(old)                       # seen again: the most recent
            return True
        d = self.root / sha256[:2]
        d.mkdir(parents=True, exist_ok=True)
        final = d / f"{sha256}{_suffix(data)}"
        tmp = d / f".{sha256}.{os.getpid()}.part"
        tmp.write_bytes(data)
        os.replace(tmp, final)
        total = self._total()
        self._set_total((sum(s for _, s, _ in self.files()) if total is None else total + len(data)))
        return True

    def over_cap(self) -> bool:
        total = self._total()
        return total is None or total > self.cap

    def evict(self) -> list[str]:
        """Delete the least recently seen files until the store is within its cap (call under
        :meth:`locked`); the SHA-256 of each deleted image."""
        for part in self.root.glob("??/.*.part"):            # left by a writer killed mid-write
            with contextlib.suppress(OSError):
                if time.time() - part.stat().st_mtime > 3600:
                    part.unlink()
        files = sorted(self.files(), key=lambda f: f[0])
        total, gone = sum(s for _, s, _ in files), []
        for _, size, p in files:
            if total <= self.cap:
                break
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            total -= size
            gone.append(p.stem)
        self._set_total(total)
        return gone


# ---- the log

class PredictionLog:
    """The prediction log at ``url`` (a SQLAlchemy URL: ``sqlite:///path.db``,
    ``postgresql+psycopg2://user@host/db``...); ``image_store`` a folder to keep the images in
    (None: images are not kept), capped at ``image_cap_mb``. Nothing connects until first use, and
    :meth:`append` never raises."""

    def __init__(self, url: str, image_store: Path | None = None, image_cap_mb: float = DEFAULT_CAP_MB):
        self.url = str(url)
        self.images = ImageStore(image_store, image_cap_mb) if image_store is not None else None
        self._engine, self._pid, self._ready = None, None, False
        self._down_until = 0.0
        self._dropped = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PredictionLog({_safe_url(self.url)!r})"

    # -- connection

    def _engine_now(self):
        """The engine of this process (a forked worker makes its own), tables created when absent."""
        if self._engine is not None and self._pid == os.getpid() and self._ready:
            return self._engine
        with self._lock:
            if self._engine is not None and self._pid != os.getpid():
                self._engine.dispose(close=False)           # the parent's connections stay the parent's
                self._engine, self._ready = None, False
            if self._engine is None:
                self._engine, self._pid = self._create_engine(), os.getpid()
            if not self._ready:
                self._create_tables()
                self._ready = True
        return self._engine

    def _create_engine(self):
        import sqlalchemy as sa

        db = _sqlite_file(self.url)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(self.url, connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record):
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")          # readers never block the writer
                cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_S * 1000)}")
                cur.execute("PRAGMA synchronous=NORMAL")        # WAL: a committed record survives a killed process
                cur.close()
            return engine
        kw = {"pool_pre_ping": True}
        if sa.engine.make_url(self.url).get_backend_name() == "postgresql":
            kw["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        return sa.create_engine(self.url, **kw)

    def _create_tables(self) -> None:
        import sqlalchemy as sa

        md, _ = _schema()
        try:
            md.create_all(self._engine, checkfirst=True)
        except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError) as e:
            # another process created them between our check and our CREATE (PostgreSQL / SQLite)
            if not sa.inspect(self._engine).has_table("predictions"):
                raise
            log.debug("predictions table created concurrently: %s", _one_line(e))

    def _failed(self, e: BaseException) -> None:
        global _warned
        self._down_until = time.monotonic() + RETRY_S
        self._dropped += 1
        with _warn_lock:
            first, _warned = not _warned, True
        if first:
            log.warning("prediction log %s unavailable, records are dropped (predictions go on; next try in "
                        "%.0f s): %s: %s", _safe_url(self.url), RETRY_S, type(e).__name__, _one_line(e))
        else:
            log.debug("prediction log %s: %s", _safe_url(self.url), _one_line(e))

    # -- writing

    def append(self, record: PredictionRecord, image: bytes | None = None) -> int | None:
        """Commit ``record`` (and keep ``image``, the encoded file, when this log keeps images);
        its id, or None when it could not be logged (a warning, once per process; never raises)."""
        if time.monotonic() < self._down_until:
            self._dropped += 1
            return None
        try:
            engine = self._engine_now()
            if image is not None and self.images is not None:
                rid = self._append_with_image(engine, record, image)
            else:
                rid = self._insert(engine, record, False)
        except Exception as e:               # noqa: BLE001  logging never fails a prediction
            self._failed(e)
            return None
        if self._dropped:
            log.info("prediction log %s is back (%d record(s) dropped while it was not)", _safe_url(self.url),
                     self._dropped)
            self._dropped = 0
        return rid

    def _append_with_image(self, engine, record: PredictionRecord, image: bytes) -> int:
        """Store the image and commit the record under the store's lock (so an eviction in another
        worker cannot delete the file between the two); a store that cannot be written keeps the
        record (``image_kept`` False, one warning)."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.images.locked())
            except OSError as e:
                self._store_failed(e)
                return self._insert(engine, record, False)
            try:
                kept = self.images.put(record.image_sha256, image)
            except OSError as e:
                self._store_failed(e)
                kept = False
            rid = self._insert(engine, record, kept)
            if kept and self.images.over_cap():
                self._evicted(engine, self.images.evict())
            return rid

    def _store_failed(self, e: BaseException) -> None:
        global _warned_store
        with _warn_lock:
            first, _warned_store = not _warned_store, True
        (log.warning if first else log.debug)("prediction log: cannot keep images in %s (records are kept "
                                              "without them): %s", self.images.root, _one_line(e))

    def _insert(self, engine, record: PredictionRecord, kept: bool) -> int:
        _, t = _schema()
        row = {f.name: getattr(record, f.name) for f in fields(record) if f.name != "id"}   # no deep copy
        row["ts"] = _db_value(record.ts, engine.dialect.name == "sqlite")
        row["image_kept"] = bool(kept)
        with engine.begin() as conn:
            rid = conn.execute(t.insert(), row).inserted_primary_key[0]        # one compiled statement, cached
        record.id, record.image_kept = int(rid), bool(kept)
        return int(rid)

    def _evicted(self, engine, shas: list[str]) -> None:
        if not shas:
            return
        _, t = _schema()
        with engine.begin() as conn:
            for i in range(0, len(shas), 500):
                conn.execute(t.update().where(t.c.image_sha256.in_(shas[i:i + 500])).values(image_kept=False))

    # -- reading

    def window(self, since: datetime | None = None, until: datetime | None = None, model_name: str | None = None,
               limit: int | None = None) -> list[PredictionRecord]:
        """The records with ``since <= ts < until`` (UTC; naive datetimes are taken as UTC) of
        ``model_name`` (all models when None), oldest first; with ``limit``, the latest ``limit``
        of them. An empty list when nothing was logged yet; :class:`PredictionLogError` when the
        store cannot be read."""
        import sqlalchemy as sa

        db = _sqlite_file(self.url)
        if db is not None and not db.is_file():
            return []                               # nothing logged yet (and reading creates nothing)
        try:
            engine = self._engine_now()
            _, t = _schema()
            sqlite = engine.dialect.name == "sqlite"
            q = sa.select(t)
            if since is not None:
                q = q.where(t.c.ts >= _db_value(since, sqlite))
            if until is not None:
                q = q.where(t.c.ts < _db_value(until, sqlite))
            if model_name is not None:
                q = q.where(t.c.model_name == model_name)
            q = q.order_by(t.c.ts.desc(), t.c.id.desc())
            if limit is not None:
                q = q.limit(int(limit))
            with engine.connect() as conn:
                rows = conn.execute(q).mappings().all()
        except Exception as e:               # noqa: BLE001
            raise PredictionLogError(f"cannot read the prediction log at {_safe_url(self.url)}: "
                                     f"{type(e).__name__}: {_one_line(e)}") from e
        out = [PredictionRecord(**{**dict(r), "ts": _utc(r["ts"]), "boxes": list(r["boxes"] or []),
                                   "stats": dict(r["stats"] or {}), "image_kept": bool(r["image_kept"])})
               for r in rows]
        return out[::-1]

    def count(self) -> int:
        """How many records the log holds (:class:`PredictionLogError` when it cannot be read)."""
        import sqlalchemy as sa

        db = _sqlite_file(self.url)
        if db is not None and not db.is_file():
            return 0
        try:
            engine = self._engine_now()
            _, t = _schema()
            with engine.connect() as conn:
                return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
        except Exception as e:               # noqa: BLE001
            raise PredictionLogError(f"cannot read the prediction log at {_safe_url(self.url)}: "
                                     f"{type(e).__name__}: {_one_line(e)}") from e

    def image_file(self, sha256: str) -> Path | None:
        """The kept image with that SHA-256 (None when images are not kept, or it was evicted)."""
        if self.images is None or len(sha256) < 3:
            return None
        return self.images.path(sha256)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine, self._ready = None, False


# ---- configuration: the settings section, the environment of a served model

def open_log(url: str | None, keep_images: bool = False, image_dir: str | Path | None = None,
             image_cap_mb: float = DEFAULT_CAP_MB) -> PredictionLog | None:
    """The log the ``predlog`` settings describe (``DEFECTOPS_PREDLOG_URL`` in the environment wins
    over ``url``, as ``MLFLOW_TRACKING_URI`` over ``tracking.uri``); None when the URL is empty or
    ``off`` (no logging)."""
    return _open(os.environ.get(ENV["url"], url), keep_images, image_dir, image_cap_mb)


def _open(url: str | None, keep_images: bool, image_dir: str | Path | None, image_cap_mb: float) -> PredictionLog | None:
    if url is None or str(url).strip().lower() in OFF:
        return None
    store = Path(image_dir or DEFAULT_IMAGE_DIR) if keep_images else None
    return PredictionLog(str(url).strip(), store, image_cap_mb)


def env_for(url: str | None, keep_images: bool = False, image_dir: str | Path | None = None,
            image_cap_mb: float = DEFAULT_CAP_MB, model: ModelRef | str | None = None) -> dict[str, str]:
    """The environment that makes a served model log as these settings say (:func:`from_env`);
    ``model`` (a :class:`ModelRef`, or the URI it serves, ``models:/NAME@ALIAS``) names the model in
    the records (:func:`served_from_env`). ``defectops serve`` lays it under the environment it runs
    in (a variable already set wins)."""
    env = {ENV["url"]: "off" if url is None else str(url), ENV["keep_images"]: "1" if keep_images else "0",
           ENV["image_dir"]: str(image_dir or DEFAULT_IMAGE_DIR), ENV["image_cap_mb"]: str(float(image_cap_mb))}
    if isinstance(model, ModelRef):
        env[ENV["model"]] = (f"models:/{model.name}@{model.alias}" if model.alias else
                             f"models:/{model.name}/{model.version}" if model.version else model.name)
        if model.version:
            env[ENV["model_version"]] = model.version
    elif model:
        env[ENV["model"]] = model
    return env


def served_from_env(environ: Mapping[str, str] | None = None) -> ModelRef | None:
    """The model a served model's records name: ``DEFECTOPS_PREDLOG_MODEL`` (a model URI such as
    ``models:/defect-detector@champion``, or a name) with ``DEFECTOPS_PREDLOG_MODEL_VERSION``; None when unset."""
    env = os.environ if environ is None else environ
    uri = env.get(ENV["model"], "").strip()
    if not uri:
        return None
    ref = model_ref(uri)
    version = env.get(ENV["model_version"], "").strip()
    return ModelRef(ref.name, version, ref.alias) if version and not ref.version else ref


def from_env(environ: Mapping[str, str] | None = None) -> PredictionLog | None:
    """The log a served model writes to: ``DEFECTOPS_PREDLOG_URL`` (unset: :data:`DEFAULT_URL`,
    relative to the server's working directory; ``off`` or empty: no log),
    ``DEFECTOPS_PREDLOG_KEEP_IMAGES`` (1 / 0), ``DEFECTOPS_PREDLOG_IMAGE_DIR``,
    ``DEFECTOPS_PREDLOG_IMAGE_CAP_MB``. Bad values: one warning and the default."""
    env = os.environ if environ is None else environ
    cap = env.get(ENV["image_cap_mb"], "")
    try:
        cap_mb = float(cap) if cap.strip() else DEFAULT_CAP_MB
    except ValueError:
        log.warning("%s=%r is not a number of MB: using %s", ENV["image_cap_mb"], cap, DEFAULT_CAP_MB)
        cap_mb = DEFAULT_CAP_MB
    keep = env.get(ENV["keep_images"], "0").strip().lower() not in OFF
    return _open(env.get(ENV["url"], DEFAULT_URL), keep, env.get(ENV["image_dir"]) or None, cap_mb)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Served models loaded in here do not log (``DEFECTOPS_PREDLOG_URL=off`` for the duration):
    MLflow predicts the input example when it logs a model, which is no production traffic."""
    old = os.environ.get(ENV["url"])
    os.environ[ENV["url"]] = "off"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV["url"], None)
        else:
            os.environ[ENV["url"]] = old
