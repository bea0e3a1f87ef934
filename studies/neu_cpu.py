"""NEU-DET at the CPU protocol (``profiles/neu-cpu.yaml``): one training run per call, written
to ``studies/results/neu_cpu/runs/<run>.json``; ``--table`` renders ``results/neu_cpu.{json,md}``.

    python -m studies.neu_cpu --run baseline --model baseline
    python -m studies.neu_cpu --run dasc-gate --model dasc --set dasc.gate=zero
    python -m studies.neu_cpu --lams-from baseline               # LAMs of every image
    python -m studies.neu_cpu --run lagnet_s --model lagnet --set lagnet.lam_norm=image_max
    python -m studies.neu_cpu --evaluate --run baseline --model baseline --trained-on "..." --train-csv F
    python -m studies.neu_cpu --table baseline=RUN dasc=RUN lagnet_s=RUN
    python -m studies.neu_cpu --profile neu-paper-gpu --device 0 --run R --model M   # another protocol

Protocol: params.yaml + ``profiles/neu-cpu.yaml`` (+ ``--set`` overrides, recorded in the run):
NEU-DET from ``../shared/datasets/neu-det``, 8:2 stratified train:test split (seed 0) with a
validation part carved from the training part (``split.val_ratio``), 224 px, 60 epochs from
scratch, the same ``train`` settings for every detector. The best epoch is picked on the
validation images; variants are compared on validation mAP50 (``val``); the test split is only
reported (``test``), never used to choose anything. Training folders stay in ``.cache/bench/neu_cpu``;
``--evaluate`` keeps the run's best weights (optimizer stripped, a few MB) in
``results/neu_cpu/weights/<run>.pt``, so LAMs, FPS and served checks survive the scratch folder. Only
the four a table or test loads stay in git (``studies/README.md``); the others are in git history.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from components.settings import Settings, resolve
from components.data.canonical import load_manifest
from components.data.importers import ImportOptions, import_dataset
from components.data.split import SplitSpec, make_split
from components.data.views import write_yolo_data_yaml
from components.detectors import model_cfg, uses_lam
from components.detectors.lagnet import LamCoding

from .common import NEU_RUNS, PROFILE_DIR, RESULTS, cli, machine, parse_sets, profile_params, read_results_csv  # noqa: F401

NEU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det"
PROFILE = PROFILE_DIR / "neu-cpu.yaml"      # the CPU protocol (the table's)
PROFILES = ["neu-cpu"]      # --profile: the profiles layered on params.yaml (later wins), as make run PROFILE=...
WORK = Path(".cache/bench/neu_cpu")
RUNS = NEU_RUNS
KEPT = RESULTS / "neu_cpu" / "weights"      # stripped best.pt of the evaluated runs (a few MB each)
FRAMING = "served: square imgsz letterbox"  # components.evaluate.evaluate_detector (runs without it: rect batches)


def best_weights(run: str) -> Path:
    """``run``'s best epoch: the training folder's best.pt, else the copy kept in git (an earlier
    session's scratch folder is gone, its kept weights are not)."""
    w = WORK / run / "train" / "weights" / "best.pt"
    kept = KEPT / f"{run}.pt"
    if w.is_file():
        return w
    if kept.is_file():
        return kept
    raise SystemExit(f"no weights for run {run}: neither {w} nor {kept} (weights no longer in the tree: "
                     f"git show fe45948:benchmarks/results/neu_cpu/weights/{run}.pt > {kept})")


def keep_weights(run: str) -> Path:
    """Copy ``run``'s best.pt, optimizer stripped (half precision), to ``KEPT/<run>.pt``."""
    from ultralytics.utils.torch_utils import strip_optimizer

    KEPT.mkdir(parents=True, exist_ok=True)
    dst = KEPT / f"{run}.pt"
    src = best_weights(run)
    if src.resolve() != dst.resolve():
        strip_optimizer(src, str(dst))
    return dst


def protocol_params(sets: dict) -> Settings:
    """The run's params: the protocol's profiles (``PROFILES``: the CPU protocol unless
    ``--profile``) + ``--set``."""
    return profile_params(PROFILES, sets)


def dataset(params: Settings, src: Path) -> tuple[Path, dict]:
    import fcntl

    ds = WORK / "neu-det"
    WORK.mkdir(parents=True, exist_ok=True)
    with open(WORK / ".import.lock", "w") as lock:    # two runs started together import once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (ds / "manifest.json").is_file():
            import_dataset(src, "neu-det", WORK, ImportOptions("voc", params.data.clip_px, list(params.data.classes)))
    m = load_manifest(ds)
    s = params.split
    return ds, make_split(m["images"], m["classes"], SplitSpec(s.test_ratio, s.val_ratio, s.seed, 0))


def lam_dir(params: Settings, baseline_run: str | None) -> Path:
    """One LAM folder per baseline run and normalisation."""
    return WORK / f"lams-{baseline_run}-{params.lam.normalize}"


def make_lams(baseline_run: str, sets: dict, src: Path, device: str) -> dict:
    """LAMs of every image from ``baseline_run``'s best weights (the lam stage's way)."""
    import numpy as np

    from components.detectors.lagnet.lam import lam_map, make_lams as write_lams
    from components.yolo import YOLO

    params = protocol_params(sets)
    ds, split = dataset(params, src)
    m = load_manifest(ds)
    paths = {e["name"]: ds / e["image"] for e in m["images"]}
    boxes = {str(paths[e["name"]]): np.asarray([b[1:] for b in e["boxes"]]) for e in m["images"]}
    lam = params.lam
    weights = best_weights(baseline_run)
    t = time.time()
    made = write_lams(lam_map(YOLO(str(weights)).model, LamCoding.of(lam), device), list(paths.values()),
                      lam_dir(params, baseline_run), params.train.imgsz, lam.batch, None, boxes)
    keys = ("conf_in", "conf_out", "norm_in", "norm_out", "jet_in", "jet_out")
    stats = {part: {k: round(float(np.nanmean([made[str(paths[n])][k] for n in split[part]])), 4) for k in keys}
             for part in ("train", "val", "test")}
    info = {"baseline_run": baseline_run, "normalize": lam.normalize, "quantile": lam.quantile,
            "images": len(made), "seconds": round(time.time() - t, 1), "per_split": stats, "command": cli()}
    (lam_dir(params, baseline_run) / "lam_info.json").write_text(json.dumps(info, indent=1))
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"lams-{baseline_run}-{lam.normalize}.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))
    return info


def prepare(name: str, model: str, sets: dict, src: Path, lams_from: str | None
            ) -> tuple[Settings, Path, Path, Path, bool]:
    """The run's params (protocol + ``sets``), dataset, work folder, data YAML (with the LAM
    folder for LAGNet) and whether the model reads a LAM."""
    from components.detectors.lagnet.data import lam_data_yaml

    params = protocol_params(sets)
    ds, split = dataset(params, src)
    work = WORK / name
    data_yaml = write_yolo_data_yaml(ds, split, work / "data")
    lam = uses_lam(model, params)
    if lam:
        lams = lam_dir(params, lams_from)
        if not (lams / "lam_info.json").is_file():
            raise SystemExit(f"no LAMs in {lams}: run --make-lams --lams-from <baseline run> first")
        data_yaml = lam_data_yaml(data_yaml, lams, LamCoding.of(params.lam))
    return params, ds, work, data_yaml, lam


def run(name: str, model: str, sets: dict, src: Path, device: str, lams_from: str | None = None,
        evaluate: bool = True) -> dict:
    from components.settings import trainer_args
    from components.evaluate import EvalRequest, evaluate_detector
    from components.detectors.lagnet.data import LamValidator
    from components.train import TrainRequest, train_detector

    params, ds, work, data_yaml, lam = prepare(name, model, sets, src, lams_from)
    cfg = model_cfg(model, params, len(load_manifest(ds)["classes"]), work)
    args, _, seed = trainer_args(params)
    t = time.time()
    res = train_detector(TrainRequest(cfg, data_yaml, work / "train", args, device, seed, params.loss.iou, lam=lam))
    train_s = time.time() - t
    ev = params.evaluate
    out = {"run": name, "model": model, "profiles": list(PROFILES), "overrides": sets, "device": device,
           "train_seconds": round(train_s, 1),
           "epoch_s": round(train_s / max(1, res.epochs_run), 2), "epochs_run": res.epochs_run,
           "weights": "best epoch on val", "params_used": {k: params.get(k) for k in
                                                          ("train", "split", "loss", model if model != "baseline"
                                                           else "baseline", "lam")},
           "lams_from": lams_from, "framing": FRAMING, "machine": machine(), "command": cli()}
    for part in ("val", "test") if evaluate else ():
        out[part] = evaluate_detector(EvalRequest(res.best, data_yaml, part, args["imgsz"], ev.batch, ev.conf, ev.iou,
                                                  device, LamValidator if lam else None),
                                      {**ev.latency.plain(), "runs": 10}, work / f"eval-{part}", work / f"plots-{part}")
    RUNS.mkdir(parents=True, exist_ok=True)
    if evaluate:    # the per-image test stats (paired bootstrap) and the curves, as --evaluate keeps them
        import shutil

        from components.evaluate import PREDICTIONS

        shutil.copy(work / "eval-test" / PREDICTIONS, RUNS / f"{name}-test.npz")
        if (work / "train" / "results.csv").is_file():
            shutil.copy(work / "train" / "results.csv", RUNS / f"{name}-results.csv")
    (RUNS / f"{name}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({"run": name, "epoch_s": out["epoch_s"],
                      **({"val_mAP50": out["val"]["mAP50"], "test_mAP50": out["test"]["mAP50"]} if evaluate else {})}))
    return out


