"""Paired bootstrap of the mAP50 gain (components/bootstrap.py), the per-image stats the
evaluation keeps (components/evaluate.py) and the `bootstrap` promotion gate (registry.decide).

Per-image stats are built by hand; every mAP50 is ultralytics' own (ap_per_class)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.utils.metrics import ap_per_class

from components.bootstrap import ImageStats, map50, paired_bootstrap, seed_bootstrap
from components.evaluate import KeepStatsMixin, keep_stats
from components.detectors.lagnet.data import LamValidator
from components.deploy.registry import CHALLENGER, CHAMPION, decide

Pred = tuple[int, float, bool]          # class, confidence, correct at IoU 0.5


def image(preds: list[Pred], targets: list[int], correct_iou_levels: int = 10) -> dict[str, np.ndarray]:
    """One image's stats as ultralytics' update_metrics hands them over: a correct prediction is
    a true positive at the first ``correct_iou_levels`` of the 10 IoU thresholds."""
    tp = np.zeros((len(preds), 10), bool)
    tp[[i for i, p in enumerate(preds) if p[2]], :correct_iou_levels] = True
    return {"tp": tp, "conf": np.array([p[1] for p in preds], np.float32),
            "pred_cls": np.array([p[0] for p in preds], np.float32), "target_cls": np.array(targets, np.float32)}


def stats(images: list[dict], names: list[str] | None = None) -> ImageStats:
    return ImageStats.from_images(names or [f"{i:03d}.jpg" for i in range(len(images))], images)


def random_pair(n: int, better: float, seed: int = 0) -> tuple[ImageStats, ImageStats]:
    """``n`` images, 1-3 labels of 3 classes each, both detectors find every object and make one
    false positive per object. A ranks its true positives below its false positives; B ranks
    them above on a share ``better`` of the images (elsewhere it is A)."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for _ in range(n):
        targets = rng.integers(0, 3, rng.integers(1, 4)).tolist()
        low, high = rng.uniform(0.05, 0.4, len(targets)), rng.uniform(0.5, 0.95, len(targets))
        fp_cls = rng.integers(0, 3, len(targets)).tolist()
        worse = [(c, lo, True) for c, lo in zip(targets, low)] + [(c, hi, False) for c, hi in zip(fp_cls, high)]
        good = [(c, hi, True) for c, hi in zip(targets, high)] + [(c, lo, False) for c, lo in zip(fp_cls, low)]
        a.append(image(worse, targets))
        b.append(image(good if rng.random() < better else worse, targets))
    return stats(a), stats(b)


# ---- (a) a detector against itself

def test_a_detector_against_itself_gains_exactly_zero(tmp_path):
    a, _ = random_pair(50, 0.5)
    gain = paired_bootstrap(a, a, n=1000, seed=3)
    assert gain["mAP50"] == 0.0 and gain["ci95"] == [0.0, 0.0] and gain["p_le_0"] == 1.0
    assert gain["ci95"][0] <= 0.0 <= gain["ci95"][1]
    assert gain["resamples"] == 1000 and gain["images"] == 50 and gain["seed"] == 3
    # the same stats saved, loaded and listed in another validation order: still exactly 0
    order = np.random.default_rng(1).permutation(len(a))
    per_image = [{"tp": a.tp[a.pred_start[i]:a.pred_start[i + 1]], "conf": a.conf[a.pred_start[i]:a.pred_start[i + 1]],
                  "pred_cls": a.pred_cls[a.pred_start[i]:a.pred_start[i + 1]],
                  "target_cls": a.target_cls[a.target_start[i]:a.target_start[i + 1]]} for i in order]
    shuffled = ImageStats.load(stats(per_image, [str(a.images[i]) for i in order]).save(tmp_path / "p.npz"))
    gain = paired_bootstrap(a, shuffled, n=1000, seed=3)
    assert gain["mAP50"] == 0.0 and gain["ci95"] == [0.0, 0.0]


