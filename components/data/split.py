"""Deterministic, class-stratified, duplicate-safe train/val/test splits (+ optional k-fold).

* Stratum of an image = its *dominant* class: the class with most boxes in it, ties broken
  towards the globally rarer class (so rare classes are represented in every split).
* Images from one source form one group and always land in the same split (``source_groups``):
  identical decoded pixels, the same Roboflow source name (``<source>.rf.<hash>.jpg``), and
  perceptual near-duplicates (pHash distance <= ``near_dup_bits`` between any flip / quarter turn,
  canonical.perceptual_hashes), joined transitively. ``leakage`` counts the test images with a
  group member in train/val: 0 by construction, a check.
* Within each stratum, groups are shuffled with ``numpy.random.default_rng(seed)`` and dealt to
  test until it holds its share of ``round(images * test_ratio)`` (largest-remainder over
  strata, so the total is exact), then to val likewise (``val_ratio`` is a fraction of the
  whole dataset), the rest to train. The paper ratios:
  DASC-YOLO 8:2 (test 0.2), LAGNet 7:3 on NEU-DET / 9:1 on GC10-DET (test 0.3 / 0.1).
* Balance check (``tolerance`` not None): each split's share of the images, of the clean images
  (no boxes) and of every class's boxes is compared with its ratio r (train: 1 - test - val). The
  image shares may deviate by ``tolerance``; the clean images' share and a class's box share by
  ``tolerance`` plus the spread that dealing whole images leaves, ``SPREAD_Z * sqrt(r (1 - r) / n)``
  for a column held by n groups (NEU-DET's dealt 7:1:2 split, near-duplicates grouped, has one
  class 2.9 points off; the synthetic default's are 1.7-4.5 points off over seeds 0-9: ordinary
  noise, kept); every share by at least one image or box.
  All within: the dealt split is kept as it is. Otherwise ``rebalance`` repairs it: a group
  holding more than val's and test's share plus that bound of the images or of some class's
  boxes is placed in train with a warning; then whole groups are moved one at a time, each time
  the move that most lowers (largest excess over the bounds, sum of squared deviations). Bound:
  at most ``len(groups)`` moves in all; each greedy move strictly lowers that pair, so the greedy
  part never makes the split worse; it stops once every share is within bounds or no single
  group move improves it (a local optimum, not always the best split).
  The report (``balance``) gives the image and per-class box shares per split, the max deviation
  from the ratios, the moves and the warnings.
* ``folds`` > 1 also cuts the training part (train + val) into k stratified folds.

The same manifest, ratios, seed and tolerance always give the same split.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np


def dominant_class(boxes: list[list], rarity: dict[int, int]) -> int:
    """Class with most boxes; ties -> rarer class overall; background image -> -1."""
    if not boxes:
        return -1
    counts = Counter(int(b[0]) for b in boxes)
    return max(counts, key=lambda c: (counts[c], -rarity.get(c, 0), -c))


def roboflow_source(source: str) -> str | None:
    """``img_001_jpg`` for ``.../img_001_jpg.rf.3f2a9c.jpg`` (Roboflow's augmented copies of one
    source photo share it); None for other names."""
    name = PurePosixPath(source).name
    return name.split(".rf.", 1)[0] if ".rf." in name else None


def hash_array(entries: list[dict]) -> np.ndarray:
    """The entries' ``phash`` variants as uint64 words: shape (images, variants, words)."""
    return np.array([[np.frombuffer(bytes.fromhex(h), ">u8") for h in e["phash"]] for e in entries],
                    dtype=np.uint64)


