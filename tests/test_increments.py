"""New samples (retrain's inbox batches): validation + quarantine, merge, fixed test split, archive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.data.canonical import load_manifest
from components.data.importers import ImportError_, ImportOptions
from components.data.inbox import batch_id, inbox_files, increment_dirs, ingest, merge
from components.data.split import SplitSpec, add_increments, make_split
from components.data.synth import SynthConfig, write_synth_dataset

from conftest import make_image, snapshot, voc_xml


@pytest.fixture
def base(tmp_path) -> Path:
    cfg = SynthConfig(seed=0, images=20, size=64, min_defects=1, max_defects=2, contrast=(0.3, 0.5),
                      leather_fraction=0.3, jpeg_quality=95, bold=False)
    write_synth_dataset(cfg, tmp_path / "datasets", "synth")
    return tmp_path / "datasets" / "synth"


def drop_batch(inbox: Path, base: Path, good: int = 4, seed: int = 100) -> dict[str, str]:
    """``good`` valid VOC samples plus four bad ones; returns {file stem: expected fate}."""
    classes = load_manifest(base)["classes"]
    (inbox / "annotations").mkdir(parents=True, exist_ok=True)
    fate = {}
    for i in range(good):
        make_image(inbox / "images" / f"new{i}.jpg", seed + i)
        (inbox / "annotations" / f"new{i}.xml").write_text(voc_xml(f"new{i}.jpg", [(classes[i % len(classes)], 5, 5, 30, 25)]))
        fate[f"new{i}"] = "kept"
    make_image(inbox / "images" / "trunc.jpg", seed + 50)
    data = (inbox / "images" / "trunc.jpg").read_bytes()
    (inbox / "images" / "trunc.jpg").write_bytes(data[: len(data) // 3])
    (inbox / "annotations" / "trunc.xml").write_text(voc_xml("trunc.jpg", [(classes[0], 5, 5, 30, 25)]))
    make_image(inbox / "images" / "outside.jpg", seed + 51)
    (inbox / "annotations" / "outside.xml").write_text(voc_xml("outside.jpg", [(classes[0], 5, 5, 300, 25)]))
    make_image(inbox / "images" / "alien.jpg", seed + 52)
    (inbox / "annotations" / "alien.xml").write_text(voc_xml("alien.jpg", [("no-such-defect", 5, 5, 30, 25)]))
    e = load_manifest(base)["images"][0]             # an image already in the dataset
    (inbox / "images" / "again.jpg").write_bytes((base / e["image"]).read_bytes())
    (inbox / "annotations" / "again.xml").write_text(voc_xml("again.jpg", [(classes[0], 5, 5, 30, 25)],
                                                             w=e["width"], h=e["height"]))
    fate.update(trunc="truncated", outside="outside", alien="unknown class", again="same pixels")
    return fate


def test_ingest_quarantines_bad_samples_and_never_touches_the_inbox(tmp_path, base):
    inbox = tmp_path / "inbox"
    fate = drop_batch(inbox, base)
    before = snapshot(inbox)
    files = inbox_files(inbox)
    assert len(files) == 16
    b = batch_id(files)
    assert b == batch_id(inbox_files(inbox)) and len(b) == 12    # same files, same batch
    s = ingest(inbox, files, b, tmp_path / "inc", base, ImportOptions("auto", 2))
    assert s["images"] == 4 and s["quarantined"] == 4
    q = {Path(r["source"]).stem: r["reason"] for r in json.loads((tmp_path / "inc" / b / "quarantine.json").read_text())}
    assert set(q) == {"trunc", "outside", "alien", "again"}
    assert "truncated" in q["trunc"] or "unreadable" in q["trunc"]
    assert "outside" in q["outside"] or "image" in q["outside"]
    assert "unknown class" in q["alien"] and "same pixels" in q["again"]
    m = load_manifest(tmp_path / "inc" / b)
    assert sorted(e["name"] for e in m["images"]) == [f"{b}_new{i}" for i in range(4)]
    assert all(e["batch"] == b for e in m["images"]) and m["classes"] == load_manifest(base)["classes"]
    assert json.loads((tmp_path / "inc" / b / "batch.json").read_text())["files"] == files
    assert snapshot(inbox) == before


def test_a_batch_with_nothing_usable_is_refused_with_its_report(tmp_path, base):
    inbox = tmp_path / "inbox"
    make_image(inbox / "images" / "x.jpg", 1)
    (inbox / "annotations").mkdir()
    (inbox / "annotations" / "x.xml").write_text(voc_xml("x.jpg", [("no-such-defect", 5, 5, 30, 25)]))
    with pytest.raises(ImportError_, match="quarantined"):
        ingest(inbox, inbox_files(inbox), "b000000000000", tmp_path / "inc", base, ImportOptions("voc", 2))
    assert "no-such-defect" in (tmp_path / "inc" / "b000000000000" / "quarantine.md").read_text()


def test_merged_increments_keep_the_test_split_fixed(tmp_path, base):
    inbox = tmp_path / "inbox"
    drop_batch(inbox, base, good=12)
    files = inbox_files(inbox)
    b = batch_id(files)
    ingest(inbox, files, b, tmp_path / "inc", base, ImportOptions("auto", 2))
    m0 = load_manifest(base)
    split0 = make_split(m0["images"], m0["classes"], SplitSpec(0.2, 0.1, 0, 0))
    assert [d.name for d in increment_dirs(tmp_path / "inc")] == [b]
    s = merge(base.parent, "synth", tmp_path / "inc")
    assert s["images"] == 32 and s["increments"] == {b: 12}
    m1 = load_manifest(base)
    base_entries = [e for e in m1["images"] if "batch" not in e]
    new = [e for e in m1["images"] if "batch" in e]
    assert len(base_entries) == 20 and len(new) == 12
    split1 = add_increments(make_split(base_entries, m1["classes"], SplitSpec(0.2, 0.1, 0, 0)), new, m1["classes"])
    assert split1["test"] == split0["test"]                          # champion and challenger: same test images
    assert set(split1["train"]) | set(split1["val"]) == set(split0["train"]) | set(split0["val"]) | {e["name"] for e in new}
    assert split1["counts"]["train"]["images"] + split1["counts"]["val"]["images"] == 16 + 12
    assert split1["counts"]["train"]["images"] == len(split1["train"]) and split1["increments"] == [b]
    assert merge(base.parent, "synth", tmp_path / "nothing") is None


def test_archiving_a_batch_survives_a_crash_half_way(tmp_path, base, monkeypatch):
    import os

    import components.data.inbox as rt
    from components.data.inbox import file_sha256

    inbox, archive = tmp_path / "inbox", tmp_path / "archive"
    drop_batch(inbox, base)
    files = inbox_files(inbox)
    calls = {"n": 0}
    real = os.replace

    def flaky(a, b):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("injected crash")
        return real(a, b)

    monkeypatch.setattr(rt.os, "replace", flaky)
    with pytest.raises(OSError, match="injected"):
        rt.archive_batch(inbox, archive, "b1", files, None)
    # nothing lost: every file is in the inbox or, verified, in the archive
    for rel, sha in files.items():
        assert (inbox / rel).is_file() or file_sha256(archive / "b1" / "files" / rel) == sha
    assert not (archive / "b1" / rt.ARCHIVED).exists()
    monkeypatch.setattr(rt.os, "replace", real)
    rt.archive_batch(inbox, archive, "b1", files, None)
    assert inbox_files(inbox) == {} and (archive / "b1" / rt.ARCHIVED).is_file()
    assert {rel: file_sha256(archive / "b1" / "files" / rel) for rel in files} == files


def _photo(path: Path, seed: int, aug: str = "") -> None:
    """A smooth, distinct 64x48 'photo'; ``aug``: flip and/or bright for a near-copy of it."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    img = np.clip(cv2.resize(rng.normal(128, 45, (6, 8)), (64, 48), interpolation=cv2.INTER_CUBIC), 0, 255)
    img = img[:, ::-1] if "flip" in aug else img
    img = np.clip(img * 1.15, 0, 255) if "bright" in aug else img
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.ascontiguousarray(img).astype(np.uint8))


