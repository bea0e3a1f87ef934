"""How fast each detector learns on NEU-DET, from the committed seed runs (issue 10 item 5: why
DASC-YOLO-n does not get ahead of YOLO11n).

Reads the ultralytics ``results.csv`` of every committed 60-epoch CPU-protocol run and gives, per
detector (seeds of the same settings), the mean in-training validation mAP50 and the summed
training and validation losses (box + cls + dfl) over the last ``--window`` epochs up to chosen
epochs (one epoch's validation jumps by several points: a window average is steadier), and the difference of each
detector's mean validation mAP50 to the first group's with a Welch 95 % t interval over the runs.
A detector that fits its training images as well as the baseline (equal training loss) but
validates lower is generalising worse; one that is behind early and level late is learning slower.
The in-training validation is ultralytics' (rect batches), not the served framing of the table: a
measure of pace, not of the final score.

    python -m studies.neu_pace --group baseline=cpu-base-mosaic,cpu-base-s1,cpu-base-s2,cpu-base-s3 \\
        dasc=cpu-dasc-paper,cpu-dasc-s1,cpu-dasc-s2 \\
        lagnet_s=cpu-lagnet-s-60,cpu-lagnet-s-s1,cpu-lagnet-s-s2,cpu-lagnet-s-s3
    # -> results/neu_pace.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from .common import NEU_RUNS, RESULTS, VAL_MAP50, cli, machine, read_results_csv, write

LOSSES = ("box_loss", "cls_loss", "dfl_loss")


def read_curves(results_csv: Path) -> dict[str, np.ndarray]:
    """An ultralytics results.csv as columns: ``val_map50``, ``train_loss`` and ``val_loss`` (sum of
    box, cls and dfl), one value per epoch."""
    rows = read_results_csv(results_csv)
    if not rows:
        raise SystemExit(f"{results_csv}: no epochs")
    return {"val_map50": np.array([r[VAL_MAP50] for r in rows]),
            "train_loss": np.array([sum(r[f"train/{k}"] for k in LOSSES) for r in rows]),
            "val_loss": np.array([sum(r[f"val/{k}"] for k in LOSSES) for r in rows])}


def window_mean(curve: np.ndarray, epoch: int, window: int) -> float:
    """The mean of ``curve`` over epochs ``epoch - window + 1`` .. ``epoch`` (1-based)."""
    if epoch > len(curve) or epoch < window:
        raise SystemExit(f"epochs {epoch - window + 1}-{epoch} are not all in a {len(curve)}-epoch run")
    return float(np.mean(curve[epoch - window:epoch]))


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(b) - mean(a) with its Welch 95 % t interval (both groups need two runs or more)."""
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    if min(len(a_), len(b_)) < 2:
        raise SystemExit("a group needs at least two runs for an interval")
    va, vb = a_.var(ddof=1) / len(a_), b_.var(ddof=1) / len(b_)
    d, se = float(b_.mean() - a_.mean()), math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / (va ** 2 / (len(a_) - 1) + vb ** 2 / (len(b_) - 1))
    h = float(stats.t.ppf(0.975, df)) * se
    return d, d - h, d + h


def plot(curves: dict[str, list[dict[str, np.ndarray]]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for (name, runs), colour in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        n = min(len(r["val_map50"]) for r in runs)
        ep = np.arange(1, n + 1)
        for ax, key in zip(axes, ("val_map50", "train_loss", "val_loss")):
            m = np.stack([r[key][:n] for r in runs])
            ax.plot(ep, m.mean(0), color=colour, label=f"{name} ({len(runs)} seeds)")
            ax.fill_between(ep, m.min(0), m.max(0), color=colour, alpha=0.15)
    for ax, title in zip(axes, ("validation mAP50 (in training)", "training loss (box+cls+dfl)",
                                "validation loss (box+cls+dfl)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].set_ylim(top=7)
    axes[2].set_ylim(top=8)
    fig.suptitle("NEU-DET CPU protocol: seed means (line) and seed range (band)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--group", nargs="+", required=True, metavar="NAME=RUN,RUN",
                    help="runs of one detector and settings, differing only in their seed; the first is the reference")
    ap.add_argument("--at", nargs="*", type=int, default=[10, 20, 30, 40, 50, 60], help="epochs to tabulate")
    ap.add_argument("--window", type=int, default=5, help="epochs averaged, ending at each --at epoch")
    args = ap.parse_args()
    curves: dict[str, list[dict[str, np.ndarray]]] = {}
    names: dict[str, list[str]] = {}
    for spec in args.group:
        name, _, runs = spec.partition("=")
        names[name] = runs.split(",")
        curves[name] = [read_curves(NEU_RUNS / f"{r}-results.csv") for r in names[name]]
    ref = next(iter(curves))
    rows, out = [], {"groups": names, "epochs": args.at, "window": args.window, "at": {}}
    w = args.window
    if w < 1 or min(args.at) < w:
        raise SystemExit(f"--window {w} must be >= 1 and <= the first --at epoch")
    for e in args.at:
        rec = {}
        for name, runs in curves.items():
            vals = [window_mean(r["val_map50"], e, w) for r in runs]
            g = {"val_mAP50": vals, "val_mAP50_mean": round(float(np.mean(vals)), 4),
                 "train_loss_mean": round(float(np.mean([window_mean(r["train_loss"], e, w) for r in runs])), 3),
                 "val_loss_mean": round(float(np.mean([window_mean(r["val_loss"], e, w) for r in runs])), 3)}
            row = {"epochs": f"{e - w + 1}-{e}", "detector": name, "val mAP50 (mean, range)":
                   f"{100 * g['val_mAP50_mean']:.1f} ({100 * min(vals):.1f}-{100 * max(vals):.1f})",
                   "train loss": f"{g['train_loss_mean']:.3f}", "val loss": f"{g['val_loss_mean']:.3f}",
                   f"val mAP50 vs {ref} [95 % t]": ""}
            if name != ref:
                d, lo, hi = welch(rec[ref]["val_mAP50"], vals)
                g["val_mAP50_vs_ref"] = {"diff": round(d, 4), "ci95": [round(lo, 4), round(hi, 4)]}
                row[f"val mAP50 vs {ref} [95 % t]"] = f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            rec[name] = g
            rows.append(row)
        out["at"][str(e)] = rec
    png = RESULTS / "neu_pace.png"
    plot(curves, png)
    notes = ("In-training validation (180 images, ultralytics' rect batches) and losses from each run's "
             f"results.csv, each run's mean over the {w} epochs named, averaged over the seeds of a detector; the "
             "range is the runs' lowest and highest; the interval is Welch's t over the runs "
             f"(seed-to-seed spread only). Plot: `studies/results/{png.name}`.")
    write("neu_pace", {**out, "machine": machine(), "command": cli()}, rows,
          ["epochs", "detector", "val mAP50 (mean, range)", "train loss", "val loss", f"val mAP50 vs {ref} [95 % t]"],
          "NEU-DET CPU protocol: learning pace by detector", notes)
    print(json.dumps(out["at"][str(args.at[-1])]))


if __name__ == "__main__":
    main()
