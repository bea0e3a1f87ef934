"""MLflow tracking: one run per stage execution, owned by this project.

Ultralytics' own MLflow callback is switched off (see ``components/__init__.py``): it would
start a second run and end ours. Training metrics reach MLflow through our trainer callback
instead (``components/train.py``).

Every call goes through ``MlflowClient`` with an explicit run id, never the fluent
"active run", because Prefect runs tasks on worker threads. ``MLFLOW_TRACKING_URI`` (a
server, e.g. ``http://mlflow:5000``) wins over ``tracking.uri`` from params (SQLite by default).
MLflow's HTTP client retries transient server errors itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from .config import flatten

MAX_PARAM_LEN = 6000
BATCH = 100


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
        import time

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

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def _clean(key: str) -> str:
    """MLflow keys allow alphanumerics, ``_ - . / space``: ultralytics uses ``metrics/mAP50(B)``."""
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "" for ch in key)


def start_stage_run(stage: str, tracking: dict, params: dict[str, Any], tags: dict[str, Any]) -> StageRun:
    """Create the run for one stage execution with flattened params and tags."""
    uri = tracking_uri(tracking)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(tracking["experiment"])
    exp_id = exp.experiment_id if exp else client.create_experiment(tracking["experiment"])
    run = client.create_run(exp_id, run_name=stage,
                            tags={"stage": stage, **{k: str(v) for k, v in tags.items()}})
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


__all__ = ["StageRun", "start_stage_run", "tracking_uri", "find_runs", "mlflow"]
