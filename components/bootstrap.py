"""Paired bootstrap of one detector's mAP50 gain over another on the same test images.

The input is what ultralytics' ``DetectionValidator`` computes to match predictions to labels,
kept per image (``components.evaluate`` writes it as ``predictions.npz`` beside the plots): for
each prediction its ``tp`` row over the 10 IoU thresholds, ``conf`` and ``pred_cls``, and per
image its ``target_cls``. A resample draws the test images with replacement (an image drawn
twice counts twice), concatenates both detectors' statistics over the same draw and recomputes
each mAP50 with ultralytics' own ``ap_per_class`` (mean AP at IoU 0.5 over the classes present
in the resample's labels, as ultralytics reports it). No mAP is re-implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ultralytics.utils.metrics import ap_per_class

RESAMPLES, SEED = 2000, 0


@dataclass(frozen=True)
class ImageStats:
    """Per-image matching statistics of one detector, in CSR layout: the predictions of image
    ``i`` are rows ``pred_start[i]:pred_start[i + 1]``, its labels ``target_start[i]:target_start[i + 1]``."""

    images: np.ndarray          # (N,) image file names, in validation order
    tp: np.ndarray              # (P, 10) bool: prediction correct at IoU 0.50, 0.55, ..., 0.95
    conf: np.ndarray            # (P,) confidence
    pred_cls: np.ndarray        # (P,) predicted class
    pred_start: np.ndarray      # (N + 1,) offsets into tp / conf / pred_cls
    target_cls: np.ndarray      # (T,) label classes
    target_start: np.ndarray    # (N + 1,) offsets into target_cls

    def __post_init__(self) -> None:
        n, p, t = len(self.images), len(self.conf), len(self.target_cls)
        if len(set(self.images.tolist())) != n:
            raise ValueError("image names must be unique")
        if self.tp.ndim != 2 or len(self.tp) != p or len(self.pred_cls) != p:
            raise ValueError(f"tp {self.tp.shape}, conf ({p},), pred_cls ({len(self.pred_cls)},) disagree")
        for name, start, total in (("pred_start", self.pred_start, p), ("target_start", self.target_start, t)):
            if len(start) != n + 1 or start[0] != 0 or start[-1] != total or np.any(np.diff(start) < 0):
                raise ValueError(f"{name} is not {n + 1} non-decreasing offsets from 0 to {total}")

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_images(cls, images: list[str], stats: list[dict[str, np.ndarray]]) -> ImageStats:
        """From one ultralytics stats dict per image (keys ``tp``, ``conf``, ``pred_cls``,
        ``target_cls``, as ``DetMetrics.update_stats`` receives them)."""
        if len(images) != len(stats):
            raise ValueError(f"{len(images)} image names for {len(stats)} per-image stats")
        niou = next((s["tp"].shape[1] for s in stats if s["tp"].ndim == 2), 10)

        def cat(key: str, dtype, shape=()) -> np.ndarray:
            parts = [np.asarray(s[key], dtype=dtype).reshape(-1, *shape) for s in stats]
            return np.concatenate(parts) if parts else np.zeros((0, *shape), dtype)

        def offsets(key: str) -> np.ndarray:
            return np.concatenate([[0], np.cumsum([len(s[key]) for s in stats])]).astype(np.int64)

        # conf keeps the dtype ultralytics' own concatenation has (float64 once an image has no
        # prediction), so that argsort breaks confidence ties as it does there
        conf_dtype = np.result_type(*[s["conf"] for s in stats]) if stats else np.float32
        return cls(images=np.asarray(images, dtype=str), tp=cat("tp", bool, (niou,)), conf=cat("conf", conf_dtype),
                   pred_cls=cat("pred_cls", np.int32), pred_start=offsets("conf"),
                   target_cls=cat("target_cls", np.int32), target_start=offsets("target_cls"))

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (no pickled objects) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            np.savez_compressed(fh, **{k: getattr(self, k) for k in self.__dataclass_fields__})
        return path

    @classmethod
    def load(cls, path: str | Path) -> ImageStats:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: evaluate that detector first")
        with np.load(path, allow_pickle=False) as z:
            missing = set(cls.__dataclass_fields__) - set(z.files)
            if missing:
                raise ValueError(f"{path} lacks {sorted(missing)}: not a per-image stats file")
            return cls(**{k: z[k] for k in cls.__dataclass_fields__})


def image_of_rows(start: np.ndarray) -> np.ndarray:
    """Image index of every row of a CSR array with offsets ``start``."""
    return np.repeat(np.arange(len(start) - 1), start[1:] - start[:-1])


_image_of = image_of_rows


def image_draws(images: int, n: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """``(n, images)`` counts: how often each image is drawn in each of ``n`` bootstrap resamples
    (``images`` draws with replacement each), the draws :func:`seed_bootstrap` makes for one seed."""
    if n < 1000:
        raise ValueError(f"resamples must be >= 1000 for a 95 % percentile interval, got {n}")
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, images, images), minlength=images) for _ in range(n)])


def _map50(tp50: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray) -> float:
    """ultralytics' mAP50 (``Metric.map50``) of concatenated stats; ``tp50``: the IoU-0.5 column, (P, 1)."""
    ap = ap_per_class(tp50, conf, pred_cls, target_cls)[5]
    return float(ap[:, 0].mean()) if len(ap) else 0.0


