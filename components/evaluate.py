"""Evaluate a trained detector on a held-out split with ultralytics' validator (mAP, PR curves
are the library's, not re-implemented), plus model size and measured inference speed.

Outputs, all plain files so DVC and MLflow can both take them:

* ``metrics`` dict (DVC metrics JSON): mAP50, mAP50-95, precision, recall, F1, per-class AP50,
  params, GFLOPs, latency/FPS with batch size, image size, device and threads stated;
* ``pr_curve.csv`` (recall, precision: mean over classes) and ``per_class_ap.csv`` (DVC plots);
* ultralytics' PNG plots (PR/F1/P/R curves, confusion matrix, predictions) for MLflow/DVC, and
  ``per_class_AP50.png`` (a bar per class) beside them;
* ``predictions.npz``: per test image, the statistics ultralytics matched its predictions with
  (``tp`` over 10 IoU thresholds, ``conf``, ``pred_cls``; the image's ``target_cls``), for the
  paired bootstrap of one detector's gain over another (``components.bootstrap``).
"""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from copy import deepcopy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from ultralytics.utils.torch_utils import get_cpu_info, get_flops, get_num_params

from .bootstrap import ImageStats, map50
from .yolo import YOLO

PREDICTIONS = "predictions.npz"          # per-image stats, beside ultralytics' plots in the report dir
VAL_PREDICTIONS = "val_predictions.npz"  # the same on the validation split (the operating point is chosen there)
PER_CLASS_PLOT = "per_class_AP50.png"    # bar chart of the per-class AP50, beside them too
KEPT = ("tp", "conf", "pred_cls", "target_cls")


def f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def input_channels(model: torch.nn.Module) -> int:
    """Input channels of an ultralytics model (3; LAGNet with LAM: 6)."""
    return int(getattr(model, "yaml", {}).get("channels", 3))


def model_gflops(model: torch.nn.Module, imgsz: int) -> float:
    """GFLOPs of one forward pass at ``imgsz`` (THOP, as ultralytics' ``get_flops``, but with the
    model's own input channels: ultralytics guesses them from the first weight)."""
    if input_channels(model) == 3:
        return float(get_flops(model, imgsz))
    import thop

    m = deepcopy(model).float().eval()
    x = torch.zeros(1, input_channels(model), imgsz, imgsz, device=next(m.parameters()).device)
    return float(thop.profile(m, inputs=[x], verbose=False)[0] / 1e9 * 2)


def measure_latency(model: torch.nn.Module, imgsz: int, batch: int, runs: int, warmup: int,
                    device: str) -> dict[str, float | int | str]:
    """Median wall time of a forward pass on a ``batch x C x imgsz x imgsz`` input (eager PyTorch,
    no pre/post-processing): the model's own inference cost, comparable across detectors. For
    LAGNet that excludes making the LAM (the end-to-end ONNX graph includes it)."""
    dev = torch.device("cpu" if device == "cpu" else f"cuda:{device.split(',')[0]}")
    model = model.to(dev).eval()
    x = torch.rand(batch, input_channels(model), imgsz, imgsz, device=dev)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t)
    ms = float(np.median(times) * 1000)
    return {"latency_ms_per_batch": round(ms, 3), "latency_ms_per_image": round(ms / batch, 3),
            "fps": round(1000 * batch / ms, 2), "latency_batch": batch, "latency_imgsz": imgsz,
            "latency_device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
            f"cpu ({get_cpu_info()})",
            "latency_threads": torch.get_num_threads(), "latency_runs": runs,
            "latency_input_channels": int(x.shape[1])}


class KeepStatsMixin:
    """Put before a ``DetectionValidator`` (subclass): also keeps, per image and in validation
    order, the stats ultralytics' ``update_metrics`` hands to ``DetMetrics.update_stats`` (one
    dict per image; ultralytics clears its own copy after computing the metrics)."""

    def init_metrics(self, model: torch.nn.Module) -> None:
        super().init_metrics(model)
        self.kept_images: list[str] = []
        self.kept_stats: list[dict[str, np.ndarray]] = []

    def update_metrics(self, preds: list[dict[str, torch.Tensor]], batch: dict[str, Any]) -> None:
        before = len(self.metrics.stats["tp"])
        super().update_metrics(preds, batch)
        added = self.metrics.stats
        if len(added["tp"]) - before != len(preds):
            raise RuntimeError(f"ultralytics added {len(added['tp']) - before} stats for {len(preds)} images")
        self.kept_images += [Path(batch["im_file"][si]).name for si in range(len(preds))]
        self.kept_stats += [{k: added[k][before + si] for k in KEPT} for si in range(len(preds))]

    def image_stats(self) -> ImageStats:
        return ImageStats.from_images(self.kept_images, self.kept_stats)


