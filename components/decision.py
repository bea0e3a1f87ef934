"""Operating points: one confidence threshold per defect class, chosen on the validation split, and
the OK / NG verdict per image that follows, with the line's two error rates.

* A detection *fires* when its score reaches its class's threshold; an image is **NG** (reject)
  when any detection fires, else **OK** (pass).
* **escape rate**: defective images (at least one labelled box) judged OK / defective images;
  **overkill rate**: clean images (no labelled box) judged NG / clean images.
* Box recall / precision per class at the thresholds use ultralytics' own matching (the ``tp``
  column at IoU 0.50 that its validator computed, kept per image in
  :class:`components.bootstrap.ImageStats`): recall = matched fired boxes / labelled boxes,
  precision = matched fired boxes / fired boxes, the points of ultralytics' PR curve.

Threshold rules (``decision.rule``), per class, on the validation stats:

* ``recall``: the highest threshold whose recall reaches ``decision.recall``;
* ``precision``: the lowest threshold whose precision reaches ``decision.precision`` (the most
  recall at that precision);
* ``f1``: the threshold of maximal F1.

A class whose target cannot be reached gets its max-F1 threshold and a flag; a class without
validation boxes or predictions gets ``decision.unseen_conf`` and a flag. A threshold is placed
halfway between the deciding score and the next lower one: the validation counts are those of
the deciding score, and a score that moves by float noise (another runtime) stays on its side.

Intervals: 95 % percentile bootstrap over images (``components.bootstrap.image_draws``); for the
two rates also the exact (Clopper-Pearson) binomial 95 % interval over images (``*_exact95``,
scipy's ``binomtest``), which stays honest where the bootstrap collapses: with no escape among
n defective images every resample has none too ([0, 0]), while the exact upper bound is
1 - 0.025^(1/n) (0.097 for n = 36). The
verdict of one served image is ``components.deploy.serving.verdict`` (the same rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import numpy as np

if TYPE_CHECKING:                  # light to import (settings reads RULES / REQUIREMENTS): no ultralytics
    from .bootstrap import ImageStats

RULES = ("recall", "precision", "f1")
# promote.require keys: the bound's direction (rates are ceilings, scores floors)
REQUIREMENTS = {"escape_rate": "max", "overkill_rate": "max", "mAP50": "min", "mAP50-95": "min",
                "precision": "min", "recall": "min"}


@dataclass(frozen=True)
class ClassPoint:
    """One class's threshold and the validation figures that chose it."""

    threshold: float
    recall: float | None          # validation box recall at the threshold (None: no labelled boxes)
    precision: float | None       # validation box precision at the threshold (None: nothing fires)
    flag: str | None = None       # why the rule's target was not used


