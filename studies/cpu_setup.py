"""Which CPU training set-up (issue 10 item 8): torch threads per training, loader workers,
``cache: ram``, one training alone or two side by side. Run on an idle machine:

    python -m studies.cpu_setup --neu ../shared/datasets/neu-det            # all set-ups
    python -m studies.cpu_setup --neu ../shared/datasets/neu-det --only t2-w2-ram

Each set-up trains YOLO11n at the NEU-DET CPU protocol (224 px, batch 16, mosaic) on a fixed
``--fraction`` of the training images for ``--epochs`` epochs, in a fresh process (ultralytics
fixes torch's threads when it picks the device). The figure is the steady epoch time: the last
epoch's wall seconds (training + validation; the first epoch also fills the RAM cache and warms
up). ``pair`` runs two such trainings at once, one thread each, as the NEU-DET runs do: their
throughput is two epochs per the slower one's epoch time. Ratios are to the set-up
``t1-w2-ram`` (ultralytics' default thread count on 2 cores, 2 workers, RAM cache), all measured
in the same call. Written to ``results/cpu_setup.{json,md}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .common import cli, machine, write
from .neu_cpu import NEU, WORK, dataset, protocol_params

SETUPS = {   # name: (torch threads, loader workers, cache)
    "t1-w2-ram": (1, 2, "ram"),
    "t2-w2-ram": (2, 2, "ram"),
    "t1-w0-ram": (1, 0, "ram"),
    "t1-w2-none": (1, 2, False),
    "t2-w0-ram": (2, 0, "ram"),
}
PAIR = "pair-t1-w2-ram"      # two trainings of t1-w2-ram at once


def train_once(name: str, threads: int, workers: int, cache, epochs: int, fraction: float, src: Path) -> dict:
    """One YOLO11n training of ``fraction`` of the NEU-DET training images; its epoch times."""
    from components.settings import trainer_args
    from components.data.views import write_yolo_data_yaml
    from components.detectors.yolo11.config import baseline_cfg
    from components.train import TrainRequest, train_detector

    params = protocol_params({"train.epochs": epochs, "train.workers": workers, "train.cache": cache})
    ds, split = dataset(params, src)
    work = WORK / "cpu_setup" / name
    data_yaml = write_yolo_data_yaml(ds, split, work / "data")
    args, _, seed = trainer_args(params)
    args["fraction"] = fraction            # an ultralytics train arg params.yaml does not carry
    t = time.time()
    res = train_detector(TrainRequest(baseline_cfg("n"), data_yaml, work / "train", args, "cpu", seed,
                                      params.loss.iou, threads=threads))
    rows = list(csv.DictReader((work / "train" / "results.csv").open()))
    times = [float(r["time"]) for r in rows]
    epoch_s = [round(b - a, 2) for a, b in zip([0.0] + times[:-1], times)]
    return {"setup": name, "threads": threads, "workers": workers, "cache": cache or "none", "epochs": epochs,
            "fraction": fraction, "epoch_s": epoch_s, "steady_epoch_s": epoch_s[-1],
            "total_s": round(time.time() - t, 1), "epochs_run": res.epochs_run}


def child(name: str, epochs: int, fraction: float, src: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "studies.cpu_setup", "--child", name, "--epochs", str(epochs),
                             "--fraction", str(fraction), "--neu", str(src), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env={**os.environ})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--neu", type=Path, default=NEU)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.25, help="share of the training images per epoch")
    ap.add_argument("--only", nargs="*", help=f"set-ups to run (default: all and {PAIR})")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if not (a.neu / "ANNOTATIONS").is_dir():
        raise SystemExit(f"NEU-DET not found at {a.neu}")
    if a.child:                              # one training in this fresh process
        threads, workers, cache = SETUPS[a.child.removeprefix("pair-").split("#")[0]]
        a.out.write_text(json.dumps(train_once(a.child.replace("#", "-"), threads, workers, cache, a.epochs,
                                               a.fraction, a.neu)))
        return
    names = a.only or [*SETUPS, PAIR]
    if "t1-w2-ram" not in names:
        names = ["t1-w2-ram", *names]        # the reference of every ratio
    tmp = WORK / "cpu_setup"
    tmp.mkdir(parents=True, exist_ok=True)
    dataset(protocol_params({}), a.neu)      # import once, before any timing
    results = {}
    for name in names:
        print(f"cpu_setup: {name} ...", flush=True)
        if name == PAIR:
            outs = [tmp / f"{name}-{i}.json" for i in (1, 2)]
            procs = [child(f"{name}#{i}", a.epochs, a.fraction, a.neu, o) for i, o in zip((1, 2), outs)]
            if any(p.wait() for p in procs):
                raise SystemExit(f"{name}: a training failed (see {tmp})")
            runs = [json.loads(o.read_text()) for o in outs]
            slow = max(r["steady_epoch_s"] for r in runs)
            results[name] = {"setup": name, "threads": 1, "workers": 2, "cache": "ram", "trainings": 2,
                             "epoch_s": [r["epoch_s"] for r in runs], "steady_epoch_s": slow,
                             "epochs_per_s": round(2 / slow, 5)}
        else:
            out = tmp / f"{name}.json"
            if child(name, a.epochs, a.fraction, a.neu, out).wait():
                raise SystemExit(f"{name}: the training failed (see {tmp / name})")
            r = json.loads(out.read_text())
            results[name] = {**r, "trainings": 1, "epochs_per_s": round(1 / r["steady_epoch_s"], 5)}
        print(f"cpu_setup: {name}: steady epoch {results[name]['steady_epoch_s']} s", flush=True)
    ref = results["t1-w2-ram"]["epochs_per_s"]
    rows = [{"set-up": n, "torch threads": r["threads"], "workers": r["workers"], "cache": r["cache"],
             "trainings at once": r["trainings"], "steady epoch s": r["steady_epoch_s"],
             "throughput vs t1-w2-ram": round(r["epochs_per_s"] / ref, 2)} for n, r in results.items()]
    payload = {"results": results, "fraction": a.fraction, "epochs": a.epochs, "machine": machine(),
               "command": cli()}
    md = write("cpu_setup", payload, rows, list(rows[0]),
               "CPU training set-up: YOLO11n, NEU-DET CPU protocol (224 px, batch 16, mosaic)", (
        f"Notes: steady epoch = wall seconds of the last of {a.epochs} epochs (training on {a.fraction:.0%} of "
        "the training images + validation); throughput = epochs per second of all trainings together, "
        "relative to one training with 1 torch thread, 2 loader workers and the RAM cache (ultralytics' "
        "default threads on 2 cores). Measured one after another in one call; the machine should be idle."))
    print(md)


if __name__ == "__main__":
    main()
