"""Importers on real NEU-DET and on crafted fixtures for every bad-input case."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from components.data.importers import GC10_CLASSES, ImportError_, ImportOptions, check_box, import_dataset
from conftest import make_image, snapshot, voc_xml


def _reasons(dest: Path) -> dict[str, str]:
    return {r["source"]: r["reason"] for r in json.loads((dest / "quarantine.json").read_text())}


# ----------------------------------------------------------------------------- real data

@pytest.mark.neu
def test_neu_det_import_counts(neu_det, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in (neu_det / "IMAGES").iterdir()}
    s = import_dataset(neu_det, "neu-det", tmp_path, ImportOptions("auto", clip_px=2))
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
    s = import_dataset(bad_voc, "bad", tmp_path / "out", ImportOptions("voc", clip_px=2, classes=["dent", "scratch"]))
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
    assert s["images"] == 5 and s["boxes"] == 5 and s["clean_images"] == 1       # background
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
        import_dataset(src, "empty", tmp_path / "out", ImportOptions("auto", clip_px=2))
    assert len(json.loads((tmp_path / "out" / "empty" / "quarantine.json").read_text())) == 1


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.xml").write_text("<a/>")
    with pytest.raises(ImportError_, match="not a VOC layout"):
        import_dataset(tmp_path / "src", "x", tmp_path / "out", ImportOptions("auto", clip_px=2))
    with pytest.raises(ImportError_, match="source folder not found"):
        import_dataset(tmp_path / "nope", "x", tmp_path / "out", ImportOptions("auto", clip_px=2))


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
    s = import_dataset(src, "gc10", tmp_path / "out", ImportOptions("auto", clip_px=2))
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

    s = import_dataset(src, "rf", tmp_path / "out", ImportOptions("auto", clip_px=2))
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
        import_dataset(bad_voc, "precious", tmp_path / "out",
                       ImportOptions("voc", clip_px=2, classes=["dent", "scratch"]))
    assert (user / "notes.txt").read_text() == "mine"
    # re-importing over its own earlier output is fine
    import_dataset(bad_voc, "ok", tmp_path / "out", ImportOptions("voc", clip_px=2, classes=["dent", "scratch"]))
    s = import_dataset(bad_voc, "ok", tmp_path / "out", ImportOptions("voc", clip_px=2, classes=["dent", "scratch"]))
    assert s["images"] == 5


# ----------------------------------------------------------------------------- symlinks, file names, classes

def _opened(monkeypatch) -> list[str]:
    """Record every file the importer opens (Path.read_*, open(), ElementTree)."""
    import builtins
    import io

    seen: list[str] = []
    real_open, real_io_open = builtins.open, io.open

    def spy(real):
        def wrapper(file, *a, **k):
            if not isinstance(file, int):
                seen.append(os.fsdecode(file))
            return real(file, *a, **k)
        return wrapper

    monkeypatch.setattr(builtins, "open", spy(real_open))
    monkeypatch.setattr(io, "open", spy(real_io_open))
    return seen


@pytest.fixture()
def linked_voc(tmp_path) -> Path:
    """good.jpg; in_link.jpg -> ../extra/inner.jpg (inside the source); out_link.jpg -> a valid image
    outside; out_xml.xml -> an annotation outside; IMAGES/linked_dir -> a folder outside."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    img, ann = src / "IMAGES", src / "ANNOTATIONS"
    ann.mkdir(parents=True)
    for stem, seed in (("good", 1), ("out_xml", 2)):
        make_image(img / f"{stem}.jpg", seed=seed)
    make_image(src / "extra" / "inner.jpg", seed=3)
    make_image(outside / "secret.jpg", seed=4)
    make_image(outside / "folder" / "deep.jpg", seed=5)
    (outside / "secret.xml").write_text(voc_xml("out_xml.jpg", [("dent", 5, 5, 20, 20)]))
    (img / "in_link.jpg").symlink_to("../extra/inner.jpg")
    (img / "out_link.jpg").symlink_to(outside / "secret.jpg")
    (img / "linked_dir").symlink_to(outside / "folder", target_is_directory=True)
    (ann / "out_xml.xml").symlink_to(outside / "secret.xml")
    for stem in ("good", "in_link", "out_link", "deep"):
        (ann / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", [("dent", 5, 5, 20, 20)]))
    return src


def test_symlinks_are_quarantined_and_never_read(linked_voc, tmp_path, monkeypatch):
    opened = _opened(monkeypatch)
    s = import_dataset(linked_voc, "links", tmp_path / "out", ImportOptions("voc", clip_px=2))
    reasons = _reasons(tmp_path / "out" / "links")
    assert reasons["IMAGES/out_link.jpg"] == "symlink"
    assert reasons["IMAGES/in_link.jpg"] == "symlink"
    assert reasons["IMAGES/linked_dir"] == "symlink"
    assert reasons["ANNOTATIONS/out_xml.xml"] == "symlink"
    assert reasons["IMAGES/out_xml.jpg"] == "image without annotation (its annotation is a symlink)"
    assert s["images"] == 1                                         # good.jpg only
    outside = str(tmp_path / "outside")
    assert opened and not [p for p in opened if os.path.realpath(p).startswith(outside)]
    assert not [p for p in opened if "extra" in p]                  # nor the inside target, by default


def test_follow_symlinks_inside_only(linked_voc, tmp_path, monkeypatch):
    opened = _opened(monkeypatch)
    s = import_dataset(linked_voc, "links", tmp_path / "out", ImportOptions("voc", clip_px=2, follow_symlinks="inside"))
    reasons = _reasons(tmp_path / "out" / "links")
    assert "IMAGES/in_link.jpg" not in reasons and s["images"] == 2   # good + the inside link
    assert reasons["IMAGES/out_link.jpg"] == "symlink to outside the source"
    assert reasons["IMAGES/linked_dir"] == "symlink to outside the source"
    assert reasons["ANNOTATIONS/out_xml.xml"] == "symlink to outside the source"
    assert not [p for p in opened if os.path.realpath(p).startswith(str(tmp_path / "outside"))]
    with pytest.raises(ImportError_, match="follow_symlinks"):
        import_dataset(linked_voc, "links", tmp_path / "out", ImportOptions("voc", clip_px=2, follow_symlinks="yes"))


def test_yolo_symlinked_label_and_data_yaml(tmp_path):
    src, outside = tmp_path / "rf", tmp_path / "outside"
    (src / "train" / "labels").mkdir(parents=True)
    outside.mkdir()
    (outside / "data.yaml").write_text(yaml.safe_dump({"names": ["crack"]}))
    (outside / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    for stem in ("a", "b"):
        make_image(src / "train" / "images" / f"{stem}.jpg", seed=ord(stem))
    (src / "train" / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (src / "train" / "labels" / "a.txt").symlink_to(outside / "a.txt")
    make_image(outside / "c.jpg", seed=3)
    (src / "train" / "images" / "c.jpg").symlink_to(outside / "c.jpg")    # its own label is real
    (src / "train" / "labels" / "c.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (src / "data.yaml").symlink_to(outside / "data.yaml")
    with pytest.raises(ImportError_, match="symlink"):
        import_dataset(src, "rf", tmp_path / "out", ImportOptions("yolo", clip_px=2))
    (src / "data.yaml").unlink()
    (src / "data.yaml").write_text(yaml.safe_dump({"names": ["crack"]}))
    s = import_dataset(src, "rf", tmp_path / "out", ImportOptions("yolo", clip_px=2))
    assert _reasons(tmp_path / "out" / "rf") == {"train/images/a.jpg": "symlink: its annotation train/labels/a.txt",
                                                 "train/images/c.jpg": "symlink"}
    assert s["images"] == 1


def test_non_utf8_file_names_never_crash(tmp_path):
    src = tmp_path / "src"
    img, ann = os.fsencode(src / "IMAGES"), os.fsencode(src / "ANNOTATIONS")
    os.makedirs(ann)
    make_image(src / "IMAGES" / "good.jpg", seed=1)
    (src / "ANNOTATIONS" / "good.xml").write_text(voc_xml("good.jpg", [("dent", 5, 5, 20, 20)]))
    for stem, seed in ((b"bad\xff", 2), (b"ok\xfe", 3)):
        with open(os.path.join(img, stem + b".jpg"), "wb") as f:
            f.write(make_image(tmp_path / "tmp" / f"{seed}.jpg", seed=seed))
    with open(os.path.join(ann, b"ok\xfe.xml"), "w") as f:           # bad\xff.jpg has no annotation
        f.write(voc_xml("ok.jpg", [("dent", 5, 5, 20, 20)]))
    s = import_dataset(src, "names", tmp_path / "out", ImportOptions("voc", clip_px=2))
    out = tmp_path / "out" / "names"
    assert s["images"] == 2 and s["quarantined"] == 1
    assert _reasons(out) == {"IMAGES/bad\\xff.jpg": "image without annotation"}
    assert "`IMAGES/bad\\xff.jpg`" in (out / "quarantine.md").read_text(encoding="utf-8")
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(e["source"] for e in manifest["images"]) == ["IMAGES/good.jpg", "IMAGES/ok\\xfe.jpg"]
    assert all(n.isascii() for n in os.listdir(out / "images"))


def test_discovered_classes_are_counted_and_rare_ones_warned(tmp_path):
    src = tmp_path / "src"
    (src / "ANNOTATIONS").mkdir(parents=True)
    for i in range(6):
        make_image(src / "IMAGES" / f"s{i}.jpg", seed=i)
        objs = [("dent", 5, 5, 20, 20)] + ([("rust", 30, 10, 40, 30)] if i == 5 else [])
        (src / "ANNOTATIONS" / f"s{i}.xml").write_text(voc_xml(f"s{i}.jpg", objs))
    s = import_dataset(src, "cls", tmp_path / "out", ImportOptions("voc", clip_px=2, min_class_boxes=5))
    assert s["classes"] == ["dent", "rust"] and s["boxes_per_class"] == {"dent": 6, "rust": 1}
    assert s["rare_classes"] == {"rust": 1}
    assert [w for w in s["warnings"] if "'rust'" in w and "min_class_boxes" in w]
    assert "rust" in (tmp_path / "out" / "cls" / "quarantine.md").read_text()
    fixed = import_dataset(src, "cls2", tmp_path / "out",
                           ImportOptions("voc", clip_px=2, classes=["dent", "rust"], min_class_boxes=5))
    assert "rare_classes" not in fixed and not fixed["warnings"]
