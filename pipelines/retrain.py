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

from components.data.importers import ImportError_
from components.data.inbox import (ARCHIVED, archive_batch, batch_files, batch_id, inbox_files, increment_dirs,
                                   ingest)
from components.deploy.registry import CHAMPION, champion_version, client, latest_version
from components.settings import Settings
from components.tracking import tracking_uri

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


def git_commit(paths: list[str], message: str) -> str | None:
    """Commit ``paths`` (only them) when the project is a git checkout; returns the commit or None."""
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True)
    if inside.returncode != 0:
        return None
    paths = [p for p in paths if Path(p).exists() or subprocess.run(
        ["git", "ls-files", "--error-unmatch", p], capture_output=True).returncode == 0]
    subprocess.run(["git", "add", "-A", "--", *paths], check=True)
    if subprocess.run(["git", "diff", "--cached", "--quiet", "--", *paths]).returncode == 0:
        return None                                   # nothing new (a rerun)
    subprocess.run(["git", "-c", "user.name=defectops-retrain", "-c", "user.email=retrain@defectops.local",
                    "commit", "-q", "-m", message, "--", *paths], check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


@task(name="ingest-batch", **COMPUTE)
def ingest_task(inbox: str, files: dict[str, str], batch: str, staging: str, existing: str, fmt: str,
                clip_px: float, test: list[str] | None = None, follow_symlinks: str = "never") -> dict:
    """``test``: the current split's test images (near-copies of those are refused; None: every base
    image counts as a possible test image)."""
    shutil.rmtree(Path(staging) / batch, ignore_errors=True)
    return ingest(Path(inbox), files, batch, Path(staging), Path(existing), fmt, clip_px, test, follow_symlinks)


@task(name="archive-batch", **COMPUTE)
def archive_task(inbox: str, archive: str, batch: str, files: dict[str, str], report: str | None) -> int:
    return archive_batch(Path(inbox), Path(archive), batch, files, Path(report) if report else None)


@flow(name="retrain")
def retrain_flow(params_file: str = "params.yaml") -> dict:
    """See the module docstring. Returns what happened (also ``reports/retrain.json``)."""
    params = read_params(params_file)
    log = get_run_logger()
    cfg = params.retrain
    inbox, archive = Path(cfg.inbox), Path(cfg.archive)
    increments = Path(params.data.increments)
    lay = layout(params)
    staging = lay.scratch("retrain")
    ds = lay.dataset
    if not (ds / "manifest.json").is_file():
        log.info("no dataset yet: building it first (dvc repro split)")
        dvc("repro", "split")
    before = dataset_hash(ds)
    result: dict = {"dataset_hash_before": before, "batches": [], "quarantined": 0, "images_added": 0}

    # 1. batches a crash left between ingest and archive come first; their files are not a new batch
    pending = [d for d in increment_dirs(increments) if not (archive / d.name / ARCHIVED).is_file()]
    taken = {(rel, sha) for d in pending for rel, sha in batch_files(d).items()}
    files = {rel: sha for rel, sha in inbox_files(inbox).items() if (rel, sha) not in taken}
    with stage_run("retrain", params, ["retrain", "data"], before) as run:
        if files:
            batch = batch_id(files)
            log.info("inbox: %d new file(s) -> batch %s", len(files), batch)
            if not (increments / batch).is_dir():
                try:
                    split_path = lay.split_file
                    test = json.loads(split_path.read_text())["test"] if split_path.is_file() else None
                    s = ingest_task(str(inbox), files, batch, str(staging), str(ds),
                                    params.data.format, params.data.clip_px, test, params.data.follow_symlinks)
                except ImportError_ as e:            # nothing usable: report, archive, no new version
                    log.warning("%s", e)
                    archive_task(str(inbox), str(archive), batch, files, str(staging / batch))
                    result.update(status="all quarantined", quarantine=str(archive / batch / "quarantine.md"))
                    result["batches"].append({"batch": batch, "images": 0, "quarantined": len(files)})
                    _finish(run, params, result)
                    return result
                increments.mkdir(parents=True, exist_ok=True)
                os.replace(staging / batch, increments / batch)
                log.info("batch %s: %d accepted, %d quarantined (report %s)", batch, s["images"], s["quarantined"],
                         increments / batch / "quarantine.md")
            pending.append(increments / batch)

        if pending:
            # 2. the new dataset version: DVC-tracked, rebuilt, split, committed
            for d in pending:
                dvc("add", str(d))
            dvc("repro", "split")
            names = [d.name for d in pending]
            result["dataset_commit"] = git_commit(
                [f"{d}.dvc" for d in pending] + [str(increments / ".gitignore"), "dvc.lock"],
                f"data: add inbox batch(es) {', '.join(names)}") if cfg.git_commit else None
            # 3. only now do the inbox files leave the inbox
            for d in pending:
                summary = json.loads((d / "summary.json").read_text())
                moved = archive_task(str(inbox), str(archive), d.name, batch_files(d), str(d))
                log.info("batch %s: %d inbox file(s) archived to %s", d.name, moved, archive / d.name)
                result["batches"].append({"batch": d.name, "images": summary["images"],
                                          "quarantined": summary["quarantined"],
                                          "quarantine": str(d / "quarantine.md")})
                result["images_added"] += summary["images"]
                result["quarantined"] += summary["quarantined"]
        else:
            log.info("inbox %s: nothing new", inbox)

        # 4. retrain what the new data made stale, evaluate, promote through the gate; what the
        #    promote step did is read from the registry (not from git-tracked reports)
        promo = lay.promotion
        uri, name = tracking_uri(params.tracking.plain()), params.promote.registered_model
        reg_before, started = registry_state(uri, name), time.time()
        dvc("repro")
        reg_after = registry_state(uri, name)
        result["dataset_hash"] = dataset_hash(ds)
        result.update(champion_before=reg_before["champion"], champion=reg_after["champion"])
        decided = retrain_status(reg_before, reg_after, before, result["dataset_hash"])
        result["status"] = decided["status"]
        result["promotion"] = (promotion_of(uri, name, decided["version"], promo, started) if decided["version"] else None)
        if cfg.git_commit and decided["version"]:
            p = result["promotion"]
            outs = ["dvc.lock", str(lay.metrics), str(lay.plots), str(lay.models / "tuned"), str(promo)]
            result["model_commit"] = git_commit(outs, f"retrain: {p['model']} -> {name}"
                                                      f" v{p['version']} ({p['alias']})")
        _finish(run, params, result)
    return result


def registry_state(uri: str, name: str) -> dict:
    """What the retrain compares before and after ``dvc repro``: the version the ``champion`` alias
    points to and the highest registered version of ``name`` (None when there is none)."""
    return {"champion": champion_version(uri, name), "latest": latest_version(uri, name)}


def retrain_status(reg_before: dict, reg_after: dict, hash_before: str | None, hash_after: str | None) -> dict:
    """The retrain's outcome from the registry before and after the promote step:
    ``retrained`` when a new version was registered (champion or challenger) or the champion
    moved, with that ``version`` (the one whose outputs get a model commit); else ``dataset
    updated`` when the dataset changed, else ``up to date`` (``version`` None)."""
    def num(v):
        return int(v) if v is not None else 0

    version = None
    if num(reg_after.get("latest")) > num(reg_before.get("latest")):
        version = str(reg_after["latest"])                          # a new version, whatever its alias
    elif reg_after.get("champion") is not None and reg_after.get("champion") != reg_before.get("champion"):
        version = str(reg_after["champion"])                        # an existing version became champion
    if version is not None:
        status = "retrained"
    else:
        status = "dataset updated" if hash_after != hash_before else "up to date"
    return {"status": status, "version": version,
            "new_champion": reg_after.get("champion") != reg_before.get("champion")}


def promotion_of(uri: str, name: str, version: str, report: Path, since: float = 0.0) -> dict:
    """The promotion of ``version``: the promote stage's report when it was written (after
    ``since``) about that version, else what the registry says (source model, alias, the
    ``promotion`` tag)."""
    if report.is_file() and report.stat().st_mtime >= since:
        r = json.loads(report.read_text())
        if str(r.get("version")) == str(version):
            return r
    mv = client(uri).get_model_version(name, str(version))
    aliases = list(getattr(mv, "aliases", None) or [])
    alias = CHAMPION if CHAMPION in aliases else (aliases[0] if aliases else None)
    return {"model": mv.tags.get("model"), "version": str(version), "alias": alias,
            "reason": mv.tags.get("promotion", "")}


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
