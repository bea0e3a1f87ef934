"""Is a CPU training bit-reproducible on one machine? Trains YOLO11n on the embedded synthetic
data the way the ``train_baseline`` stage does (params.yaml, ``--set`` overrides), ``--runs``
times, each in a fresh interpreter, and compares the trained weights tensor by tensor and the
per-epoch losses. Records the CPU model and the instruction set torch dispatches to, since
kernels built for different instruction sets round differently: two default runs on different
machines can differ even when each machine repeats itself exactly.

    python -m benchmarks.repro_check --epochs 2
    python -m benchmarks.repro_check --epochs 2 --set train.threads=1
    python -m benchmarks.repro_check --epochs 15 --on-epoch mlflow      # with the stage's MLflow callback
    python -m benchmarks.repro_check --epochs 2 --via flow            # through the stage's Prefect flow
    python -m benchmarks.repro_check --compare A.pt B.pt --label "..."  # two checkpoints trained elsewhere
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import RESULTS, cli, machine, parse_sets, read_results_csv, synth_data_yaml, write

WORK = Path(".cache/bench/repro_check")
OUT = RESULTS / "repro_check.json"


def run_params(out: Path, sets: dict, epochs: int, params_file: str) -> Path:
    """``params_file`` with ``sets`` and ``train.epochs`` applied, every output path (models, scratch,
    metrics, ...) and the MLflow store moved under ``out`` and warm starts off, written as
    ``out/params.yaml``: what ``--via stage|flow`` train from (datasets and splits stay the project's)."""
    import yaml

    from components.settings import resolve

    moved = {f"paths.{k}": str((out / k).resolve()) for k in ("models", "metrics", "plots", "reports", "exports", "work")}
    cfg = resolve(params_file, [("--set", {**sets, "train.epochs": epochs, **moved, "retrain.warm_start": False,
                                           "tracking.uri": f"sqlite:///{(out / 'mlflow.db').resolve()}"})]).plain()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "params.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_via_stage(out: Path, params_file: Path, via: str) -> None:
    """One training the way the ``train_baseline`` stage makes it. ``via="stage"``: its model YAML
    and data views, ``train_detector`` called directly (no Prefect, no MLflow); ``via="prefect"``:
    the same inside a bare Prefect flow; ``via="flow"``:
    the stage's Prefect flow itself (``pipelines.train.train_flow``, MLflow run included)."""
    if via == "flow":
        from pipelines.train import train_flow

        info = train_flow("baseline", params_file=str(params_file))
        Path(info["best"]).parents[1].rename(out / "train")
        return
    from components.data.canonical import load_manifest
    from components.data.views import load_split, write_yolo_data_yaml
    from components.train import TrainRequest, train_detector
    from components.detectors import model_cfg
    from pipelines.common import layout, model_data_yaml, read_params, trainer_args

    def train() -> None:
        params = read_params(str(params_file))
        lay = layout(params)
        work = lay.scratch("train-baseline")
        cfg = model_cfg("baseline", params, len(load_manifest(lay.dataset)["classes"]), work)
        data_yaml = model_data_yaml("baseline", params,
                                    write_yolo_data_yaml(lay.dataset, load_split(lay.split_file), work))
        args, device, seed = trainer_args(params)
        train_detector(TrainRequest(cfg, data_yaml, out / "train", args, device, seed, params.loss.iou))

    if via == "prefect":                    # the same inside a bare Prefect flow (no task, no MLflow)
        from prefect import flow

        flow(name="repro-check")(train)()
    else:
        train()


def train_one(out: Path, sets: dict, epochs: int, params_file: str = "params.yaml", on_epoch: str = "none",
              via: str = "direct") -> None:
    """One training into ``out`` (the stage's settings, ``epochs`` epochs). ``via``: ``direct``
    (``train_detector`` on this benchmark's synthetic data view, ``on_epoch`` callback), or the
    stage's own set-up (:func:`train_via_stage`)."""
    if via != "direct":
        return train_via_stage(out, run_params(out, sets, epochs, params_file), via)
    from components.settings import resolve, trainer_args
    from components.detectors.yolo11.config import baseline_cfg
    from components.train import TrainRequest, train_detector

    params = resolve(params_file, [("--set", {**sets, "train.epochs": epochs})])
    data_yaml = synth_data_yaml(params, out / "data")
    args, _, seed = trainer_args(params)
    callback = None
    if on_epoch == "noop":                  # the stage's per-epoch callback, its metrics dropped
        def callback(epoch, metrics):
            pass
    elif on_epoch == "mlflow":              # ... logged to MLflow as the stage does (a SQLite store in out/)
        from mlflow.tracking import MlflowClient

        from components.tracking import StageRun
        from pipelines.tasks import EpochLogger

        out.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("Default") or client.get_experiment(client.create_experiment("Default"))
        run = client.create_run(exp.experiment_id)
        callback = EpochLogger(StageRun(uri, run.info.run_id, exp.experiment_id))
    train_detector(TrainRequest(baseline_cfg(params.baseline.scale), data_yaml, out / "train", args, "cpu", seed,
                                params.loss.iou), callback)


def weight_tensors(ckpt: Path) -> dict:
    """The floating-point tensors of an ultralytics checkpoint's model (its EMA where saved)."""
    import torch

    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    return {k: v.float() for k, v in (ck.get("ema") or ck["model"]).state_dict().items() if v.is_floating_point()}


def compare_weights(a: Path, b: Path) -> dict:
    """Two checkpoints, tensor by tensor: how many are bit-equal, the largest difference."""
    import torch

    ta, tb = weight_tensors(a), weight_tensors(b)
    if ta.keys() != tb.keys():
        raise SystemExit(f"{a} and {b} are different architectures")
    return {"tensors": len(ta), "tensors_equal": sum(torch.equal(ta[k], tb[k]) for k in ta),
            "max_abs_diff": max(float((ta[k] - tb[k]).abs().max()) for k in ta), "first_epoch_differing": "n/a"}


def compare(a: Path, b: Path) -> dict:
    """Two runs of this benchmark: their last.pt tensor by tensor and their per-epoch losses."""
    def losses(run: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if "loss" in k or "mAP50" in k}
                for r in read_results_csv(run / "train" / "results.csv")]

    out = compare_weights(a / "train" / "weights" / "last.pt", b / "train" / "weights" / "last.pt")
    la, lb = losses(a), losses(b)
    first = next((i + 1 for i, (x, y) in enumerate(zip(la, lb)) if x != y), None)
    return {**out, "first_epoch_differing": first, "epochs": len(la), "losses_a": la, "losses_b": lb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2, help="trainings compared with the first")
    ap.add_argument("--set", nargs="*", default=[], help="dotted.key=value overrides of params.yaml")
    ap.add_argument("--params", default="params.yaml", help="the params file (default: the project's)")
    ap.add_argument("--on-epoch", choices=["none", "noop", "mlflow"], default="none",
                    help="the stage's per-epoch callback: none, one that drops the metrics, one that logs them to MLflow")
    ap.add_argument("--via", choices=["direct", "stage", "prefect", "flow"], default="direct",
                    help="direct: train_detector on this benchmark's data view; stage: with the train_baseline "
                         "stage's model YAML and data views (no Prefect, no MLflow); prefect: the same inside a bare Prefect "
                         "flow; flow: the stage's Prefect flow")
    ap.add_argument("--compare", nargs=2, metavar=("A.pt", "B.pt"),
                    help="no training: compare two checkpoints another command trained (e.g. two `defectops train "
                         "baseline` runs) and record them as a check labelled --label")
    ap.add_argument("--label", default="", help="what the two --compare checkpoints are")
    ap.add_argument("--one", help=argparse.SUPPRESS)     # internal: train one run into this folder
    a = ap.parse_args()
    sets = parse_sets(a.set)
    if a.one:
        train_one(Path(a.one), sets, a.epochs, a.params, a.on_epoch, a.via)
        return
    if a.compare:                           # checkpoints another command trained
        pairs = [{"runs": a.label or " vs ".join(a.compare),
                  **compare_weights(Path(a.compare[0]), Path(a.compare[1]))}]
        secs, callback, epochs = [], f"external: {a.label}" if a.label else "external", None
    else:
        runs, secs = [], []
        for i in range(max(2, a.runs)):
            out = WORK / f"run-{i}"
            if out.exists():
                shutil.rmtree(out)
            t = time.time()
            subprocess.run([sys.executable, "-m", "benchmarks.repro_check", "--epochs", str(a.epochs),
                            "--params", a.params, "--on-epoch", a.on_epoch, "--via", a.via, "--one", str(out), "--set", *a.set],
                           check=True)
            secs.append(round(time.time() - t, 1))
            runs.append(out)
        pairs = [{"runs": f"run-0 vs run-{i}", **compare(runs[0], r)} for i, r in enumerate(runs[1:], 1)]
        callback, epochs = (a.on_epoch if a.via == "direct" else f"via {a.via}"), a.epochs
    check = {"params": a.params, "on_epoch": callback, "overrides": sets, "epochs": epochs, "seconds": secs,
             "pairs": pairs, "machine": machine(), "command": cli()}
    old = json.loads(OUT.read_text()) if OUT.is_file() else {}
    checks = old.get("checks", [old] if "pairs" in old else [])   # one per (epochs, overrides, callback)
    key = (epochs, sets, callback)
    checks = [c for c in checks if (c["epochs"], c["overrides"], c.get("on_epoch", "none")) != key] + [check]
    table = [{"epochs": c["epochs"] or "-", "callback": c.get("on_epoch", "none"), "overrides": ", ".join(f"{k}={v}" for k, v in c["overrides"].items()) or "-",
              "pair": p["runs"], "tensors bit-equal": f"{p['tensors_equal']}/{p['tensors']}",
              "max |diff|": f"{p['max_abs_diff']:.3g}",
              "first epoch differing": p["first_epoch_differing"] or "none",
              "train s": ", ".join(str(x) for x in c["seconds"]),
              "machine": f"{c['machine']['date'][:10]}, {c['machine'].get('cpu_model', '?')}, "
                         f"{c['machine'].get('cpu_capability', '?')}"}
             for c in checks for p in c["pairs"]]
    notes = ("Each check trains YOLO11n on the embedded synthetic data with the train_baseline stage's "
             "settings (params.yaml with the overrides; `epochs` replaces train.epochs, so the learning-rate "
             "schedule and close_mosaic follow it), every run in a fresh interpreter, and compares the "
             "trained weights tensor by tensor and the per-epoch losses. Callback 'via stage|prefect|flow' rows train "
             "with the train_baseline stage's model YAML and data views (`--via`): called directly, inside a bare "
             "Prefect flow, or through the stage's flow itself (since the training runs in a child process, "
             "components.train.train_detector_isolated). Rows with callback 'external' compare two "
             "checkpoints trained by another command (`--compare A.pt B.pt --label ...`; the label says which). "
             "One row per check: "
             "`python -m benchmarks.repro_check --epochs E [--set ...] [--on-epoch ...]`.")
    write("repro_check", {"checks": checks, "machine": check["machine"], "command": cli()}, table,
          ["epochs", "callback", "overrides", "pair", "tensors bit-equal", "max |diff|", "first epoch differing", "train s",
           "machine"], "Is a CPU training bit-reproducible on one machine?", notes)
    print(json.dumps({k: check["machine"][k] for k in ("cpu_model", "cpu_capability")} | {"pairs": table[-1]}))


if __name__ == "__main__":
    main()
