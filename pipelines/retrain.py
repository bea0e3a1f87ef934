"""Retraining flow (``defectops retrain``; the ``retrain`` deployment runs it on ``retrain.schedule``).

1. **Ingest**: files dropped into ``retrain.inbox`` (VOC or YOLO layout) form one batch (its id is
   a hash of the files, so a rerun finds the same batch). The data layer validates them against
   the current dataset (its classes; pixels already in the dataset are refused); the accepted
   samples become ``<data.increments>/<batch>``, a canonical dataset with its quarantine report,
   moved into place atomically. The inbox is only read.
2. **New dataset version**: ``dvc add`` of the increment, ``dvc repro split`` (the ``data`` stage
   merges the increments into the dataset, the split deals them to train/val: the test split
   stays fixed), then, in a git checkout with ``retrain.git_commit``, a commit of the ``.dvc``
   file and ``dvc.lock``.
3. **Archive**: only now are the batch's inbox files moved to ``retrain.archive/<batch>/`` (copy,
   check the hash, delete the original), with the quarantine report beside them.
4. **Retrain, evaluate, promote**: ``dvc repro`` of the whole pipeline: DVC reruns what the new
   data made stale (trainings warm-start from the champion, ``retrain.warm_start``), and the
   ``promote`` stage's gate decides ``champion`` or ``challenger`` on the fixed test split. Whether
   a new version was registered / became champion is read from the registry (the ``champion``
   alias and the latest version before and after, through the tracking URI in use), never from
   git-tracked reports, which on a fresh clone describe someone else's registry.

Every step is idempotent and checks the world, not a journal: a crash anywhere loses no inbox
file (they leave the inbox only once their dataset version is committed) and a rerun finishes
the job: a half-done batch is finished before a new one is taken, and an interrupted training
resumes from its last checkpoint (``pipelines/train.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from prefect import flow, get_run_logger, task

from components.data.importers import ImportError_, ImportOptions
from components.data.inbox import (ARCHIVED, archive_batch, batch_files, batch_id, inbox_files, increment_dirs,
                                   ingest)
from components.deploy.promotion import promotion_of, registry_state, retrain_status
from components.settings import Data, Settings
from components.tracking import tracking_uri
from components.versioning import commit_paths

from .common import COMPUTE, dataset_hash, layout, log_outputs, pipeline_env, read_params, stage_run


def _env() -> dict:
    """Subprocess environment: this interpreter's scripts (``defectops``, ``dvc``) first on PATH; the
    stages DVC runs join this retrain's pipeline run (MLflow tag ``defectops.pipeline_run``)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return pipeline_env({**os.environ, "PATH": path})


def dvc(*args: str) -> None:
    """Run DVC (its output goes to this flow's log stream: ``dvc repro`` shows every stage)."""
    p = subprocess.run([sys.executable, "-m", "dvc", *args], env=_env())
    if p.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed (exit {p.returncode})")


@task(name="ingest-batch", **COMPUTE)
def ingest_task(inbox: str, files: dict[str, str], batch: str, staging: str, existing: str, data: Data,
                test: list[str] | None = None) -> dict:
    """``data``: the ``data`` settings (format, clip_px, follow_symlinks); ``test``: the current
    split's test images (near-copies of those are refused; None: every base image counts as a
    possible test image)."""
    shutil.rmtree(Path(staging) / batch, ignore_errors=True)
    return ingest(Path(inbox), files, batch, Path(staging), Path(existing),
                  ImportOptions(data.format, data.clip_px, follow_symlinks=data.follow_symlinks), test)


@task(name="archive-batch", **COMPUTE)
def archive_task(inbox: str, archive: str, batch: str, files: dict[str, str], report: str | None) -> int:
    return archive_batch(Path(inbox), Path(archive), batch, files, Path(report) if report else None)


@flow(name="retrain")
def retrain_flow(params_file: str = "params.yaml") -> dict:
    """See the module docstring. Returns what happened (also ``reports/retrain.json``)."""
    params = read_params(params_file)
    cfg, ds = params.retrain, layout(params).dataset
    increments = Path(params.data.increments)
    if not (ds / "manifest.json").is_file():
        get_run_logger().info("no dataset yet: building it first (dvc repro split)")
        dvc("repro", "split")
    before = dataset_hash(ds)
    result: dict = {"dataset_hash_before": before, "batches": [], "quarantined": 0, "images_added": 0}
    # 1. batches a crash left between ingest and archive come first; their files are not a new batch
    pending = [d for d in increment_dirs(increments) if not (Path(cfg.archive) / d.name / ARCHIVED).is_file()]
    taken = {(rel, sha) for d in pending for rel, sha in batch_files(d).items()}
    files = {rel: sha for rel, sha in inbox_files(Path(cfg.inbox)).items() if (rel, sha) not in taken}
    with stage_run("retrain", params, ["retrain", "data"], before) as run:
        if files:
            batch = take_batch(params, files, result)
            if batch is None:                        # nothing usable: reported, archived, no new version
                _finish(run, params, result)
                return result
            pending.append(increments / batch)
        if pending:
            new_dataset_version(params, pending, result)
        else:
            get_run_logger().info("inbox %s: nothing new", Path(cfg.inbox))
        retrain_and_promote(params, before, result)
        _finish(run, params, result)
    return result