@lru_cache(maxsize=None)
def keep_stats(validator: type | None = None) -> type:
    """``validator`` (a ``DetectionValidator`` subclass, e.g. ``LamValidator``; None: ultralytics'
    own) with ``KeepStatsMixin`` in front."""
    from ultralytics.models.yolo.detect import DetectionValidator

    base = validator or DetectionValidator
    if not issubclass(base, DetectionValidator):
        raise TypeError(f"{base.__name__} is not a DetectionValidator subclass")
    return type(f"Keep{base.__name__}", (KeepStatsMixin, base), {})


def validate_keeping_stats(yolo: YOLO, validator: type | None = None, **val_args) -> tuple[Any, ImageStats]:
    """``yolo.val(**val_args)`` with ``validator`` (see ``keep_stats``): its metrics and the
    per-image stats, checked to reproduce ultralytics' mAP50."""
    validators = []
    yolo.add_callback("on_val_end", validators.append)
    res = yolo.val(validator=keep_stats(validator), **val_args)
    stats = validators[-1].image_stats()
    if abs(map50(stats) - float(res.box.map50)) > 1e-9:
        raise RuntimeError(f"kept per-image stats give mAP50 {map50(stats):.6f}, ultralytics {res.box.map50:.6f}")
    return res, stats


@dataclass(frozen=True)
class EvalRequest:
    """One scoring: ``weights`` on ``split`` of ``data_yaml`` at ``imgsz`` (the served framing, a
    square letterbox), ``batch``, ``conf`` / ``iou`` (NMS), ``device``; ``validator``: a
    ``DetectionValidator`` subclass (LAGNet: its LAM validator), else ultralytics' own."""

    weights: Path
    data_yaml: Path
    split: str
    imgsz: int
    batch: int
    conf: float
    iou: float
    device: str
    validator: Any = None

    @classmethod
    def of(cls, cfg, weights: str | Path, data_yaml: str | Path, imgsz: int, split: str | None = None,
           validator=None) -> "EvalRequest":
        """From the ``evaluate`` settings section ``cfg`` (its split unless ``split`` is given)."""
        return cls(Path(weights), Path(data_yaml), split or cfg.split, imgsz, cfg.batch, cfg.conf, cfg.iou,
                   cfg.device, validator)

    def val_args(self) -> dict:
        """ultralytics' ``val`` arguments of this scoring (``rect=False``: the served framing)."""
        return dict(data=str(self.data_yaml), split=self.split, imgsz=self.imgsz, batch=self.batch, conf=self.conf,
                    iou=self.iou, device=self.device, rect=False, verbose=False)


def score_split(req: EvalRequest, keep: Path | None = None) -> dict:
    """``req.weights`` on ``req.split`` at the served framing (as :func:`evaluate_detector`), without
    plots or timing: the validation scores a promotion chooses its candidate by (the test split only
    reports). ``keep``: also write the per-image stats there (``.npz``: the operating point's input)."""
    with tempfile.TemporaryDirectory() as tmp:
        res, stats = validate_keeping_stats(YOLO(str(req.weights)), req.validator, **req.val_args(), plots=False,
                                            project=tmp, name="val")
    if keep:
        stats.save(keep)
    return _scores(res.box, req.data_yaml, req.split)


def _scores(box, data_yaml: Path, split: str) -> dict:
    """The split, its image count and ultralytics' box metrics (``res.box``), rounded as reported."""
    return {"split": split,
            "images": len(Path(yaml.safe_load(Path(data_yaml).read_text())[split]).read_text().split()),
            "mAP50": round(float(box.map50), 4), "mAP50-95": round(float(box.map), 4),
            "precision": round(float(box.mp), 4), "recall": round(float(box.mr), 4)}


