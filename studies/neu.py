"""Detectors on the real NEU-DET (from ../shared) at the CPU protocol, beside the papers' numbers.

    python -m studies.neu --model baseline            # one model per process (run several at once)
    python -m studies.neu --model dasc
    python -m studies.neu --table                     # merge into results/neu_dasc.{json,md}

    # LAGNet (issue 4), 7:3 split as the LAGNet paper:
    python -m studies.neu --model baseline --test-ratio 0.3
    python -m studies.neu --lams --test-ratio 0.3      # LAMs of all images from that baseline
    python -m studies.neu --model lagnet_s --test-ratio 0.3   # and --model lagnet, in parallel
    python -m studies.neu --onnx lagnet_s --test-ratio 0.3    # end-to-end ONNX vs PyTorch, 20 test images
    python -m studies.neu --table-lagnet --test-ratio 0.3     # results/neu_lagnet.{json,md}

Protocol (issue 3): imgsz 224, 60 epochs, seed 0, 8:2 stratified train/test split (no
validation split: ultralytics' per-epoch validation runs on the test images for the curves,
but the reported numbers are the *last* epoch's weights on the test split, so no model
selection ever sees the test set). Every other training setting is params.yaml's ``train``
section; the model is params.yaml's ``baseline``/``dasc`` section and ``loss.iou``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from components.settings import load_settings
from components.data.canonical import load_manifest
from components.data.importers import ImportOptions, import_dataset
from components.data.split import SplitSpec, make_split
from components.data.views import write_yolo_data_yaml
from components.detectors.lagnet import LamCoding
from components.evaluate import EvalRequest, evaluate_detector
from components.train import TrainRequest, train_detector
from pipelines.common import trainer_args

from .common import RESULTS, cli, machine, write

NEU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det"
WORK = Path(".cache/bench/neu")
NAMES = {"baseline": "YOLO11n (ours)", "dasc": "DASC-YOLO-n (ours)", "lagnet": "LAGNet (ours)",
         "lagnet_s": "LAGNet-s (ours)"}
LAGNET_VARIANT = {"lagnet": "large", "lagnet_s": "small"}
# dasc-yolo.md Table 4 (NEU-DET, large models at the paper's own protocol): AP per class, mAP
PAPER = {
    "YOLO11 (paper, large)": {"crazing": 49.8, "inclusion": 76.7, "patches": 93.7, "pitted_surface": 85.2,
                              "rolled-in_scale": 64.3, "scratches": 84.2, "mAP50": 75.6},
    "DASC-YOLO (paper, large)": {"crazing": 55.7, "inclusion": 79.6, "patches": 94.9, "pitted_surface": 84.9,
                                 "rolled-in_scale": 68.5, "scratches": 91.8, "mAP50": 79.2},
}


def dataset(test_ratio: float, seed: int) -> tuple[Path, dict]:
    ds = WORK / "neu-det"
    if not (ds / "manifest.json").is_file():
        import_dataset(NEU, "neu-det", WORK, ImportOptions("voc", clip_px=2))
    m = load_manifest(ds)
    split = make_split(m["images"], m["classes"], SplitSpec(test_ratio, 0.0, seed, 0))
    split["val"] = split["test"]          # curves only; see the module docstring
    return ds, split


def split_tag(test_ratio: float) -> str:
    """``0.2`` -> ``r82`` (the 8:2 split of DASC-YOLO), ``0.3`` -> ``r73`` (LAGNet's 7:3)."""
    t = round(test_ratio * 10)
    return f"r{10 - t}{t}"


def lam_dir(test_ratio: float) -> Path:
    return WORK / split_tag(test_ratio) / "lams"


def baseline_weights(test_ratio: float) -> Path:
    w = WORK / split_tag(test_ratio) / "run-baseline" / "train" / "weights" / "last.pt"
    if not w.is_file():
        raise SystemExit(f"{w} missing: run --model baseline --test-ratio {test_ratio} first")
    return w


def make_all_lams(imgsz: int, test_ratio: float, seed: int) -> dict:
    """In-sample LAMs (the paper's way) of every image from the benchmark's baseline (last epoch)."""
    import numpy as np
    from tqdm import tqdm

    from components.detectors.lagnet.lam import lam_map, make_lams
    from components.yolo import YOLO

    params = load_settings()
    ds, split = dataset(test_ratio, seed)
    m = load_manifest(ds)
    paths = {e["name"]: ds / e["image"] for e in m["images"]}
    boxes = {str(paths[e["name"]]): np.asarray([b[1:] for b in e["boxes"]]) for e in m["images"]}
    lam = params.lam
    t = time.time()
    with tqdm(total=len(paths), desc="LAMs", unit="img") as bar:
        made = make_lams(lam_map(YOLO(str(baseline_weights(test_ratio))).model, LamCoding(lam.alpha, lam.beta)),
                         list(paths.values()), lam_dir(test_ratio), imgsz, lam.batch, bar.update, boxes)
    secs = time.time() - t
    stats = {}
    for part in ("train", "test"):
        rows = [made[str(paths[n])] for n in split[part]]
        stats[part] = {k: round(float(np.nanmean([r[k] for r in rows])), 4) for k in ("conf_in", "conf_out")}
    info = {"images": len(made), "seconds": round(secs, 1), "images_per_s": round(len(made) / secs, 2),
            "per_split": stats, "mode": "in_sample", "command": cli()}
    (lam_dir(test_ratio) / "lam_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))
    return info


def run_model(model: str, epochs: int, imgsz: int, test_ratio: float, seed: int) -> dict:
    from components.detectors.lagnet.data import LamValidator, lam_data_yaml
    from components.detectors import model_cfg

    params = load_settings()
    lagnet = model in LAGNET_VARIANT
    if lagnet:
        params = params.override({"lagnet.variant": LAGNET_VARIANT[model]}, f"benchmark model {model}")
        if not (lam_dir(test_ratio) / "lam_info.json").is_file():
            raise SystemExit(f"no LAMs in {lam_dir(test_ratio)}: run --lams --test-ratio {test_ratio} first")
    ds, split = dataset(test_ratio, seed)
    tag = split_tag(test_ratio)
    work = WORK / tag / f"run-{model}"
    data_yaml = write_yolo_data_yaml(ds, split, work / "data")
    if lagnet:
        data_yaml = lam_data_yaml(data_yaml, lam_dir(test_ratio), LamCoding.of(params.lam))
    cfg = model_cfg("lagnet" if lagnet else model, params, len(load_manifest(ds)["classes"]), work)
    args, _, _ = trainer_args(params)
    args.update(epochs=epochs, imgsz=imgsz)
    t = time.time()
    res = train_detector(TrainRequest(cfg, data_yaml, work / "train", args, "cpu", seed, params.loss.iou, lam=lagnet))
    train_s = time.time() - t
    ev = params.evaluate
    metrics = evaluate_detector(EvalRequest(res.last, data_yaml, "test", imgsz, ev.batch, ev.conf, ev.iou, "cpu",
                                            LamValidator if lagnet else None),
                                ev.latency.plain(), work / "eval", work / "eval-plots")
    out = {"model": model, "epochs": epochs, "imgsz": imgsz, "test_ratio": test_ratio, "seed": seed,
           "iou_loss": params.loss.iou, "train_args": args, "train_seconds": round(train_s),
           "weights": "last epoch", "metrics": metrics,
           "model_params": params.get("lagnet" if lagnet else model), "command": cli()}
    (RESULTS / "neu" / tag).mkdir(parents=True, exist_ok=True)
    (RESULTS / "neu" / tag / f"{model}.json").write_text(json.dumps(out, indent=2))
    return out


def table() -> None:
    rows, runs = [], {}
    for f in sorted((RESULTS / "neu" / "r82").glob("*.json")):
        r = json.loads(f.read_text())
        runs[r["model"]] = r
        m = r["metrics"]
        rows.append({"model": NAMES.get(r["model"], r["model"]), "mAP50": round(100 * m["mAP50"], 1),
                     "P": round(100 * m["precision"], 1), "R": round(100 * m["recall"], 1),
                     "F1": round(100 * m["F1"], 1), "params": f"{m['params'] / 1e6:.2f}M",
                     "GFLOPs@640": m["GFLOPs"], "FPS (CPU, b1)": m["fps"],
                     **{c: round(100 * v, 1) for c, v in m["per_class_AP50"].items()},
                     "train min": round(r["train_seconds"] / 60, 1)})
    for name, p in PAPER.items():
        rows.append({"model": name, **p, "P": "", "R": "", "F1": ""})
    classes = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    cols = ["model", "mAP50", "P", "R", "F1", *classes, "params", "GFLOPs@640", "FPS (CPU, b1)", "train min"]
    command = "; ".join([*(f"python -m studies.neu --model {m} --epochs {r['epochs']} --imgsz {r['imgsz']} "
                           f"--test-ratio {r['test_ratio']} --seed {r['seed']}" for m, r in runs.items()),
                         "python -m studies.neu --table"])
    payload = {"machine": machine(), "command": command, "runs": runs, "paper": PAPER}
    threads = sorted({r["metrics"]["latency_threads"] for r in runs.values()})
    md = write("neu_dasc", payload, rows, cols,
               "NEU-DET, CPU protocol (imgsz 224, 60 epochs, seed 0, 8:2 split): baseline vs DASC-YOLO", (
        "Notes: AP50 in %, last-epoch weights on the 360 test images (no model selection on them). "
        "Training settings = params.yaml `train` (AdamW lr0 0.003, no mosaic, batch 16), box loss "
        f"{next(iter(runs.values()))['iou_loss'] if runs else ''}, n scale, from scratch. FPS: eager "
        f"PyTorch forward, batch 1, {threads} torch thread(s) (ultralytics' CPU default on this 2-core "
        "machine); the two models trained at the same time, one per core, so timings include that load. "
        "The paper rows are its Table 4: large models, 640 px, its own training protocol."))
    print(md)


def onnx_check(model: str, imgsz: int, test_ratio: float, seed: int, n: int = 20, conf: float = 0.25) -> dict:
    """The end-to-end ONNX graph (baseline -> LAM -> LAGNet) vs the PyTorch pipeline on ``n`` test
    images: boxes after NMS at ``conf`` (count per image, IoU of matched boxes). Also the
    in-graph LAM vs the training path (LAM files, letterboxed), both in PyTorch."""
    import torch
    from ultralytics.utils.nms import non_max_suppression

    from components.deploy.export import letterbox_batch
    from components.detectors.lagnet.export import box_agreement, export_pipeline, load_pipeline, pipeline_parity
    from components.detectors.lagnet.data import file_lam_batch

    params = load_settings()
    ds, split = dataset(test_ratio, seed)
    m = load_manifest(ds)
    path_of = {e["name"]: str(ds / e["image"]) for e in m["images"]}
    images = [path_of[nm] for nm in split["test"][:n]]
    weights = WORK / split_tag(test_ratio) / f"run-{model}" / "train" / "weights" / "last.pt"
    lam = params.lam
    pipe = load_pipeline(baseline_weights(test_ratio), weights, LamCoding(lam.alpha, lam.beta))
    onnx_path = export_pipeline(pipe, WORK / split_tag(test_ratio) / f"{model}-pipeline.onnx", imgsz,
                                params.export.opset)
    x = letterbox_batch(images, imgsz)
    parity = pipeline_parity(pipe, onnx_path, x, conf=conf)
    # a weakly trained model may have no score above 0.25: compare boxes at a low threshold too
    low = pipeline_parity(pipe, onnx_path, x, conf=0.05)
    # training path: the confidence-map files, letterboxed like the images, coded and blended
    files = file_lam_batch(images, lam_dir(test_ratio), imgsz, LamCoding(lam.alpha, lam.beta))
    lams = files[:, 3:].numpy()
    with torch.inference_mode():
        ingraph = pipe(torch.from_numpy(x))
        filepath = pipe.lagnet(files)
        filepath = filepath[0] if isinstance(filepath, (list, tuple)) else filepath
        lam_diff = float((pipe.lam(torch.from_numpy(x)) - torch.from_numpy(lams)).abs().mean())
        max_score = [round(float(v), 4) for v in ingraph[:, 4:].amax((1, 2))]
    vs_files = box_agreement(non_max_suppression(ingraph, 0.05, 0.7), non_max_suppression(filepath, 0.05, 0.7))
    out = {"model": model, "images": len(images), "conf": conf, "imgsz": imgsz, "onnx": str(onnx_path),
           "onnx_vs_pytorch": parity, "onnx_vs_pytorch_conf0.05": low, "max_class_score_per_image": max_score,
           "ingraph_lam_vs_lam_files_conf0.05": {**vs_files, "mean_abs_lam_diff": lam_diff},
           "command": cli()}
    (RESULTS / "neu" / split_tag(test_ratio)).mkdir(parents=True, exist_ok=True)
    (RESULTS / "neu" / split_tag(test_ratio) / f"onnx_{model}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=1))
    return out


def table_lagnet(test_ratio: float) -> None:
    from components.detectors.lagnet.config import PAPER_TABLE1

    tag = split_tag(test_ratio)
    classes = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    rows, runs = [], {}
    for model in ("baseline", "lagnet_s", "lagnet"):
        f = RESULTS / "neu" / tag / f"{model}.json"
        if not f.is_file():
            continue
        r = json.loads(f.read_text())
        runs[model] = r
        mt = r["metrics"]
        rows.append({"model": NAMES[model], "mAP50": round(100 * mt["mAP50"], 1), "P": round(100 * mt["precision"], 1),
                     "R": round(100 * mt["recall"], 1), **{c: round(100 * mt["per_class_AP50"][c], 1) for c in classes},
                     "params": f"{mt['params'] / 1e6:.2f}M", "GFLOPs@640": mt["GFLOPs"],
                     "FPS (CPU, b1, detector only)": mt["fps"], "epochs": r["epochs"],
                     "train min": round(r["train_seconds"] / 60, 1)})
    for name, pr in PAPER_TABLE1.items():
        rows.append({"model": name, "mAP50": pr["mAP50"], **{c: pr[c] for c in classes}, "params": f"{pr['params_M']}M"})
    extras = {}
    for f in sorted((RESULTS / "neu" / tag).glob("onnx_*.json")):
        extras[f.stem] = json.loads(f.read_text())
    lam_info = lam_dir(test_ratio) / "lam_info.json"
    lam_stats = json.loads(lam_info.read_text()) if lam_info.is_file() else None
    cols = ["model", "mAP50", "P", "R", *classes, "params", "GFLOPs@640", "FPS (CPU, b1, detector only)", "epochs",
            "train min"]
    epochs = sorted({r["epochs"] for r in runs.values()})
    command = "; ".join([*(r["command"] for r in runs.values()), *(lam_stats or {}).get("command", "").split("\0"),
                         *(v["command"] for v in extras.values()), cli()])
    payload = {"machine": machine(), "command": command.replace("; ;", ";"), "runs": runs, "paper": PAPER_TABLE1,
               "onnx": extras, "lams": lam_stats}
    notes = ["Notes: AP50 in %, last-epoch weights on the 540 test images. Training settings = params.yaml "
             "`train` (AdamW lr0 0.003, no mosaic, batch 16), box loss ciou, from scratch (no ImageNet weights for "
             "MobileNetV3 or YOLO11), LAGNet width from params.yaml `lagnet`. LAGNet rows: LAMs made in-sample (as "
             "the paper) by the YOLO11n row's last-epoch weights. FPS = the detector alone (LAGNet: 6-channel "
             "input, LAM not included). Paper rows: lagnet.md Table 1 (640 px, 500 epochs, RTX 4090, YOLOv5 "
             "anchor head, its own neck width)."]
    if lam_stats:
        notes.append(f"LAMs: {lam_stats['images']} images at {lam_stats['images_per_s']} img/s; mean baseline "
                     f"confidence inside / outside ground-truth boxes: train {lam_stats['per_split']['train']}, "
                     f"test {lam_stats['per_split']['test']} (the train/test gap is the in-sample label leak).")
    for k, v in extras.items():
        o, lo, g = v["onnx_vs_pytorch"], v["onnx_vs_pytorch_conf0.05"], v["ingraph_lam_vs_lam_files_conf0.05"]
        notes.append(f"End-to-end ONNX graph vs the PyTorch pipeline ({v['model']}, {v['images']} test images): at "
                     f"conf {v['conf']} same box count on {o['same_count']}/{o['images']} images ({o['boxes']} boxes; "
                     f"highest class score per image {min(v['max_class_score_per_image'])}-"
                     f"{max(v['max_class_score_per_image'])}); at conf 0.05 same count on {lo['same_count']}/"
                     f"{lo['images']} images, {lo['boxes']} boxes, {lo['unmatched']} unmatched, min matched IoU "
                     f"{lo['min_matched_iou']}; raw outputs max |diff| {o['max_abs_diff']:.2e} (relative "
                     f"{o['max_rel_diff']:.1e}). In-graph LAM vs the LAM files (training path), conf 0.05: same count "
                     f"{g['same_count']}/{g['images']}, {g['unmatched']} unmatched, min matched IoU {g['min_matched_iou']}, "
                     f"mean |LAM diff| {g['mean_abs_lam_diff']:.4f}.")
    md = write("neu_lagnet", payload, rows, cols,
               f"NEU-DET, CPU protocol (imgsz 224, {epochs} epochs, seed 0, 7:3 split): baseline vs LAGNet-s vs LAGNet",
               "\n".join(notes))
    print(md.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["baseline", "dasc", "lagnet", "lagnet_s"])
    ap.add_argument("--lams", action="store_true", help="make the LAMs from this split's baseline")
    ap.add_argument("--onnx", choices=["lagnet", "lagnet_s"], help="end-to-end ONNX vs PyTorch on 20 test images")
    ap.add_argument("--table-lagnet", action="store_true", help="results/neu_lagnet.{json,md}")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--imgsz", type=int, default=224)
    ap.add_argument("--test-ratio", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", action="store_true", help="merge results/neu/*.json into neu_dasc.md")
    a = ap.parse_args()
    if not (NEU / "ANNOTATIONS").is_dir():
        raise SystemExit(f"NEU-DET not found at {NEU}")
    if a.lams:
        make_all_lams(a.imgsz, a.test_ratio, a.seed)
    if a.model:
        r = run_model(a.model, a.epochs, a.imgsz, a.test_ratio, a.seed)
        print(json.dumps({k: r["metrics"][k] for k in ("mAP50", "precision", "recall", "F1")}))
    if a.onnx:
        onnx_check(a.onnx, a.imgsz, a.test_ratio, a.seed)
    if a.table:
        table()
    if a.table_lagnet:
        table_lagnet(a.test_ratio)


if __name__ == "__main__":
    main()
