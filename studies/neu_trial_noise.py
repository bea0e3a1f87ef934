"""How much noise a NEU-DET tuning study's trials carry, and the ``tune.min_gain`` that noise asks for
(issue 10 item 6: the default is kept unless a tuned choice beats it on validation by more than its
noise).

``profiles/neu-cpu.yaml`` runs studies of ``tune.trials`` trials of ``tune.epochs`` epochs; a trial's
value is its best validation mAP50. No study has been run often enough to measure its noise directly
(each costs hours here), so this reads the committed 60-epoch NEU-DET trainings that differ only in
their training seed (same detector, same settings) and takes, per run, the best validation mAP50 up to
epoch ``tune.epochs``: a proxy of a trial's value. The proxy's limits: a real trial's own schedule ends
at that epoch (learning rate decayed to ``lrf``, its last ``close_mosaic`` epochs without mosaic), so
its values sit higher than the proxy's, and their spread may differ.

Within each detector the runs' spread is noise alone (no setting differs); the detectors' variances
are pooled. Under "no tuned value is really better", a study's gain (best non-default trial minus the
default trial) is the largest of ``trials - 1`` differences of independent draws; its 95th percentile
(simulated) is the ``min_gain`` at which such a study overrides the default in 5 % of runs.

    python -m studies.neu_trial_noise --group baseline=cpu-base-mosaic,cpu-base-s1,cpu-base-s2,cpu-base-s3 \\
        dasc=cpu-dasc-paper,cpu-dasc-s1 lagnet_s=cpu-lagnet-s-60,cpu-lagnet-s-s1,cpu-lagnet-s-s2
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from .common import NEU_RUNS, VAL_MAP50, cli, machine, profile_params, read_results_csv, write

PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "neu-cpu.yaml"


def best_up_to(results_csv: Path, epoch: int) -> float:
    """The best validation mAP50 of an ultralytics results.csv over its first ``epoch`` epochs; a
    run that stopped before that epoch is an error (it would bias the proxy low)."""
    rows = read_results_csv(results_csv)
    if len(rows) < epoch:
        raise SystemExit(f"{results_csv.name}: {len(rows)} epochs, fewer than {epoch}")
    return max(r[VAL_MAP50] for r in rows[:epoch])


def pooled_sd(groups: dict[str, list[float]]) -> tuple[float, int]:
    """The within-group standard deviation pooled over the groups (each group's deviations from its
    own mean) and its degrees of freedom."""
    ss = sum(sum((v - np.mean(vals)) ** 2 for v in vals) for vals in groups.values())
    df = sum(len(vals) - 1 for vals in groups.values())
    if df < 1:
        raise SystemExit("need a group of at least two runs")
    return math.sqrt(ss / df), df


def max_gap(sd: float, others: int, draws: int = 200_000, seed: int = 0) -> np.ndarray:
    """Simulated gains of a study with no real difference: the best of ``others`` trials minus the
    default trial, every trial an independent normal draw of standard deviation ``sd``."""
    rng = np.random.default_rng(seed)
    trials = rng.normal(0.0, sd, size=(draws, others + 1))
    return trials[:, 1:].max(axis=1) - trials[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--group", nargs="+", required=True, metavar="NAME=RUN,RUN",
                    help="runs of one detector and settings, differing only in their seed")
    ap.add_argument("--at", nargs="*", type=float, default=[],
                    help="min_gain values to give the false-override rate of (and the profile's)")
    args = ap.parse_args()
    tune = profile_params([PROFILE.stem]).tune            # params.yaml + the profile, as the stages read it
    epochs, trials, min_gain = tune.epochs, tune.trials, tune.min_gain
    groups, rows = {}, []
    for spec in args.group:
        name, _, runs = spec.partition("=")
        vals = {r: best_up_to(NEU_RUNS / f"{r}-results.csv", epochs) for r in runs.split(",")}
        ends = {r: best_up_to(NEU_RUNS / f"{r}-results.csv", 60) for r in runs.split(",")}
        groups[name] = list(vals.values())
        rows.append({"detector": name, "runs": len(vals),
                     f"best val mAP50 to epoch {epochs}": ", ".join(f"{v:.3f}" for v in vals.values()),
                     "sd": round(float(np.std(list(vals.values()), ddof=1)), 4) if len(vals) > 1 else "",
                     "best val mAP50 to epoch 60": ", ".join(f"{v:.3f}" for v in ends.values())})
    sd, df = pooled_sd(groups)
    one = 1.645 * sd * math.sqrt(2)                       # one non-default trial: the gap of two draws
    gaps = max_gap(sd, trials - 1)
    q95 = float(np.quantile(gaps, 0.95))
    rates = {g: float((gaps > g).mean()) for g in sorted({*args.at, min_gain})}
    out = {"epochs": epochs, "trials": trials, "groups": groups, "pooled_sd": round(sd, 4), "df": df,
           "min_gain_one_trial_5pct": round(one, 4), "min_gain_5pct": round(q95, 4),
           "profile_min_gain": min_gain, "false_override_rate": {f"{g:g}": round(r, 3) for g, r in rates.items()}}
    notes = (f"Pooled run-to-run sd of a {epochs}-epoch trial's value (proxy): {sd:.4f} ({df} degrees of freedom). "
             f"A study of {trials} trials (the default and {trials - 1} others) with no real difference: its gain's "
             f"95th percentile is {q95:.3f} (simulated, 200000 studies). Such a study replaces the default in "
             + ", ".join(f"{100 * r:.0f} % of runs at tune.min_gain {g:g}" for g, r in rates.items())
             + f" (profiles/neu-cpu.yaml: {min_gain:g}). One comparison alone "
             f"(two trials) would need {one:.3f}. Proxy: the best validation mAP50 up to epoch {epochs} of the "
             "committed 60-epoch NEU-DET trainings, seeds of the same detector and settings; a real trial's own "
             "schedule ends at that epoch, so the proxy is not its value, only a measure of its spread.")
    write("neu_trial_noise", {**out, "machine": machine(), "command": cli()}, rows,
          ["detector", "runs", f"best val mAP50 to epoch {epochs}", "sd", "best val mAP50 to epoch 60"],
          f"NEU-DET tuning noise: {trials} trials of {epochs} epochs (profiles/neu-cpu.yaml)", notes)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