def evaluate_detector(req: EvalRequest, latency: dict, out_dir: Path, plots_dir: Path) -> dict:
    """Validate as ``req`` says (:class:`EvalRequest`): ultralytics' PNG plots go to ``out_dir``,
    the CSV plot data (DVC plots) to ``plots_dir``, the latency measured as ``latency`` says
    (``batch``, ``runs``, ``warmup``: the ``evaluate.latency`` settings). The per-image stats go to
    ``out_dir/predictions.npz``. Every detector is scored at the *served framing*, the square
    ``imgsz`` letterbox that ``predict`` and the exported ONNX model take (``rect=False``, as the
    promotion's ONNX scoring), not on ultralytics' rect batches with their half-stride border."""
    out_dir, plots_dir = Path(out_dir).resolve(), Path(plots_dir).resolve()
    for d in (out_dir, plots_dir):
        if d.exists():
            shutil.rmtree(d)
    plots_dir.mkdir(parents=True)
    data_yaml, split, imgsz = req.data_yaml, req.split, req.imgsz
    yolo = YOLO(str(req.weights))
    names = yolo.names
    res, stats = validate_keeping_stats(yolo, req.validator, **req.val_args(), plots=True,
                                        project=str(out_dir.parent), name=out_dir.name, exist_ok=True)
    stats.save(out_dir / PREDICTIONS)
    box = res.box
    p, r = float(box.mp), float(box.mr)
    per_class = {names[i]: 0.0 for i in range(len(names))}
    for j, ci in enumerate(res.ap_class_index):
        per_class[names[int(ci)]] = round(float(box.ap50[j]), 4)
    metrics = {
        **_scores(box, data_yaml, split),
        "F1": round(f1(p, r), 4),
        "per_class_AP50": per_class,
        "params": int(get_num_params(yolo.model)),
        "GFLOPs": round(model_gflops(yolo.model, 640), 3),          # at 640 px, as the papers
        "GFLOPs_at_imgsz": round(model_gflops(yolo.model, imgsz), 3),
        "speed_ms_per_image": {k: round(float(v), 3) for k, v in res.speed.items()},
        **measure_latency(yolo.model, imgsz, latency["batch"], latency["runs"], latency["warmup"], req.device),
    }
    _write_pr_curve(box, plots_dir / "pr_curve.csv")
    with (plots_dir / "per_class_ap.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "AP50"])
        w.writerows(per_class.items())
    plot_per_class_ap(per_class, out_dir / PER_CLASS_PLOT,
                      f"AP50 per class, {split} split ({metrics['images']} images, mAP50 {metrics['mAP50']:.3f})")
    return metrics


def per_class_ap_figure(per_class: dict[str, float], title: str):
    """Horizontal bar chart of ``per_class`` (class -> AP50), classes in their order top to
    bottom, the value beside each bar, the mean as a dashed line (a matplotlib Figure)."""
    from matplotlib.figure import Figure

    names, values = list(per_class), [float(v) for v in per_class.values()]
    fig = Figure(figsize=(6.4, 0.9 + 0.35 * max(len(names), 1)))
    ax = fig.subplots()
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    for i, v in enumerate(values):
        ax.text(min(v, 1.0) + 0.01, i, f"{v:.3f}", va="center", fontsize=8)
    if values:
        ax.axvline(float(np.mean(values)), color="tab:red", ls="--", lw=1, label=f"mean {np.mean(values):.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("AP50")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_per_class_ap(per_class: dict[str, float], path: Path, title: str) -> Path:
    """``per_class_ap_figure`` saved as a PNG at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    per_class_ap_figure(per_class, title).savefig(path, dpi=120)
    return path


def _write_pr_curve(box, path: Path, points: int = 101) -> None:
    """Mean-over-classes precision at ``points`` recall levels (ultralytics' interpolated curve)."""
    px = np.asarray(box.px)                          # recall grid, 1000 points
    prec = np.asarray(box.prec_values)               # (n_classes, 1000)
    mean = prec.mean(0) if prec.size else np.zeros_like(px)
    grid = np.linspace(0, 1, points)
    vals = np.interp(grid, px, mean)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["recall", "precision"])
        w.writerows((round(float(a), 4), round(float(b), 4)) for a, b in zip(grid, vals))
