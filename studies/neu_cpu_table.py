"""``results/neu_cpu.{json,md}`` from the evaluated runs of ``studies/neu_cpu.py``: every
detector beside the baseline with its test mAP50 gain and a paired-bootstrap 95 % interval (2000
resamples of the 360 test images, ultralytics' AP per resample), params, GFLOPs, CPU FPS
measured back to back in this process (so the ratios are fair), and the papers' figures.

    python -m studies.neu_cpu --table baseline=base-mosaic dasc=dasc-gate-local control=base-s1-mosaic \\
        lagnet_s=cpu-lagnet-s-e36@base-e36
``control``: the baseline trained with another seed, the same comparison: how large a "gain"
training noise alone makes. ``--seeds baseline=RUN,RUN lagnet_s=RUN,RUN``: seed-averaged rows, the
gain of each group's mean mAP50 over the baseline group's, every run resampled on the same test
images (``components.bootstrap.seed_bootstrap``), with each group's seed spread, drawn in
``results/neu_cpu.png`` (every seed's test mAP50, the training curves, per-class AP50). ``ROLE=RUN@REF``: the gain of RUN is measured against the baseline run
REF (trained with the same epochs as RUN) instead of the main baseline.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from components.settings import load_profile

from .common import RESULTS, VAL_MAP50, cli, machine, profile_params, read_results_csv, write
from .neu_cpu import PROFILE, RUNS, best_weights

CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
NAMES = {"baseline": "YOLO11n (ours)", "dasc": "DASC-YOLO-n (ours)", "lagnet_s": "LAGNet-s (ours)",
         "control": "YOLO11n, seed 1 (control)", "baseline_e36": "YOLO11n (ours), 36 epochs",
         "dasc_gate_local": "DASC-YOLO-n, zero gates + CSA local (ours)",
         "dasc_proto": "DASC-YOLO-n + box-supervised ProtoNet (ours)",
         "gpu_baseline": "YOLO11n (ours), trained on the H200",
         "gpu_control": "YOLO11n, seed 1, trained on the H200 (control)"}


def display(role: str) -> str:
    """A row's name: from NAMES, else ``<role>_s<N>`` read as that role's seed N (``lagnet_s_s2``
    -> 'LAGNet-s, seed 2 (ours)'), else the role itself."""
    if role in NAMES:
        return NAMES[role]
    m = re.fullmatch(r"(.+)_s(\d+)", role)
    if m and m.group(1) in ("control", "baseline"):
        return f"YOLO11n, seed {m.group(2)} (control)"
    if m and m.group(1) in NAMES:
        return f"{NAMES[m.group(1)].removesuffix(' (ours)')}, seed {m.group(2)} (ours)"
    return role
# dasc-yolo.md Table 4 (NEU-DET; large models, 640 px, the paper's protocol) and Table 3 (n scale,
# its leather set: params, FPS); lagnet.md Table 1 (NEU-DET, 640 px, 500 epochs, RTX 4090)
PAPERS = {
    "YOLO11 (DASC-YOLO paper, Table 4)": {"mAP50": 75.6, "crazing": 49.8, "inclusion": 76.7, "patches": 93.7,
                                          "pitted_surface": 85.2, "rolled-in_scale": 64.3, "scratches": 84.2},
    "DASC-YOLO (paper, Table 4)": {"mAP50": 79.2, "crazing": 55.7, "inclusion": 79.6, "patches": 94.9,
                                   "pitted_surface": 84.9, "rolled-in_scale": 68.5, "scratches": 91.8,
                                   "params_M": 3.02, "fps": 70.3},
    "YOLOv5 (LAGNet paper, Table 1)": {"mAP50": 76.2, "crazing": 38.4, "inclusion": 82.0, "patches": 94.8,
                                       "pitted_surface": 83.3, "rolled-in_scale": 64.5, "scratches": 94.0,
                                       "params_M": 46.1, "fps": 109.3},
    "LAGNet-s (paper, Table 1)": {"mAP50": 84.9, "crazing": 63.6, "inclusion": 85.3, "patches": 94.4,
                                  "pitted_surface": 90.9, "rolled-in_scale": 80.5, "scratches": 95.5,
                                  "params_M": 8.9, "fps": 73.6},
}
TARGETS = {"dasc": 0.691, "lagnet_s": 0.733}      # issue 10 (CPU protocol)


FPS_ROUNDS, FPS_PER_ROUND = 7, 10      # _fps: rounds, and timings of every graph per round


def _fps(runs: dict[str, dict], rounds: int = FPS_ROUNDS, per_round: int = FPS_PER_ROUND) -> dict[str, dict]:
    """CPU latency of every detector, 1 torch thread, batch 1; LAGNet also as the served graph
    (baseline -> LAM -> LAGNet). The graphs are measured in turns: ``rounds`` rounds, each timing
    every graph ``per_round`` times (median), and a graph's figure is the median of its rounds, so
    that all share the machine's state (one graph after the other gave the same YOLO11n graph 55.9
    FPS first and 38-41 later in one run)."""
    import numpy as np
    import torch

    from components.evaluate import measure_latency
    from components.detectors.lagnet.export import load_pipeline
    from components.yolo import YOLO

    torch.set_num_threads(1)
    imgsz = profile_params([PROFILE.stem]).train.imgsz
    graphs = {}
    for role, r in runs.items():
        try:
            w = best_weights(r["run"])
        except SystemExit:                   # an earlier session's weights that were not kept
            continue
        graphs[role] = YOLO(str(w)).model.float().fuse().eval()
        if r["model"] == "lagnet":
            graphs[role + "_pipeline"] = load_pipeline(best_weights(r["lams_from"]), w).eval()
    rows: dict[str, list[dict]] = {k: [] for k in graphs}
    for i in range(rounds):
        for key, g in graphs.items():
            rows[key].append(measure_latency(g, imgsz, 1, per_round, 3 if i == 0 else 1, "cpu"))
    out = {}
    for key, ms in rows.items():
        med = float(np.median([m["latency_ms_per_batch"] for m in ms]))
        out[key] = {**ms[0], "latency_ms_per_batch": round(med, 3), "latency_ms_per_image": round(med, 3),
                    "fps": round(1000 / med, 2), "latency_runs": rounds * per_round,
                    "latency_rounds": rounds, "latency_round_fps": [m["fps"] for m in ms]}
    return out


def seed_rows(seeds: dict[str, list[str]]) -> tuple[dict, list[dict]]:
    """Seed-averaged comparison of every group in ``seeds`` with ``seeds["baseline"]``."""
    from components.bootstrap import ImageStats, seed_bootstrap

    if "baseline" not in seeds:
        raise SystemExit("--seeds needs baseline=RUN,RUN")
    stats = {role: [ImageStats.load(RUNS / f"{r}-test.npz") for r in runs] for role, runs in seeds.items()}
    tests = {role: [json.loads((RUNS / f"{r}.json").read_text())["test"] for r in runs] for role, runs in seeds.items()}
    out, rows = {}, []
    for role, runs in seeds.items():
        g = None if role == "baseline" else seed_bootstrap(stats["baseline"], stats[role], 2000, 0)
        per_class = {c: sum(t["per_class_AP50"][c] for t in tests[role]) / len(runs) for c in CLASSES}
        out[role] = {"runs": runs, "mAP50_each": [t["mAP50"] for t in tests[role]],
                     "mAP50_mean": sum(t["mAP50"] for t in tests[role]) / len(runs), "per_class_mean": per_class,
                     "gain_vs_baseline": g}
        spread = max(out[role]["mAP50_each"]) - min(out[role]["mAP50_each"])
        rows.append({"model": f"{display(role)}, mean of {len(runs)} seeds ({', '.join(runs)})",
                     "mAP50": round(100 * out[role]["mAP50_mean"], 1),
                     "gain vs baseline [95 % CI]": (
                         f"{100 * g['mAP50']:+.1f} [{100 * g['ci95'][0]:+.1f}, {100 * g['ci95'][1]:+.1f}] (seed "
                         f"means; images drawn){_two_level(g)}") if g else "",
                     **{c: round(100 * v, 1) for c, v in per_class.items()},
                     "trained on": f"seed spread {100 * spread:.1f} points"})
    return out, rows


def seed_figure(seeds: dict[str, list[str]], averaged: dict, path: Path) -> Path:
    """``path`` (PNG): the seed-averaged comparison drawn. Left: every run's test mAP50 per detector,
    its group mean as a bar, the gain's interval (runs and images drawn) beside it. Middle: every
    run's validation mAP50 per epoch (its results.csv). Right: each detector's seed-mean test AP50
    per class, with issue 10's crazing target."""

    from matplotlib.figure import Figure

    colours = dict(zip(seeds, ["tab:grey", "tab:red", "tab:blue", "tab:green", "tab:purple"]))
    fig = Figure(figsize=(15, 4.6))
    ax_runs, ax_curves, ax_cls = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.3, 1.4]})
    for i, (role, runs) in enumerate(seeds.items()):
        each, mean = averaged[role]["mAP50_each"], averaged[role]["mAP50_mean"]
        ax_runs.scatter([i] * len(each), [100 * v for v in each], color=colours[role], zorder=3)
        ax_runs.hlines(100 * mean, i - 0.3, i + 0.3, color=colours[role], lw=2)
        g = averaged[role]["gain_vs_baseline"]
        if g:
            lo, hi = g.get("ci95_runs_and_images", g["ci95"])
            ax_runs.annotate(f"{100 * g['mAP50']:+.1f}\n[{100 * lo:+.1f}, {100 * hi:+.1f}]", (i + 0.32, 100 * mean),
                             va="center", fontsize=8)
        for run in runs:
            rows = read_results_csv(RUNS / f"{run}-results.csv")
            ax_curves.plot([int(r["epoch"]) for r in rows], [100 * r[VAL_MAP50] for r in rows],
                           color=colours[role], lw=1, alpha=0.8, label=display(role) if run == runs[0] else None)
    ax_runs.set_xticks(range(len(seeds)), [display(r).removesuffix(" (ours)") + f"\n{len(v)} seeds"
                                           for r, v in seeds.items()], fontsize=8)
    ax_runs.set_xlim(-0.5, len(seeds) - 0.1)
    ax_runs.set_ylabel("test mAP50 (%)")
    ax_runs.set_title("each seed; bar: mean; gain vs YOLO11n [95 % CI, runs and images drawn]", fontsize=8)
    ax_curves.set_xlabel("epoch")
    ax_curves.set_ylabel("validation mAP50 (%)")
    ax_curves.set_title("training curves (validation split)", fontsize=8)
    ax_curves.legend(fontsize=8, loc="lower right")
    width = 0.8 / len(seeds)
    for i, role in enumerate(seeds):
        per_class = averaged[role]["per_class_mean"]
        ax_cls.bar([j + i * width for j in range(len(CLASSES))], [100 * per_class[c] for c in CLASSES], width,
                   color=colours[role], label=display(role).removesuffix(" (ours)"))
    ax_cls.axhline(40, color="black", ls="--", lw=1, label="crazing target 40")
    ax_cls.set_xticks([j + 0.4 - width / 2 for j in range(len(CLASSES))], CLASSES, fontsize=7, rotation=15)
    ax_cls.set_ylabel("test AP50 (%), mean over seeds")
    ax_cls.set_title("per class", fontsize=8)
    ax_cls.set_ylim(0, 118)
    ax_cls.legend(fontsize=7, loc="upper center", ncol=2)
    fig.suptitle("NEU-DET, CPU protocol (224 px, 60 epochs, 360 test images)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _two_level(g: dict) -> str:
    """The interval with the runs drawn as well as the images (``seed_bootstrap``), when there is one."""
    if "ci95_runs_and_images" not in g:
        return ""
    lo, hi = g["ci95_runs_and_images"]
    return f"; runs and images drawn [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def table(roles: dict[str, str], seeds: dict[str, list[str]] | None = None) -> Path:
    from components.bootstrap import ImageStats, paired_bootstrap

    if "baseline" not in roles:
        raise SystemExit("--table needs baseline=RUN")
    refs = {role: run.split("@")[1] if "@" in run else roles["baseline"] for role, run in roles.items()}
    roles = {role: run.split("@")[0] for role, run in roles.items()}
    runs = {role: json.loads((RUNS / f"{run}.json").read_text()) for role, run in roles.items()}
    stats = {role: ImageStats.load(RUNS / f"{run}-test.npz") for role, run in roles.items()}
    ref_runs = {r: json.loads((RUNS / f"{r}.json").read_text()) for r in set(refs.values())}
    ref_stats = {r: ImageStats.load(RUNS / f"{r}-test.npz") for r in set(refs.values())}
    fps = _fps(runs)
    profile, used = load_profile(PROFILE), profile_params([PROFILE.stem])
    models = {}
    for role, r in runs.items():
        t = r["test"]
        m = {"run": r["run"], "trained_on": r["trained_on"], "overrides": r["overrides"],
             "mAP50": t["mAP50"], "mAP50-95": t["mAP50-95"], "precision": t["precision"], "recall": t["recall"],
             "val_mAP50": r["val"]["mAP50"], "per_class_ap50": t["per_class_AP50"], "params": t["params"],
             "gflops": t["GFLOPs"], "gflops_at_imgsz": t["GFLOPs_at_imgsz"],
             "fps": fps[role]["fps"] if role in fps else None,
             "fps_setting": (f"CPU, batch 1, {fps[role]['latency_threads']} thread, eager PyTorch, fused"
                             if role in fps else "not measured: the run's weights were not kept"),
             "epoch_s": r.get("epoch_s"), "epochs_run": r.get("epochs_run"),
             "epochs": r.get("params_used", {}).get("train", {}).get("epochs") or r.get("epochs_run")}
        if role + "_pipeline" in fps:
            m["fps_served_pipeline"] = fps[role + "_pipeline"]["fps"]
        if role != "baseline":
            ref = refs[role]
            g = paired_bootstrap(ref_stats[ref], stats[role], 2000, 0)
            m["gain_vs_baseline"] = {"mAP50": round(g["mAP50"], 4), "ci95": [round(v, 4) for v in g["ci95"]],
                                     "p_le_0": round(g["p_le_0"], 4), "resamples": g["resamples"],
                                     "images": g["images"], "baseline_run": ref,
                                     "baseline_mAP50": ref_runs[ref]["test"]["mAP50"]}
        models[role] = m
    protocol = {"dataset": "NEU-DET", "split": "8:2", "val": "10 % of the images, carved from the training part",
                "seed": used.split.seed, "imgsz": used.train.imgsz, "epochs": used.train.epochs,
                "profile": {k: v for k, v in profile.items() if k.startswith(("train.", "split.", "lagnet."))},
                "weights": "best epoch on val; test used for nothing but these figures",
                "test_images": len(stats["baseline"])}
    commands = [r["command"] for r in runs.values()] + [cli()]
    payload = {"protocol": protocol, "models": models, "papers": PAPERS, "targets_mAP50": TARGETS,
               "fps_detail": fps, "machine": machine(), "commands": commands, "command": "; ".join(commands)}
    rows = []
    for role, m in models.items():
        g = m.get("gain_vs_baseline")
        rows.append({"model": display(role), "epochs": m["epochs"], "mAP50": round(100 * m["mAP50"], 1),
                     "gain vs baseline [95 % CI]": (f"{100 * g['mAP50']:+.1f} [{100 * g['ci95'][0]:+.1f}, "
                                                    f"{100 * g['ci95'][1]:+.1f}]"
                                                    + (f" vs {g['baseline_run']}" if g["baseline_run"] != roles[
                                                        "baseline"] else "")) if g else "",
                     "val mAP50": round(100 * m["val_mAP50"], 1), "mAP50-95": round(100 * m["mAP50-95"], 1),
                     **{c: round(100 * m["per_class_ap50"][c], 1) for c in CLASSES},
                     "params": f"{m['params'] / 1e6:.2f}M", "GFLOPs@640": m["gflops"],
                     "FPS (CPU b1)": "" if m["fps"] is None else m["fps"] if "fps_served_pipeline" not in m else
                     f"{m['fps']} ({m['fps_served_pipeline']} with LAM)",
                     "epoch s": m["epoch_s"], "trained on": m["trained_on"]})
    if seeds:
        payload["seed_averaged"], extra = seed_rows(seeds)
        rows += extra
        payload["figure"] = seed_figure(seeds, payload["seed_averaged"], RESULTS / "neu_cpu.png").name
    for name, p in PAPERS.items():
        rows.append({"model": name, "mAP50": p["mAP50"], **{c: p[c] for c in CLASSES},
                     "params": f"{p['params_M']}M" if "params_M" in p else "", "FPS (CPU b1)":
                     f"{p['fps']} (GPU)" if "fps" in p else ""})
    cols = ["model", "epochs", "mAP50", "gain vs baseline [95 % CI]", "val mAP50", "mAP50-95", *CLASSES, "params",
            "GFLOPs@640", "FPS (CPU b1)", "epoch s", "trained on"]
    notes = (f"Notes: test AP50 in % on {protocol['test_images']} test images, best epoch on the validation "
             "images. Gain: paired bootstrap of the test images (2000 resamples, ultralytics' AP recomputed per "
             "resample); an interval containing 0 is no evidence of a gain. The control rows are the baseline "
             "trained with seed 1: the gain training noise alone produces. Paper rows: 640 px, their own "
             "protocols and (DASC-YOLO Table 4) large models; their FPS are GPU figures.")
    notes += (f" FPS: all rows measured in this run, in turns ({FPS_ROUNDS} rounds, each timing every graph "
              f"{FPS_PER_ROUND} times; the median of the rounds' medians), eager PyTorch, fused, 1 thread, batch 1, "
              "224 px; LAGNet's second figure is the served graph (baseline + LAM + LAGNet). 'epoch s': seconds "
              "per training epoch on the machine named in 'trained on' (the H200 ran 3-7 trainings side by side, "
              "so its figures are not speeds of one training).")
    if seeds:
        notes += (" Seed-averaged rows: each detector's mean test mAP50 over its seeds; the gain is the difference "
                  "of the means with a bootstrap over the same drawn test images for every run (2000 resamples), "
                  "which covers image sampling, not seed variance; the second interval also draws each group's "
                  "runs with replacement in every resample, so the seed-to-seed spread counts (coarse with two or "
                  "three seeds). Each group's seed spread is shown beside it; a gain smaller than the spread is not "
                  "evidence.")
    rect = [display(role) for role, r in runs.items() if "framing" not in r]
    notes += (" Scored at the served framing (the square 224 px letterbox that predict and the exported model "
              "take), except " + ", ".join(rect) + ": evaluated before that change, on ultralytics' rect "
              "batches (the 200 px images padded to 256 with a grey border), not comparable to the decimal."
              if rect else " All rows scored at the served framing (the square 224 px letterbox that predict "
              "and the exported model take).")
    for role, r in runs.items():
        if r["model"] != "lagnet":
            continue
        served = RUNS / f"{r['run']}-served.json"
        files = r.get("test_on_lam_files", {}).get("mAP50")
        notes += (f" {display(role)} is scored as served (LAM computed in the graph from the RGB image); "
                  f"the same weights on the LAM files they were trained on: mAP50 {100 * files:.1f}"
                  if files is not None else "")
        if served.is_file():
            sv = json.loads(served.read_text())
            o, f = sv["onnx_vs_pytorch"], sv["served_vs_lam_files"]
            payload["models"][role]["served_check"] = sv
            payload["models"][role]["mAP50_on_lam_files"] = files
            notes += (f"; boxes at conf {sv['conf']} on all {sv['images']} test images: exported ONNX graph vs the "
                      f"PyTorch pipeline same count on {o['same_count']}/{o['images']} ({o['boxes']} boxes, "
                      f"{o['unmatched']} unmatched, min matched IoU {o['min_matched_iou']:.4f}); served LAM vs LAM "
                      f"files same count on {f['same_count']}/{f['images']} ({f['unmatched']} unmatched, min "
                      f"matched IoU {f['min_matched_iou']:.3f}): the train/serve skew that remains.")
    (RESULTS / "neu_cpu.json").parent.mkdir(parents=True, exist_ok=True)
    write("neu_cpu", payload, rows, cols,
          f"NEU-DET, CPU protocol (imgsz {protocol['imgsz']}, {protocol['epochs']} epochs, seed 0, 8:2)", notes)
    md = RESULTS / "neu_cpu.md"
    print(md.read_text())
    return md
