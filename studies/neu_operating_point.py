"""NEU-DET at an operating point (issue 28, item 7): an inspection line runs at one confidence
threshold per defect class, chosen on the validation split, not at mAP50.

    python -m studies.neu_operating_point --neu ../shared/datasets/neu-det \
        --runs baseline=cpu-base-mosaic dasc_proto=cpu-dasc-proto-s0 dasc=cpu-dasc-paper lagnet=cpu-lagnet-s-60

For each run of the CPU protocol (``studies.neu_cpu``; its model, ``--set`` overrides and LAM
source are read from ``results/neu_cpu/runs/<run>.json``) the kept best weights are scored on
val and test exactly as ``neu_cpu.evaluate_run`` scores them (``neu_cpu.prepare``'s data view,
the served framing, LAGNet through ``served_lam_validator``), keeping the per-image stats
(``components.evaluate.validate_keeping_stats``): val ones to ``runs/<run>-val.npz``, test ones
checked against the committed ``runs/<run>-test.npz`` (same mAP50). Then per class the highest
threshold whose validation box recall reaches ``--recall``
(``components.decision.choose_operating_point``, rule ``recall``) and, at those thresholds, box
recall / precision per class and the image escape rate on val and test with 95 % bootstrap
intervals over the images (``components.decision.line_errors``). Written to
``results/neu_operating_point.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from .common import RESULTS, cli, machine, write
from . import neu_cpu
from .neu_cpu import KEPT, NEU, RUNS, best_weights, dataset, lam_dir, make_lams, prepare, protocol_params

NAME = "neu_operating_point"
ROLES = {"baseline": "YOLO11n", "dasc_proto": "DASC-YOLO-n + box-supervised ProtoNet",
         "dasc": "DASC-YOLO-n (paper's blocks)", "lagnet": "LAGNet-s"}
DEFAULT_RUNS = ["baseline=cpu-base-mosaic", "dasc_proto=cpu-dasc-proto-s0", "dasc=cpu-dasc-paper",
                "lagnet=cpu-lagnet-s-60"]


def _rel(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def run_record(run: str) -> dict:
    """``runs/<run>.json`` as ``neu_cpu --evaluate`` wrote it (model, overrides, LAM source, mAP50s)."""
    f = RUNS / f"{run}.json"
    if not f.is_file():
        raise SystemExit(f"{f} not found: evaluate {run} with studies.neu_cpu first")
    return json.loads(f.read_text())


def ensure_lams(lams_from: str, sets: dict, src: Path) -> None:
    """The LAM folder ``prepare`` wants for LAGNet (the dataset reads it; the served validator
    replaces its maps by the in-graph LAM). Made with ``neu_cpu.make_lams`` when missing; the
    committed ``runs/lams-<run>-<norm>.json`` it rewrites is put back as it was."""
    params = protocol_params(sets)
    if (lam_dir(params, lams_from) / "lam_info.json").is_file():
        return
    record = RUNS / f"lams-{lams_from}-{params.lam.normalize}.json"
    kept = record.read_bytes() if record.is_file() else None
    try:
        make_lams(lams_from, sets, src, "cpu")
    finally:
        if kept is not None:
            record.write_bytes(kept)


def score(run: str, rec: dict, src: Path, workers: int) -> tuple[dict, dict]:
    """``run``'s val and test per-image stats, scored as ``neu_cpu.evaluate_run`` does."""
    import numpy as np

    from components.bootstrap import ImageStats, map50
    from components.evaluate import validate_keeping_stats
    from components.detectors.lagnet import LamCoding
    from components.detectors.lagnet.data import served_lam_validator
    from components.yolo import YOLO

    model, sets, lams_from = rec["model"], rec.get("overrides") or {}, rec.get("lams_from")
    if model == "lagnet":
        ensure_lams(lams_from, sets, src)
    params, _, _, data_yaml, lam = prepare(run, model, sets, src, lams_from)
    validator = None
    if lam:
        g = params.lam
        validator = served_lam_validator(best_weights(lams_from), LamCoding.of(g))
    ev, weights = params.evaluate, best_weights(run)
    out = {"run": run, "model": model, "overrides": sets, "lams_from": lams_from, "weights": _rel(weights),
           "validator": "served (LAM in the graph)" if lam else "ultralytics DetectionValidator",
           "framing": neu_cpu.FRAMING, "imgsz": params.train.imgsz, "conf": ev.conf, "iou": ev.iou}
    stats = {}
    for part in ("val", "test"):
        t = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            res, st = validate_keeping_stats(YOLO(str(weights)), validator, data=str(data_yaml), split=part,
                                             imgsz=params.train.imgsz, batch=ev.batch, conf=ev.conf, iou=ev.iou,
                                             device="cpu", rect=False, plots=False, verbose=False,
                                             workers=workers, project=tmp, name="val")
        stats[part] = st
        recorded = rec.get(part, {}).get("mAP50")
        out[part] = {"images": len(st), "mAP50": round(float(res.box.map50), 4), "recorded_mAP50": recorded,
                     "reproduces": recorded is not None and abs(round(float(res.box.map50), 4) - recorded) < 1e-9,
                     "seconds": round(time.time() - t, 1)}
    stats["val"].save(RUNS / f"{run}-val.npz")
    committed = RUNS / f"{run}-test.npz"
    if committed.is_file():
        c, s = ImageStats.load(committed), stats["test"]
        same_rows = (np.array_equal(c.images, s.images) and np.array_equal(c.pred_start, s.pred_start)
                     and np.array_equal(c.tp, s.tp) and np.array_equal(c.pred_cls, s.pred_cls))
        out["test_vs_committed_npz"] = {
            "committed_mAP50": round(map50(c), 6), "now_mAP50": round(map50(s), 6),
            "same_detections": bool(same_rows),
            "max_conf_diff": float(np.max(np.abs(c.conf.astype(float) - s.conf.astype(float)))) if same_rows
            and len(c.conf) else None}
    print(json.dumps({"run": run, **{p: out[p] for p in ("val", "test")},
                      "test_vs_committed_npz": out.get("test_vs_committed_npz")}), flush=True)
    return out, stats


