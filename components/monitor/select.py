"""Which logged images a person should look at: at most a budget per monitor window.

Three queues, each ordered most telling first, then taken in turns (one from each, again and
again) so that a budget of ``n`` holds every kind while there are candidates of each; an image
is picked once, under the first reason that reaches it; only images the log kept can be reviewed.

* ``near_threshold`` (:func:`near_threshold`): a box whose score lies within ``margin`` of its
  class's shipped threshold (the operating point in the model's ONNX metadata, ``decision``):
  the answer could have gone the other way. Closest first. The log holds the boxes the answer
  was made of (at or above the threshold), so these are the NG answers that barely were.
* ``drift`` (:func:`drift_outliers`): on an input column Evidently found drifted (an image
  statistic, an embedding component), an image in the reference's outer tail (a share ``tail`` or
  less of the reference is as far out on that side). Farthest from the reference median first.
* ``disagreement`` (:func:`disagreements`): the challenger, run on the kept image, answers
  another verdict (first) or another set of classes than the logged answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .drift import INPUTS, DriftResult
from .predlog import PredictionRecord
from .review import REASONS, ReviewItem  # noqa: F401  (the reasons: near_threshold, drift, disagreement)


@dataclass(order=True)
class Candidate:
    """One image for review: ``priority`` (lower first), the ``record``, why (``reason``) and a
    short ``detail`` (which box, which column, which answers)."""

    priority: float
    record: PredictionRecord = field(compare=False)
    reason: str = field(compare=False)
    detail: str = field(compare=False, default="")


def near_threshold(records: Iterable[PredictionRecord], thresholds: Mapping[str, float], margin: float,
                   version: str | None = None) -> list[Candidate]:
    """Records with a box within ``margin`` of its class's threshold (``thresholds``: class name ->
    threshold, the model's shipped operating point), closest first; ``version``: only records of
    that model version (another version's scores were made against other thresholds)."""
    out = []
    for r in records:
        if version is not None and r.model_version is not None and str(r.model_version) != str(version):
            continue
        near = [(abs(b["conf"] - thresholds[b["name"]]), b) for b in r.boxes if b["name"] in thresholds]
        near = [(d, b) for d, b in near if d <= margin]
        if near:
            d, b = min(near, key=lambda x: x[0])
            out.append(Candidate(d, r, "near_threshold",
                                 f"{b['name']} {b['conf']:.3f} vs threshold {thresholds[b['name']]:.3f}"))
    return sorted(out)


def _tail(values: np.ndarray, x: float) -> float:
    """The share of the sorted ``values`` at least as far out as ``x`` on its side (the smaller of the two)."""
    n = len(values)
    return min(np.searchsorted(values, x, side="right") / n, (n - np.searchsorted(values, x, side="left")) / n)


def drift_outliers(records: Sequence[PredictionRecord], result: DriftResult, tail: float = 0.05) -> list[Candidate]:
    """Records that an input column Evidently found drifted (an image statistic or an embedding
    component; the answer's columns are the other queues' business) puts in the reference's outer
    tail (a share ``tail`` or less of the reference as far out), farthest first (distance from the
    reference median in interquartile ranges); nothing when no input column drifted."""
    cur, ref = result.current, result.reference
    cols = [c for c in result.drifted_columns if c in ref.columns and (c in INPUTS or c.startswith("emb_"))]
    if not cols or cur is None:
        return []
    by_id = {r.id: r for r in records}
    sorted_ref = {c: np.sort(ref[c].dropna().to_numpy(float)) for c in cols}
    centre = {c: (float(np.median(v)), max(float(np.subtract(*np.percentile(v, [75, 25]))), 1e-12))
              for c, v in sorted_ref.items() if len(v)}
    out = []
    for key, values in cur.iterrows():
        if key not in by_id:
            continue
        far = {c: abs(float(values[c]) - centre[c][0]) / centre[c][1] for c in centre
               if values[c] == values[c] and _tail(sorted_ref[c], float(values[c])) <= tail}
        if far:
            col = max(far, key=far.get)
            out.append(Candidate(-far[col], by_id[key], "drift",
                                 f"{col}={float(values[col]):.4g}: {far[col]:.1f} IQR from the reference median "
                                 f"{centre[col][0]:.4g}"))
    return sorted(out)


def disagreements(records: Iterable[PredictionRecord], challenger, image_file: Callable[[str], Path | None],
                  limit: int | None = None) -> list[Candidate]:
    """Records on whose kept image ``challenger`` (``.judge(img)``: a ``serving.BoxModel``, the
    challenger at its own shipped thresholds) answers another verdict (priority 0) or another set of
    classes (priority 1) than the record; at most the latest ``limit`` kept images are re-predicted."""
    import cv2

    kept = [r for r in records if r.image_kept]
    out = []
    for r in kept[-limit:] if limit else kept:
        path = image_file(r.image_sha256)
        img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path is not None else None
        if img is None:
            continue
        other = challenger.judge(img)
        mine = sorted({b["name"] for b in r.boxes})
        theirs = sorted({d["class"] for d in other["detections"]})
        if other["verdict"] != r.verdict:
            out.append(Candidate(0.0, r, "disagreement", f"verdict {r.verdict} vs challenger {other['verdict']}"))
        elif mine != theirs:
            out.append(Candidate(1.0, r, "disagreement", f"classes {mine} vs challenger {theirs}"))
    return sorted(out, key=lambda c: (c.priority, -(c.record.id or 0)))


@dataclass
class Selection:
    """The picked ``items`` (``review.ReviewItem``), what each was picked for (``picked``: id,
    reason, detail), how many candidates each queue had and how many were left out for want of
    a kept image."""

    items: list[ReviewItem]
    picked: list[dict]
    candidates: dict[str, int]
    without_image: int

    def to_dict(self) -> dict:
        return {"picked": self.picked, "candidates": self.candidates, "without_image": self.without_image}


def select(queues: Mapping[str, Sequence[Candidate]], budget: int, image_file: Callable[[str], Path | None],
           ) -> Selection:
    """At most ``budget`` items from ``queues`` (reason -> candidates, each queue in order), taken
    in turns; an image once; a record whose image is not kept is skipped (counted)."""
    if budget < 0:
        raise ValueError(f"review budget must be >= 0, got {budget}")
    items, picked, seen, missing = [], [], set(), set()
    pos = {reason: 0 for reason in queues}
    while len(items) < budget and any(pos[q] < len(queues[q]) for q in queues):
        for reason, queue in queues.items():
            while pos[reason] < len(queue) and len(items) < budget:
                c = queue[pos[reason]]
                pos[reason] += 1
                r = c.record
                if r.id in seen:
                    continue
                path = image_file(r.image_sha256) if r.image_kept else None
                if path is None:
                    missing.add(r.id)
                    continue
                seen.add(r.id)
                items.append(ReviewItem(prediction_id=r.id, image=Path(path), width=r.width, height=r.height,
                                        boxes=list(r.boxes), model_version=r.model_version, reason=reason))
                picked.append({"prediction_id": r.id, "reason": reason, "detail": c.detail})
                break
    return Selection(items, picked, {q: len(v) for q, v in queues.items()}, len(missing - seen))
