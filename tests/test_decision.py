"""Operating points against a hand-computed PR curve; verdicts and the line's error rates against
hand counts; the gate's requirements."""

from __future__ import annotations

import numpy as np
import pytest

from components.bootstrap import ImageStats
from components.decision import check_requirements, choose_operating_point, class_curve, image_verdicts, line_errors
from components.deploy.serving import NG, OK, verdict

NAMES = {0: "a", 1: "b", 2: "c", 3: "d"}
# per image: labelled classes, predictions (class, score, matched at IoU 0.5)
IMAGES = {
    "i0.jpg": ([0], [(0, 0.9, True), (0, 0.3, False)]),
    "i1.jpg": ([0, 1], [(0, 0.6, True), (1, 0.8, True)]),
    "i2.jpg": ([], [(1, 0.5, False), (0, 0.2, False)]),                 # a clean image
    "i3.jpg": ([0, 2], [(0, 0.1, True), (2, 0.7, False)]),
}


def make_stats(images: dict = IMAGES) -> ImageStats:
    per = []
    for labels, preds in images.values():
        tp = np.zeros((len(preds), 10), bool)
        tp[:, 0] = [m for _, _, m in preds]
        per.append({"tp": tp, "conf": np.array([s for _, s, _ in preds], np.float32),
                    "pred_cls": np.array([c for c, _, _ in preds]), "target_cls": np.array(labels)})
    return ImageStats.from_images(list(images), per)


def test_class_curve_is_the_hand_computed_pr_curve():
    scores, tp, fired, n_gt = class_curve(make_stats(), 0)
    assert np.allclose(scores, [0.9, 0.6, 0.3, 0.2, 0.1])
    assert tp.tolist() == [1, 2, 2, 2, 3] and fired.tolist() == [1, 2, 3, 4, 5] and n_gt == 3


def test_recall_rule_takes_the_highest_threshold_reaching_the_target():
    op = choose_operating_point(make_stats(), NAMES, "recall", recall=0.9)
    a, b, c, d = (op.classes[k] for k in "abcd")
    # a: recall 1/3, 2/3, 2/3, 2/3, 1 -> 0.9 first reached at score 0.1; halfway to 0 below it
    assert a.threshold == pytest.approx(0.05) and a.recall == 1.0 and a.precision == 0.6 and a.flag is None
    # b: reached at 0.8, halfway to the next score 0.5
    assert b.threshold == pytest.approx(0.65) and b.recall == 1.0 and b.precision == 1.0
    # c: its only detection is wrong: recall 0.9 unreachable -> max-F1 (all 0: the highest score), flagged
    assert c.threshold == pytest.approx(0.35) and "unreachable" in c.flag
    # d: never labelled nor predicted
    assert d.threshold == 0.25 and "no labelled validation boxes" in d.flag
    assert set(op.flags) == {"c", "d"}
    # a lower target stops earlier: 2/3 at score 0.6, halfway to 0.3
    assert choose_operating_point(make_stats(), NAMES, "recall", recall=0.6).thresholds["a"] == pytest.approx(0.45)


def test_f1_and_precision_rules():
    f1 = choose_operating_point(make_stats(), NAMES, "f1")
    # a: F1 0.5, 0.8, 0.667, 0.571, 0.75 -> the max at score 0.6
    assert f1.thresholds["a"] == pytest.approx(0.45) and f1.thresholds["b"] == pytest.approx(0.65)
    pr = choose_operating_point(make_stats(), NAMES, "precision", precision=0.9)
    # a: precision 1, 1, 2/3, 1/2, 3/5 -> the lowest threshold keeping >= 0.9 is at 0.6
    assert pr.thresholds["a"] == pytest.approx(0.45) and pr.classes["a"].recall == pytest.approx(0.6667)
    with pytest.raises(ValueError, match="decision.rule"):
        choose_operating_point(make_stats(), NAMES, "accuracy")


