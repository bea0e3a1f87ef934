"""Deterministic, class-stratified, duplicate-safe train/val/test splits (+ optional k-fold).

* Stratum of an image = its *dominant* class: the class with most boxes in it, ties broken
  towards the globally rarer class (so rare classes are represented in every split).
* Images with identical decoded pixels form one group and always land in the same split.
* Within each stratum, groups are shuffled with ``numpy.random.default_rng(seed)`` and dealt to
  test until it holds its share of ``round(images * test_ratio)`` (largest-remainder over
  strata, so the total is exact), then to val likewise (``val_ratio`` is a fraction of the
  whole dataset), the rest to train. The paper ratios:
  DASC-YOLO 8:2 (test 0.2), LAGNet 7:3 on NEU-DET / 9:1 on GC10-DET (test 0.3 / 0.1).
* ``folds`` > 1 also cuts the training part (train + val) into k stratified folds.

The same manifest, ratios and seed always give the same split.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np


def dominant_class(boxes: list[list], rarity: dict[int, int]) -> int:
    """Class with most boxes; ties -> rarer class overall; background image -> -1."""
    if not boxes:
        return -1
    counts = Counter(int(b[0]) for b in boxes)
    return max(counts, key=lambda c: (counts[c], -rarity.get(c, 0), -c))


def _groups(entries: list[dict]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        groups[e["pixel_sha256"]].append(e["name"])
    return groups


def make_split(entries: list[dict], class_names: list[str], test_ratio: float, val_ratio: float,
               seed: int, folds: int) -> dict:
    if not (0 <= test_ratio < 1 and 0 <= val_ratio < 1 and test_ratio + val_ratio < 1):
        raise ValueError(f"split ratios must satisfy 0 <= test, val and test + val < 1 "
                         f"(got test={test_ratio}, val={val_ratio})")
    if folds == 1 or folds < 0:
        raise ValueError("split.folds must be 0 (off) or >= 2")
    rarity = Counter(int(b[0]) for e in entries for b in e["boxes"])
    by_name = {e["name"]: e for e in entries}
    strata: dict[int, list[list[str]]] = defaultdict(list)
    for members in sorted(_groups(entries).values()):
        # a group is stratified by its first member (identical pixels, near-identical labels)
        strata[dominant_class(by_name[members[0]]["boxes"], rarity)].append(sorted(members))

    sizes = {c: sum(len(g) for g in gs) for c, gs in strata.items()}
    quota = {"test": _allocate(sizes, test_ratio), "val": _allocate(sizes, val_ratio)}
    rng = np.random.default_rng(seed)
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    train_groups: dict[int, list[list[str]]] = {}
    for cls in sorted(strata):
        groups = strata[cls]
        order = rng.permutation(len(groups))
        want = {"test": quota["test"][cls], "val": quota["val"][cls]}
        got = {"test": 0, "val": 0}
        rest = []
        for gi in order:
            g = groups[gi]
            part = next((p for p in ("test", "val") if got[p] < want[p]), "train")
            out[part].extend(g)
            if part == "train":
                rest.append(g)
            else:
                got[part] += len(g)
                if part == "val":
                    rest.append(g)
        train_groups[cls] = rest
    result = {
        "seed": seed, "test_ratio": test_ratio, "val_ratio": val_ratio, "folds": folds,
        **{k: sorted(v) for k, v in out.items()},
        "counts": {k: _class_counts(v, by_name, class_names) for k, v in out.items()},
    }
    if folds:
        fold_sets: list[list[str]] = [[] for _ in range(folds)]
        for cls in sorted(train_groups):
            for i, g in enumerate(train_groups[cls]):
                fold_sets[i % folds].extend(g)
        pool = sorted(out["train"] + out["val"])
        result["kfold"] = [{"train": sorted(set(pool) - set(f)), "val": sorted(f)} for f in fold_sets]
    return result


def _allocate(sizes: dict[int, int], ratio: float) -> dict[int, int]:
    """Split ``round(total * ratio)`` images over strata in proportion to their sizes
    (largest remainder), so the overall count is exact and every stratum gets its share."""
    total = int(round(sum(sizes.values()) * ratio))
    exact = {c: n * ratio for c, n in sizes.items()}
    quota = {c: int(np.floor(v)) for c, v in exact.items()}
    for c in sorted(exact, key=lambda c: (-(exact[c] - quota[c]), c))[: total - sum(quota.values())]:
        quota[c] += 1
    return quota


def _class_counts(names: list[str], by_name: dict[str, dict], class_names: list[str]) -> dict:
    boxes = Counter(int(b[0]) for n in names for b in by_name[n]["boxes"])
    return {"images": len(names), "boxes": sum(boxes.values()),
            "per_class": {c: boxes.get(i, 0) for i, c in enumerate(class_names)}}


def add_increments(result: dict, entries: list[dict], class_names: list[str]) -> dict:
    """Deal increment images (``retrain``'s new samples, manifest entries with a ``batch``) to
    train/val only, so the test split, made from the base dataset alone, never changes and a
    champion and its challenger are compared on the same images. An image goes to val with the
    base split's val share of the non-test part, decided by its pixel hash (stable, seed-free);
    with k folds, it is the validation image of fold ``hash mod k``."""
    if not entries:
        return result
    by_name = {e["name"]: e for e in entries}
    frac = result["val_ratio"] / (1 - result["test_ratio"])
    folds = result.get("kfold") or []
    for e in entries:
        h = int(e["pixel_sha256"][:12], 16)
        result["val" if (h % 10_000) / 10_000 < frac else "train"].append(e["name"])
        for i, f in enumerate(folds):
            f["val" if i == h % len(folds) else "train"].append(e["name"])
    for lists in (result, *folds):
        for part in ("train", "val"):
            lists[part].sort()
    for part in ("train", "val"):
        base = result["counts"][part]
        added = [by_name[n] for n in result[part] if n in by_name]
        inc = _class_counts([e["name"] for e in added], by_name, class_names)
        result["counts"][part] = {"images": base["images"] + inc["images"], "boxes": base["boxes"] + inc["boxes"],
                                  "per_class": {c: base["per_class"][c] + inc["per_class"][c] for c in class_names}}
    result["increments"] = sorted({e["batch"] for e in entries})
    return result
