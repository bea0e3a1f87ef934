"""The review queue through a real Label Studio server (``tests/labelstudio.py``: its own venv, a
local process on 127.0.0.1): project, pre-annotated tasks, a reviewer's answers given through
Label Studio's API, the pull into the retrain inbox, and the inbox's own validation on the result."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import httpx
import pytest
import yaml

from components.data.canonical import load_manifest
from components.data.importers import ImportOptions
from components.data.inbox import archive_batch, batch_id, inbox_files, ingest
from components.data.synth import CLASS_NAMES, SynthConfig, generate, write_synth_dataset
from components.monitor import review
from components.monitor.review import ReviewError, ReviewItem


CLASSES = list(CLASS_NAMES)            # scratch, inclusion, patch, pits, crazing, scale


def synth(seed: int, images: int) -> SynthConfig:
    return SynthConfig(seed=seed, images=images, size=64, min_defects=1, max_defects=2, contrast=(0.3, 0.5),
                       leather_fraction=0.3, jpeg_quality=95, bold=False)


@pytest.fixture
def base(tmp_path) -> Path:
    """The dataset the inbox validates against (synthetic, seed 0)."""
    write_synth_dataset(synth(0, 12), tmp_path / "datasets", "synth")
    return tmp_path / "datasets" / "synth"


def line_images(tmp: Path) -> list[Path]:
    """Five images "from the line" (synthetic, another seed): 64x64 JPEGs and one 64x48 PNG."""
    out = []
    for i, s in enumerate(generate(synth(5, 5))):
        img = s.image[:48] if i == 1 else s.image
        p = tmp / "store" / (f"img{i}.png" if i == 1 else f"img{i}.jpg")
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), img)
        out.append(p)
    return out


def items_for(paths: list[Path]) -> list[ReviewItem]:
    box = lambda c, conf, xyxy: {"cls": c, "name": CLASSES[c], "conf": conf, "xyxy": xyxy}   # noqa: E731
    return [ReviewItem(101, paths[0], 64, 64, [box(0, 0.31, [4, 4, 20, 30])], "3", "near_threshold"),
            ReviewItem(102, paths[1], 64, 48, [box(3, 0.9, [16, 6, 32, 42]), box(4, 0.4, [0, 0, 8, 8])], "3", "drift"),
            ReviewItem(103, paths[2], 64, 64, [box(2, 0.26, [10, 10, 30, 30])], "4", "disagreement"),
            ReviewItem(104, paths[3], 64, 64, [], "4", "drift"),
            ReviewItem(105, paths[4], 64, 64, [], None, "drift")]


def rect(label: str, x: float, y: float, w: float, h: float, ow: int, oh: int) -> dict:
    """A reviewer's box as Label Studio stores it: percent of the image."""
    return {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "original_width": ow,
            "original_height": oh, "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                                              "rectanglelabels": [label]}}


def yolo(text: str) -> list[float]:
    """A YOLO label file's numbers, lines sorted, flat (for pytest.approx)."""
    return flat([float(v) for v in line.split()] for line in text.splitlines() if line.strip())


def flat(rows) -> list[float]:
    return [v for row in sorted(rows) for v in row]


def test_push_review_pull_into_the_inbox(label_studio, tmp_path, base):  # noqa: F811
    ls = label_studio
    client = review.connect(ls.url, ls.api_key)                 # a personal access token
    pid = review.ensure_project(client, "line 1 review", CLASSES)
    assert review.ensure_project(client, "line 1 review", CLASSES) == pid      # found by its title
    paths = line_images(tmp_path)
    items = items_for(paths)
    assert review.push_tasks(client, pid, items) == 5
    assert review.push_tasks(client, pid, items) == 0                          # already there

    api = httpx.Client(base_url=ls.url, headers={"Authorization": f"Token {ls.legacy_token}"}, timeout=60)
    tasks = {t["data"]["prediction_id"]: t for t in
             api.get("/api/tasks", params={"project": pid, "fields": "all", "page_size": 100}).json()["tasks"]}
    assert sorted(tasks) == [101, 102, 103, 104, 105]
    t102 = tasks[102]
    assert t102["data"]["reason"] == "drift" and t102["data"]["model_version"] == "3"
    (pred,) = t102["predictions"]                               # the model's boxes, pre-annotated
    assert pred["model_version"] == "3" and pred["score"] == pytest.approx(0.4)
    v = sorted((r["value"] for r in pred["result"]), key=lambda v: v["x"])
    # (0,0,8,8) and (16,6,32,42) px on 64x48 -> percent
    assert [v[0][k] for k in ("x", "y", "width", "height")] == pytest.approx([0, 0, 12.5, 100 * 8 / 48])
    assert [v[1][k] for k in ("x", "y", "width", "height")] == pytest.approx([25, 12.5, 25, 75])
    assert v[1]["rectanglelabels"] == ["pits"]

    # the reviewer (through Label Studio's API): 101 corrected to two boxes, 102 confirmed, 103 has
    # no defect, 104 skipped, 105 not reviewed yet
    ids = {p: t["id"] for p, t in tasks.items()}
    answers = {101: [rect("inclusion", 12.5, 25, 50, 37.5, 64, 64),     # (8,16)-(40,40) px
                     rect("scratch", 0, 0, 25, 12.5, 64, 64)],          # (0,0)-(16,8) px
               102: [rect("pits", 25, 12.5, 25, 75, 64, 48)],           # (16,6)-(32,42) px on 64x48
               103: []}
    for p, result in answers.items():
        assert api.post(f"/api/tasks/{ids[p]}/annotations", json={"result": result}).status_code == 201
    assert api.post(f"/api/tasks/{ids[104]}/annotations", json={"result": [], "was_cancelled": True}).status_code == 201

    inbox = tmp_path / "inbox"
    folder = review.pull_annotations(client, pid, inbox, CLASSES)
    assert folder is not None and folder.parent == inbox and folder.name.startswith(f"review-{pid}-")
    assert sorted(p.name for p in (folder / "labels").iterdir()) == [f"p{p}_t{ids[p]}.txt" for p in (101, 102, 103)]
    label = {p: (folder / "labels" / f"p{p}_t{ids[p]}.txt").read_text() for p in (101, 102, 103)}
    # hand-computed: class cx cy w h, normalised
    assert yolo(label[101]) == pytest.approx([0, 0.125, 0.0625, 0.25, 0.125, 1, 0.375, 0.4375, 0.5, 0.375])
    assert yolo(label[102]) == pytest.approx([3, 0.375, 0.5, 0.25, 0.75])
    assert label[103] == ""                                      # reviewed, no defect: an empty label file
    for p, src in zip((101, 102, 103), paths):                 # copied from Label Studio, byte for byte
        assert (folder / "images" / f"p{p}_t{ids[p]}{src.suffix}").read_bytes() == src.read_bytes()
    assert all(p.is_file() for p in paths)                       # the store keeps its copies
    assert yaml.safe_load((inbox / f"{folder.name}.yaml").read_text()) == {"names": CLASSES}   # for the YOLO reader
    m = json.loads((folder / "review.json").read_text())
    assert m["project_id"] == pid and m["classes"] == CLASSES
    prov = {s["prediction_id"]: s for s in m["samples"]}
    assert sorted(prov) == [101, 102, 103]
    assert [prov[p]["model_version"] for p in (101, 102, 103)] == ["3", "3", "4"]
    assert [prov[p]["reason"] for p in (101, 102, 103)] == ["near_threshold", "drift", "disagreement"]
    assert {prov[p]["reviewer"] for p in prov} == {ls.user}
    assert [prov[p]["task_id"] for p in (101, 102, 103)] == [ids[101], ids[102], ids[103]]
    assert [prov[p]["boxes"] for p in (101, 102, 103)] == [2, 1, 0]

    # once each: a second pull finds nothing; a pull killed before it marked the tasks neither
    assert review.pull_annotations(client, pid, inbox, CLASSES) is None
    api.patch(f"/api/tasks/{ids[101]}", json={"meta": {}})       # as if the mark never reached Label Studio
    assert review.pull_annotations(client, pid, inbox, CLASSES) is None
    assert api.get(f"/api/tasks/{ids[101]}").json()["meta"] == {review.PULLED: folder.name}
    assert [d.name for d in inbox.iterdir() if d.is_dir()] == [folder.name]

    # what a retrain starting now takes in: the inbox's files, validated as any batch
    first = inbox_files(inbox)
    s = ingest(inbox, first, batch_id(first), tmp_path / "increments", base, ImportOptions("auto", 2))
    assert s["images"] == 3 and s["quarantined"] == 0
    increment = load_manifest(tmp_path / "increments" / batch_id(first))
    got = {e["source"].split("/")[-1]: e["boxes"] for e in increment["images"]}
    assert flat(got[f"p101_t{ids[101]}.jpg"]) == pytest.approx([0, 0, 0, 16, 8, 1, 8, 16, 40, 40])
    assert flat(got[f"p102_t{ids[102]}.png"]) == pytest.approx([3, 16, 6, 32, 42])
    assert got[f"p103_t{ids[103]}.jpg"] == []

    # 105 reviewed meanwhile: the next pull is a new folder with it alone; the retrain archives its
    # own batch and leaves the new folder a batch the inbox reads on its own
    assert api.post(f"/api/tasks/{ids[105]}/annotations",
                    json={"result": [rect("crazing", 50, 50, 25, 25, 64, 64)]}).status_code == 201
    later = review.pull_annotations(client, pid, inbox, CLASSES)
    assert later != folder
    assert [s["prediction_id"] for s in json.loads((later / "review.json").read_text())["samples"]] == [105]
    assert yolo((later / "labels" / f"p105_t{ids[105]}.txt").read_text()) == pytest.approx([4, .625, .625, .25, .25])
    archive_batch(inbox, tmp_path / "archive", batch_id(first), first, None)
    rest = inbox_files(inbox)
    t105 = f"p105_t{ids[105]}"
    assert sorted(rest) == sorted([f"{later.name}.yaml", f"{later.name}/review.json",
                                   f"{later.name}/images/{t105}.jpg", f"{later.name}/labels/{t105}.txt"])
    assert ingest(inbox, rest, batch_id(rest), tmp_path / "increments", base, ImportOptions("auto", 2))["images"] == 1


def test_projects_and_keys(label_studio, tmp_path):  # noqa: F811
    ls = label_studio
    legacy = review.connect(ls.url, ls.legacy_token)              # the legacy token works too
    pid = review.ensure_project(legacy, "keys", ["a", "b & c"])
    assert review.find_project(legacy, "keys") == pid and review.find_project(legacy, "no such") is None
    with pytest.raises(ReviewError, match="labels"):
        review.ensure_project(legacy, "keys", ["a", "c"])          # another class list: another title
    with pytest.raises(ReviewError, match="HTTP 401"):
        review.connect(ls.url, "0" * 40)
    with pytest.raises(ReviewError, match="did not answer"):
        review.connect("http://127.0.0.1:9", ls.api_key)
    pat = review.connect(ls.url, ls.api_key)
    pat.auth.access = "expired"                                  # an access token past its life is renewed
    assert review.find_project(pat, "keys") == pid
    bad = ReviewItem(1, tmp_path / "missing.jpg", 64, 64, [], None, "drift")
    with pytest.raises(ReviewError, match="not found"):
        review.push_tasks(pat, pid, [bad])
    assert review.pull_annotations(pat, pid, tmp_path / "inbox", ["a", "b & c"]) is None


def test_review_pull_command(label_studio, tmp_path, base, monkeypatch, capsys):  # noqa: F811
    """`defectops review pull`: params' review section, the key from the environment only."""
    from defectops.cli import main

    ls = label_studio
    p = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    p["paths"]["datasets"], p["data"]["name"] = str(base.parent), base.name
    p["retrain"]["inbox"] = str(tmp_path / "inbox")
    p["review"] = {"url": ls.url, "project": "cli review"}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(p, sort_keys=False))
    monkeypatch.delenv(review.ENV_URL, raising=False)
    monkeypatch.delenv(review.ENV_KEY, raising=False)
    pull = ["--params", str(params), "review", "pull"]
    assert main(pull, guard=False) == 1 and review.ENV_KEY in capsys.readouterr().err
    monkeypatch.setenv(review.ENV_KEY, ls.api_key)
    assert main(pull, guard=False) == 1 and "no Label Studio project 'cli review'" in capsys.readouterr().err

    client = review.connect(ls.url, ls.api_key)
    pid = review.ensure_project(client, "cli review", CLASSES)
    (path, *_) = line_images(tmp_path)
    assert review.push_tasks(client, pid, [ReviewItem(7, path, 64, 64, [], "9", "drift")]) == 1
    assert main(pull, guard=False) == 0 and "nothing new" in capsys.readouterr().out
    (task,) = httpx.get(f"{ls.url}/api/tasks", params={"project": pid}, timeout=30,
                        headers={"Authorization": f"Token {ls.legacy_token}"}).json()["tasks"]
    httpx.post(f"{ls.url}/api/tasks/{task['id']}/annotations", json={"result": []}, timeout=30,
               headers={"Authorization": f"Token {ls.legacy_token}"}).raise_for_status()
    assert main(pull, guard=False) == 0
    out = capsys.readouterr().out
    assert "1 reviewed image(s)" in out and str(tmp_path / "inbox" / f"review-{pid}-") in out
    (folder,) = [d for d in (tmp_path / "inbox").iterdir() if d.is_dir()]
    assert (folder / "labels" / f"p7_t{task['id']}.txt").read_text() == ""


