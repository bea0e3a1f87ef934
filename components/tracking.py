"""MLflow tracking: one run per stage execution, owned by this project.

Ultralytics' own MLflow callback is switched off (see ``components/__init__.py``): it would
start a second run and end ours. Training metrics reach MLflow through our trainer callback
instead (``components/train.py``).

Every call goes through ``MlflowClient`` with an explicit run id, never the fluent
"active run", because Prefect runs tasks on worker threads. ``MLFLOW_TRACKING_URI`` (a
server, e.g. ``http://mlflow:5000``) wins over ``tracking.uri`` from params (SQLite by default).
MLflow's HTTP client retries transient server errors itself.

What the MLflow UI shows (the comparison and promotion desk): the experiment is tagged as model
training (``mlflow.experimentKind``), every run carries MLflow's standard source tags
(``mlflow.source.git.commit``, ``mlflow.source.name``, ``mlflow.source.type``) and
``defectops.pipeline_run``, one id shared by every run of one ``dvc repro`` (``pipeline_run_id``);
training and evaluation runs log their dataset as an MLflow dataset input (``StageRun.log_dataset``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from .settings import flatten

MAX_PARAM_LEN = 6000
BATCH = 100

# the MLflow UI opens an experiment of this kind on its runs table, not on the GenAI overview;
# a kind the UI only inferred (or could not infer) is replaced, one a user picked is kept
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# the UI's own guesses (mlflow/server/js: ExperimentKind ..._INFERRED, NO_INFERRED_TYPE)
_GUESSED_KINDS = ("genai_development_inferred", "custom_model_development_inferred", "no_inferred_type")
PIPELINE_RUN_TAG = "defectops.pipeline_run"            # value: pipeline_run_id()
PIPELINE_RUN_ENV = "DEFECTOPS_PIPELINE_RUN"            # the pipeline-run id, passed down to subprocesses
DATASET_CONTEXT_TAG = "mlflow.data.context"


# ---- what identifies an execution: the git commit, the pipeline run, the command that ran

def git_commit(cwd: str | Path = ".") -> str:
    """HEAD commit, suffixed ``-dirty`` when tracked files differ; ``unknown`` outside git."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _dvc_process():
    """The ``dvc`` process (``dvc repro``, ``dvc exp run``) this process runs under, or None."""
    import psutil

    try:
        for p in psutil.Process().parents():
            try:
                cmd = p.cmdline()
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            names = [os.path.basename(c) for c in cmd[:3]]
            if any(n in ("dvc", "dvc.exe") for n in names) or (len(cmd) > 2 and cmd[1:3] == ["-m", "dvc"]):
                return p
    except psutil.Error:
        pass
    return None


def pipeline_run_id() -> str:
    """The id that groups the runs of one pipeline execution (tag ``defectops.pipeline_run``).

    ``DEFECTOPS_PIPELINE_RUN`` wins (a caller that starts stages in subprocesses passes its own id
    down); else, in a stage command DVC runs (``DVC_STAGE`` is set), the ``dvc`` process that runs
    every stage of this ``dvc repro`` / ``dvc exp run``: its start time and pid, the same in each
    stage's process and new for the next repro; else this process's own start time and pid."""
    import psutil

    if os.environ.get(PIPELINE_RUN_ENV):
        return os.environ[PIPELINE_RUN_ENV]
    proc, kind = (_dvc_process(), "dvc") if os.environ.get("DVC_STAGE") else (None, "")
    if proc is None:
        proc, kind = psutil.Process(), "proc"
    started = time.strftime("%Y%m%dT%H%M%S", time.localtime(proc.create_time()))
    return f"{kind}-{started}-{proc.pid}"


def source_name() -> str:
    """``mlflow.source.name``: ``dvc.yaml:<stage>`` for a stage DVC runs, else the command line."""
    if os.environ.get("DVC_STAGE"):
        return f"dvc.yaml:{os.environ['DVC_STAGE']}"
    return " ".join([os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python",
                     *sys.argv[1:]])[:500]   # an MLflow tag value, kept short


def tracking_uri(tracking: dict) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or tracking["uri"]


