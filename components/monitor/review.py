"""The review queue in Label Studio, and the way back into the retrain inbox.

**Out**: :func:`push_tasks` sends images the monitor picked (:class:`ReviewItem`) to a Label Studio
project (:func:`ensure_project`: one ``RectangleLabels`` control over the dataset's classes, found
by its title or created) as tasks whose pre-annotations (Label Studio's *predictions*) are the
model's boxes with their scores and the model version, so a reviewer corrects rather than draws.
The image is uploaded to Label Studio (it keeps its own copy; the server need not see this
machine's disk); the task's data keep the prediction id, the reason it was picked, the model
version and the image's SHA-256. A prediction already in the project is not pushed again.

**Back**: :func:`pull_annotations` takes the finished tasks (one annotation that is not a skip;
a task with several is left for a person to settle) not pulled before, and writes them as one
new folder of the retrain inbox in the YOLO layout the inbox reads (``components.data.inbox``):
``<inbox>/review-<project>-<UTC time>/images/`` (downloaded from Label Studio),
``labels/`` (Label Studio's own YOLO export: its converter turns the percent boxes into YOLO
lines, class ids fixed by the labels' ``category``), an image reviewed with no box gets an empty
label file (a defect-free sample), and ``review.json``, the provenance of every sample
(prediction id, model version, reason, reviewer, task and annotation ids, when). Beside it, at
the inbox root, ``review-<project>-<UTC time>.yaml`` holds the class names the YOLO reader needs
(one per folder: a retrain that archives one folder's never leaves another without). The folder
is written under a hidden name and renamed into place, then each task is marked pulled (its
``meta``); a pull killed between the two finds the folder's ``review.json`` and finishes the marks
instead of pulling twice.

Label Studio is reached over its REST API with ``httpx``: label-studio-sdk cannot be installed
beside the project's pins (every release needs OpenCV < 5 and, through it, numpy < 2.3). Both
kinds of API key work (:class:`TokenAuth`): a personal access token (Label Studio's default) or a
legacy token. The key comes from the environment (:data:`ENV_KEY`), never from params.yaml.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from xml.etree import ElementTree as ET

import httpx
import yaml

from components.data.inbox import REVIEW_FILE
from components.errors import StopError

log = logging.getLogger(__name__)

ENV_URL, ENV_KEY = "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"
REASONS = ("near_threshold", "drift", "disagreement")
CONTROL, OBJECT = "label", "image"        # the labelling config's RectangleLabels and Image tag names
PULLED = "defectops_pull"                 # task meta key: the inbox folder the task went to
MANIFEST = REVIEW_FILE                    # what `inbox.ingest` reads the provenance from
PAGE = 100
TIMEOUT_S = 120.0


class ReviewError(StopError):
    """Label Studio refused or could not be reached, or a project does not fit; one line."""


@dataclass
class ReviewItem:
    """One image to review: the prediction log's record id, the image file, its size, the boxes
    the model answered (``{"cls", "name", "conf", "xyxy": [x1, y1, x2, y2]}`` in pixels), the
    model version and why it was picked (one of :data:`REASONS`)."""

    prediction_id: int
    image: Path
    width: int
    height: int
    boxes: list[dict]
    model_version: str | None
    reason: str


# --------------------------------------------------------------------------- connection

class TokenAuth(httpx.Auth):
    """Label Studio's API keys: a personal access token (a JWT refresh token) is exchanged at
    ``/api/token/refresh/`` for a short-lived access token, sent as ``Bearer`` and renewed once
    on a 401; a legacy token is sent as ``Token <key>``."""

    requires_response_body = True

    def __init__(self, base_url: str, key: str) -> None:
        self.refresh_url = f"{base_url}/api/token/refresh/"
        self.key = key
        self.personal = key.count(".") == 2          # header.payload.signature
        self.access: str | None = None

    def _refresh(self) -> Iterator[httpx.Request]:
        r = yield httpx.Request("POST", self.refresh_url, json={"refresh": self.key})
        self.access = r.json().get("access") if r.status_code == 200 else None

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        if not self.personal:
            request.headers["Authorization"] = f"Token {self.key}"
            yield request
            return
        if self.access is None:
            yield from self._refresh()
        request.headers["Authorization"] = f"Bearer {self.access}"
        response = yield request
        if response.status_code == 401:
            yield from self._refresh()
            request.headers["Authorization"] = f"Bearer {self.access}"
            yield request


def connect(url: str, api_key: str) -> httpx.Client:
    """A client of the Label Studio server at ``url`` with ``api_key``; checked with one request
    (a wrong key or a server that does not answer is a :class:`ReviewError`)."""
    if not url or not api_key:
        raise ReviewError(f"Label Studio needs a URL and an API key (set {ENV_URL} and {ENV_KEY})")
    base = url.rstrip("/")
    client = httpx.Client(base_url=base, auth=TokenAuth(base, api_key), timeout=TIMEOUT_S)
    _call(client, "GET", "/api/current-user/whoami")
    return client


def _call(client: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request; any failure is one :class:`ReviewError` line (the server's own reason)."""
    try:
        r = client.request(method, path, **kw)
    except httpx.HTTPError as e:
        raise ReviewError(f"Label Studio at {client.base_url} did not answer {method} {path}: "
                          f"{type(e).__name__}: {e}") from None
    if r.status_code >= 400:
        try:
            why = r.json()
        except ValueError:
            why = r.text[:300]
        if isinstance(why, dict):
            why = why.get("detail") or why.get("validation_errors") or why
        hint = f" (check {ENV_KEY})" if r.status_code in (401, 403) else ""
        raise ReviewError(f"Label Studio refused {method} {path}: HTTP {r.status_code}{hint}: "
                          + " ".join(str(why).split())[:500])
    return r


