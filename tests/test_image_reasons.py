"""The reason a file that is no readable image gets: "not an image" (its first bytes match no image
format) apart from "corrupt or truncated" (an image format's header, then bad data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.data.canonical import decode_image, image_format
from components.data.importers import ImportOptions, import_dataset
from conftest import make_image, voc_xml


def test_image_format_reads_the_magic_bytes(tmp_path):
    jpeg = make_image(tmp_path / "a.jpg", seed=0)
    assert image_format(jpeg[:40]) == "JPEG" and image_format(b"\x89PNG\r\n\x1a\n" + bytes(8)) == "PNG"
    assert image_format(b"shift notes: line 3 stopped\n") is None and image_format(b"") is None


def test_text_named_jpg_is_not_an_image_and_a_cut_jpeg_is_truncated(tmp_path):
    jpeg = make_image(tmp_path / "a.jpg", seed=0)
    for data in (b"shift notes: line 3 stopped\n", b"x"):
        with pytest.raises(ValueError, match=r"^not an image \("):
            decode_image(data)
    for cut in (40, len(jpeg) // 2):
        with pytest.raises(ValueError, match="truncated") as e:
            decode_image(jpeg[:cut])
        assert "not an image" not in str(e.value)


def test_import_reports_a_text_file_named_jpg_as_not_an_image(tmp_path):
    src = tmp_path / "src"
    (src / "ANNOTATIONS").mkdir(parents=True)
    make_image(src / "IMAGES" / "good.jpg", seed=1)
    (src / "IMAGES" / "notes.jpg").write_text("shift notes: line 3 stopped\n")
    data = make_image(src / "IMAGES" / "cut.jpg", seed=2)
    (src / "IMAGES" / "cut.jpg").write_bytes(data[:40])
    for stem in ("good", "notes", "cut"):
        (src / "ANNOTATIONS" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", [("dent", 5, 5, 20, 20)]))
    s = import_dataset(src, "r", tmp_path / "out", ImportOptions("voc", clip_px=2))
    reasons = {r["source"]: r["reason"] for r in json.loads((tmp_path / "out" / "r" / "quarantine.json").read_text())}
    assert s["images"] == 1 and s["quarantined"] == 2
    assert reasons["IMAGES/notes.jpg"].startswith("not an image (")
    assert "truncated" in reasons["IMAGES/cut.jpg"] and "not an image" not in reasons["IMAGES/cut.jpg"]


def test_predict_reader_tells_not_an_image_from_a_truncated_one(tmp_path):
    from components.deploy.predict import ImageError, read_image

    (tmp_path / "notes.jpg").write_text("shift notes: line 3 stopped\n")
    (tmp_path / "cut.jpg").write_bytes(make_image(tmp_path / "whole.jpg", seed=3)[:40])
    with pytest.raises(ImageError, match=r"^not an image \(\.jpg"):
        read_image(tmp_path / "notes.jpg")
    with pytest.raises(ImageError, match="^corrupt or truncated jpg image"):
        read_image(tmp_path / "cut.jpg")
    assert read_image(tmp_path / "whole.jpg").shape == (48, 64, 3)