# ---- (b) a clearly better detector

def test_a_clearly_better_detector_has_its_whole_interval_above_zero():
    a, b = random_pair(60, 0.75)
    gain = paired_bootstrap(a, b)
    lo, hi = gain["ci95"]
    assert gain["resamples"] == 2000 and gain["seed"] == 0 and gain["images"] == 60
    assert gain["mAP50"] == pytest.approx(gain["mAP50_b"] - gain["mAP50_a"]) and gain["mAP50"] > 0.1
    assert 0 < lo < gain["mAP50"] < hi and gain["p_le_0"] == 0.0
    # the interval is an interval of the resampled gains, not a constant: another seed moves it
    other = paired_bootstrap(a, b, seed=1)["ci95"]
    assert other != [lo, hi] and abs(other[0] - lo) < 0.05


# ---- (b2) groups of runs (seeds)

def test_seed_groups_average_the_runs_on_the_same_draws():
    """Two seeds per detector: the point gain is the difference of the group means (by hand from
    each run's mAP50), a group of one is the paired bootstrap exactly, and a run repeated in its
    group changes nothing."""
    a, b = random_pair(60, 0.75, seed=0)
    a2, b2 = random_pair(60, 0.4, seed=0)             # same images and labels, other rankings
    g = seed_bootstrap([a, a2], [b, b2], n=1000, seed=5)
    hand = (map50(b) + map50(b2)) / 2 - (map50(a) + map50(a2)) / 2
    assert g["mAP50"] == pytest.approx(hand, abs=1e-12) and g["runs_a"] == 2 and g["runs_b"] == 2
    assert g["a_spread"] == pytest.approx(abs(map50(a) - map50(a2)), abs=1e-12)
    assert g["b_spread"] == pytest.approx(abs(map50(b) - map50(b2)), abs=1e-12) and g["b_spread"] > 0.01
    assert g["ci95"][0] < g["mAP50"] < g["ci95"][1]
    one, pair = seed_bootstrap([a], [b], n=1000, seed=5), paired_bootstrap(a, b, n=1000, seed=5)
    assert one == pair and "runs_a" not in one
    twice = seed_bootstrap([a, a], [b, b], n=1000, seed=5)
    assert twice["mAP50"] == pytest.approx(pair["mAP50"]) and twice["ci95"] == pytest.approx(pair["ci95"])


def test_two_level_interval_counts_the_seed_spread():
    """Drawing the runs as well as the images: identical runs change nothing; runs that differ
    (B's two rankings differ by several points) widen the interval beyond the images-only one."""
    a, b = random_pair(60, 0.75, seed=0)
    a2, b2 = random_pair(60, 0.4, seed=0)
    twice = seed_bootstrap([a, a], [b, b], n=1000, seed=5)
    assert twice["ci95_runs_and_images"] == pytest.approx(twice["ci95"])
    g = seed_bootstrap([a, a2], [b, b2], n=1000, seed=5)
    width = g["ci95"][1] - g["ci95"][0]
    width2 = g["ci95_runs_and_images"][1] - g["ci95_runs_and_images"][0]
    assert width2 > width * 1.2 and g["ci95_runs_and_images"][0] < g["mAP50"] < g["ci95_runs_and_images"][1]


# ---- (c) a small case computed by hand

def hand_case() -> list[dict]:
    """Class 0: 2 labels, both found as the top predictions: AP50 = 0.995 (ultralytics' 101-point
    interpolation of a perfect curve). Class 1: 3 labels, one found, no false positive of class 1:
    precision 1 up to recall 1/3, then 0: AP50 = 0.33 + 0.01 / 2 = 0.335. Class 2: a prediction
    but no label: not counted. mAP50 = (0.995 + 0.335) / 2 = 0.665."""
    return [image([(0, 0.9, True), (1, 0.95, True), (2, 0.6, False)], [0, 1], correct_iou_levels=3),
            image([(0, 0.8, True)], [0, 1]),
            image([], [1])]