def test_ingest_refuses_near_copies_of_test_images_and_groups_the_rest(tmp_path):
    import os

    from components.data.importers import import_dataset

    src = tmp_path / "src"
    for k in range(20):
        _photo(src / "IMAGES" / f"p{k}.jpg", k)
        (src / "ANNOTATIONS").mkdir(exist_ok=True)
        (src / "ANNOTATIONS" / f"p{k}.xml").write_text(voc_xml(f"p{k}.jpg", [("dent", 5, 5, 30, 25)]))
    import_dataset(src, "photos", tmp_path / "datasets", ImportOptions("voc", clip_px=2))
    base = tmp_path / "datasets" / "photos"
    m = load_manifest(base)
    bits = m["near_dup_bits"]
    split0 = make_split(m["images"], m["classes"], SplitSpec(0.3, 0.2, 0, 0), near_dup_bits=bits)
    t, v = split0["test"][0], split0["val"][0]

    inbox, outside = tmp_path / "inbox", tmp_path / "outside"
    _photo(inbox / "images" / "copy_of_test.jpg", int(t[1:]), "flip bright")
    _photo(inbox / "images" / "copy_of_val.jpg", int(v[1:]), "flip")
    _photo(inbox / "images" / "new.jpg", 100)
    _photo(outside / "secret.jpg", 101)
    (inbox / "images" / "link.jpg").symlink_to(outside / "secret.jpg")
    with open(os.path.join(os.fsencode(inbox / "images"), b"bad\xff.jpg"), "wb") as f:   # no annotation
        f.write((inbox / "images" / "new.jpg").read_bytes()[::-1])
    (inbox / "annotations").mkdir()
    for stem in ("copy_of_test", "copy_of_val", "new", "link"):
        (inbox / "annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", [("dent", 5, 5, 30, 25)]))
    files = inbox_files(inbox)
    assert "images/link.jpg" not in files                           # never hashed (read), never archived
    b = batch_id(files)                                             # any file name

    s = ingest(inbox, files, b, tmp_path / "inc", base, ImportOptions("voc", 2), test=split0["test"])
    q = {r["source"]: r["reason"] for r in json.loads((tmp_path / "inc" / b / "quarantine.json").read_text())}
    assert q["images/copy_of_test.jpg"].startswith(f"near-copy of test image '{t}'")
    assert q["images/link.jpg"] == "symlink"
    assert q["annotations/link.xml"] == "annotation without image (its image is a symlink)"
    assert q["images/bad\\xff.jpg"] == "image without annotation"
    assert "images/bad\\xff.jpg" in (tmp_path / "inc" / b / "quarantine.md").read_text(encoding="utf-8")
    assert s["images"] == 2                                        # copy_of_val and new

    # without the test split's names, any base image may be a test image: its near-copy is refused too
    with pytest.raises(ImportError_):
        ingest(inbox, {k: v for k, v in files.items() if "copy_of_val" in k}, "b111111111111", tmp_path / "inc2", base,
               ImportOptions("voc", 2))
    q2 = json.loads((tmp_path / "inc2" / "b111111111111" / "quarantine.json").read_text())
    reason = next(r["reason"] for r in q2 if r["source"] == "images/copy_of_val.jpg")
    assert reason.startswith("near-copy of dataset image")

    merge(base.parent, "photos", tmp_path / "inc")
    m1 = load_manifest(base)
    base_entries = [e for e in m1["images"] if "batch" not in e]
    new = [e for e in m1["images"] if "batch" in e]
    split1 = add_increments(make_split(base_entries, m1["classes"], SplitSpec(0.3, 0.2, 0, 0), near_dup_bits=bits), new,
                            m1["classes"], base=base_entries, near_dup_bits=bits)
    assert split1["test"] == split0["test"] and split1["leakage"] == 0 and split1["held_out"] == []
    where = {n: p for p in ("train", "val", "test") for n in split1[p]}
    assert where[f"{b}_copy_of_val"] == where[v] == "val"          # grouped with its original