@dataclass
class StageRun:
    """A handle on one MLflow run (thread-safe: explicit run id, no fluent state)."""

    uri: str
    run_id: str
    experiment_id: str

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri)

    def log_params(self, params: dict[str, Any]) -> None:
        flat = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in flatten(params).items()]
        for i in range(0, len(flat), BATCH):
            self.client.log_batch(self.run_id, params=flat[i:i + BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        ts = int(time.time() * 1000)
        ms = [Metric(_clean(k), float(v), ts, step or 0) for k, v in metrics.items()
              if isinstance(v, (int, float))]
        for i in range(0, len(ms), BATCH):
            self.client.log_batch(self.run_id, metrics=ms[i:i + BATCH])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dataset(self, name: str, digest: str, source: str, profile: dict[str, Any], context: str,
                    tags: dict[str, Any] | None = None) -> None:
        """Log a dataset as an MLflow dataset input of this run: ``name``, ``digest`` (its content
        hash), ``source`` (a path: the DVC path of the dataset), ``profile`` (shown as the dataset's
        profile: sizes, classes) and input tags ``tags`` plus ``mlflow.data.context`` = ``context``
        (``train``, ``test``...). Built with ``mlflow.data``'s ``MetaDataset`` (metadata only,
        nothing is copied) and logged with the explicit run id."""
        from mlflow.data.dataset_source_registry import get_dataset_source_from_json
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset, DatasetInput, InputTag

        src = get_dataset_source_from_json(json.dumps({"uri": str(source)}), "local")
        d = MetaDataset(src, name=name, digest=digest).to_dict()
        entity = Dataset(name=d["name"], digest=d["digest"], source_type=d["source_type"], source=d["source"],
                         schema=d.get("schema"), profile=json.dumps(profile, sort_keys=True))
        input_tags = [InputTag(k, str(v)) for k, v in (tags or {}).items()] + [InputTag(DATASET_CONTEXT_TAG, context)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, input_tags)])

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def _clean(key: str) -> str:
    """MLflow keys allow alphanumerics, ``_ - . / space``: ultralytics uses ``metrics/mAP50(B)``."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "" for ch in key)


def source_tags(commit: str | None = None) -> dict[str, str]:
    """MLflow's standard source tags and the pipeline-run tag. ``commit``: the project's
    ``git_commit`` (``<sha>[-dirty]``; computed when None); the standard tag gets the bare sha
    (nothing outside git)."""
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

    commit = commit or git_commit()
    tags = {MLFLOW_SOURCE_NAME: source_name(), MLFLOW_SOURCE_TYPE: "LOCAL", PIPELINE_RUN_TAG: pipeline_run_id()}
    if commit and commit != "unknown":
        tags[MLFLOW_GIT_COMMIT] = commit.removesuffix("-dirty")
    return tags


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created if missing; tagged as model training
    (``mlflow.experimentKind``) unless someone picked another kind for it."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:                   # another stage created it in the meantime
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.tags.get(EXPERIMENT_KIND_TAG) in (None, "", *_GUESSED_KINDS):
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def start_stage_run(stage: str, tracking: dict, params: dict[str, Any], tags: dict[str, Any]) -> StageRun:
    """Create the run for one stage execution with flattened params and tags (plus MLflow's source
    tags and ``defectops.pipeline_run``, ``source_tags``; a caller's tag of the same key wins)."""
    uri = tracking_uri(tracking)
    client = MlflowClient(tracking_uri=uri)
    exp_id = experiment_id(client, tracking["experiment"])
    all_tags = {**source_tags(tags.get("git_commit")), "stage": stage, **{k: str(v) for k, v in tags.items()}}
    run = client.create_run(exp_id, run_name=stage, tags=all_tags)
    handle = StageRun(uri=uri, run_id=run.info.run_id, experiment_id=exp_id)
    handle.log_params(params)
    return handle


def find_runs(tracking: dict, filter_string: str) -> list:
    """Runs of the configured experiment matching an MLflow filter string, newest first."""
    client = MlflowClient(tracking_uri=tracking_uri(tracking))
    exp = client.get_experiment_by_name(tracking["experiment"])
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string, order_by=["attributes.start_time DESC"])


__all__ = ["StageRun", "start_stage_run", "tracking_uri", "find_runs", "pipeline_run_id", "source_tags",
           "experiment_id", "git_commit", "source_name", "PIPELINE_RUN_ENV", "mlflow"]
