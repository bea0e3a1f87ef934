"""Data flows: import / synthesise a canonical dataset, then split it."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task

from components.config import section
from components.data.canonical import load_manifest
from components.data.importers import import_dataset
from components.data.increments import merge
from components.data.split import add_increments, make_split
from components.data.synth import SynthConfig, write_synth_dataset

from .common import COMPUTE, dataset_dir, dataset_hash, log_outputs, read_params, split_file, stage_run


def _report(run, ds: Path, summary: dict) -> None:
    log_outputs(run, metrics={k: summary[k] for k in ("images", "boxes", "quarantined")},
                artifacts=[(str(ds / f), "dataset") for f in
                           ("summary.json", "quarantine.json", "quarantine.md", "dataset.yaml")],
                tags={"dataset_hash": summary["content_hash"]})


@task(name="import-dataset", **COMPUTE)
def import_task(src: str, name: str, root: str, fmt: str, clip_px: float, classes: list | None) -> dict:
    return import_dataset(src, name, root, fmt, clip_px, classes)


@task(name="synthesise-dataset", **COMPUTE)
def synth_task(cfg: dict, root: str, name: str) -> dict:
    c = dict(cfg)
    c["contrast"] = tuple(c["contrast"])
    return write_synth_dataset(SynthConfig(**c), root, name)


@flow(name="data-import")
def import_flow(src: str, name: str, root: str, fmt: str, params_file: str = "params.yaml") -> dict:
    """Validate and import ``src`` into ``root/name``; bad samples are quarantined with reasons."""
    params = read_params(params_file)
    with stage_run(f"data-import:{name}", params, ["data"], extra_tags={"source": src}) as run:
        summary = import_task(src, name, root, fmt, section(params, "data.clip_px"),
                              section(params, "data.classes"))
        _report(run, Path(root) / name, summary)
    get_run_logger().info("imported %s: %d images, %d boxes, %d quarantined", name,
                          summary["images"], summary["boxes"], summary["quarantined"])
    return summary


@flow(name="data-synth")
def synth_flow(root: str, name: str, params_file: str = "params.yaml") -> dict:
    """Generate the seeded synthetic surface-defect dataset (the embedded default data)."""
    params = read_params(params_file)
    with stage_run(f"data-synth:{name}", params, ["data.synth"]) as run:
        summary = synth_task(section(params, "data.synth"), root, name)
        _report(run, Path(root) / name, summary)
    return summary


@flow(name="data-prepare")
def prepare_flow(params_file: str = "params.yaml") -> dict:
    """DVC stage ``data``: ``data.source: synth`` generates, anything else is imported."""
    params = read_params(params_file)
    src = section(params, "data.source")
    root, name = section(params, "paths.datasets"), section(params, "data.name")
    if src == "synth":
        summary = synth_flow(root, name, params_file)
    else:
        summary = import_flow(src, name, root, section(params, "data.format"), params_file)
    merged = merge_task(root, name, section(params, "data.increments"))
    if merged:
        get_run_logger().info("merged increments %s: %d images in all", merged["increments"], merged["images"])
        with stage_run(f"data-merge:{name}", params, ["data"], merged["content_hash"],
                       {"increments": json.dumps(merged["increments"])}) as run:
            _report(run, Path(root) / name, merged)
        return merged
    return summary


@task(name="split-dataset", **COMPUTE)
def split_task(ds: str, cfg: dict) -> dict:
    """The base images are split as always; increment images (``batch`` in the manifest) go to
    train/val only, so the test split stays fixed as new samples arrive."""
    manifest = load_manifest(Path(ds))
    base = [e for e in manifest["images"] if "batch" not in e]
    new = [e for e in manifest["images"] if "batch" in e]
    result = make_split(base, manifest["classes"], cfg["test_ratio"], cfg["val_ratio"], cfg["seed"], cfg["folds"])
    return add_increments(result, new, manifest["classes"])


@task(name="merge-increments", **COMPUTE)
def merge_task(root: str, name: str, increments: str) -> dict | None:
    return merge(Path(root), name, Path(increments))


@flow(name="data-split")
def split_flow(params_file: str = "params.yaml") -> dict:
    """DVC stage ``split``: deterministic stratified train/val/test (+ k-fold) split."""
    params = read_params(params_file)
    ds, out = dataset_dir(params), split_file(params)
    with stage_run("split", params, ["split", "data.name"], dataset_hash(ds)) as run:
        result = split_task(str(ds), section(params, "split"))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        log_outputs(run, metrics={f"{k}_images": result["counts"][k]["images"]
                                  for k in ("train", "val", "test")}, artifacts=[(str(out), None)])
    get_run_logger().info("split %s: %s", ds.name,
                          {k: result["counts"][k]["images"] for k in ("train", "val", "test")})
    return result
