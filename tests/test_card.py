"""The model card from a small operating point: the thresholds table, the rates with their
intervals, the verdict confusion, the gate; and the worst-image picking."""

from __future__ import annotations

from types import SimpleNamespace

from components.decision import image_verdicts, operating_point_report
from components.deploy.card import CardInputs, card_data, worst_images, write_model_card
from test_decision import NAMES, make_stats

CFG = SimpleNamespace(rule="recall", recall=0.9, precision=0.9, unseen_conf=0.25)


def test_card_shows_the_operating_point_rates_and_gate(tmp_path):
    stats = make_stats()
    op = operating_point_report(stats, stats, NAMES, CFG, resamples=1000, seed=0)
    manifest = {"images": [{"name": "i0", "boxes": [[0, 1, 1, 5, 5]]}, {"name": "i1", "boxes": []},
                           {"name": "i2", "boxes": [[1, 1, 1, 5, 5], [0, 2, 2, 6, 6]]}]}
    split = {"train": ["i0"], "val": ["i1"], "test": ["i2"], "groups": {"count": 3, "largest": 1}}
    rows = worst_images(image_verdicts(stats, op["thresholds"], NAMES))
    inputs = CardInputs(
        detector="YOLO11n", registered_model="defect-detector", version="7", classes=list(NAMES.values()),
        data=card_data(manifest, split, "synth", "abc123", "data/datasets/synth"),
        training={"train": {"epochs": 20, "imgsz": 128}, "loss": {"iou": "ciou"}},
        metrics={"val": {"mAP50": 0.61, "mAP50-95": 0.3, "precision": 0.7, "recall": 0.6},
                 "test": {"mAP50": 0.62, "mAP50-95": 0.31, "precision": 0.71, "recall": 0.61}},
        op=op, gate={"alias": "challenger", "reason": "requirements not met on validation: overkill_rate 1.0000 > 0.1",
                     "gate": "margin", "margin": 0.005, "metric": "mAP50", "chosen_score": 0.61,
                     "champion_before": None, "champion_score": None},
        require={"overkill_rate": 0.1}, missed=["overkill_rate 1.0000 > 0.1"], candidates=["baseline", "dasc"],
        deviations="None.", imgsz=128, onnx_file="artifacts/model.onnx", worst=rows)
    card = write_model_card(tmp_path / "card", inputs).read_text()
    # thresholds as chosen (a: halfway between 0.1 and 0; b: between 0.8 and 0.5), recall 1.0 on val
    assert "| a | 0.0500 | 1.0000 | 0.6000 | 1.0000 [1.000, 1.000] |" in card
    assert "| b | 0.6500 | 1.0000 | 1.0000 |" in card
    assert "recall 0.9 unreachable" in card and "no labelled validation boxes" in card
    # the clean image i2 fires at a's low threshold: overkill 1 of 1, no escape
    assert "| test | 4 | 3 | 1 | 0 | 0.0000 [0.000, 0.000] | [0.000, 0.708] | 1 | 1.0000" in card
    assert "| clean | 1 (overkill) | 0 |" in card
    assert "| train | 1 | 0 | 1 |" in card and "| val | 1 | 1 | 0 |" in card and "Source groups: 3" in card
    assert "overkill_rate <= 0.1" in card and "**not met**: overkill_rate 1.0000 > 0.1" in card
    assert "registry: there was no champion" in card and "epochs: 20" in card
    assert "`i2.jpg`: overkill (clean, 1 false call(s))" in card


def test_worst_images_put_escapes_first():
    verdicts = [{"image": "ok.jpg", "verdict": "NG", "defective": True, "fired": 1, "matched": 1, "boxes": 1},
                {"image": "fp.jpg", "verdict": "NG", "defective": True, "fired": 3, "matched": 1, "boxes": 1},
                {"image": "esc.jpg", "verdict": "OK", "defective": True, "fired": 0, "matched": 0, "boxes": 2},
                {"image": "over.jpg", "verdict": "NG", "defective": False, "fired": 1, "matched": 0, "boxes": 0}]
    assert [w["image"] for w in worst_images(verdicts)] == ["esc.jpg", "over.jpg", "fp.jpg"]
    assert worst_images(verdicts)[2]["why"] == "2 false call(s)"