def test_clean_samples_in_the_inbox_are_kept_and_counted(tmp_path, base):
    """A defect-free part is data: an image with a VOC XML without <object>, or (YOLO) with an
    empty label file, is accepted with no boxes and counted as clean."""
    classes = load_manifest(base)["classes"]
    voc = tmp_path / "voc"
    (voc / "annotations").mkdir(parents=True)
    for i, objects in enumerate([[], [], [(classes[0], 5, 5, 30, 25)]]):
        make_image(voc / "images" / f"v{i}.jpg", 300 + i)
        (voc / "annotations" / f"v{i}.xml").write_text(voc_xml(f"v{i}.jpg", objects))
    files = inbox_files(voc)
    s = ingest(voc, files, batch_id(files), tmp_path / "inc", base, ImportOptions("voc", 2))
    assert s["images"] == 3 and s["clean_images"] == 2 and s["boxes"] == 1 and s["quarantined"] == 0
    assert sorted(len(e["boxes"]) for e in load_manifest(tmp_path / "inc" / batch_id(files))["images"]) == [0, 0, 1]

    yolo = tmp_path / "yolo"
    (yolo / "labels").mkdir(parents=True)
    (yolo / "data.yaml").write_text(json.dumps({"names": classes}))
    make_image(yolo / "images" / "y0.jpg", 400)
    (yolo / "labels" / "y0.txt").write_text("")
    make_image(yolo / "images" / "y1.jpg", 401)
    (yolo / "labels" / "y1.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    files = inbox_files(yolo)
    s = ingest(yolo, files, batch_id(files), tmp_path / "inc", base, ImportOptions("yolo", 2))
    assert s["images"] == 2 and s["clean_images"] == 1 and s["boxes"] == 1
    assert (tmp_path / "inc" / batch_id(files) / "labels" / f"{batch_id(files)}_y0.txt").read_text() == ""
    merged = merge(base.parent, "synth", tmp_path / "inc")
    assert merged["images"] == 20 + 5 and merged["clean_images"] == 3