def test_hand_computed_map50_and_gain():
    b = stats(hand_case())
    a = stats([image([], t["target_cls"].astype(int).tolist()) for t in hand_case()])   # finds nothing
    assert map50(b) == pytest.approx(0.665, abs=1e-12) and map50(a) == 0.0
    gain = paired_bootstrap(a, b, n=1000)
    assert gain["mAP50"] == pytest.approx(0.665, abs=1e-12)
    # ultralytics directly on the concatenated stats
    cat = {k: np.concatenate([s[k] for s in hand_case()]) for k in ("tp", "conf", "pred_cls", "target_cls")}
    ap = ap_per_class(cat["tp"], cat["conf"], cat["pred_cls"], cat["target_cls"])[5]
    assert ap[:, 0].tolist() == pytest.approx([0.995, 0.335], abs=1e-12) and map50(b) == ap[:, 0].mean()
    # an image drawn twice counts twice: draw (0, 0, 2) is images 0, 0, 2 concatenated
    parts = [hand_case()[i] for i in (0, 0, 2)]
    cat = {k: np.concatenate([s[k] for s in parts]) for k in ("tp", "conf", "pred_cls", "target_cls")}
    ap = ap_per_class(cat["tp"], cat["conf"], cat["pred_cls"], cat["target_cls"])[5]
    assert map50(b, np.array([0, 0, 2])) == pytest.approx(ap[:, 0].mean(), abs=1e-12)
    assert map50(b, np.array([0, 0, 2])) != pytest.approx(map50(b, np.array([0, 2])))


# ---- (d) bad input

def test_mismatched_images_or_labels_are_refused():
    a, b = random_pair(10, 0.5)
    renamed = replace(a, images=np.array([*a.images[:-1], "other.jpg"]))
    with pytest.raises(ValueError, match="not the same images"):
        paired_bootstrap(a, renamed)
    with pytest.raises(ValueError, match="not the same images"):
        paired_bootstrap(a, stats([image([], [0])] * 11))
    relabelled = replace(b, target_cls=(b.target_cls + 1) % 3)
    with pytest.raises(ValueError, match="different labels"):
        paired_bootstrap(a, relabelled)
    with pytest.raises(ValueError, match=">= 1000"):
        paired_bootstrap(a, b, n=999)
    with pytest.raises(ValueError, match="non-decreasing offsets"):
        replace(a, pred_start=a.pred_start[::-1])


# ---- (e) the promotion gate

def one_image_better(n: int = 40) -> tuple[ImageStats, ImageStats]:
    """The champion misses image 0's object (a false positive instead), the challenger finds it;
    everything else is the same."""
    champ = [image([(0, 0.9 - i / 1000, True)], [0]) for i in range(n)]
    champ[0] = image([(0, 0.5, False)], [0])
    chall = list(champ)
    chall[0] = image([(0, 0.5, True)], [0])
    return stats(champ), stats(chall)


def test_bootstrap_gate_refuses_a_gain_whose_interval_contains_zero_that_margin_accepts():
    champ, chall = one_image_better()
    gain = paired_bootstrap(champ, chall)
    lo, hi = gain["ci95"]
    assert gain["mAP50"] >= 0.005 and lo <= 0 < hi           # ~36 % of resamples leave image 0 out
    assert 0.2 < gain["p_le_0"] < 0.5
    by_margin = decide(gain["mAP50_b"], gain["mAP50_a"], 0.005)
    assert by_margin.alias == CHAMPION and by_margin.gate == "margin"
    by_interval = decide(gain["mAP50_b"], gain["mAP50_a"], 0.005, "bootstrap", gain)
    assert by_interval.alias == CHALLENGER and "lower bound <= 0" in by_interval.reason
    assert by_interval.gain == gain and "95% CI" in by_interval.reason
    # a clearly better challenger takes the champion alias through the same gate
    a, b = random_pair(60, 0.75)
    clear = paired_bootstrap(a, b)
    assert decide(clear["mAP50_b"], clear["mAP50_a"], 0.005, "bootstrap", clear).alias == CHAMPION
    # a margin the gain misses: margin refuses, the interval alone decides the bootstrap gate
    assert decide(clear["mAP50_b"], clear["mAP50_a"], 1.0).alias == CHALLENGER
    assert decide(clear["mAP50_b"], clear["mAP50_a"], 1.0, "bootstrap", clear).alias == CHAMPION


