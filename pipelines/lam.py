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
from pathlib import Path

import cv2
import numpy as np
from prefect import flow, get_run_logger, task

from components.data.canonical import load_manifest
from components.data.views import SPLITS, load_split, write_yolo_data_yaml
from components.lagnet.lam import lam_grid, lam_image, make_lams, oof_folds
from components.settings import Lam, Settings
from components.train import baseline_cfg, train_detector_isolated
from components.yolo import YOLO

from .common import COMPUTE, dataset_hash, layout, log_outputs, read_params, stage_run, trainer_args

CONTRAST = ("conf_in", "conf_out", "norm_in", "norm_out", "jet_in", "jet_out")


@task(name="make-lams", **COMPUTE)
def lam_task(weights: str, images: list[str], out_dir: str, imgsz: int, cfg: Lam,
             boxes: dict[str, list]) -> dict:
    from tqdm import tqdm

    model = YOLO(weights).model
    with tqdm(total=len(images), desc=f"LAMs ({Path(weights).parent.parent.name})", unit="img") as bar:
        return make_lams(model, [Path(p) for p in images], Path(out_dir), imgsz, cfg.batch, cfg.device,
                         cfg.alpha, cfg.beta, bar.update, {k: np.asarray(v) for k, v in boxes.items()},
                         cfg.normalize, cfg.quantile)


@task(name="train-fold-baseline", **COMPUTE)
def fold_task(ds: str, split: dict, fold_names: list[str], work: str, params: Settings) -> str:
    """A baseline trained on the training images outside ``fold_names`` (val split unchanged)."""
    held = set(fold_names)
    part = {**split, "train": [n for n in split["train"] if n not in held]}
    data_yaml = write_yolo_data_yaml(Path(ds), part, Path(work) / "data")
    args, device, seed = trainer_args(params)
    res = train_detector_isolated(baseline_cfg(params.baseline.scale), data_yaml, Path(work) / "train",
                                  args, device, seed, params.loss.iou)
    return str(res.best)


@flow(name="lam")
def lam_flow(params_file: str = "params.yaml") -> dict:
    """Write the LAM of every image of every split (see the module docstring)."""
    params = read_params(params_file)
    log = get_run_logger()
    cfg = params.lam                     # lam.mode is one of in_sample | out_of_fold (components.settings)
    lay = layout(params)
    ds, weights = lay.dataset, lay.weights("baseline")
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: run `dvc repro train_baseline` first")
    base_info = json.loads(lay.train_info("baseline").read_text())
    imgsz = base_info["imgsz"]
    manifest = load_manifest(ds)
    classes = manifest["classes"]
    entry = {e["name"]: e for e in manifest["images"]}
    path_of = {n: str((ds / e["image"]).resolve()) for n, e in entry.items()}
    boxes = {path_of[n]: [b[1:] for b in e["boxes"]] for n, e in entry.items()}
    split = load_split(lay.split_file)
    out = lay.lam_dir
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    report = lay.report_dir("lam")
    used = ["lam", "data.name", "split"] + (["train", "baseline", "loss"] if cfg.mode == "out_of_fold" else [])
    with stage_run("lam", params, used, dataset_hash(ds),
                   {"lam_mode": cfg.mode, "baseline_run_id": base_info["mlflow_run_id"]}) as run:
        t0 = time.time()
        made: dict[str, dict] = {}
        jobs: list[tuple[str, list[str]]] = []          # (weights, image names)
        if cfg.mode == "in_sample":
            jobs.append((str(weights), [n for s in SPLITS for n in split[s]]))
        else:
            folds = oof_folds(split["train"], cfg.folds, params.split.seed)
            for i, names in enumerate(folds):
                log.info("out_of_fold: baseline %d/%d (without %d training images)", i + 1, len(folds), len(names))
                w = fold_task(str(ds), split, names, str(lay.scratch(f"lam-fold{i}")),
                              params)
                jobs.append((w, names))
            jobs.append((str(weights), split["val"] + split["test"]))
        for w, names in jobs:
            imgs = [path_of[n] for n in names]
            made.update(lam_task(w, imgs, str(tmp), imgsz, cfg, {p: boxes[p] for p in imgs}))
        seconds = time.time() - t0
        stats = {}
        for s in SPLITS:
            rows = [made[path_of[n]] for n in split[s] if "conf_in" in made[path_of[n]]]
            if rows:   # the LAM's contrast: raw / normalised confidence and JET luminance, in vs out of boxes
                stats[s] = {"images": len(split[s]),
                            **{k: round(float(np.nanmean([r[k] for r in rows])), 4) for k in CONTRAST}}
        info = {"mode": cfg.mode, "folds": cfg.folds if cfg.mode == "out_of_fold" else None,
                "images": len(made), "imgsz": imgsz, "alpha": cfg.alpha, "beta": cfg.beta,
                "normalize": cfg.normalize, "quantile": cfg.quantile,
                "baseline_weights": str(weights), "baseline_run_id": base_info["mlflow_run_id"],
                "seconds": round(seconds, 1), "per_split": stats}
        (tmp / "lam_info.json").write_text(json.dumps(info, indent=1))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        samples = []
        for n in split["test"][: cfg.grid_samples]:
            conf = cv2.imread(str(out / f"{Path(path_of[n]).stem}.png"), cv2.IMREAD_UNCHANGED)
            img = cv2.imread(str(path_of[n]))             # the map is at the loader's scale: back to the image's
            conf = cv2.resize(conf, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
            lam_img = lam_image(img, conf / 255.0, cfg.alpha, cfg.beta)
            samples.append((lam_img, np.asarray([b[1:] for b in entry[n]["boxes"]]).reshape(-1, 4),
                            [classes[int(b[0])] for b in entry[n]["boxes"]]))
        shutil.rmtree(report, ignore_errors=True)
        grid = lam_grid(samples, report / "lam_grid.png") if samples else None
        metrics = {"images": len(made), "seconds": seconds, "images_per_s": len(made) / max(seconds, 1e-9)}
        for s, v in stats.items():
            metrics.update({f"{k}.{s}": v[k] for k in CONTRAST})
        log_outputs(run, metrics=metrics, artifacts=[(str(out / "lam_info.json"), None)] +
                    ([(str(grid), "plots")] if grid else []))
        for s, v in stats.items():
            log.info("LAM %s: mean confidence %.3f inside boxes, %.3f outside; JET luminance %.3f vs %.3f",
                     s, v["conf_in"], v["conf_out"], v["jet_in"], v["jet_out"])
    return info