KILLED_PULL = """
import os, signal, sys
from pathlib import Path
from components.monitor import review
at, n = sys.argv[1], [0]
def killer(real):
    def f(*a, **k):
        n[0] += 1
        if n[0] == 2:                                  # the second sample, or the second mark
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    return f
setattr(review, at, killer(getattr(review, at)))
client = review.connect(os.environ["LS_URL"], os.environ[review.ENV_KEY])
review.pull_annotations(client, int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4].split(","))
"""


@pytest.mark.parametrize("at", ["_write_sample", "_mark"])
def test_a_pull_killed_anywhere_loses_nothing_and_pulls_once(label_studio, tmp_path, at):  # noqa: F811
    """kill -9 while the folder is written (nothing visible in the inbox; the next pull takes
    every task) or while the tasks are marked (the folder is whole; the next pull only marks)."""
    import os
    import subprocess
    import sys

    ls = label_studio
    client = review.connect(ls.url, ls.api_key)
    pid = review.ensure_project(client, f"kill at {at}", CLASSES)
    paths = line_images(tmp_path)[:3]
    items = [ReviewItem(200 + i, p, 64, 48 if p.suffix == ".png" else 64, [], "1", "drift")
             for i, p in enumerate(paths)]
    assert review.push_tasks(client, pid, items) == 3
    api = httpx.Client(base_url=ls.url, headers={"Authorization": f"Token {ls.legacy_token}"}, timeout=60)
    ids = [t["id"] for t in api.get("/api/tasks", params={"project": pid}).json()["tasks"]]
    for i in ids:
        api.post(f"/api/tasks/{i}/annotations", json={"result": []}).raise_for_status()
    inbox = tmp_path / "inbox"
    env = {**os.environ, "LS_URL": ls.url, review.ENV_KEY: ls.api_key}
    r = subprocess.run([sys.executable, "-c", KILLED_PULL, at, str(pid), str(inbox), ",".join(CLASSES)],
                       env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    visible = sorted(inbox_files(inbox))
    if at == "_write_sample":
        assert visible == []                                     # the half-written folder is hidden
    else:
        assert len([v for v in visible if v.endswith(".txt")]) == 3
        assert len([v for v in visible if v.endswith(".yaml")]) == 1
    folder = review.pull_annotations(client, pid, inbox, CLASSES)
    assert (folder is None) == (at == "_mark")                   # the folder was whole: only the marks are done
    (only,) = [d for d in inbox.iterdir() if d.is_dir()]
    assert sorted(s["task_id"] for s in json.loads((only / "review.json").read_text())["samples"]) == sorted(ids)
    assert not list(inbox.glob(".review-*"))                     # no half-written folder left
    assert {api.get(f"/api/tasks/{i}").json()["meta"][review.PULLED] for i in ids} == {only.name}
    assert review.pull_annotations(client, pid, inbox, CLASSES) is None
