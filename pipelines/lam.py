"""LAM flow (DVC stage ``lam``): a Location Activation Map for every image, from the baseline.

``lam.mode``:

* ``in_sample`` (the paper): the trained baseline (``train_baseline``) makes every LAM. It was
  trained on the training images, so their LAMs light up where the *labels* were: LAGNet then
  trains on maps better than it will ever get at test time (label leakage). The stage measures
  it: mean confidence inside / outside the ground-truth boxes per split (``lam_info.json``,
  MLflow metrics ``conf_in.<split>``, ``conf_out.<split>``).
* ``out_of_fold``: ``lam.folds`` extra baselines, each trained (same params as the baseline) on
  the training images outside one fold; each training image's LAM is made by the baseline that
  never saw it. Val/test LAMs come from the main baseline, which never saw them either.

Outputs: ``<paths.lams>/<data.name>/<stem>.png`` (the confidence map, 8-bit grey; the training
data path codes and blends it after augmentation) + ``lam_info.json`` (DVC out) and
``<paths.reports>/lam/lam_grid.png`` (test LAMs with ground-truth boxes; DVC plot + MLflow).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger, task

from components.data.canonical import load_manifest
from components.data.views import SPLITS, load_split, write_yolo_data_yaml
from components.detectors import lam_maker, model_cfg
from components.detectors.lagnet import LamCoding
from components.detectors.lagnet.lam import lam_map, make_lams, oof_folds
from components.detectors.lagnet.lamstats import CONTRAST, LamImages, contrast_by_split, sample_grid
from components.settings import Lam, Settings
from components.train import TrainRequest, train_detector_isolated
from components.yolo import YOLO

from .common import COMPUTE, dataset_hash, layout, log_outputs, read_params, stage_run, trainer_args


@task(name="make-lams", **COMPUTE)
def lam_task(weights: str, images: list[str], out_dir: str, imgsz: int, cfg: Lam,
             boxes: dict[str, list]) -> dict:
    from tqdm import tqdm

    lam = lam_map(YOLO(weights).model, LamCoding.of(cfg), cfg.device)
    with tqdm(total=len(images), desc=f"LAMs ({Path(weights).parent.parent.name})", unit="img") as bar:
        return make_lams(lam, [Path(p) for p in images], Path(out_dir), imgsz, cfg.batch, bar.update,
                         {k: np.asarray(v) for k, v in boxes.items()})


@task(name="train-fold-baseline", **COMPUTE)
def fold_task(ds: str, split: dict, fold_names: list[str], work: str, params: Settings) -> str:
    """A LAM maker trained on the training images outside ``fold_names`` (val split unchanged)."""
    held = set(fold_names)
    part = {**split, "train": [n for n in split["train"] if n not in held]}
    data_yaml = write_yolo_data_yaml(Path(ds), part, Path(work) / "data")
    args, device, seed = trainer_args(params)
    cfg = model_cfg(lam_maker().key, params, len(load_manifest(Path(ds))["classes"]), Path(work))
    res = train_detector_isolated(TrainRequest(cfg, data_yaml, Path(work) / "train", args, device, seed,
                                               params.loss.iou))
    return str(res.best)


@flow(name="lam")
def lam_flow(params_file: str = "params.yaml") -> dict:
    """Write the LAM of every image of every split (see the module docstring)."""
    params = read_params(params_file)
    cfg, lay, maker = params.lam, layout(params), lam_maker()  # lam.mode: in_sample | out_of_fold (settings)
    coding = LamCoding.of(cfg)
    weights = lay.weights(maker.key)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: run `dvc repro train_{maker.key}` first")
    base_info = json.loads(lay.train_info(maker.key).read_text())
    images, split, out = LamImages.of(lay.dataset, load_manifest(lay.dataset)), load_split(lay.split_file), lay.lam_dir
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    used = ["lam", "data.name", "split"] + (["train", *maker.sections, "loss"] if cfg.mode == "out_of_fold" else [])
    with stage_run("lam", params, used, dataset_hash(lay.dataset),
                   {"lam_mode": cfg.mode, "baseline_run_id": base_info["mlflow_run_id"]}) as run:
        t0, made = time.time(), {}
        for w, names in lam_jobs(params, str(weights), split):
            made.update(lam_task(w, [images.path(n) for n in names], str(tmp), base_info["imgsz"], cfg,
                                 images.boxes(names)))
        seconds, stats = time.time() - t0, contrast_by_split(made, split, images)
        info = {"mode": cfg.mode, "folds": cfg.folds if cfg.mode == "out_of_fold" else None,
                "images": len(made), "imgsz": base_info["imgsz"], **asdict(coding),
                "baseline_weights": str(weights), "baseline_run_id": base_info["mlflow_run_id"],
                "seconds": round(seconds, 1), "per_split": stats}
        (tmp / "lam_info.json").write_text(json.dumps(info, indent=1))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        report = lay.report_dir("lam")
        shutil.rmtree(report, ignore_errors=True)
        grid = sample_grid(out, split["test"][: cfg.grid_samples], images, coding, report / "lam_grid.png")
        metrics = {"images": len(made), "seconds": seconds, "images_per_s": len(made) / max(seconds, 1e-9),
                   **{f"{k}.{s}": v[k] for s, v in stats.items() for k in CONTRAST}}
        log_outputs(run, metrics=metrics, artifacts=[(str(out / "lam_info.json"), None)] +
                    ([(str(grid), "plots")] if grid else []))
        for s, v in stats.items():
            get_run_logger().info("LAM %s: mean confidence %.3f inside boxes, %.3f outside; JET luminance %.3f "
                                  "vs %.3f", s, v["conf_in"], v["conf_out"], v["jet_in"], v["jet_out"])
    return info


def lam_jobs(params: Settings, weights: str, split: dict) -> list[tuple[str, list[str]]]:
    """``(LAM maker weights, image names)`` to make: ``in_sample``, the trained maker for every
    image; ``out_of_fold``, per fold of the training images a maker trained without it
    (``fold_task``), and the trained maker for val and test, which it never saw."""
    cfg = params.lam
    if cfg.mode == "in_sample":
        return [(weights, [n for s in SPLITS for n in split[s]])]
    jobs = []
    folds = oof_folds(split["train"], cfg.folds, params.split.seed)
    for i, names in enumerate(folds):
        get_run_logger().info("out_of_fold: baseline %d/%d (without %d training images)", i + 1, len(folds), len(names))
        jobs.append((fold_task(str(layout(params).dataset), split, names, str(layout(params).scratch(f"lam-fold{i}")),
                               params), names))
    return jobs + [(weights, split["val"] + split["test"])]
