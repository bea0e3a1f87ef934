"""Importers on real NEU-DET and on crafted fixtures for every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from components.data.importers import GC10_CLASSES, ImportError_, check_box, import_dataset
from conftest import make_image, snapshot, voc_xml


def _reasons(dest: Path) -> dict[str, str]:
    return {r["source"]: r["reason"] for r in json.loads((dest / "quarantine.json").read_text())}


# ----------------------------------------------------------------------------- real data

@pytest.mark.neu
def test_neu_det_import_counts(neu_det, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in (neu_det / "IMAGES").iterdir()}
    s = import_dataset(neu_det, "neu-det", tmp_path, "auto", clip_px=2)
    assert s["images"] == 1800
    assert s["boxes"] == 4189
    assert s["classes"] == ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale",
                            "scratches"]
    assert s["boxes_per_class"] == {"crazing": 689, "inclusion": 1011, "patches": 881,
                                    "pitted_surface": 432, "rolled-in_scale": 628, "scratches": 548}
    assert s["quarantined"] == 0
    # the one pixel-identical pair with different annotations is kept and reported
    assert len(s["warnings"]) == 1 and "patches_101" in s["warnings"][0]
    ds = tmp_path / "neu-det"
    assert len(list((ds / "images").iterdir())) == 1800
    assert len(list((ds / "labels").iterdir())) == 1800
    # VOC 1-based inclusive -> YOLO: crazing_1 has xmin=2 ymin=2 xmax=193 ymax=194 on 200x200
    cls, cx, cy, w, h = (ds / "labels" / "crazing_1.txt").read_text().split()
    assert cls == "0"
    assert float(cx) == pytest.approx((1 + 193) / 2 / 200, abs=1e-6)
    assert float(cy) == pytest.approx((1 + 194) / 2 / 200, abs=1e-6)
    assert float(w) == pytest.approx(192 / 200, abs=1e-6)
    assert float(h) == pytest.approx(193 / 200, abs=1e-6)
    assert {p.name: p.stat().st_mtime_ns for p in (neu_det / "IMAGES").iterdir()} == before


# ----------------------------------------------------------------------------- VOC, every bad case

@pytest.fixture()
def bad_voc(tmp_path) -> Path:
    src = tmp_path / "src"
    img, ann = src / "IMAGES", src / "ANNOTATIONS"
    ann.mkdir(parents=True)
    cases = {
        "good": [("dent", 5, 5, 20, 20)],
        "good2": [("scratch", 10, 10, 30, 40), ("dent", 1, 1, 64, 48)],
        "overshoot": [("dent", 0, 1, 65, 48)],        # 1-based: x1=-1, x2=65 -> 1 px over: clipped
        "zero_area": [("dent", 10, 10, 9, 20)],         # 1-based inclusive: xmax < xmin is empty
        "negative": [("dent", 30, 10, 20, 20)],
        "outside": [("dent", 10, 10, 90, 20)],       # 26 px beyond a 64 px wide image
        "unknown": [("alien", 5, 5, 20, 20)],
        "background": [],                            # no objects: a deliberate background image
    }
    for i, (stem, objs) in enumerate(cases.items()):
        make_image(img / f"{stem}.jpg", seed=i)
        (ann / f"{stem}.xml").write_text(voc_xml(stem, objs))   # NEU quirk: no extension
    # truncated JPEG, non-image file, image without XML, XML without image, malformed XML, dup
    data = make_image(img / "truncated.jpg", seed=100)
    (img / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (ann / "truncated.xml").write_text(voc_xml("truncated.jpg", [("dent", 5, 5, 20, 20)]))
    (img / "notes.txt").write_text("not an image")
    make_image(img / "orphan_image.jpg", seed=101)
    (ann / "orphan_xml.xml").write_text(voc_xml("orphan_xml.jpg", [("dent", 5, 5, 20, 20)]))
    make_image(img / "broken_xml.jpg", seed=102)
    (ann / "broken_xml.xml").write_text("<annotation><object>")
    (img / "zz_dup.jpg").write_bytes((img / "good.jpg").read_bytes())
    (ann / "zz_dup.xml").write_text(voc_xml("zz_dup.jpg", cases["good"]))
    (img / "zz_relabelled.jpg").write_bytes((img / "good2.jpg").read_bytes())
    (ann / "zz_relabelled.xml").write_text(voc_xml("zz_relabelled.jpg", [("dent", 2, 2, 9, 9)]))
    return src


def test_voc_quarantine_reasons(bad_voc, tmp_path):
    before = snapshot(bad_voc)
    s = import_dataset(bad_voc, "bad", tmp_path / "out", "voc", clip_px=2,
                       classes=["dent", "scratch"])
    reasons = _reasons(tmp_path / "out" / "bad")
    assert "zero or negative area" in reasons["IMAGES/zero_area.jpg"]
    assert "zero or negative area" in reasons["IMAGES/negative.jpg"]
    assert "outside the 64x48 image" in reasons["IMAGES/outside.jpg"]
    assert "unknown class name 'alien'" in reasons["IMAGES/unknown.jpg"]
    assert "truncated" in reasons["IMAGES/truncated.jpg"]
    assert reasons["IMAGES/notes.txt"] == "not an image file"
    assert reasons["IMAGES/orphan_image.jpg"] == "image without annotation"
    assert reasons["ANNOTATIONS/orphan_xml.xml"] == "annotation without image"
    assert "malformed annotation" in reasons["IMAGES/broken_xml.jpg"]
    assert reasons["IMAGES/zz_dup.jpg"].startswith("duplicate of IMAGES/good.jpg")
    assert len(reasons) == 10 == s["quarantined"]
    # kept: good, good2, overshoot (clipped), background, zz_relabelled (same pixels, new labels)
    assert s["images"] == 5 and s["boxes"] == 5
    assert any("zz_relabelled" in w for w in s["warnings"])
    manifest = json.loads((tmp_path / "out" / "bad" / "manifest.json").read_text())
    boxes = {e["name"]: e["boxes"] for e in manifest["images"]}
    assert boxes["overshoot"] == [[0, 0.0, 0.0, 64.0, 48.0]]
    assert boxes["background"] == []
    assert (tmp_path / "out" / "bad" / "labels" / "background.txt").read_text() == ""
    assert snapshot(bad_voc) == before, "the source folder must never be modified"


def test_check_box_clip_and_reject():
    assert check_box(-1.5, 0, 10, 10, 64, 48, clip_px=2) == (0.0, 0.0, 10.0, 10.0)
    assert check_box(5, 5, 65.9, 49, 64, 48, clip_px=2) == (5.0, 5.0, 64.0, 48.0)
    with pytest.raises(ValueError, match="outside"):
        check_box(-3, 0, 10, 10, 64, 48, clip_px=2)
    with pytest.raises(ValueError, match="zero or negative"):
        check_box(5, 5, 5, 10, 64, 48, clip_px=2)
    with pytest.raises(ValueError, match="zero area after clipping"):
        check_box(64, 5, 65, 10, 64, 48, clip_px=2)
    with pytest.raises(ValueError, match="non-finite"):
        check_box(float("nan"), 5, 10, 10, 64, 48, clip_px=2)


def test_nothing_usable_raises_but_reports(tmp_path):
    import components.yolo  # noqa: F401  ultralytics patches PIL.Image.open: garbage must still be a clean reject

    src = tmp_path / "src"
    (src / "ANNOTATIONS").mkdir(parents=True)
    (src / "IMAGES").mkdir()
    (src / "IMAGES" / "a.jpg").write_bytes(b"\xff\xd8garbage")
    (src / "ANNOTATIONS" / "a.xml").write_text(voc_xml("a.jpg", [("x", 1, 1, 5, 5)]))
    with pytest.raises(ImportError_, match="nothing usable"):
        import_dataset(src, "empty", tmp_path / "out", "auto", clip_px=2)
    assert len(json.loads((tmp_path / "out" / "empty" / "quarantine.json").read_text())) == 1


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.xml").write_text("<a/>")
    with pytest.raises(ImportError_, match="not a VOC layout"):
        import_dataset(tmp_path / "src", "x", tmp_path / "out", "auto", clip_px=2)
    with pytest.raises(ImportError_, match="source folder not found"):
        import_dataset(tmp_path / "nope", "x", tmp_path / "out", "auto", clip_px=2)


# ----------------------------------------------------------------------------- GC10-DET layout

def test_gc10_layout(tmp_path):
    src = tmp_path / "gc10"
    (src / "lable").mkdir(parents=True)
    for k, cls in enumerate(GC10_CLASSES[:3], start=1):
        stem = f"img_0{k}_000{k}"
        make_image(src / str(k) / f"{stem}.jpg", seed=k)
        (src / "lable" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", [(cls, 3, 3, 30, 30)]))
    make_image(src / "10" / "img_10_1.jpg", seed=10)
    (src / "lable" / "img_10_1.xml").write_text(voc_xml("img_10_1.jpg", [("11_unknown", 3, 3, 9, 9)]))
    s = import_dataset(src, "gc10", tmp_path / "out", "auto", clip_px=2)
    assert s["format"] == "voc-gc10"
    assert s["classes"] == GC10_CLASSES
    assert s["images"] == 3 and s["quarantined"] == 1
    assert "unknown class name '11_unknown'" in _reasons(tmp_path / "out" / "gc10")["10/img_10_1.jpg"]
    labels = tmp_path / "out" / "gc10" / "labels"
    assert [(labels / f"img_0{k}_000{k}.txt").read_text().split()[0] for k in (1, 2, 3)] == ["0", "1", "2"]


# ----------------------------------------------------------------------------- Roboflow YOLO layout

def test_roboflow_yolo_layout(tmp_path):
    src = tmp_path / "rf"
    src.mkdir()
    (src / "data.yaml").write_text(yaml.safe_dump({
        "train": "../train/images", "val": "../valid/images", "test": "../test/images",
        "nc": 2, "names": ["crack", "hole"]}))
    rows = {
        ("train", "a"): "0 0.5 0.5 0.25 0.5\n",
        ("train", "b"): "1 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n",   # polygon -> its bounding box
        ("valid", "c"): "",                                       # empty: background image, kept
        ("valid", "d"): "5 0.5 0.5 0.2 0.2\n",                    # class id out of range
        ("test", "e"): "0 0.5 0.5\n",                             # malformed line
        ("test", "f"): "0 0.5 0.5 1.5 0.2\n",                     # far outside the image
    }
    for i, ((part, stem), text) in enumerate(rows.items()):
        make_image(src / part / "images" / f"{stem}.jpg", seed=i)
        (src / part / "labels").mkdir(parents=True, exist_ok=True)
        (src / part / "labels" / f"{stem}.txt").write_text(text)
    make_image(src / "test" / "images" / "nolabel.jpg", seed=50)
    (src / "test" / "labels" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    # same file name in two splits must not collide in the canonical dataset
    make_image(src / "test" / "images" / "a.jpg", seed=51)
    (src / "test" / "labels" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    before = snapshot(src)

    s = import_dataset(src, "rf", tmp_path / "out", "auto", clip_px=2)
    reasons = _reasons(tmp_path / "out" / "rf")
    assert s["format"] == "yolo" and s["classes"] == ["crack", "hole"]
    assert "unknown class id 5" in reasons["valid/images/d.jpg"]
    assert "malformed annotation" in reasons["test/images/e.jpg"]
    assert "outside" in reasons["test/images/f.jpg"]
    assert reasons["test/images/nolabel.jpg"] == "image without annotation"
    assert reasons["test/labels/ghost.txt"] == "annotation without image"
    assert s["quarantined"] == 5
    assert s["images"] == 4  # a, b, c (background), test/a (renamed)
    manifest = json.loads((tmp_path / "out" / "rf" / "manifest.json").read_text())
    names = sorted(e["name"] for e in manifest["images"])
    assert len(names) == len(set(names)) == 4
    b = next(e for e in manifest["images"] if e["name"] == "b")
    assert b["boxes"] == [[1, 6.4, 4.8, 19.2, 14.4]]  # 64x48 image, polygon 0.1..0.3
    assert snapshot(src) == before


def test_never_replaces_a_folder_it_did_not_create(bad_voc, tmp_path):
    user = tmp_path / "out" / "precious"
    user.mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a canonical dataset"):
        import_dataset(bad_voc, "precious", tmp_path / "out", "voc", clip_px=2, classes=["dent", "scratch"])
    assert (user / "notes.txt").read_text() == "mine"
    # re-importing over its own earlier output is fine
    import_dataset(bad_voc, "ok", tmp_path / "out", "voc", clip_px=2, classes=["dent", "scratch"])
    s = import_dataset(bad_voc, "ok", tmp_path / "out", "voc", clip_px=2, classes=["dent", "scratch"])
    assert s["images"] == 5