def evaluate_run(name: str, model: str, sets: dict, src: Path, lams_from: str | None, trained_on: str,
                 train_csv: Path | None) -> dict:
    """Evaluate ``name``'s best weights (trained here or on another machine) on val and test; the
    per-image test stats (for the paired bootstrap) go to ``runs/<name>-test.npz``."""
    import shutil

    from components.evaluate import PREDICTIONS, EvalRequest, evaluate_detector
    from components.detectors.lagnet.data import LamValidator, served_lam_validator

    weights = best_weights(name)
    params, _, work, data_yaml, lam = prepare(name, model, sets, src, lams_from)
    ev = params.evaluate
    out = {"run": name, "model": model, "overrides": sets, "lams_from": lams_from, "trained_on": trained_on,
           "weights": "best epoch on val", "framing": FRAMING, "machine": machine(), "command": cli()}
    if train_csv and train_csv.is_file():
        rows = read_results_csv(train_csv)
        out.update(epochs_run=len(rows), train_seconds=round(rows[-1]["time"], 1),
                   epoch_s=round(rows[-1]["time"] / len(rows), 2))
        shutil.copy(train_csv, RUNS / f"{name}-results.csv") if train_csv.resolve() != (
            RUNS / f"{name}-results.csv").resolve() else None
    validator = None
    if lam:     # score what is served: the LAM computed in the graph from the RGB batch
        g = params.lam
        validator = served_lam_validator(best_weights(lams_from), LamCoding.of(g))
        out["lam_source"] = "in-graph (as served)"
    for part in ("val", "test"):
        out[part] = evaluate_detector(EvalRequest(weights, data_yaml, part, params.train.imgsz, ev.batch, ev.conf,
                                                  ev.iou, "cpu", validator), ev.latency.plain(),
                                      work / f"eval-{part}", work / f"plots-{part}")
    if lam:     # the same weights on the LAM files (the training path), for the skew
        out["test_on_lam_files"] = evaluate_detector(EvalRequest(weights, data_yaml, "test", params.train.imgsz,
                                                                 ev.batch, ev.conf, ev.iou, "cpu", LamValidator),
                                                     ev.latency.plain(), work / "eval-test-files",
                                                     work / "plots-test-files")
    RUNS.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "eval-test" / PREDICTIONS, RUNS / f"{name}-test.npz")
    out["weights_kept"] = str(keep_weights(name))
    (RUNS / f"{name}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({"run": name, "val_mAP50": out["val"]["mAP50"], "test_mAP50": out["test"]["mAP50"]}))
    return out


def served_check(name: str, lams_from: str, sets: dict, src: Path, conf: float = 0.25,
                 limit: int | None = None) -> dict:
    """On every NEU-DET test image: the exported one-graph model (ONNX Runtime) vs the PyTorch
    pipeline it was exported from (what ``evaluate lagnet`` scores), and the served LAM vs the LAM
    files the model was trained on, both as boxes after NMS at ``conf`` (same count per image,
    matched IoU). Written to ``runs/<name>-served.json``."""
    import torch
    from ultralytics.utils.nms import non_max_suppression

    from components.deploy.export import letterbox_batch
    from components.detectors.lagnet.export import box_agreement, export_pipeline, load_pipeline, pipeline_parity
    from components.detectors.lagnet.data import file_lam_batch

    params = protocol_params(sets)
    ds, split = dataset(params, src)
    m = load_manifest(ds)
    path_of = {e["name"]: str(ds / e["image"]) for e in m["images"]}
    images = [path_of[n] for n in split["test"]][:limit]
    imgsz, g = params.train.imgsz, params.lam
    pipe = load_pipeline(best_weights(lams_from), best_weights(name), LamCoding.of(g))
    onnx_path = export_pipeline(pipe, WORK / name / "pipeline.onnx", imgsz, params.export.opset)
    out = {"run": name, "images": len(images), "conf": conf, "imgsz": imgsz, "onnx_vs_pytorch": None}
    parities, served, files = [], [], []
    for i in range(0, len(images), 32):
        chunk = images[i:i + 32]
        x = letterbox_batch(chunk, imgsz)
        parities.append(pipeline_parity(pipe, onnx_path, x, conf=conf))
        from_files = file_lam_batch(chunk, lam_dir(params, lams_from), imgsz, LamCoding.of(g))
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            served += non_max_suppression(pipe(xt), conf, 0.7)
            y = pipe.lagnet(from_files)
            files += non_max_suppression(y[0] if isinstance(y, (list, tuple)) else y, conf, 0.7)
    n = sum(p["images"] for p in parities)
    ious = [p["min_matched_iou"] for p in parities if p["min_matched_iou"] is not None]
    out["onnx_vs_pytorch"] = {"images": n, "same_count": sum(p["same_count"] for p in parities),
                              "boxes": sum(p["boxes"] for p in parities),
                              "unmatched": sum(p["unmatched"] for p in parities),
                              "min_matched_iou": min(ious) if ious else None,
                              "max_rel_diff": max(p["max_rel_diff"] for p in parities),
                              "provider": parities[0]["provider"]}
    out["served_vs_lam_files"] = box_agreement(served, files)
    out["command"] = cli()
    (RUNS / f"{name}-served.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    return out


def lam_skew(lams_from: str, sets: dict, src: Path) -> dict:
    """Pixel-level train/serve skew of the LAM on every NEU-DET test image, no LAGNet needed, on
    the batches the LAGNet validator really builds (``build_lam_dataset``: the served framing, a
    square ``imgsz`` letterbox). Served: ``LamMap`` on the batch's RGB. Now: the stored confidence
    map through the same loader and letterbox, coded and blended on the batch (``to_rgb_lam``,
    padding's confidence 0). "before" emulates plain grey 114 in the padding (the old colour
    files); NEU-DET's square images have no padding at this framing. Mean absolute difference, the
    share of values off by more than 8/255 and the same inside the image only. Written to
    ``runs/lam-skew-<run>.json``."""
    import torch
    from ultralytics.cfg import get_cfg

    from components.detectors.lagnet.lam import LamMap
    from components.detectors.lagnet.data import PAD, VALID_MIN, build_lam_dataset, to_rgb_lam
    from components.yolo import YOLO

    params = protocol_params(sets)
    ds, split = dataset(params, src)
    data_yaml = write_yolo_data_yaml(ds, split, WORK / f"lam-skew-{lams_from}")
    imgsz, g = params.train.imgsz, params.lam
    data = {**yaml.safe_load(data_yaml.read_text()), "lam": str(lam_dir(params, lams_from)), "channels": 6}
    val = build_lam_dataset(get_cfg(overrides={"imgsz": imgsz}), str(Path(data["path"]) / data["test"]), 16, data,
                            mode="val", stride=32)
    lam_map = LamMap(YOLO(str(best_weights(lams_from))).model.float().fuse().eval(), LamCoding.of(g)).eval()
    diffs = {"now": [], "before": [], "now_inside": [], "before_inside": []}
    shape = None
    for i in range(len(val)):
        x = val[i]["img"][None].float() / 255.0
        shape = tuple(x.shape[-2:])
        with torch.inference_mode():
            served = lam_map(x[:, :3])
        now = to_rgb_lam(x, LamCoding.of(g))[:, 3:]
        inside = (x[:, 4:5] > VALID_MIN).expand_as(now)
        before = torch.where(inside, now, torch.full_like(now, PAD / 255))
        for k, v in (("now", now), ("before", before)):
            d = (v - served).abs()
            diffs[k].append(d.flatten())
            diffs[f"{k}_inside"].append(d[inside])
    out = {"run": lams_from, "images": len(val), "imgsz": imgsz, "batch_shape": shape, "command": cli()}
    for k, v in diffs.items():
        d = torch.cat(v)
        out[k] = {"mean_abs": round(float(d.mean()), 5), "share_over_8_255": round(float((d > 8 / 255).float().mean()), 5)}
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / f"lam-skew-{lams_from}.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="run name (results/neu_cpu/runs/<run>.json)")
    ap.add_argument("--model", choices=["baseline", "dasc", "lagnet"])
    ap.add_argument("--set", nargs="*", default=[], help="dotted.key=value overrides on top of the profile")
    ap.add_argument("--lams-from", help="the baseline run whose LAMs LAGNet reads (made with --make-lams)")
    ap.add_argument("--make-lams", action="store_true", help="make the LAMs of every image (--lams-from run)")
    ap.add_argument("--no-eval", action="store_true", help="train only (evaluate later with --evaluate)")
    ap.add_argument("--evaluate", action="store_true", help="evaluate --run's best weights on val and test")
    ap.add_argument("--trained-on", default="this machine", help="where --evaluate's weights were trained")
    ap.add_argument("--train-csv", type=Path, help="--evaluate: the run's ultralytics results.csv")
    ap.add_argument("--table", nargs="*", metavar="ROLE=RUN", help="baseline=RUN dasc=RUN lagnet_s=RUN")
    ap.add_argument("--seeds", nargs="*", metavar="ROLE=RUN,RUN",
                    help="--table: seed-averaged rows, e.g. baseline=RUN,RUN lagnet_s=RUN,RUN")
    ap.add_argument("--served-check", action="store_true",
                    help="LAGNet --run: ONNX one-graph vs PyTorch pipeline, served vs file LAMs, all test images")
    ap.add_argument("--lam-skew", action="store_true",
                    help="pixel-level LAM skew (served vs file path, now and before) on the test images (--lams-from)")
    ap.add_argument("--profile", nargs="+", default=list(PROFILES), metavar="NAME",
                    help="profiles/<NAME>.yaml layered on params.yaml (default: neu-cpu, the CPU protocol)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--neu", type=Path, default=NEU, help="NEU-DET folder (IMAGES/, ANNOTATIONS/)")
    a = ap.parse_args()
    PROFILES[:] = a.profile
    if a.table is None and not (a.neu / "ANNOTATIONS").is_dir():
        raise SystemExit(f"NEU-DET not found at {a.neu}")
    if a.table is not None:
        from .neu_cpu_table import table
        table(dict(x.split("=", 1) for x in a.table),
              {k: v.split(",") for k, v in (x.split("=", 1) for x in a.seeds)} if a.seeds else None)
    elif a.served_check:
        served_check(a.run, a.lams_from, parse_sets(a.set), a.neu)
    elif a.lam_skew:
        lam_skew(a.lams_from, parse_sets(a.set), a.neu)
    elif a.evaluate:
        evaluate_run(a.run, a.model, parse_sets(a.set), a.neu, a.lams_from, a.trained_on, a.train_csv)
    elif a.make_lams:
        make_lams(a.lams_from, parse_sets(a.set), a.neu, a.device)
    elif a.run:
        if not a.model:
            raise SystemExit("--run needs --model")
        run(a.run, a.model, parse_sets(a.set), a.neu, a.device, a.lams_from, not a.no_eval)


if __name__ == "__main__":
    main()