def hash_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flip/rotation-invariant distance between every image of ``a`` and of ``b`` (hash_array's):
    the fewest differing bits between one image and any variant of the other, shape (len a, len b)."""
    d1 = np.bitwise_count(a[:, None, :1] ^ b[None]).sum(-1, dtype=np.int32).min(-1)
    d2 = np.bitwise_count(a[:, None] ^ b[None, :, :1]).sum(-1, dtype=np.int32).min(-1)
    return np.minimum(d1, d2)


def near_duplicate_pairs(hashes: np.ndarray, max_bits: int) -> list[tuple[int, int]]:
    """Index pairs (i < j) at hash distance <= ``max_bits``; all pairs, in row blocks."""
    n, pairs = len(hashes), []
    rows = max(1, 2_000_000 // max(1, n * hashes[0].size))
    for i in range(0, n, rows):
        d = hash_distances(hashes[i:i + rows], hashes)
        for a, b in zip(*np.nonzero(d <= max_bits)):
            if i + a < b:
                pairs.append((i + int(a), int(b)))
    return pairs


def source_groups(entries: list[dict], near_dup_bits: int | None) -> tuple[list[list[str]], int]:
    """Groups of entry names (union-find) joined by identical pixels, the same Roboflow source
    name, or (``near_dup_bits`` not None, entries with ``phash``) perceptual near-duplicates.
    Returns (sorted groups, number of near-duplicate pairs)."""
    parent = list(range(len(entries)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, e in enumerate(entries):
        for key in (("px", e["pixel_sha256"]), ("rf", roboflow_source(e.get("source", "")))):
            if key[1] is not None:
                parent[find(i)] = find(first.setdefault(key, i))
    pairs = []
    hashed = [i for i, e in enumerate(entries) if e.get("phash")]
    if near_dup_bits is not None and len(hashed) > 1:
        pairs = near_duplicate_pairs(hash_array([entries[i] for i in hashed]), near_dup_bits)
        for a, b in pairs:
            parent[find(hashed[a])] = find(hashed[b])
    groups: dict[int, list[str]] = defaultdict(list)
    for i, e in enumerate(entries):
        groups[find(i)].append(e["name"])
    return sorted(sorted(g) for g in groups.values()), len(pairs)


def leakage(result: dict, groups: list[list[str]]) -> int:
    """Test images with a member of their group in train or val (must be 0)."""
    part = {n: p for p in ("train", "val", "test") for n in result[p]}
    return sum(sum(part.get(n) == "test" for n in g) for g in groups
               if any(part.get(n) in ("train", "val") for n in g))


PARTS = ("train", "val", "test")
EPS = 1e-12                 # float slack when comparing balance scores
SPREAD_Z = 2.0              # clean and class shares may also deviate by this many standard errors of dealing


@dataclass(frozen=True)
class SplitSpec:
    """How to split: the test and validation shares, the seed, ``folds`` (0: no k-fold lists of the
    training images, else >= 2) and ``tolerance`` (the largest deviation of a class or clean share
    from the ratios the rebalancing accepts; None: the dealt split, unchecked, ``balance`` still
    reported). The ``split`` settings section carries the same names."""

    test_ratio: float
    val_ratio: float
    seed: int = 0
    folds: int = 0
    tolerance: float | None = None

    @classmethod
    def of(cls, section) -> "SplitSpec":
        """From the ``split`` settings (or any mapping / object with these names)."""
        get = section.get if isinstance(section, dict) else (lambda k: getattr(section, k))
        return cls(get("test_ratio"), get("val_ratio"), get("seed"), get("folds"), get("tolerance"))


def make_split(entries: list[dict], class_names: list[str], spec: SplitSpec,
               near_dup_bits: int | None = None) -> dict:
    """Split ``entries`` (manifest entries: ``name``, ``pixel_sha256``, ``boxes``; optional ``source``,
    ``phash``) as ``spec`` says (:class:`SplitSpec`); ``near_dup_bits``: images this close in
    perceptual hash stay in one part (None: exact copies and Roboflow names only)."""
    test_ratio, val_ratio, seed, folds, tolerance = spec.test_ratio, spec.val_ratio, spec.seed, spec.folds, spec.tolerance
    if not (0 <= test_ratio < 1 and 0 <= val_ratio < 1 and test_ratio + val_ratio < 1):
        raise ValueError(f"split ratios must satisfy 0 <= test, val and test + val < 1 "
                         f"(got test={test_ratio}, val={val_ratio})")
    if folds == 1 or folds < 0:
        raise ValueError("split.folds must be 0 (off) or >= 2")
    if tolerance is not None and not 0 <= tolerance < 1:
        raise ValueError(f"split.tolerance must be in [0, 1) (got {tolerance})")
    rarity = Counter(int(b[0]) for e in entries for b in e["boxes"])
    by_name = {e["name"]: e for e in entries}
    strata: dict[int, list[list[str]]] = defaultdict(list)
    units, near_pairs = source_groups(entries, near_dup_bits)
    for members in units:
        # a group is stratified by the boxes of all its members (copies of one photo)
        strata[dominant_class([b for n in members for b in by_name[n]["boxes"]], rarity)].append(members)

    sizes = {c: sum(len(g) for g in gs) for c, gs in strata.items()}
    quota = {"test": _allocate(sizes, test_ratio), "val": _allocate(sizes, val_ratio)}
    rng = np.random.default_rng(seed)
    dealt: dict[str, str] = {}              # first member of a group -> its split
    dealt_order: dict[int, list[list[str]]] = {}
    for cls in sorted(strata):
        groups = strata[cls]
        order = rng.permutation(len(groups))
        want = {"test": quota["test"][cls], "val": quota["val"][cls]}
        got = {"test": 0, "val": 0}
        for gi in order:
            g = groups[gi]
            part = next((p for p in ("test", "val") if got[p] < want[p]), "train")
            dealt[g[0]] = part
            if part != "train":
                got[part] += len(g)
        dealt_order[cls] = [groups[gi] for gi in order]
    ratios = {"train": 1 - test_ratio - val_ratio, "val": val_ratio, "test": test_ratio}
    assign, balance = rebalance(units, dealt, by_name, class_names, ratios, tolerance)
    out = {p: sorted(n for g in units if assign[g[0]] == p for n in g) for p in PARTS}
    result = {
        "seed": seed, "test_ratio": test_ratio, "val_ratio": val_ratio, "folds": folds,
        **out,
        "counts": {k: _class_counts(v, by_name, class_names) for k, v in out.items()},
        "groups": {"count": len(units), "largest": max(map(len, units), default=0)},
        "near_duplicate_pairs": near_pairs,
        "balance": balance,
    }
    result["leakage"] = leakage(result, units)
    if folds:
        fold_sets: list[list[str]] = [[] for _ in range(folds)]
        for cls in sorted(dealt_order):
            train_groups = [g for g in dealt_order[cls] if assign[g[0]] != "test"]
            for i, g in enumerate(train_groups):
                fold_sets[i % folds].extend(g)
        pool = sorted(out["train"] + out["val"])
        result["kfold"] = [{"train": sorted(set(pool) - set(f)), "val": sorted(f)} for f in fold_sets]
    return result


def _group_vectors(units: list[list[str]], by_name: dict[str, dict], n_classes: int) -> np.ndarray:
    """Per group: [images, clean images, boxes of class 0, 1, ...] (int64, groups x (2 + classes))."""
    vec = np.zeros((len(units), 2 + n_classes), np.int64)
    for i, g in enumerate(units):
        for n in g:
            boxes = by_name[n]["boxes"]
            vec[i, 0] += 1
            vec[i, 1] += not boxes
            for b in boxes:
                vec[i, 2 + int(b[0])] += 1
    return vec


def rebalance(units: list[list[str]], dealt: dict[str, str], by_name: dict[str, dict], class_names: list[str],
              ratios: dict[str, float], tolerance: float | None) -> tuple[dict[str, str], dict]:
    """``dealt`` (a group's first name -> split) checked against ``ratios`` and, when some share is
    out of bounds, repaired (module docstring). Returns (first name -> split, balance report)."""
    vec = _group_vectors(units, by_name, len(class_names))
    total = vec.sum(0)
    r = np.array([ratios[p] for p in PARTS])
    used = total > 0
    denom = np.where(used, total, 1).astype(float)
    held_by = np.maximum((vec > 0).sum(0), 1)
    spread = SPREAD_Z * np.sqrt(r[:, None] * (1 - r[:, None]) / held_by)
    spread[:, 0] = 0                                      # the images: the tolerance alone
    allow = np.maximum((tolerance or 0.0) + spread, 1.0 / denom)       # (parts, columns)
    part = np.array([PARTS.index(dealt[g[0]]) for g in units], np.int64)

    def dev(counts: np.ndarray) -> np.ndarray:          # (..., parts, columns) -> |share - ratio|
        return np.where(used, np.abs(counts / denom - r[:, None]), 0.0)

    def excess(counts: np.ndarray) -> np.ndarray:       # deviation beyond the bounds (float noise: 0)
        e = dev(counts) - allow
        return np.where(e > EPS, e, 0.0)

    def counts_of(part: np.ndarray) -> np.ndarray:
        return np.stack([vec[part == p].sum(0) for p in range(len(PARTS))])

    warnings: list[str] = []
    moves = 0
    counts = counts_of(part)
    if tolerance is not None and excess(counts).any():
        # a group above val's and test's share plus its bound in some column cannot be placed there: train
        limit = (r[:, None] + allow) * total
        held_out = [p for p in (1, 2) if r[p] > 0]
        pinned = []
        for i, g in enumerate(units):
            over = [int(np.argmax((vec[i] - limit[p]) / denom)) for p in held_out if (vec[i] > limit[p]).any()]
            if held_out and len(over) == len(held_out):
                k = over[-1]
                what = "images" if k == 0 else "clean images" if k == 1 else f"'{class_names[k - 2]}' boxes"
                warnings.append(f"source group of {len(g)} image(s) (first: {g[0]}) holds {vec[i, k]} of the "
                                f"{total[k]} {what}, more than val or test may take: placed in train")
                moves += int(part[i] != 0)
                part[i] = 0
                pinned.append(i)
        movable = np.setdiff1d(np.arange(len(units)), pinned)
        counts = counts_of(part)
        moves += _greedy(vec, part, movable, counts, dev, excess, max_moves=len(units) - moves)
    d = dev(counts)
    report = {
        "tolerance": tolerance,
        "max_deviation": round(float(d.max(initial=0.0)), 4),
        "within_tolerance": not excess(counts).any() if tolerance is not None else None,
        "moves": int(moves),
        "image_share": {p: round(float(counts[j, 0] / denom[0]), 4) for j, p in enumerate(PARTS)},
        "clean_image_share": {p: round(float(counts[j, 1] / denom[1]), 4) if used[1] else None
                              for j, p in enumerate(PARTS)},
        "box_share": {c: {p: round(float(counts[j, 2 + k] / denom[2 + k]), 4) if used[2 + k] else None
                          for j, p in enumerate(PARTS)} for k, c in enumerate(class_names)},
        "warnings": warnings,
    }
    return {g[0]: PARTS[part[i]] for i, g in enumerate(units)}, report


def _greedy(vec: np.ndarray, part: np.ndarray, movable: np.ndarray, counts: np.ndarray, dev, excess,
            max_moves: int) -> int:
    """Move ``movable`` groups between splits (``part`` updated in place), each time the move with the
    lowest (largest ``excess`` over the bounds, sum of squared ``dev``iations); stop when nothing is in
    excess, no move lowers that pair, or after ``max_moves``. Ties: lowest group index, then split order."""
    def score(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:     # c: (..., parts, columns)
        d = dev(c)
        return excess(c).max(axis=(-2, -1)), (d * d).sum(axis=(-2, -1))

    best = score(counts)
    moves = 0
    while moves < max_moves and best[0] > 0 and movable.size:
        src = part[movable]
        cand = []
        for dst in range(len(PARTS)):
            c = np.broadcast_to(counts, (movable.size, *counts.shape)).copy()
            c[np.arange(movable.size), src] -= vec[movable]
            c[:, dst] += vec[movable]
            ex, sq = score(c)
            ex[src == dst] = np.inf
            cand.append((ex, sq))
        ex = np.stack([e for e, _ in cand], 1)                         # (movable, parts)
        sq = np.stack([q for _, q in cand], 1)
        flat = np.lexsort((np.arange(ex.size), sq.ravel(), ex.ravel()))[0]
        gi, dst = divmod(int(flat), len(PARTS))
        lower = ex[gi, dst] < best[0] - EPS or (ex[gi, dst] <= best[0] + EPS and sq[gi, dst] < best[1] - EPS)
        if not lower:
            break
        g = movable[gi]
        counts[part[g]] -= vec[g]
        counts[dst] += vec[g]
        part[g] = dst
        best = (ex[gi, dst], sq[gi, dst])
        moves += 1
    return moves


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
    return {"images": len(names), "clean_images": sum(not by_name[n]["boxes"] for n in names),
            "boxes": sum(boxes.values()), "per_class": {c: boxes.get(i, 0) for i, c in enumerate(class_names)}}


def add_increments(result: dict, entries: list[dict], class_names: list[str], base: list[dict] = (),
                   near_dup_bits: int | None = None) -> dict:
    """Deal increment images (``retrain``'s new samples, manifest entries with a ``batch``) to
    train/val only, so the test split, made from the base dataset alone, never changes and a
    champion and its challenger are compared on the same images. An increment grouped with
    ``base`` images (``source_groups``) follows them; one whose group holds a test image is left
    out (``held_out``: it would leak). Any other group goes to val with the base split's val share
    of the non-test part, decided by its pixel hash (stable, seed-free); with k folds, it is the
    validation group of fold ``hash mod k``."""
    if not entries:
        return result
    by_name = {e["name"]: e for e in entries}
    frac = result["val_ratio"] / (1 - result["test_ratio"])
    folds = result.get("kfold") or []
    part = {n: p for p in ("train", "val", "test") for n in result[p]}
    fold_of = {n: i for i, f in enumerate(folds) for n in f["val"]}
    groups, _ = source_groups([*base, *entries], near_dup_bits)
    held = []
    for g in groups:
        new = [n for n in g if n in by_name]
        placed = [n for n in g if n in part]
        if not new:
            continue
        if any(part[n] == "test" for n in placed):
            held.extend(new)
            continue
        h = int(min(by_name[n]["pixel_sha256"] for n in new)[:12], 16)
        to = part[placed[0]] if placed else "val" if (h % 10_000) / 10_000 < frac else "train"
        fold = fold_of.get(placed[0]) if placed else h % len(folds) if folds else None
        for n in new:
            result[to].append(n)
            for i, f in enumerate(folds):
                f["val" if i == fold else "train"].append(n)
    for lists in (result, *folds):
        for p in ("train", "val"):
            lists[p].sort()
    for p in ("train", "val"):
        base_counts = result["counts"][p]
        added = [by_name[n] for n in result[p] if n in by_name]
        inc = _class_counts([e["name"] for e in added], by_name, class_names)
        result["counts"][p] = {"images": base_counts["images"] + inc["images"],
                               "clean_images": base_counts["clean_images"] + inc["clean_images"],
                               "boxes": base_counts["boxes"] + inc["boxes"],
                               "per_class": {c: base_counts["per_class"][c] + inc["per_class"][c]
                                             for c in class_names}}
    result["increments"] = sorted({e["batch"] for e in entries})
    result["held_out"] = sorted(held)
    result["leakage"] = leakage(result, groups)
    return result
