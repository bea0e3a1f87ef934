"""Data flows: import / synthesise a canonical dataset, then split it."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, get_run_logger, task

from components.data.canonical import load_manifest
from components.data.importers import ImportOptions, import_dataset
from components.data.inbox import merge
from components.data.split import SplitSpec, add_increments, make_split
from components.data.synth import SynthConfig, write_synth_dataset
from components.settings import Data

from .common import COMPUTE, dataset_dir, dataset_hash, layout, log_outputs, read_params, split_file, stage_run

# The `data` stage (dvc.yaml) depends on this folder (and on the `data` params): a source under it
# is re-imported by `dvc repro` when its files change. A source anywhere else (`../shared/...`, an
# absolute path) is not watched by DVC, which re-imports it only when a `data.*` param changes; such
# an import records a fingerprint of the source (`source_hash` in summary.json and on the MLflow run).
WATCHED = Path("data/raw")


def watched_by_dvc(src: str | Path) -> bool:
    """Whether ``src`` (relative to the working directory, the repository root under DVC) lies
    inside the folder the `data` stage depends on."""
    path, watched = Path(src).expanduser().resolve(), (Path.cwd() / WATCHED).resolve()
    return path == watched or watched in path.parents


def _report(run, ds: Path, summary: dict) -> None:
    log_outputs(run, metrics={k: summary[k] for k in ("images", "clean_images", "boxes", "quarantined")},
                artifacts=[(str(ds / f), "dataset") for f in
                           ("summary.json", "quarantine.json", "quarantine.md", "dataset.yaml")],
                tags={"dataset_hash": summary["content_hash"],
                      **{k: summary[k] for k in ("source_hash",) if k in summary}})


@task(name="import-dataset", **COMPUTE)
def import_task(src: str, name: str, root: str, fmt: str, d: Data, fingerprint: bool = False) -> dict:
    """``d``: the ``data`` settings (clip_px, classes, near_dup_bits, min_class_boxes, follow_symlinks:
    importers.import_dataset); ``fingerprint``: record a fingerprint of the source."""
    return import_dataset(src, name, root, ImportOptions(
        fmt, d.clip_px, list(d.classes) if d.classes is not None else None, fingerprint, d.near_dup_bits,
        d.min_class_boxes, d.follow_symlinks))


@task(name="synthesise-dataset", **COMPUTE)
def synth_task(cfg: SynthConfig, root: str, name: str) -> dict:
    """``cfg``: the ``data.synth`` settings (they are the generator's ``SynthConfig``)."""
    return write_synth_dataset(cfg, root, name)


@flow(name="data-import")
def import_flow(src: str, name: str, root: str, fmt: str, params_file: str = "params.yaml") -> dict:
    """Validate and import ``src`` into ``root/name``; bad samples are quarantined with reasons."""
    params = read_params(params_file)
    unwatched = not watched_by_dvc(src)
    with stage_run(f"data-import:{name}", params, ["data"], extra_tags={"source": src}) as run:
        summary = import_task(src, name, root, fmt, params.data, unwatched)
        _report(run, Path(root) / name, summary)
    log = get_run_logger()
    log.info("imported %s: %d images (%d clean), %d boxes, %d quarantined; %d source groups (largest %d, %d "
             "near-duplicate pairs)", name, summary["images"], summary["clean_images"], summary["boxes"],
             summary["quarantined"],
             summary["groups"]["count"], summary["groups"]["largest"], summary["near_duplicate_pairs"])
    for w in summary["warnings"]:
        if w.startswith("class '"):                 # importers: a rare discovered class
            log.warning("%s", w)
    if unwatched:
        log.warning("source %s is outside %s/, so DVC does not watch its files (source_hash %s, %d files, "
                    "in summary.json): after changing them run `dvc repro -f -s data` (then `dvc repro`), "
                    "or `dvc add` a copy under %s/ and point data.source at it", src, WATCHED,
                    summary["source_hash"][:12], summary["source_files"], WATCHED)
    return summary


@flow(name="data-synth")
def synth_flow(root: str, name: str, params_file: str = "params.yaml") -> dict:
    """Generate the seeded synthetic surface-defect dataset (the embedded default data)."""
    params = read_params(params_file)
    with stage_run(f"data-synth:{name}", params, ["data.synth"]) as run:
        summary = synth_task(params.data.synth, root, name)
        _report(run, Path(root) / name, summary)
    return summary


@flow(name="data-prepare")
def prepare_flow(params_file: str = "params.yaml") -> dict:
    """DVC stage ``data``: ``data.source: synth`` generates, anything else is imported."""
    params = read_params(params_file)
    src = params.data.source
    lay = layout(params)
    root, name = str(lay.datasets), lay.data_name
    if src == "synth":
        summary = synth_flow(root, name, params_file)
    else:
        summary = import_flow(src, name, root, params.data.format, params_file)
    merged = merge_task(root, name, params.data.increments)
    if merged and "source_hash" in summary:      # the merged summary keeps the source's fingerprint
        merged.update({k: summary[k] for k in ("source_hash", "source_files")})
        (Path(root) / name / "summary.json").write_text(json.dumps(merged, indent=2))
    if merged:
        get_run_logger().info("merged increments %s: %d images in all", merged["increments"], merged["images"])
        with stage_run(f"data-merge:{name}", params, ["data"], merged["content_hash"],
                       {"increments": json.dumps(merged["increments"])}) as run:
            _report(run, Path(root) / name, merged)
        return merged
    return summary


@task(name="split-dataset", **COMPUTE)
def split_task(ds: str, spec: SplitSpec) -> dict:
    """The base images are split as ``spec`` says; increment images (``batch`` in the manifest) go
    to train/val only, so the test split stays fixed as new samples arrive."""
    manifest = load_manifest(Path(ds))
    bits = manifest.get("near_dup_bits")     # the data stage's data.near_dup_bits
    base = [e for e in manifest["images"] if "batch" not in e]
    new = [e for e in manifest["images"] if "batch" in e]
    result = make_split(base, manifest["classes"], spec, near_dup_bits=bits)
    return add_increments(result, new, manifest["classes"], base=base, near_dup_bits=bits)


@task(name="merge-increments", **COMPUTE)
def merge_task(root: str, name: str, increments: str) -> dict | None:
    return merge(Path(root), name, Path(increments))


@flow(name="data-split")
def split_flow(params_file: str = "params.yaml") -> dict:
    """DVC stage ``split``: deterministic stratified train/val/test (+ k-fold) split."""
    params = read_params(params_file)
    ds, out = dataset_dir(params), split_file(params)
    with stage_run("split", params, ["split", "data.name"], dataset_hash(ds)) as run:
        result = split_task(str(ds), SplitSpec.of(params.split))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        parts = ("train", "val", "test")
        bal = result["balance"]
        log_outputs(run, metrics={**{f"{k}_images": result["counts"][k]["images"] for k in parts},
                                  **{f"{k}_clean_images": result["counts"][k]["clean_images"] for k in parts},
                                  "leakage": result["leakage"], "max_share_deviation": bal["max_deviation"],
                                  "rebalance_moves": bal["moves"]}, artifacts=[(str(out), None)])
    log = get_run_logger()
    log.info("split %s: %s (clean %s), %d source groups, leakage %d, max share deviation %.3f, %d rebalancing "
             "move(s)", ds.name, {k: result["counts"][k]["images"] for k in parts},
             {k: result["counts"][k]["clean_images"] for k in parts}, result["groups"]["count"], result["leakage"],
             bal["max_deviation"], bal["moves"])
    for w in bal["warnings"]:
        log.warning("%s", w)
    if result.get("held_out"):
        log.warning("%d new image(s) left out of train/val: near-copies of test images (%s)",
                    len(result["held_out"]), ", ".join(result["held_out"][:5]))
    return result