def _pages(client: httpx.Client, path: str, key: str, params: dict) -> Iterator[dict]:
    """Every item of a paginated list (``key``: the list's field in each page)."""
    page, seen = 1, 0
    while True:
        body = _call(client, "GET", path, params={**params, "page": page, "page_size": PAGE}).json()
        items = body if isinstance(body, list) else body.get(key) or []
        yield from items
        seen += len(items)
        total = body.get("total", body.get("count")) if isinstance(body, dict) else None
        if not items or total is None or seen >= total:
            return
        page += 1


# --------------------------------------------------------------------------- project

def label_config(class_names: list[str]) -> str:
    """The labelling config: the image and one box control over ``class_names``, each label with
    its class id as ``category`` (Label Studio's YOLO export then writes those ids)."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=OBJECT, value=f"${OBJECT}", zoom="true")
    boxes = ET.SubElement(view, "RectangleLabels", name=CONTROL, toName=OBJECT, canRotate="false")
    for i, n in enumerate(class_names):
        ET.SubElement(boxes, "Label", value=n, category=str(i))
    return ET.tostring(view, encoding="unicode")


def project_labels(config: str) -> list[str]:
    """The labels of the box control in a labelling config, in order."""
    try:
        root = ET.fromstring(config)
    except ET.ParseError as e:
        raise ReviewError(f"unreadable labelling config: {e}") from None
    ctl = next((e for e in root.iter("RectangleLabels") if e.get("name") == CONTROL), None)
    return [] if ctl is None else [lab.get("value", "") for lab in ctl.iter("Label")]


def find_project(client: httpx.Client, title: str) -> int | None:
    """The id of the project titled ``title`` (the first one), None when there is none."""
    for p in _pages(client, "/api/projects", "results", {"title": title}):
        if p.get("title") == title:
            return int(p["id"])
    return None


def ensure_project(client: httpx.Client, title: str, class_names: list[str]) -> int:
    """The id of the review project ``title``, created when absent; an existing project must box
    exactly ``class_names`` (in order), else a :class:`ReviewError` (use another title)."""
    if not class_names:
        raise ReviewError("a review project needs the dataset's class names")
    pid = find_project(client, title)
    if pid is None:
        body = {"title": title, "label_config": label_config(class_names),
                "description": "defectops review queue: correct the model's boxes; no box = defect-free"}
        return int(_call(client, "POST", "/api/projects", json=body).json()["id"])
    have = project_labels(_call(client, "GET", f"/api/projects/{pid}").json()["label_config"])
    if have != list(class_names):
        raise ReviewError(f"Label Studio project {title!r} (id {pid}) labels {have}, the dataset has classes "
                          f"{list(class_names)}: give the review project another title")
    return pid


# --------------------------------------------------------------------------- out: tasks

def _tasks(client: httpx.Client, project_id: int, fields: str = "task_only") -> list[dict]:
    return list(_pages(client, "/api/tasks", "tasks", {"project": project_id, "fields": fields}))


def _regions(item: ReviewItem, labels: list[str]) -> list[dict]:
    """The item's boxes as Label Studio rectangle regions (percent of the image)."""
    out = []
    for k, b in enumerate(item.boxes):
        name = b.get("name") or (labels[b["cls"]] if 0 <= int(b.get("cls", -1)) < len(labels) else None)
        if name not in labels:
            raise ReviewError(f"prediction {item.prediction_id}: box class {name!r} is not a label of the "
                              f"review project ({labels})")
        x1, y1, x2, y2 = (float(v) for v in b["xyxy"])
        x1, x2 = (min(max(v, 0.0), item.width) for v in (x1, x2))
        y1, y2 = (min(max(v, 0.0), item.height) for v in (y1, y2))
        value = {"x": 100 * x1 / item.width, "y": 100 * y1 / item.height, "width": 100 * (x2 - x1) / item.width,
                 "height": 100 * (y2 - y1) / item.height, "rotation": 0, "rectanglelabels": [name]}
        out.append({"id": f"p{item.prediction_id}b{k}", "from_name": CONTROL, "to_name": OBJECT,
                    "type": "rectanglelabels", "original_width": item.width, "original_height": item.height,
                    "image_rotation": 0, "value": value, "score": float(b.get("conf", 0.0))})
    return out