def test_gate_input_errors_and_first_champion():
    assert decide(0.3, None, 0.005, "bootstrap").alias == CHAMPION        # no champion yet: nothing to compare
    with pytest.raises(ValueError, match="promote.gate must be one of margin, bootstrap"):
        decide(0.3, 0.2, 0.005, "interval")
    with pytest.raises(ValueError, match="needs the paired-bootstrap gain"):
        decide(0.3, 0.2, 0.005, "bootstrap")


# ---- the stats the evaluation keeps: ultralytics' own, image by image

def test_keep_stats_composes_with_a_validator_subclass():
    kept = keep_stats(LamValidator)
    assert issubclass(kept, KeepStatsMixin) and issubclass(kept, LamValidator) and kept.__name__ == "KeepLamValidator"
    assert keep_stats(LamValidator) is kept and keep_stats(None).__mro__[2] is DetectionValidator
    with pytest.raises(TypeError, match="not a DetectionValidator subclass"):
        keep_stats(dict)


def test_kept_stats_are_ultralytics_matching_and_reproduce_its_map50(tmp_path):
    """Drive ultralytics' DetectionValidator.update_metrics on two hand-made batches (no model)."""
    v = keep_stats(DetectionValidator)(save_dir=Path(tmp_path), args={"plots": False, "split": "val"})
    v.device, v.training, v.data = torch.device("cpu"), False, {"val": ""}
    v.dataloader = SimpleNamespace(dataset=SimpleNamespace(labels=[]))
    v.init_metrics(SimpleNamespace(names={0: "scratch", 1: "pits"}))

    def batch(files: list[str], labels: list[tuple[int, int, list[float]]]) -> dict:
        """``labels``: (image in batch, class, normalised xywh); 64 x 64 images, no letterbox."""
        return {"img": torch.zeros(len(files), 3, 64, 64), "im_file": files,
                "batch_idx": torch.tensor([i for i, _, _ in labels], dtype=torch.float32),
                "cls": torch.tensor([[c] for _, c, _ in labels], dtype=torch.float32),
                "bboxes": torch.tensor([b for _, _, b in labels], dtype=torch.float32).reshape(-1, 4),
                "ori_shape": [(64, 64)] * len(files), "ratio_pad": [((1.0, 1.0), (0.0, 0.0))] * len(files)}

    def pred(rows: list[tuple[float, float, float, float, float, int]]) -> dict:   # xyxy px, conf, class
        t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
        return {"bboxes": t[:, :4], "conf": t[:, 4], "cls": t[:, 5], "extra": t[:, 6:]}

    # image a: a scratch at (16..32, 16..32) px found exactly (conf .9) and again 4 px off (a
    # duplicate: ultralytics matches each label once), a pits false positive; image b: a pits
    # label at (24..40, 24..40) found 3 px off (IoU 208 / 304 = 0.68: correct at 0.50 ... 0.65)
    v.update_metrics([pred([(16, 16, 32, 32, 0.9, 0), (20, 16, 36, 32, 0.8, 0), (40, 40, 50, 50, 0.7, 1)]),
                      pred([(27, 24, 43, 40, 0.6, 1)])],
                     batch(["/x/a.jpg", "/x/b.jpg"], [(0, 0, [0.375, 0.375, 0.25, 0.25]),
                                                      (1, 1, [0.5, 0.5, 0.25, 0.25])]))
    # image c: no label, one false positive; image d: a label, no prediction
    v.update_metrics([pred([(0, 0, 10, 10, 0.95, 1)]), pred([])],
                     batch(["/y/c.jpg", "/y/d.jpg"], [(1, 0, [0.5, 0.5, 0.5, 0.5])]))
    kept = v.image_stats()
    v.get_stats()
    assert kept.images.tolist() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert kept.pred_start.tolist() == [0, 3, 4, 5, 5] and kept.target_start.tolist() == [0, 1, 2, 2, 3]
    assert kept.tp.sum(1).tolist() == [10, 0, 0, 4, 0] and kept.tp[3, :4].all()
    assert kept.pred_cls.tolist() == [0, 0, 1, 1, 1] and kept.target_cls.tolist() == [0, 1, 0]
    assert map50(kept) == float(v.metrics.box.map50) > 0