def take_batch(params: Settings, files: dict[str, str], result: dict) -> str | None:
    """The inbox ``files`` as one batch: validated into ``<data.increments>/<batch>`` (kept when a
    crash left it there already); None when nothing in it is usable (its files archived with the
    quarantine report, ``result`` says so)."""
    log, cfg, lay = get_run_logger(), params.retrain, layout(params)
    increments, staging = Path(params.data.increments), lay.scratch("retrain")
    batch = batch_id(files)
    log.info("inbox: %d new file(s) -> batch %s", len(files), batch)
    if (increments / batch).is_dir():
        return batch
    try:
        test = json.loads(lay.split_file.read_text())["test"] if lay.split_file.is_file() else None
        s = ingest_task(str(Path(cfg.inbox)), files, batch, str(staging), str(lay.dataset), params.data, test)
    except ImportError_ as e:
        log.warning("%s", e)
        archive_task(str(Path(cfg.inbox)), str(Path(cfg.archive)), batch, files, str(staging / batch))
        result.update(status="all quarantined", quarantine=str(Path(cfg.archive) / batch / "quarantine.md"))
        result["batches"].append({"batch": batch, "images": 0, "quarantined": len(files)})
        return None
    increments.mkdir(parents=True, exist_ok=True)
    os.replace(staging / batch, increments / batch)
    log.info("batch %s: %d accepted, %d quarantined (report %s)", batch, s["images"], s["quarantined"],
             increments / batch / "quarantine.md")
    return batch


def new_dataset_version(params: Settings, pending: list[Path], result: dict) -> None:
    """2. the new dataset version: DVC-tracked, rebuilt, split, committed; 3. only then do the inbox
    files leave the inbox (archived with their quarantine report)."""
    cfg, increments = params.retrain, Path(params.data.increments)
    for d in pending:
        dvc("add", str(d))
    dvc("repro", "split")
    result["dataset_commit"] = commit_paths(
        [f"{d}.dvc" for d in pending] + [str(increments / ".gitignore"), "dvc.lock"],
        f"data: add inbox batch(es) {', '.join(d.name for d in pending)}") if cfg.git_commit else None
    for d in pending:
        summary = json.loads((d / "summary.json").read_text())
        moved = archive_task(str(Path(cfg.inbox)), str(Path(cfg.archive)), d.name, batch_files(d), str(d))
        get_run_logger().info("batch %s: %d inbox file(s) archived to %s", d.name, moved, Path(cfg.archive) / d.name)
        result["batches"].append({"batch": d.name, "images": summary["images"], "quarantined": summary["quarantined"],
                                  "quarantine": str(d / "quarantine.md")})
        result["images_added"] += summary["images"]
        result["quarantined"] += summary["quarantined"]


def retrain_and_promote(params: Settings, hash_before: str | None, result: dict) -> None:
    """4. retrain what the new data made stale, evaluate, promote through the gate (``dvc repro``);
    what the promote step did is read from the registry (not from git-tracked reports)."""
    lay, cfg = layout(params), params.retrain
    uri, name = tracking_uri(params.tracking.plain()), params.promote.registered_model
    reg_before, started = registry_state(uri, name), time.time()
    dvc("repro")
    reg_after = registry_state(uri, name)
    result["dataset_hash"] = dataset_hash(lay.dataset)
    result.update(champion_before=reg_before["champion"], champion=reg_after["champion"])
    decided = retrain_status(reg_before, reg_after, hash_before, result["dataset_hash"])
    result["status"] = decided["status"]
    result["promotion"] = (promotion_of(uri, name, decided["version"], lay.promotion, started)
                           if decided["version"] else None)
    if cfg.git_commit and decided["version"]:
        p = result["promotion"]
        outs = ["dvc.lock", str(lay.metrics), str(lay.plots), str(lay.models / "tuned"), str(lay.promotion)]
        result["model_commit"] = commit_paths(outs, f"retrain: {p['model']} -> {name} v{p['version']} ({p['alias']})")


def _finish(run, params: Settings, result: dict) -> None:
    out = layout(params).reports / "retrain.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    p = result.get("promotion") or {}
    log_outputs(run, metrics={"images_added": result["images_added"], "quarantined": result["quarantined"]},
                artifacts=[(str(out), None)] + [(b["quarantine"], f"quarantine/{b['batch']}")
                                                for b in result["batches"] if Path(b.get("quarantine", "")).is_file()],
                tags={"status": result["status"], "batches": ",".join(b["batch"] for b in result["batches"]),
                      **({"registered_version": p["version"], "alias": p["alias"]} if p else {})})


@flow(name="repro")
def repro_flow(targets: list[str] | None = None) -> str:
    """The DVC pipeline on a worker (``dvc repro [targets]``): what ``make run`` does, as a
    deployment. DVC decides what is stale; every stage logs its own MLflow run."""
    dvc("repro", *(targets or []))
    return "dvc repro " + " ".join(targets or [])