class _Resampler:
    """mAP50 of one detector over images drawn with replacement, given as a count per image.

    The rows are repeated in descending-confidence order (the same multiset as concatenating
    the drawn images), so that the argsort in ``ap_per_class`` gets an already sorted array:
    on 10^5 predictions 0.3 ms instead of 5 ms here. Only the order among equal confidences can
    differ from a concatenation in image order."""

    def __init__(self, stats: ImageStats) -> None:
        self.s = stats
        self.order = np.argsort(-stats.conf, kind="stable")
        self.pred_image = _image_of(stats.pred_start)[self.order]
        self.target_image = _image_of(stats.target_start)
        self.tp50 = stats.tp[:, :1]

    def map50(self, count: np.ndarray) -> float:
        rows = np.repeat(self.order, count[self.pred_image])
        return _map50(self.tp50[rows], self.s.conf[rows], self.s.pred_cls[rows],
                      np.repeat(self.s.target_cls, count[self.target_image]))


def map50(stats: ImageStats, draw: np.ndarray | None = None) -> float:
    """mAP50 of ``stats`` over the images ``draw`` (indices, an image drawn twice counts twice;
    None: every image once, concatenated in validation order as ultralytics does)."""
    if draw is None:
        return _map50(stats.tp[:, :1], stats.conf, stats.pred_cls, stats.target_cls)
    return _Resampler(stats).map50(np.bincount(draw, minlength=len(stats)))


def _align(a: ImageStats, b: ImageStats) -> np.ndarray:
    """Index of each of ``a``'s images in ``b``; ValueError unless both hold the same images
    with the same labels (the validation order may differ)."""
    names_a, names_b = a.images.tolist(), b.images.tolist()
    if len(a) != len(b) or set(names_a) != set(names_b):
        only_a, only_b = sorted(set(names_a) - set(names_b)), sorted(set(names_b) - set(names_a))
        raise ValueError(f"not the same images: {len(a)} vs {len(b)}, {len(only_a)} only in a "
                         f"(e.g. {only_a[:1]}), {len(only_b)} only in b (e.g. {only_b[:1]})")
    where = {name: i for i, name in enumerate(names_b)}
    perm = np.array([where[name] for name in names_a], dtype=np.int64)
    a_index = np.empty_like(perm)
    a_index[perm] = np.arange(len(a))                     # b's image i is a's image a_index[i]

    def labels(image: np.ndarray, cls: np.ndarray) -> np.ndarray:     # (image, class) pairs, sorted
        order = np.lexsort((cls, image))
        return np.stack([image[order], cls[order]])

    if not np.array_equal(labels(_image_of(a.target_start), a.target_cls),
                          labels(a_index[_image_of(b.target_start)], b.target_cls)):
        raise ValueError("the two stat sets hold different labels for the same images")
    return perm


