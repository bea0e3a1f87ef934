"""The promotion chooses its candidate on the validation split; the test split is only reported."""

from __future__ import annotations

import pytest

from components.deploy.promotion import choose, val_scores


def _m(test: float, val: float, fps: float = 10.0) -> dict:
    return {"split": "test", "mAP50": test, "fps": fps, "val": {"split": "val", "mAP50": val}}


def test_the_candidate_is_the_best_on_validation_not_on_test():
    metrics = {"baseline": _m(test=0.70, val=0.60), "dasc": _m(test=0.65, val=0.66), "lagnet": _m(test=0.72, val=0.58)}
    assert choose(metrics, "mAP50") == "dasc"          # lagnet leads on test: that must not matter
    tie = {"a": _m(0.9, 0.5, fps=5.0), "b": _m(0.1, 0.5, fps=50.0)}
    assert choose(tie, "mAP50") == "b"                 # a validation tie goes to the faster one


def test_metrics_without_validation_scores_are_refused_with_one_line():
    with pytest.raises(FileNotFoundError, match="dasc have no validation scores.*dvc repro"):
        choose({"baseline": _m(0.7, 0.6), "dasc": {"split": "test", "mAP50": 0.9}}, "mAP50")
    assert val_scores("x", {"split": "val", "mAP50": 0.4})["mAP50"] == 0.4   # evaluated on val itself
    with pytest.raises(FileNotFoundError, match="no evaluated candidates"):
        choose({}, "mAP50")
