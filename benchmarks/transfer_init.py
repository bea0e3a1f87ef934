"""Does ``train.init`` help? YOLO11n on the embedded synthetic default, from scratch vs started from a
NEU-DET checkpoint (``components.transfer``: the tensors that match in name and shape; NEU-DET's
six classes are not the synthetic set's, two share a name), same seed, same ``train`` params.

The data is built as the data and split stages build it (``components/data/synth.py`` with
``data.synth``, ``make_split`` with ``split``) into ``.cache/bench/transfer_init``. Each arm is scored
with ultralytics' own validator on its ``best.pt`` (picked on val by the trainer) on the val split
and the test split at ``evaluate.conf`` / ``evaluate.iou``; nothing is chosen on test.

    python -m benchmarks.transfer_init                        # params.yaml's seed
    python -m benchmarks.transfer_init --seeds 0 1 --set train.epochs=10

Writes ``results/transfer_init.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from .common import RESULTS, VAL_MAP50, cli, machine, parse_sets, profile_params, read_results_csv, write

WORK = Path(".cache/bench/transfer_init")
NEU_BASELINE = Path("studies/results/neu_cpu/weights/cpu-base-mosaic.pt")   # YOLO11n trained on NEU-DET (CPU profile)


def synth_data(params, out: Path) -> Path:
    """The synthetic default as the data stage writes it and the split stage splits it, as an
    ultralytics data YAML in ``out`` (the dataset is generated once per ``data.synth`` params)."""
    import hashlib
    import json

    from components.data.canonical import load_manifest
    from components.data.split import SplitSpec, make_split
    from components.data.synth import SynthConfig, write_synth_dataset
    from components.data.views import write_yolo_data_yaml

    syn = params.data.synth.plain()
    root = WORK / f"synth-{hashlib.sha256(json.dumps(syn, sort_keys=True).encode()).hexdigest()[:10]}"
    if not (root / "synth" / "manifest.json").is_file():
        write_synth_dataset(SynthConfig(**{**syn, "contrast": tuple(syn["contrast"])}), root, "synth")
    m = load_manifest(root / "synth")
    s = params.split
    split = make_split(m["images"], m["classes"], SplitSpec(s.test_ratio, s.val_ratio, s.seed, 0, tolerance=s.tolerance),
                       near_dup_bits=m.get("near_dup_bits"))
    return write_yolo_data_yaml(root / "synth", split, out)


def score(weights: Path, data_yaml: Path, split: str, imgsz: int, ev, device: str) -> dict:
    """ultralytics' validator on ``split``: its mAP50 and mAP50-95."""
    from components.yolo import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        r = YOLO(str(weights)).val(data=str(data_yaml), split=split, imgsz=imgsz, batch=ev.batch, conf=ev.conf,
                                   iou=ev.iou, device=device, plots=False, verbose=False, project=tmp, name="val")
    return {"mAP50": round(float(r.box.map50), 4), "mAP50-95": round(float(r.box.map), 4)}


def arm(params, data_yaml: Path, init: Path | None, seed: int, work: Path) -> dict:
    from components.detectors.yolo11.config import baseline_cfg
    from components.settings import trainer_args
    from components.train import TrainRequest, train_detector

    args, device, _ = trainer_args(params)
    t = time.time()
    res = train_detector(TrainRequest(baseline_cfg(params.baseline.scale), data_yaml, work, args, device, seed,
                                      params.loss.iou, init_weights=str(init) if init else None))
    secs = round(time.time() - t, 1)
    rows = read_results_csv(res.results_csv)
    best = max(range(len(rows)), key=lambda i: rows[i][VAL_MAP50])
    out = {"arm": "init" if init else "scratch", "seed": seed, "train_seconds": secs, "epochs_run": res.epochs_run,
           "best_epoch": best + 1, "val_curve_mAP50": [round(r[VAL_MAP50], 4) for r in rows],
           "init": None if res.init is None else {"source": str(init), "tensors": res.init.tensors,
                                                   "total": res.init.total, "partial": res.init.partial}}
    for split in ("val", "test"):
        out[split] = score(res.best, data_yaml, split, args["imgsz"], params.evaluate, device)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", default=str(NEU_BASELINE), help="the weights the init arm starts from")
    ap.add_argument("--seeds", type=int, nargs="*", help="training seeds (default: params.yaml's train.seed)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="params overrides (train.epochs=...)")
    a = ap.parse_args(argv)
    from components import train, yolo  # noqa: F401  (loaded before the first training, as every arm runs them)
    from components.detectors.yolo11 import config  # noqa: F401
    sets = parse_sets(a.set)
    params = profile_params([], sets)
    seeds = a.seeds or [params.train.seed]
    mach = machine()              # before the runs: ultralytics' validator sets torch's threads to cores - 1
    data_yaml = synth_data(params, WORK / "data")
    runs = [arm(params, data_yaml, init, seed, WORK / f"{'init' if init else 'scratch'}-s{seed}")
            for seed in seeds for init in (None, Path(a.init))]
    table = [{"seed": r["seed"], "start": "NEU-DET init" if r["init"] else "scratch",
              "tensors transferred": f"{r['init']['tensors']}/{r['init']['total']}" if r["init"] else "-",
              "epochs": r["epochs_run"], "best epoch": r["best_epoch"], "train s": r["train_seconds"],
              "val mAP50": r["val"]["mAP50"], "val mAP50-95": r["val"]["mAP50-95"],
              "test mAP50 (reported only)": r["test"]["mAP50"], "test mAP50-95": r["test"]["mAP50-95"]}
             for r in runs]
    gains = {s: {split: round(init[split]["mAP50"] - scratch[split]["mAP50"], 4) for split in ("val", "test")}
             for s in seeds for scratch, init in [[r for r in runs if r["seed"] == s]]}
    t = params.train
    payload = {"command": cli(), "machine": mach, "init": a.init, "overrides": sets, "seeds": seeds,
               "train": {"epochs": t.epochs, "imgsz": t.imgsz, "batch": t.batch, "threads": t.threads},
               "data": params.data.synth.plain(), "runs": runs, "gain_mAP50": gains}
    notes = ("Gain (init - scratch) in mAP50 per seed: "
             + "; ".join(f"seed {s}: val {g['val']:+.4f}, test {g['test']:+.4f}" for s, g in gains.items())
             + f". Both arms: YOLO11n ({t.epochs} epochs, imgsz {t.imgsz}, batch {t.batch}), the same seed, data "
             "and augmentation stream; the init arm's tensors that match by name and shape come from "
             f"`{a.init}` (NEU-DET, other classes: class-logit rows of `crazing` and `inclusion` by name, the "
             "other four classes fresh), the rest start as the scratch arm's. Scores: ultralytics' validator "
             "on best.pt (chosen on val); test is reported, never chosen on.")
    md = write("transfer_init", payload, table, list(table[0]), "train.init: scratch vs NEU-DET init (YOLO11n, "
               "synthetic default)", notes)
    print(md.read_text())


if __name__ == "__main__":
    main()