def paired_bootstrap(a: ImageStats, b: ImageStats, n: int = RESAMPLES, seed: int = SEED) -> dict:
    """mAP50 gain of ``b`` over ``a`` on the same images, with a paired-bootstrap 95 % interval.

    Returns ``mAP50`` (point gain ``b - a`` on the full set, each in its own validation order, so
    both equal ultralytics' reported mAP50), ``ci95`` (2.5th and 97.5th percentiles of the
    resampled gains), ``p_le_0`` (share of resampled gains <= 0), ``resamples``, ``images``,
    ``seed``, and both point mAP50s (``mAP50_a``, ``mAP50_b``)."""
    return seed_bootstrap([a], [b], n, seed)


def seed_bootstrap(a: list[ImageStats], b: list[ImageStats], n: int = RESAMPLES, seed: int = SEED) -> dict:
    """:func:`paired_bootstrap` between two *groups* of runs (a detector trained with several
    seeds): the gain of ``b``'s mean mAP50 over ``a``'s, every run scored on the same drawn images
    in each resample. The interval covers the test-image sampling of the seed-averaged
    comparison; the spread between seeds is each group's own (``a_spread`` / ``b_spread``: max -
    min of its runs' mAP50). ``mAP50_a`` / ``mAP50_b``: the groups' mean mAP50.
    ``ci95_runs_and_images``: a two-level interval, the runs of each group drawn with replacement
    as well as the images, so that seed-to-seed variation counts (coarse with few runs)."""
    if n < 1000:
        raise ValueError(f"resamples must be >= 1000 for a 95 % percentile interval, got {n}")
    if not a or not b:
        raise ValueError("each group needs at least one run")
    ref = a[0]
    if len(ref) == 0:
        raise ValueError("no images to resample")
    perms = [_align(ref, x) for x in a + b]
    point = [map50(x) for x in a + b]
    ma, mb = float(np.mean(point[:len(a)])), float(np.mean(point[len(a):]))
    images, rng = len(ref), np.random.default_rng(seed)
    res = [_Resampler(x) for x in a + b]
    scores, counts = np.empty((n, len(res))), [np.empty(images, dtype=np.int64) for _ in res]
    for k in range(n):
        count = np.bincount(rng.integers(0, images, images), minlength=images)   # times each image is drawn
        for j, (r, perm, c) in enumerate(zip(res, perms, counts)):
            c[perm] = count                                                     # the same draw, this run's order
            scores[k, j] = r.map50(c)
    sa, sb = scores[:, :len(a)], scores[:, len(a):]
    gains = sb.mean(axis=1) - sa.mean(axis=1)
    lo, hi = np.percentile(gains, [2.5, 97.5])
    out = {"mAP50": mb - ma, "ci95": [float(lo), float(hi)], "resamples": int(n), "images": images,
           "seed": int(seed), "p_le_0": float(np.mean(gains <= 0)), "mAP50_a": ma, "mAP50_b": mb}
    if len(a) > 1 or len(b) > 1:
        # two levels: each resample also draws every group's runs with replacement (its own
        # generator, so the image draws, and ci95, stay as above): the seed-to-seed spread enters
        # the interval. With two or three runs a group, a coarse estimate of that spread.
        runs = np.random.default_rng([seed, 1])
        pick_a, pick_b = runs.integers(0, len(a), (n, len(a))), runs.integers(0, len(b), (n, len(b)))
        two = (np.take_along_axis(sb, pick_b, 1).mean(axis=1) - np.take_along_axis(sa, pick_a, 1).mean(axis=1))
        lo2, hi2 = np.percentile(two, [2.5, 97.5])
        out.update(runs_a=len(a), runs_b=len(b), a_spread=max(point[:len(a)]) - min(point[:len(a)]),
                   b_spread=max(point[len(a):]) - min(point[len(a):]),
                   ci95_runs_and_images=[float(lo2), float(hi2)], p_le_0_runs_and_images=float(np.mean(two <= 0)))
    return out
