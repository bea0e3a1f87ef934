"""Deterministic, stratified, duplicate-safe splits."""

from __future__ import annotations

from collections import Counter

import pytest

from components.data.importers import import_dataset
from components.data.split import dominant_class, make_split


def _entries(n_per_class: dict[int, int], dup_pairs: int = 0) -> list[dict]:
    entries = []
    for cls, n in n_per_class.items():
        for i in range(n):
            entries.append({"name": f"c{cls}_{i:03d}", "pixel_sha256": f"h{cls}_{i}",
                            "boxes": [[cls, 0, 0, 5, 5]]})
    for k in range(dup_pairs):  # second copy of the same pixels, different label
        e = entries[k * 7]
        entries.append({"name": e["name"] + "_dup", "pixel_sha256": e["pixel_sha256"],
                        "boxes": [[e["boxes"][0][0], 1, 1, 6, 6]]})
    return entries


def test_ratios_are_per_class():
    entries = _entries({0: 100, 1: 50, 2: 20})
    s = make_split(entries, ["a", "b", "c"], test_ratio=0.2, val_ratio=0.1, seed=0, folds=0)
    test_cls = Counter(int(n[1]) for n in s["test"])
    val_cls = Counter(int(n[1]) for n in s["val"])
    assert test_cls == {0: 20, 1: 10, 2: 4}
    assert val_cls == {0: 10, 1: 5, 2: 2}
    assert len(s["train"]) == 170 - 34 - 17
    assert not set(s["train"]) & set(s["test"]) and not set(s["val"]) & set(s["test"])
    assert s["counts"]["test"]["per_class"] == {"a": 20, "b": 10, "c": 4}


@pytest.mark.parametrize("test_ratio,expected", [(0.2, 40), (0.3, 60), (0.1, 20)])
def test_paper_ratios(test_ratio, expected):
    s = make_split(_entries({0: 100, 1: 100}), ["a", "b"], test_ratio, 0.0, seed=3, folds=0)
    assert len(s["test"]) == expected and len(s["train"]) == 200 - expected


def test_deterministic_and_seeded():
    entries = _entries({0: 40, 1: 40})
    a = make_split(entries, ["a", "b"], 0.2, 0.1, seed=7, folds=0)
    b = make_split(list(reversed(entries)), ["a", "b"], 0.2, 0.1, seed=7, folds=0)
    c = make_split(entries, ["a", "b"], 0.2, 0.1, seed=8, folds=0)
    assert a["test"] == b["test"] and a["val"] == b["val"]
    assert a["test"] != c["test"]


def test_identical_images_never_straddle():
    entries = _entries({0: 30, 1: 30}, dup_pairs=8)
    for seed in range(20):
        s = make_split(entries, ["a", "b"], 0.3, 0.2, seed=seed, folds=0)
        where = {n: part for part in ("train", "val", "test") for n in s[part]}
        for e in entries:
            if e["name"].endswith("_dup"):
                assert where[e["name"]] == where[e["name"][:-4]]


def test_kfold_partitions_training_part():
    entries = _entries({0: 50, 1: 25}, dup_pairs=3)
    s = make_split(entries, ["a", "b"], 0.2, 0.1, seed=0, folds=5)
    pool = set(s["train"]) | set(s["val"])
    vals = [set(f["val"]) for f in s["kfold"]]
    assert len(vals) == 5
    assert set().union(*vals) == pool
    assert sum(len(v) for v in vals) == len(pool)          # disjoint
    for f in s["kfold"]:
        assert set(f["train"]) | set(f["val"]) == pool and not set(f["train"]) & set(f["val"])
        assert not set(f["val"]) & set(s["test"])
    # stratified: each fold has 1/5 of each class (+-1 group)
    for v in vals:
        assert abs(sum(1 for n in v if n.startswith("c0")) - 40 * 0.2) <= 2


def test_dominant_class_prefers_count_then_rarity():
    assert dominant_class([[0, 0, 0, 1, 1], [1, 0, 0, 1, 1], [1, 0, 0, 1, 1]], {0: 5, 1: 9}) == 1
    assert dominant_class([[0, 0, 0, 1, 1], [1, 0, 0, 1, 1]], {0: 5, 1: 9}) == 0
    assert dominant_class([], {}) == -1


def test_bad_ratios_rejected():
    with pytest.raises(ValueError, match="ratios"):
        make_split(_entries({0: 10}), ["a"], 0.6, 0.5, seed=0, folds=0)
    with pytest.raises(ValueError, match="folds"):
        make_split(_entries({0: 10}), ["a"], 0.2, 0.1, seed=0, folds=1)


@pytest.mark.neu
def test_neu_det_8_2_split(neu_det, tmp_path):
    import json

    import_dataset(neu_det, "neu", tmp_path, "voc", clip_px=2)
    manifest = json.loads((tmp_path / "neu" / "manifest.json").read_text())
    s = make_split(manifest["images"], manifest["classes"], 0.2, 0.0, seed=0, folds=0)
    assert len(s["test"]) == 360 and len(s["train"]) == 1440
    # 300 images per class, most with one class only: about 60 test images per class
    per_class = Counter(n.rsplit("_", 1)[0] for n in s["test"])
    assert set(per_class) == set(manifest["classes"])
    assert all(abs(v - 60) <= 3 for v in per_class.values()), per_class
    where = {n: p for p in ("train", "test") for n in s[p]}
    assert where["patches_101"] == where["patches_105"]