def test_escape_and_overkill_against_hand_counts():
    stats = make_stats()
    low = line_errors(stats, {"a": 0.05, "b": 0.65, "c": 0.35, "d": 0.25}, NAMES, resamples=0)
    # the clean image i2 fires on a 0.2 >= 0.05: overkill 1/1; every defective image fires
    assert (low["defective_images"], low["clean_images"], low["escapes"], low["overkills"]) == (3, 1, 0, 1)
    assert low["escape_rate"] == 0.0 and low["overkill_rate"] == 1.0
    assert low["per_class"]["a"] == {"recall": 1.0, "precision": 0.6, "boxes": 3, "fired": 5, "matched": 3}
    assert low["per_class"]["c"]["recall"] == 0.0 and low["per_class"]["d"]["recall"] is None
    mid = line_errors(stats, {"a": 0.45, "b": 0.65, "c": 0.8, "d": 0.25}, NAMES, resamples=0)
    # i3 now fires nothing (a 0.1 < 0.45, c 0.7 < 0.8): one escape in 3; i2 passes
    assert (mid["escapes"], mid["overkills"]) == (1, 0)
    assert mid["escape_rate"] == pytest.approx(0.3333) and mid["overkill_rate"] == 0.0
    v = {r["image"]: r["verdict"] for r in image_verdicts(stats, {"a": 0.45, "b": 0.65, "c": 0.8, "d": 0.25}, NAMES)}
    assert v == {"i0.jpg": NG, "i1.jpg": NG, "i2.jpg": OK, "i3.jpg": OK}


def test_intervals_bracket_the_point_and_collapse_when_every_draw_agrees():
    # 40 defective images, 10 escapes; 20 clean images, none fired
    images = {f"d{i}.jpg": ([0], [(0, 0.9 if i >= 10 else 0.05, True)]) for i in range(40)}
    images.update({f"c{i}.jpg": ([], []) for i in range(20)})
    out = line_errors(make_stats(images), {"a": 0.5}, {0: "a"}, resamples=2000, seed=0)
    assert out["escape_rate"] == 0.25
    lo, hi = out["escape_ci95"]
    assert lo < 0.25 < hi and 0.05 < hi - lo < 0.4
    assert out["overkill_ci95"] == [0.0, 0.0]
    # no overkill in 20 clean images: the bootstrap collapses, the exact bound is 1 - 0.025 ** (1 / 20)
    assert out["overkill_exact95"] == [0.0, round(1 - 0.025 ** (1 / 20), 4)]
    lo, hi = out["escape_exact95"]                   # 10 in 40: Clopper-Pearson [0.127, 0.412]
    assert (round(lo, 3), round(hi, 3)) == (0.127, 0.412)
    assert out["per_class"]["a"]["precision_ci95"] == [1.0, 1.0]


def test_verdict_of_one_image():
    dets = [{"class": "a", "confidence": 0.3}, {"class": "b", "confidence": 0.7}]
    v = verdict(dets, {"a": 0.5, "b": 0.6})
    assert v["verdict"] == NG and v["because"] == [dets[1]] and v["thresholds"]["source"] == "per-class operating point"
    assert verdict(dets, {"a": 0.5, "b": 0.8})["verdict"] == OK
    over = verdict(dets, {"a": 0.5, "b": 0.8}, conf=0.2)
    assert over["verdict"] == NG and len(over["because"]) == 2 and over["thresholds"] == {"source": "conf override",
                                                                                         "conf": 0.2}


def test_requirements():
    assert check_requirements({"escape_rate": 0.04, "mAP50": 0.7}, {"escape_rate": 0.05, "mAP50": 0.5}) == []
    missed = check_requirements({"escape_rate": 0.08, "overkill_rate": None}, {"escape_rate": 0.05,
                                                                                "overkill_rate": 0.1})
    assert missed == ["escape_rate 0.0800 > 0.05", "overkill_rate not measured (needs <= 0.1)"]
    assert check_requirements({"mAP50": 0.01}, {"mAP50": 0.3}) == ["mAP50 0.0100 < 0.3"]
    with pytest.raises(ValueError, match="unknown key"):
        check_requirements({}, {"escapes": 0.1})


def test_a_candidate_that_misses_a_requirement_never_takes_champion():
    from components.deploy.registry import CHALLENGER, CHAMPION, decide

    missed = check_requirements({"mAP50": 0.01, "escape_rate": 0.0}, {"mAP50": 0.3, "escape_rate": 0.05})
    assert missed == ["mAP50 0.0100 < 0.3"]
    first = decide(0.01, None, 0.005, missed=missed)              # no champion yet: still not champion
    assert first.alias == CHALLENGER and first.reason == "requirements not met on validation: mAP50 0.0100 < 0.3"
    assert decide(0.9, 0.1, 0.005, missed=["escape_rate 0.0800 > 0.05"]).alias == CHALLENGER   # whatever its mAP
    assert decide(0.9, 0.1, 0.005, missed=[]).alias == CHAMPION