def test_evaluate_detector_writes_per_image_stats_and_the_flow_compares_them(tmp_path):
    """A real (untrained, 64 px) YOLO11n through evaluate_detector: predictions.npz lists the
    test images and reproduces the reported mAP50; the evaluate flow's gain task reads it."""
    import cv2
    import yaml
    from ultralytics.nn.tasks import DetectionModel

    from components.evaluate import PREDICTIONS, EvalRequest, evaluate_detector
    from pipelines.evaluate import gain_task

    ds = tmp_path / "ds"
    for d in ("images", "labels"):
        (ds / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(5):
        cv2.imwrite(str(ds / "images" / f"im{i}.jpg"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        (ds / "labels" / f"im{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.3 0.3\n")
        files.append(str(ds / "images" / f"im{i}.jpg"))
    (ds / "test.txt").write_text("\n".join(files) + "\n")
    (ds / "data.yaml").write_text(yaml.safe_dump({"path": str(ds), "names": {0: "a", 1: "b"}, "nc": 2,
                                                  **{k: str(ds / "test.txt") for k in ("train", "val", "test")}}))
    model = DetectionModel("yolo11n.yaml", nc=2, verbose=False)
    model.names = {0: "a", 1: "b"}
    torch.save({"model": model, "train_args": {}}, tmp_path / "w.pt")
    metrics = evaluate_detector(EvalRequest(tmp_path / "w.pt", ds / "data.yaml", "test", 64, 4, 0.001, 0.7, "cpu"),
                                {"batch": 1, "runs": 1, "warmup": 0}, tmp_path / "report", tmp_path / "plots")
    kept = ImageStats.load(tmp_path / "report" / PREDICTIONS)
    assert sorted(kept.images.tolist()) == [f"im{i}.jpg" for i in range(5)]
    assert kept.target_cls.tolist() == [int(Path(f).stem[2:]) % 2 for f in kept.images]
    assert len(kept.conf) > 0 and kept.tp.shape == (len(kept.conf), 10)
    assert round(map50(kept), 4) == metrics["mAP50"]
    gain = gain_task.fn(str(tmp_path / "report" / PREDICTIONS), str(tmp_path / "report" / PREDICTIONS), 1000, 0)
    assert gain["mAP50"] == 0 and gain["ci95"] == [0, 0] and gain["resamples"] == 1000 and gain["images"] == 5
    # the validation scores promote chooses by: the same evaluator, no plots or timing (val = the same 5 images here)
    from components.evaluate import score_split

    val = score_split(EvalRequest(tmp_path / "w.pt", ds / "data.yaml", "val", 64, 4, 0.001, 0.7, "cpu"))
    assert val["split"] == "val" and val["images"] == 5
    assert {k: val[k] for k in ("mAP50", "mAP50-95", "precision", "recall")} == \
        {k: metrics[k] for k in ("mAP50", "mAP50-95", "precision", "recall")}