def fmt(x: float | None, ci: list | None = None) -> str:
    if x is None:
        return "n/a"
    return f"{x:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def plot(results: dict, names: list[str], target: float, path: Path) -> Path:
    """Test recall and precision per class, one group of bars per detector, 95 % intervals as
    error bars, the recall target as a line."""
    import numpy as np
    from matplotlib.figure import Figure

    roles = list(results)
    fig = Figure(figsize=(11, 7.2))
    axes = fig.subplots(2, 1, sharex=True)
    width = 0.8 / len(names)
    colors = [f"C{i}" for i in range(len(names))]
    for ax, key in zip(axes, ("recall", "precision")):
        for j, c in enumerate(names):
            xs, ys, lo, hi = [], [], [], []
            for i, role in enumerate(roles):
                pc = results[role]["test"]["per_class"][c]
                v, ci = pc[key], pc.get(f"{key}_ci95")
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(np.nan if v is None else v)
                lo.append(0 if v is None or not ci else v - ci[0])
                hi.append(0 if v is None or not ci else ci[1] - v)
            ax.bar(xs, ys, width * 0.92, yerr=[lo, hi], capsize=2, color=colors[j], label=c,
                   error_kw={"lw": 0.8})
        if key == "recall":
            ax.axhline(target, color="k", ls="--", lw=1.2, label=f"target recall {target:.2f} (chosen on val)")
            ax.set_ylim(0.6, 1.02)
            ax.set_ylabel("test box recall (axis from 0.6)")
        else:
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("test box precision")
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=4, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    axes[1].set_xticks(range(len(roles)), [f"{ROLES.get(r, r)}\n{results[r]['run']}" for r in roles], fontsize=8)
    fig.suptitle(f"NEU-DET test split (360 images) at per-class thresholds chosen on val for recall {target:.2f}"
                 " (95 % bootstrap intervals)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=DEFAULT_RUNS, metavar="ROLE=RUN",
                    help="detectors to score (neu_cpu runs with kept weights)")
    ap.add_argument("--neu", type=Path, default=NEU, help="NEU-DET folder (IMAGES/, ANNOTATIONS/)")
    ap.add_argument("--recall", type=float, default=0.9, help="the validation box recall each class's threshold keeps")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the scoring is eager PyTorch)")
    ap.add_argument("--workers", type=int, default=0, help="dataloader workers (0: load in the main process)")
    a = ap.parse_args()
    if not (a.neu / "ANNOTATIONS").is_dir():
        raise SystemExit(f"NEU-DET not found at {a.neu}")
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    from components.data.canonical import load_manifest
    from components.decision import choose_operating_point, image_verdicts, line_errors
    from components.yolo import YOLO

    torch.set_num_threads(a.threads)
    runs = dict(x.split("=", 1) for x in a.runs)
    t0 = time.time()
    params = protocol_params({})
    ds, _ = dataset(params, a.neu)
    classes = list(load_manifest(ds)["classes"])
    names = dict(enumerate(classes))
    unseen = params.decision.unseen_conf
    results, rows = {}, []
    for role, run in runs.items():
        rec = run_record(run)
        if not (KEPT / f"{run}.pt").is_file():
            print(f"note: {run} has no kept weights in {KEPT}; using {best_weights(run)}")
        info, stats = score(run, rec, a.neu, a.workers)
        model_names = YOLO(str(best_weights(run))).names
        if [model_names[i] for i in sorted(model_names)] != classes:
            raise SystemExit(f"{run}'s class names {model_names} are not the manifest's {classes}")
        op = choose_operating_point(stats["val"], names, "recall", recall=a.recall, unseen_conf=unseen)
        val = line_errors(stats["val"], op, names, resamples=a.resamples, seed=a.seed)
        test = line_errors(stats["test"], op, names, resamples=a.resamples, seed=a.seed)
        for part, d in (("val", val), ("test", test)):     # defective images none of whose boxes was found
            v = image_verdicts(stats[part], op, names)
            d["images_ng"] = sum(x["verdict"] == "NG" for x in v)
            d["defective_none_found"] = sum(x["defective"] and x["matched"] == 0 for x in v)
        results[role] = {**info, "operating_point": op.to_dict(), "val": {**info["val"], **val},
                         "test": {**info["test"], **test}}
        label = ROLES.get(role, role)
        for c in classes:
            p, v, t = op.classes[c], val["per_class"][c], test["per_class"][c]
            rows.append({"detector": label, "class": c, "threshold": f"{p.threshold:.4f}",
                         "val recall": fmt(v["recall"]), "val precision": fmt(v["precision"]),
                         "test recall [95 % CI]": fmt(t["recall"], t.get("recall_ci95")),
                         "test precision [95 % CI]": fmt(t["precision"], t.get("precision_ci95")),
                         "test boxes": t["boxes"], "test fired": t["fired"],
                         "test false calls": t["fired"] - t["matched"], "flag": p.flag or ""})
        tb = test["per_class"]
        rows.append({"detector": f"**{label}** ({run})", "class": "**all: image verdict**",
                     "threshold": "per class",
                     "val recall": f"escape {fmt(val['escape_rate'], val.get('escape_ci95'))}",
                     "test recall [95 % CI]": f"**escape rate {fmt(test['escape_rate'], test.get('escape_ci95'))}** "
                                              f"({test['escapes']} of {test['defective_images']} defective images "
                                              f"judged OK; NG {test['images_ng']}; no labelled box found on "
                                              f"{test['defective_none_found']})",
                     "test precision [95 % CI]": f"overkill rate: not measurable ({test['clean_images']} "
                                                 "defect-free test images)",
                     "test boxes": sum(x["boxes"] for x in tb.values()),
                     "test fired": sum(x["fired"] for x in tb.values()),
                     "test false calls": sum(x["fired"] - x["matched"] for x in tb.values()),
                     "flag": "; ".join(f"{c}: {f}" for c, f in op.flags.items())})
    seconds = round(time.time() - t0, 1)
    m = machine()
    payload = {"command": cli(), "machine": m, "seconds": seconds, "recall_target": a.recall, "rule": "recall",
               "classes": classes, "resamples": a.resamples, "seed": a.seed, "runs": runs, "results": results}
    reprod = "; ".join(f"{r['run']}: val {r['val']['mAP50']:.4f} (recorded {r['val']['recorded_mAP50']}), "
                       f"test {r['test']['mAP50']:.4f} (recorded {r['test']['recorded_mAP50']})"
                       + ("" if r.get("test_vs_committed_npz", {}).get("same_detections") else
                          ", test detections differ from the committed npz")
                       for r in results.values())
    notes = (
        f"Notes: per class, the threshold is the highest confidence whose **validation** box recall reaches "
        f"{a.recall:.2f} (`components.decision.choose_operating_point`, rule `recall`; placed halfway to the next "
        f"lower score), chosen on the {results[next(iter(results))]['val']['images']} validation images; the test "
        f"split ({results[next(iter(results))]['test']['images']} images) only reports. Box recall = matched fired "
        "boxes / labelled boxes, precision = matched fired boxes / fired boxes (ultralytics' IoU-0.50 matching, "
        f"kept per image); test false calls = fired - matched (false positives, duplicates and boxes below IoU 0.5). "
        f"Intervals: 95 % percentile bootstrap over the images ({a.resamples} resamples, seed {a.seed}, "
        "`components.decision.line_errors`); each interval is one detector's, so where two detectors' intervals "
        "overlap the difference between them is not shown. Image verdict: NG when any detection fires; escape "
        "rate = defective images judged OK / defective images. Where (nearly) every image is NG (low thresholds fire some "
        "detection on every image), a 0 escape rate says little; 'no labelled box found' counts the defective images none of "
        "whose labelled boxes is matched by a fired box (`components.decision.image_verdicts`), a stricter miss. "
        "NEU-DET has no defect-free images (every image "
        "holds at least one labelled box), so the overkill rate (clean images judged NG) cannot be measured here; "
        "it is not estimated. Scoring: eager PyTorch at the served framing (square 224 px letterbox, conf "
        f"{params.evaluate.conf}, NMS IoU {params.evaluate.iou}), as `studies.neu_cpu --evaluate`; LAGNet-s with "
        "the LAM computed in the graph from the RGB batch (`served_lam_validator`). The pipeline chooses the "
        "shipped thresholds on the ONNX graph. ONNX vs PyTorch on these weights was checked for LAGNet-s only "
        "(neu_cpu.md notes: the one-graph ONNX and the PyTorch pipeline give the same boxes at conf 0.25 on 360/360 "
        "test images, min matched IoU 0.9998); the other three were not exported here (onnx_vs_eager.md: a DASC-YOLO "
        "graph agrees to 1.7e-06 relative), and several thresholds here lie below 0.25, where no box check was made. "
        f"Per-image val stats: `results/neu_cpu/runs/<run>-val.npz`. mAP50 reproduced here vs the run records: "
        f"{reprod}. Wall time {seconds} s ({m['torch_threads']} torch thread).")
    columns = ["detector", "class", "threshold", "val recall", "val precision", "test recall [95 % CI]",
               "test precision [95 % CI]", "test boxes", "test fired", "test false calls", "flag"]
    md = write(NAME, payload, rows, columns,
               f"NEU-DET at an operating point: per-class thresholds for val recall {a.recall:.2f} "
               "(CPU protocol, seed 0)", notes)
    png = plot(results, classes, a.recall, RESULTS / f"{NAME}.png")
    print(json.dumps({"md": str(md), "png": str(png), "seconds": seconds}))


if __name__ == "__main__":
    main()
