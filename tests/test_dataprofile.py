"""``defectops data profile``: a profile proposed from an imported dataset's manifest (input size
from the smallest boxes, batch, epochs for a time budget), written with its reasons as comments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from components.dataprofile import batch_size, epochs_for, input_size
from defectops.cli import main
from defectops.profile_args import merged_overrides

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["hole", "grain_scratch", "stain"]


def _manifest(size: int, box: tuple[int, int], n: int = 40, seed: int = 0) -> dict:
    """``n`` square images of ``size`` px, two boxes each with short sides drawn in ``box``."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        boxes = []
        for k in range(2):
            s = float(rng.integers(*box))
            x, y = float(rng.integers(0, size - 2 * s)), float(rng.integers(0, size - 2 * s))
            boxes.append([(i + k) % len(CLASSES), x, y, x + 2 * s, y + s])   # wide boxes: short side s
        images.append({"name": f"im{i}", "width": size, "height": size, "boxes": boxes})
    return {"classes": CLASSES, "images": images}


def test_small_boxes_on_large_images_get_a_larger_input_than_large_boxes_on_small_images():
    small_boxes, _ = input_size(_manifest(640, (9, 16)))
    large_boxes, _ = input_size(_manifest(160, (30, 60)))
    assert small_boxes % 32 == 0 and large_boxes % 32 == 0
    assert small_boxes > large_boxes
    assert large_boxes == 128                    # large boxes: the floor, within the 160 px images
    # 9-16 px short sides at 640 px: the 5th percentile (~9 px) needs 640 * 8 / 9 = 569 px -> 576
    assert small_boxes == 576


def test_input_size_is_capped_by_the_image_size():
    size, why = input_size(_manifest(160, (2, 4)))          # 2-3 px boxes: would need ~640 px
    assert size == 160 and "stays under 8 px" in why


def test_batch_and_epochs_follow_pixels_and_budget():
    assert batch_size(224)[0] == 16 and batch_size(640)[0] == 4
    e8, _ = epochs_for(8, 1000, 640)
    e16, _ = epochs_for(16, 1000, 640)
    assert e16 in (2 * e8, 2 * e8 + 1) and epochs_for(8, 1000, 320)[0] > e8


def test_data_profile_writes_a_valid_commented_profile(tmp_path, capsys):
    ds = tmp_path / "import" / "leather"
    ds.mkdir(parents=True)
    (ds / "manifest.json").write_text(json.dumps(_manifest(640, (9, 16))))
    (ds / "summary.json").write_text(json.dumps({"source": "data/raw/leather", "format": "yolo",
                                                 "boxes_per_class": {"hole": 27, "grain_scratch": 27, "stain": 26}}))
    out = tmp_path / "profiles" / "leather.yaml"
    argv = ["--params", str(REPO / "params.yaml"), "data", "profile", "leather", "--root", str(tmp_path / "import"),
            "--out", str(out), "--hours", "8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    prof = yaml.safe_load(out.read_text())
    assert prof["data.name"] == "leather" and prof["data.source"] == "data/raw/leather"
    assert prof["data.format"] == "yolo" and prof["data.classes"] == CLASSES
    assert prof["train.imgsz"] == 576 and prof["train.batch"] == 4
    assert prof["train.epochs"] == epochs_for(8, round(40 * 0.8 * 0.9), 576)[0]
    assert f"train.imgsz {prof['train.imgsz']}" in printed and 'make run PROFILE="leather smoke"' in printed
    text = out.read_text()
    assert "# fixed, in the import's order (boxes: hole 27, grain_scratch 27, stain 26)" in text
    assert text.count("\n#") >= 7 and max(map(len, text.splitlines())) <= 100
    assert merged_overrides([out, REPO / "profiles" / "smoke.yaml"], REPO / "params.yaml")["train.epochs"] == 2
    assert main(argv) == 2 and "exists (--force replaces it)" in capsys.readouterr().err


def test_data_profile_without_dataset_is_one_error_line(tmp_path, capsys):
    rc = main(["--params", str(REPO / "params.yaml"), "data", "profile", "nope", "--root", str(tmp_path)])
    assert rc == 2 and "is not a canonical dataset" in capsys.readouterr().err