def _upload(client: httpx.Client, project_id: int, item: ReviewItem, data: bytes) -> int:
    name = f"p{item.prediction_id}{Path(item.image).suffix.lower()}"
    r = _call(client, "POST", f"/api/projects/{project_id}/import", params={"commit_to_project": "false"},
              files={"file": (name, data)})
    return int(r.json()["file_upload_ids"][0])


def push_tasks(client: httpx.Client, project_id: int, items: list[ReviewItem]) -> int:
    """One task per item (its image uploaded, its boxes as the task's prediction); items whose
    prediction is already a task of the project are skipped. Returns the tasks created."""
    labels = project_labels(_call(client, "GET", f"/api/projects/{project_id}").json()["label_config"])
    have = {t["data"].get("prediction_id") for t in _tasks(client, project_id)}
    todo = [it for it in items if it.prediction_id not in have]
    for it in todo:                              # every item checked before anything is sent
        if it.reason not in REASONS:
            raise ReviewError(f"prediction {it.prediction_id}: unknown review reason {it.reason!r} ({REASONS})")
        if not Path(it.image).is_file():
            raise ReviewError(f"prediction {it.prediction_id}: image {it.image} not found")
    if not todo:
        return 0
    regions = [_regions(it, labels) for it in todo]
    blobs = [Path(it.image).read_bytes() for it in todo]
    ids = [_upload(client, project_id, it, data) for it, data in zip(todo, blobs)]
    files = {f["id"]: f["file"] for f in _call(client, "GET", f"/api/projects/{project_id}/file-uploads",
                                                 params={"ids": json.dumps(ids)}).json()}
    tasks = []
    for it, data, fid, res in zip(todo, blobs, ids, regions):
        scores = [r["score"] for r in res]
        # an uploaded file is served at /data/<its name> (Label Studio's MEDIA_URL), as its own import does
        tasks.append({"data": {OBJECT: f"/data/{files[fid]}", "prediction_id": it.prediction_id, "reason": it.reason,
                               "model_version": it.model_version, "image_sha256": hashlib.sha256(data).hexdigest(),
                               "image_name": Path(it.image).name, "width": it.width, "height": it.height},
                      "predictions": [{"model_version": it.model_version or "unknown", "result": res,
                                       "score": min(scores) if scores else None}]})
    r = _call(client, "POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, json=tasks)
    log.info("Label Studio project %d: %d task(s) created, %d already there", project_id,
             r.json()["task_count"], len(items) - len(todo))
    return int(r.json()["task_count"])


# --------------------------------------------------------------------------- back: inbox

def _done(task: dict) -> list[dict]:
    return [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]


def _in_inbox(inbox: Path) -> dict[int, str]:
    """Task ids already written to review folders of the inbox -> the folder (a pull killed
    before it marked them in Label Studio)."""
    out = {}
    for m in sorted(inbox.glob(f"review-*/{MANIFEST}")):
        try:
            for s in json.loads(m.read_text())["samples"]:
                out[int(s["task_id"])] = m.parent.name
        except (ValueError, KeyError, TypeError):
            log.warning("%s: not a review manifest, ignored", m)
    return out


def _mark(client: httpx.Client, task: dict, folder: str) -> None:
    _call(client, "PATCH", f"/api/tasks/{task['id']}", json={"meta": {**(task.get("meta") or {}), PULLED: folder}})


def _check_yamls(inbox: Path, class_names: list[str]) -> None:
    """Every class list at the inbox root (the YOLO reader takes the first) must be the dataset's."""
    for f in sorted(inbox.glob("*.yaml")) + sorted(inbox.glob("*.yml")):
        try:
            names = (yaml.safe_load(f.read_text()) or {}).get("names")
        except (yaml.YAMLError, AttributeError):
            continue
        names = [names[k] for k in sorted(names)] if isinstance(names, dict) else names
        if names is not None and names != list(class_names):
            raise ReviewError(f"{f} names {names}, the dataset {list(class_names)}: the inbox holds another "
                              "dataset's files; run retrain on them first")


def _reviewer(client: httpx.Client, uid: Any, cache: dict) -> str:
    if uid not in cache:
        try:
            u = _call(client, "GET", f"/api/users/{uid}").json()
            cache[uid] = u.get("email") or u.get("username") or str(uid)
        except ReviewError:
            cache[uid] = str(uid)
    return cache[uid]


def _yolo_labels(client: httpx.Client, project_id: int, ids: list[int], class_names: list[str]) -> dict[str, str]:
    """Label Studio's YOLO export of the tasks ``ids``: label file stem -> its lines."""
    r = _call(client, "GET", f"/api/projects/{project_id}/export",
              params={"exportType": "YOLO", "download_resources": "false", "ids[]": ids})
    try:
        z = zipfile.ZipFile(io.BytesIO(r.content))
    except zipfile.BadZipFile:
        raise ReviewError(f"Label Studio's YOLO export of project {project_id} is not a zip file") from None
    names = z.read("classes.txt").decode().split()
    if names != list(class_names):
        raise ReviewError(f"Label Studio project {project_id} exports classes {names}, the dataset has "
                          f"{list(class_names)}")
    return {Path(n).stem: z.read(n).decode() for n in z.namelist() if n.startswith("labels/") and n.endswith(".txt")}


def _write_sample(client: httpx.Client, task: dict, labels: dict[str, str], folder: Path, users: dict) -> dict:
    """One finished task's image (downloaded, checked) and label file into ``folder``; its
    provenance for ``review.json``."""
    d, (ann,) = task["data"], _done(task)
    path = Path(d[OBJECT].split("?")[0])
    if path.stem not in labels:
        raise ReviewError(f"task {task['id']}: Label Studio's YOLO export has no label file for {d[OBJECT]}")
    image = _call(client, "GET", d[OBJECT]).content
    sha = hashlib.sha256(image).hexdigest()
    if d.get("image_sha256") and sha != d["image_sha256"]:
        raise ReviewError(f"task {task['id']}: the image Label Studio returned is not the one pushed (SHA-256)")
    out = f"p{d.get('prediction_id', 'x')}_t{task['id']}"
    (folder / "images" / f"{out}{path.suffix}").write_bytes(image)
    (folder / "labels" / f"{out}.txt").write_text(labels[path.stem])
    return {"image": f"images/{out}{path.suffix}", "label": f"labels/{out}.txt",
            "boxes": sum(1 for line in labels[path.stem].splitlines() if line.strip()),
            "prediction_id": d.get("prediction_id"), "model_version": d.get("model_version"), "reason": d.get("reason"),
            "reviewer": _reviewer(client, ann.get("completed_by"), users),
            "reviewed_at": ann.get("updated_at") or ann.get("created_at"), "task_id": task["id"],
            "annotation_id": ann.get("id"), "image_sha256": sha}


def pull_annotations(client: httpx.Client, project_id: int, inbox: Path, class_names: list[str]) -> Path | None:
    """The finished, not yet pulled tasks of the project as one new inbox folder (see the module
    docstring); returns it, or None when there is nothing new."""
    inbox = Path(inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    for stale in inbox.glob(f".review-{project_id}-*.part"):     # a pull killed while it wrote
        shutil.rmtree(stale, ignore_errors=True)
    for stale in inbox.glob(f"review-{project_id}-*.yaml"):      # ... or before its folder was in place
        if not (inbox / stale.stem).is_dir():
            stale.unlink()
    tasks = _tasks(client, project_id, "all")
    written = _in_inbox(inbox)
    for t in tasks:                                   # finish the marks of a pull that was killed
        if t["id"] in written and (t.get("meta") or {}).get(PULLED) != written[t["id"]]:
            _mark(client, t, written[t["id"]])
    fresh = [t for t in tasks if _done(t) and not (t.get("meta") or {}).get(PULLED) and t["id"] not in written]
    several = [t["id"] for t in fresh if len(_done(t)) > 1]
    if several:
        log.warning("Label Studio tasks %s have several annotations: keep one (delete the others) and pull "
                    "again", ", ".join(map(str, several)))
    fresh = [t for t in fresh if len(_done(t)) == 1]
    if not fresh:
        return None
    _check_yamls(inbox, class_names)
    labels = _yolo_labels(client, project_id, [t["id"] for t in fresh], class_names)
    stamp = datetime.now(timezone.utc)
    name = f"review-{project_id}-{stamp:%Y%m%dT%H%M%S%fZ}"
    final, part = inbox / name, inbox / f".{name}.part"          # hidden: the inbox does not list it
    try:
        (part / "images").mkdir(parents=True)
        (part / "labels").mkdir()
        users: dict = {}
        samples = [_write_sample(client, t, labels, part, users) for t in fresh]
        manifest = {"source": "label-studio", "url": str(client.base_url), "project_id": project_id,
                    "pulled_at": stamp.isoformat(), "classes": list(class_names), "samples": samples}
        (part / MANIFEST).write_text(json.dumps(manifest, indent=1))
        # the folder's own class list at the inbox root (the YOLO reader's), before the folder: its
        # batch never lacks one, even when a retrain archives another folder's meanwhile
        tmp = inbox / f".{name}.yaml.part"
        tmp.write_text(yaml.safe_dump({"names": list(class_names)}, sort_keys=False))
        os.replace(tmp, inbox / f"{name}.yaml")
        os.replace(part, final)
    finally:
        shutil.rmtree(part, ignore_errors=True)
    for t in fresh:
        _mark(client, t, name)
    log.info("Label Studio project %d: %d reviewed image(s) -> %s", project_id, len(samples), final)
    return final
