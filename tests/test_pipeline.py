"""End to end: `dvc repro` of a copy of this repository on a tiny profile.

Checks the DVC wiring (second repro re-runs nothing; one changed param re-runs only the stages
that read it), the DVC metrics/plots, and MLflow (exactly one run per stage execution, none
from ultralytics' own callback, per-epoch metrics, artifacts, tags).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ["data", "split", "train_baseline", "evaluate_baseline"]

TINY = {
    "data": {"synth": {"images": 48, "size": 96}},
    "train": {"epochs": 2, "imgsz": 96, "batch": 8, "workers": 0},
    "evaluate": {"batch": 8, "latency": {"runs": 3, "warmup": 1}},
}


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) else v
    return base


def _files_of(repo: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (repo / f).is_file()]


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_server):
    """A fresh copy of the repository (tracked files only), tiny params, its own MLflow db."""
    from prefect.settings import PREFECT_API_URL

    root = tmp_path_factory.mktemp("clone") / "defectops"
    for f in _files_of(REPO):
        if f.startswith(("data/datasets/", "data/splits/", "models/", "metrics/", "plots/", "reports/")) or f == "dvc.lock":
            continue
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, root / f)
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(_merge(params, TINY), sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "PREFECT_API_URL": PREFECT_API_URL.value(), "DVC_NO_ANALYTICS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, check=True, env=env)
    return root, env


def dvc(project, *args) -> str:
    root, env = project
    p = subprocess.run(["dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    assert p.returncode == 0, f"dvc {' '.join(args)} failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p.stdout + p.stderr


def runs(project) -> list:
    from mlflow.tracking import MlflowClient

    root, _ = project
    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    exp = client.get_experiment_by_name("defectops")
    return client.search_runs([exp.experiment_id]) if exp else []


@pytest.mark.slow
def test_dvc_repro_end_to_end(project):
    root, _ = project
    out = dvc(project, "repro")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out

    # ---- DVC metrics and plots
    m = json.loads((root / "metrics" / "baseline.json").read_text())
    for key in ("mAP50", "mAP50-95", "precision", "recall", "F1"):
        assert 0.0 <= m[key] <= 1.0
    assert m["F1"] == pytest.approx(
        0 if m["precision"] + m["recall"] == 0 else
        2 * m["precision"] * m["recall"] / (m["precision"] + m["recall"]), abs=1e-3)
    assert list(m["per_class_AP50"]) == ["scratch", "inclusion", "patch", "pits", "crazing", "scale"]
    assert 2_500_000 < m["params"] < 2_700_000          # YOLO11n with 6 classes: 2.59 M
    assert m["GFLOPs"] > 0 and m["fps"] > 0 and m["latency_batch"] == 1
    assert m["latency_device"].startswith("cpu") and m["split"] == "test"
    assert m["images"] == 10                            # 48 images * 0.2 test
    rows = list(csv.DictReader((root / "plots" / "baseline" / "pr_curve.csv").open()))
    assert len(rows) == 101 and float(rows[0]["recall"]) == 0 and float(rows[-1]["recall"]) == 1
    assert len(list(csv.DictReader((root / "plots" / "baseline" / "per_class_ap.csv").open()))) == 6
    assert "mAP50" in dvc(project, "metrics", "show")

    # ---- MLflow: one run per stage, nothing from ultralytics' own callback
    rs = runs(project)
    assert sorted(r.info.run_name for r in rs) == sorted(
        ["data-synth:synth", "split", "train:baseline", "evaluate:baseline"])
    assert all(r.info.status == "FINISHED" for r in rs)
    train = next(r for r in rs if r.info.run_name == "train:baseline")
    assert train.data.params["train.epochs"] == "2" and train.data.params["baseline.scale"] == "n"
    for tag in ("git_commit", "dataset_hash", "params_hash"):
        assert train.data.tags[tag] not in ("", "unknown")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    hist = client.get_metric_history(train.info.run_id, "metrics/mAP50B")
    assert [h.step for h in hist] == [1, 2]
    assert "best/metrics/mAP50B" in train.data.metrics        # final validation of best.pt
    arts = {a.path for a in client.list_artifacts(train.info.run_id, "weights")}
    assert "weights/best.pt" in arts
    ev = next(r for r in rs if r.info.run_name == "evaluate:baseline")
    assert ev.data.metrics["test.mAP50"] == pytest.approx(m["mAP50"])
    assert ev.data.tags["train_run_id"] == train.info.run_id

    # ---- nothing changed: nothing re-runs, no new MLflow run
    out = dvc(project, "repro")
    assert "Running stage" not in out
    assert len(runs(project)) == 4

    # ---- one evaluate param changed: only evaluate re-runs
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluate"]["latency"]["runs"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(project, "repro")
    assert "Running stage 'evaluate_baseline'" in out
    for stage in ("data", "split", "train_baseline"):
        assert f"Running stage '{stage}'" not in out
    assert json.loads((root / "metrics" / "baseline.json").read_text())["latency_runs"] == 4

    # ---- one split param changed: split, train and evaluate re-run, data does not
    params["split"]["seed"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(project, "status")
    assert "split" in status and "data:" not in status
