"""What every flow shares: reading params, the MLflow run of the stage, tags."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from prefect import task
from prefect.cache_policies import NO_CACHE

from components.settings import Settings, load_settings, params_hash, trainer_args  # noqa: F401
from components.detectors import uses_lam
from components.layout import Layout
from components.tracking import PIPELINE_RUN_ENV, StageRun, git_commit, pipeline_run_id, start_stage_run  # noqa: F401

# tracking-server calls are the transient steps: retried; long compute steps are not
TRANSIENT = dict(retries=3, retry_delay_seconds=[2, 5, 15], cache_policy=NO_CACHE)
COMPUTE = dict(cache_policy=NO_CACHE)


@task(name="mlflow-start-run", **TRANSIENT)
def open_run(stage: str, tracking: dict, params: dict, tags: dict) -> StageRun:
    return start_stage_run(stage, tracking, params, tags)


@task(name="mlflow-log", **TRANSIENT)
def log_outputs(run: StageRun, metrics: dict[str, float] | None = None,
                artifacts: list[tuple[str, str | None]] | None = None,
                tags: dict[str, Any] | None = None) -> None:
    if metrics:
        run.log_metrics(metrics)
    for path, dest in artifacts or []:
        run.log_artifact(path, dest)
    if tags:
        run.set_tags(tags)


@task(name="mlflow-log-datasets", **TRANSIENT)
def log_datasets(run: StageRun, records: list[dict], context: str) -> None:
    for record in records:
        run.log_dataset(**record, context=context)


@task(name="mlflow-end-run", **TRANSIENT)
def close_run(run: StageRun, status: str) -> None:
    run.end(status)


@contextmanager
def stage_run(stage: str, params: Settings, used: list[str], dataset_hash: str | None = None,
              extra_tags: dict | None = None, dataset: str | None = None) -> Iterator[StageRun]:
    """One MLflow run for this stage execution: params of the ``used`` sections, flattened;
    tags: git commit, dataset content hash, params hash (and MLflow's source tags, the pipeline
    run: ``components.tracking.start_stage_run``). ``dataset``: the context (``train``, ``test``)
    in which the run reads the project's dataset and split, logged as MLflow dataset inputs
    (``dataset_records``). The params logged are the values the run used, after every override
    (a profile, a tuned decision); which layer set which key is the tag ``defectops.overrides``.
    Marked FAILED if the stage raises."""
    used_params = {k: params.get(k) for k in used}
    tags = {"git_commit": git_commit(), "params_hash": params_hash(used_params),
            **({"dataset_hash": dataset_hash} if dataset_hash else {}), **(extra_tags or {})}
    if params.overrides:
        tags["defectops.overrides"] = json.dumps(params.overrides_record())[:5000]   # an MLflow tag value
    run = open_run(stage, params.tracking.plain(), used_params, tags)
    try:
        records = dataset_records(params) if dataset else []
        if records:
            log_datasets(run, records, dataset)
        yield run
    except BaseException:
        close_run(run, "FAILED")
        raise
    close_run(run, "FINISHED")


def read_params(params_file: str) -> Settings:
    """params.yaml, parsed once into typed settings (``components.settings``)."""
    return load_settings(params_file)


def layout(params: Settings) -> Layout:
    """Where this params file puts datasets, splits, models, metrics, reports... (``components.layout``)."""
    return Layout.from_params(params)


def dataset_dir(params: Settings) -> Path:
    return layout(params).dataset


def split_file(params: Settings) -> Path:
    return layout(params).split_file


def dataset_hash(ds_dir: Path) -> str | None:
    summary = Path(ds_dir) / "summary.json"
    return json.loads(summary.read_text())["content_hash"] if summary.is_file() else None


def dataset_records(params: Settings) -> list[dict]:
    """The project's dataset and its split as MLflow dataset inputs (``StageRun.log_dataset``).

    MLflow keeps one record per (name, digest) in an experiment, so a profile holds only what the
    digest determines:

    * the dataset: name ``data.name``, digest = its content hash (``content_hash`` of the canonical
      dataset's manifest/summary: class names, image bytes and labels; the runs' ``dataset_hash``
      tag), source = its DVC path (the `data` stage's out), profile = images, boxes, classes, clean
      images (no boxes); the split sizes and clean image counts as input tags (``split.train``,
      ``split.train.clean_images`` ...);
    * the split: name ``<data.name>:split``, digest = a hash of the split file (the `split` stage's
      out, its source), profile = the sizes of train / val / test, seed and ratios, clean images
      per split, the largest deviation of a share from the ratios (``split.make_split``).

    Empty before the `data` stage has run; the dataset alone before the `split` stage has."""
    ds, sf = dataset_dir(params), split_file(params)
    summary = ds / "summary.json"
    if not summary.is_file():
        return []
    s = json.loads(summary.read_text())
    name = params.data.name
    profile = {"images": s["images"], "boxes": s["boxes"], "classes": s["classes"],
               "boxes_per_class": s.get("boxes_per_class"), "clean_images": s.get("clean_images"),
               **({"increments": s["increments"]} if s.get("increments") else {})}
    records = [{"name": name, "digest": s["content_hash"], "source": ds.as_posix(), "profile": profile, "tags": {}}]
    if sf.is_file():
        blob = sf.read_bytes()
        split = json.loads(blob)
        sizes = {k: len(split[k]) for k in ("train", "val", "test") if k in split}
        clean = {k: c["clean_images"] for k, c in split.get("counts", {}).items() if "clean_images" in c}
        records[0]["tags"] = {**{f"split.{k}": n for k, n in sizes.items()},
                              **{f"split.{k}.clean_images": n for k, n in clean.items()}}
        records.append({"name": f"{name}:split", "digest": hashlib.sha256(blob).hexdigest()[:16],
                        "source": sf.as_posix(), "tags": {"dataset_digest": s["content_hash"]},
                        "profile": {**sizes, **{k: split[k] for k in ("seed", "test_ratio", "val_ratio", "folds")
                                                if k in split},
                                    **({"clean_images": clean} if clean else {}),
                                    **({"max_share_deviation": split["balance"]["max_deviation"]}
                                       if "balance" in split else {})}})
    return records


def pipeline_env(env: dict | None = None) -> dict:
    """``env`` (default: this process's) for a subprocess that starts stages or trials: they join
    this process's pipeline run (``DEFECTOPS_PIPELINE_RUN``, tag ``defectops.pipeline_run``)."""
    return {**(os.environ if env is None else env), PIPELINE_RUN_ENV: pipeline_run_id()}


def numeric(d: dict, prefix: str = "") -> dict[str, float]:
    """Flatten the numeric leaves of a metrics dict for MLflow (``per_class_AP50.scratch``...)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(numeric(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def lam_dir(params: Settings) -> Path:
    return layout(params).lam_dir


def model_data_yaml(model: str, params: Settings, data_yaml: Path) -> Path:
    """The data YAML ``model`` trains / validates on: plus the LAM folder for LAGNet."""
    if not uses_lam(model, params):
        return data_yaml
    from components.detectors.lagnet import LamCoding
    from components.detectors.lagnet.data import lam_data_yaml

    lams = lam_dir(params)
    if not (lams / "lam_info.json").is_file():
        raise FileNotFoundError(f"no LAMs in {lams}: run `dvc repro lam` (defectops lam) first")
    return lam_data_yaml(data_yaml, lams, LamCoding(alpha=params.lam.alpha, beta=params.lam.beta))  # the blend only


def served_lam(params: Settings) -> dict:
    """What a LAM-reading detector is scored with (``tasks._validator``): the ``lam`` settings plus
    ``maker``, the LAM maker's weights, so each batch's LAM is made in the graph as served."""
    from components.detectors import lam_maker

    return {**params.lam.plain(), "maker": str(layout(params).weights(lam_maker().key))}


def storage_url(params: Settings) -> str:
    """``OPTUNA_STORAGE`` (e.g. ``postgresql://user@db/optuna``; credentials stay in the
    environment) wins over ``tune.storage``."""
    return os.environ.get("OPTUNA_STORAGE") or params.tune.storage


def load_tuned(path: str | Path, model: str) -> dict:
    """What a ``tune_<model>`` stage wrote (``overrides``: the decision's, ``{}`` when the defaults
    were kept), checked to belong to ``model``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tuned params at {path}: run `dvc repro tune_{model}` (defectops tune {model})")
    tuned = json.loads(path.read_text())
    if tuned.get("model") != model:
        raise ValueError(f"{path} holds tuned params of '{tuned.get('model')}', not '{model}'")
    return tuned