@dataclass(frozen=True)
class OperatingPoint:
    """Per-class thresholds (class name -> :class:`ClassPoint`) and the rule that chose them."""

    rule: str
    target: float | None
    classes: dict[str, ClassPoint] = field(default_factory=dict)

    @property
    def thresholds(self) -> dict[str, float]:
        return {c: p.threshold for c, p in self.classes.items()}

    @property
    def flags(self) -> dict[str, str]:
        return {c: p.flag for c, p in self.classes.items() if p.flag}

    def to_dict(self) -> dict:
        return {"rule": self.rule, "target": self.target, "thresholds": self.thresholds, "flags": self.flags,
                "chosen_on_val": {c: {"recall": p.recall, "precision": p.precision}
                                  for c, p in self.classes.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> "OperatingPoint":
        val = d.get("chosen_on_val", {})
        return cls(d["rule"], d.get("target"), {
            c: ClassPoint(float(t), val.get(c, {}).get("recall"), val.get(c, {}).get("precision"),
                          d.get("flags", {}).get(c)) for c, t in d["thresholds"].items()})


def class_curve(stats: ImageStats, cls_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Class ``cls_id``'s PR points at each distinct score: ``scores`` (descending), ``tp`` and
    ``fired`` (cumulative matched and all detections with a score >= each), and the labelled
    box count."""
    mask = stats.pred_cls == cls_id
    conf, tp = stats.conf[mask].astype(np.float64), stats.tp[mask, 0]
    order = np.argsort(-conf, kind="stable")
    conf, tp = conf[order], tp[order]
    ctp, cfired = np.cumsum(tp), np.arange(1, len(conf) + 1)
    last = np.r_[conf[1:] != conf[:-1], True] if len(conf) else np.zeros(0, bool)   # end of each tie group
    return conf[last], ctp[last], cfired[last], int(np.sum(stats.target_cls == cls_id))


def _between(scores: np.ndarray, k: int) -> float:
    """Halfway from ``scores[k]`` to the next lower distinct score (0 below the last)."""
    lower = scores[k + 1] if k + 1 < len(scores) else 0.0
    return float((scores[k] + lower) / 2)


def choose_class(stats: ImageStats, cls_id: int, rule: str, target: float | None, unseen_conf: float) -> ClassPoint:
    """One class's :class:`ClassPoint` by ``rule`` (see the module docstring)."""
    scores, tp, fired, n_gt = class_curve(stats, cls_id)
    if n_gt == 0 or len(scores) == 0:
        why = "no labelled validation boxes" if n_gt == 0 else "no validation predictions"
        return ClassPoint(float(unseen_conf), 0.0 if n_gt else None, None, f"{why}: unseen_conf {unseen_conf}")
    recall, precision = tp / n_gt, tp / fired
    f1 = np.where(recall + precision > 0, 2 * recall * precision / np.maximum(recall + precision, 1e-12), 0.0)
    k, flag = None, None
    if rule == "recall":
        hit = np.flatnonzero(recall >= target - 1e-12)
        k = int(hit[0]) if len(hit) else None          # scores descend: the first hit is the highest threshold
        if k is None:
            flag = f"recall {target} unreachable (max {recall.max():.3f}): max-F1 threshold"
    elif rule == "precision":
        hit = np.flatnonzero(precision >= target - 1e-12)
        k = int(hit[-1]) if len(hit) else None         # the lowest threshold that keeps the precision
        if k is None:
            flag = f"precision {target} unreachable (max {precision.max():.3f}): max-F1 threshold"
    elif rule != "f1":
        raise ValueError(f"decision.rule must be one of {', '.join(RULES)}, got {rule!r}")
    if k is None:
        k = int(np.argmax(f1))                          # first maximum: the highest threshold among ties
    return ClassPoint(_between(scores, k), round(float(recall[k]), 4), round(float(precision[k]), 4), flag)


def choose_operating_point(stats: ImageStats, names: Mapping[int, str], rule: str = "recall",
                           recall: float = 0.9, precision: float = 0.9, unseen_conf: float = 0.25) -> OperatingPoint:
    """Thresholds for every class of ``names`` (class id -> name) from validation ``stats``."""
    target = {"recall": recall, "precision": precision, "f1": None}.get(rule)
    if rule not in RULES:
        raise ValueError(f"decision.rule must be one of {', '.join(RULES)}, got {rule!r}")
    return OperatingPoint(rule, target, {names[i]: choose_class(stats, int(i), rule, target, unseen_conf)
                                         for i in sorted(names)})


def threshold_array(point: OperatingPoint | Mapping[str, float], names: Mapping[int, str]) -> np.ndarray:
    """The thresholds indexed by class id (``names``: id -> name)."""
    thr = point.thresholds if isinstance(point, OperatingPoint) else point
    missing = [n for n in names.values() if n not in thr]
    if missing:
        raise ValueError(f"no threshold for class(es) {', '.join(missing)}")
    return np.array([thr[names[i]] for i in range(max(names) + 1)], dtype=np.float64)


@dataclass(frozen=True)
class _PerImage:
    """Per-image counts at the thresholds: every statistic below is a ratio of their sums."""

    ng: np.ndarray            # (N,) bool: some detection fired
    defective: np.ndarray     # (N,) bool: the image has labelled boxes
    tp: np.ndarray            # (N, C) matched fired boxes per class
    fired: np.ndarray         # (N, C) fired boxes per class
    gt: np.ndarray            # (N, C) labelled boxes per class


def per_image(stats: ImageStats, thr: np.ndarray) -> _PerImage:
    from .bootstrap import image_of_rows

    n, c = len(stats), len(thr)
    img = image_of_rows(stats.pred_start)
    cls = stats.pred_cls.astype(np.int64)
    fire = stats.conf.astype(np.float64) >= thr[cls]
    tp = np.zeros((n, c), np.int64)
    fired = np.zeros((n, c), np.int64)
    gt = np.zeros((n, c), np.int64)
    np.add.at(fired, (img[fire], cls[fire]), 1)
    m = fire & stats.tp[:, 0]
    np.add.at(tp, (img[m], cls[m]), 1)
    np.add.at(gt, (image_of_rows(stats.target_start), stats.target_cls.astype(np.int64)), 1)
    return _PerImage(ng=fired.sum(1) > 0, defective=gt.sum(1) > 0, tp=tp, fired=fired, gt=gt)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den is 0."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def _ci(values: np.ndarray) -> list[float] | None:
    v = values[~np.isnan(values)]
    if len(v) < len(values) * 0.5 or not len(v):      # mostly undefined resamples: no interval
        return None
    lo, hi = np.percentile(v, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def exact_interval(k: int, n: int) -> list[float] | None:
    """Clopper-Pearson 95 % interval of a rate of ``k`` in ``n`` (None when ``n`` is 0)."""
    if n == 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]


def _num(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 4)


def line_errors(stats: ImageStats, point: OperatingPoint | Mapping[str, float], names: Mapping[int, str],
                resamples: int = 2000, seed: int = 0) -> dict:
    """Verdicts at ``point`` on ``stats``' images: escape and overkill rates and per-class box
    recall / precision, each with a 95 % bootstrap interval over the images (``resamples`` draws;
    0: no intervals). Rates over an empty group are None."""
    thr = threshold_array(point, names)
    p = per_image(stats, thr)
    escapes, overkills = p.defective & ~p.ng, ~p.defective & p.ng
    out = {"images": len(stats), "defective_images": int(p.defective.sum()), "clean_images": int((~p.defective).sum()),
           "escapes": int(escapes.sum()), "overkills": int(overkills.sum()),
           "escape_rate": _num(_ratio(escapes.sum(), p.defective.sum())),
           "overkill_rate": _num(_ratio(overkills.sum(), (~p.defective).sum())),
           "thresholds": {names[i]: round(float(thr[i]), 6) for i in sorted(names)}}
    per_class = {names[i]: {"recall": _num(_ratio(p.tp[:, i].sum(), p.gt[:, i].sum())),
                            "precision": _num(_ratio(p.tp[:, i].sum(), p.fired[:, i].sum())),
                            "boxes": int(p.gt[:, i].sum()), "fired": int(p.fired[:, i].sum()),
                            "matched": int(p.tp[:, i].sum())} for i in sorted(names)}
    for key, k, n in (("escape_exact95", escapes.sum(), p.defective.sum()),
                      ("overkill_exact95", overkills.sum(), (~p.defective).sum())):
        out[key] = exact_interval(int(k), int(n))
    if resamples and len(stats):
        from .bootstrap import image_draws

        w = image_draws(len(stats), resamples, seed).astype(np.float64)     # (R, N) times each image is drawn
        out["escape_ci95"] = _ci(_ratio(w @ escapes, w @ p.defective))
        out["overkill_ci95"] = _ci(_ratio(w @ overkills, w @ ~p.defective))
        rec, prec = _ratio(w @ p.tp, w @ p.gt), _ratio(w @ p.tp, w @ p.fired)
        for i in sorted(names):
            per_class[names[i]].update(recall_ci95=_ci(rec[:, i]), precision_ci95=_ci(prec[:, i]))
        out.update(resamples=int(resamples), seed=int(seed))
    out["per_class"] = per_class
    return out


def image_verdicts(stats: ImageStats, point: OperatingPoint | Mapping[str, float],
                   names: Mapping[int, str]) -> list[dict]:
    """Per image: name, verdict, whether it is defective, and its fired / labelled box counts (the
    model card's worst-image lists)."""
    p = per_image(stats, threshold_array(point, names))
    ng = {True: "NG", False: "OK"}
    return [{"image": str(stats.images[i]), "verdict": ng[bool(p.ng[i])], "defective": bool(p.defective[i]),
             "fired": int(p.fired[i].sum()), "matched": int(p.tp[i].sum()), "boxes": int(p.gt[i].sum())}
            for i in range(len(stats))]


def check_requirements(figures: Mapping[str, float | None], require: Mapping[str, float]) -> list[str]:
    """The unmet ``promote.require`` bounds, one phrase each (empty: all met). A figure that could
    not be measured (None: e.g. an overkill rate without clean images) does not meet its bound."""
    unknown = sorted(set(require) - set(REQUIREMENTS))
    if unknown:
        raise ValueError(f"promote.require: unknown key(s) {', '.join(unknown)}; known: {', '.join(REQUIREMENTS)}")
    missed = []
    for key, bound in require.items():
        v = figures.get(key)
        if v is None:
            missed.append(f"{key} not measured (needs {'<=' if REQUIREMENTS[key] == 'max' else '>='} {bound})")
        elif REQUIREMENTS[key] == "max" and v > bound:
            missed.append(f"{key} {v:.4f} > {bound}")
        elif REQUIREMENTS[key] == "min" and v < bound:
            missed.append(f"{key} {v:.4f} < {bound}")
    return missed


def operating_point_report(val: ImageStats, test: ImageStats | None, names: Mapping[int, str], cfg,
                           resamples: int = 2000, seed: int = 0) -> dict:
    """Thresholds chosen on ``val`` by ``cfg`` (the ``decision`` settings section), with the line's
    figures at them on ``val`` and, reported only, on ``test``: ``OperatingPoint.to_dict()`` plus
    ``val`` / ``test`` (:func:`line_errors`)."""
    op = choose_operating_point(val, names, cfg.rule, cfg.recall, cfg.precision, cfg.unseen_conf)
    out = op.to_dict()
    out["val"] = line_errors(val, op, names, resamples, seed)
    if test is not None:
        out["test"] = line_errors(test, op, names, resamples, seed)
    return out


def flat_metrics(report: Mapping, prefix: str = "") -> dict[str, float]:
    """The figures of :func:`operating_point_report` as MLflow metric names -> values (``test.escape_rate``,
    ``val.recall.<class>``, ``threshold.<class>``...); unmeasured ones left out."""
    out = {f"{prefix}threshold.{c}": t for c, t in report["thresholds"].items()}
    for split in ("val", "test"):
        r = report.get(split)
        if not r:
            continue
        for k in ("escape_rate", "overkill_rate"):
            if r[k] is not None:
                out[f"{prefix}{split}.{k}"] = r[k]
            if r.get(k.replace("rate", "ci95")):
                lo, hi = r[k.replace("rate", "ci95")]
                out.update({f"{prefix}{split}.{k}_ci95_lo": lo, f"{prefix}{split}.{k}_ci95_hi": hi})
            if r.get(k.replace("rate", "exact95")):
                out[f"{prefix}{split}.{k}_exact95_hi"] = r[k.replace("rate", "exact95")][1]
        for c, v in r["per_class"].items():
            for k in ("recall", "precision"):
                if v[k] is not None:
                    out[f"{prefix}{split}.{k}.{c}"] = v[k]
    return out


def shipped_decision(report: Mapping) -> dict:
    """What travels with the registered graph (ONNX metadata ``decision``): the rule, the
    thresholds, their flags and the validation figures that chose them."""
    val = report["val"]
    return {"rule": report["rule"], "target": report["target"], "thresholds": report["thresholds"],
            "flags": report["flags"], "chosen_on_val": report["chosen_on_val"],
            "val": {k: val[k] for k in ("images", "escape_rate", "overkill_rate")}}
