"""End to end: `dvc repro` of a copy of this repository on a tiny profile.

Checks the DVC wiring (second repro re-runs nothing; one changed param re-runs only the stages
that read it), the DVC metrics/plots, and MLflow (exactly one run per stage execution, none
from ultralytics' own callback, per-epoch metrics, artifacts, tags).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ["data", "split", "train_baseline", "tune_dasc", "train_dasc", "evaluate@baseline", "evaluate@dasc", "lam",
          "tune_lagnet", "train_lagnet", "evaluate_lagnet", "promote"]
RUNS = ["data-synth:synth", "split", "train:baseline", "tune:dasc", "trial:dasc:0", "trial:dasc:1", "train:dasc",
        "evaluate:baseline", "evaluate:dasc", "lam", "tune:lagnet", "trial:lagnet:0", "trial:lagnet:1",
        "train:lagnet", "evaluate:lagnet", "promote", "export:<promoted model>"]

TINY = {
    "data": {"synth": {"images": 48, "size": 96}},
    "train": {"epochs": 2, "imgsz": 96, "batch": 8, "workers": 0},
    "evaluate": {"batch": 8, "latency": {"runs": 3, "warmup": 1}},
    "lagnet": {"width": 32},
    "lam": {"batch": 16, "grid_samples": 4},
    "tune": {"trials": 2, "epochs": 1, "parallel": 2},
}


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base[k], v) if isinstance(v, dict) else v
    return base


def _files_of(repo: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (repo / f).is_file()]


def make_project(root: Path, env: dict) -> tuple[Path, dict]:
    """A fresh copy of the repository at ``root`` (tracked files, no pipeline outputs), tiny
    params, a git repository of its own; ``env`` for the commands run in it."""
    for f in _files_of(REPO):
        if f.startswith(("data/datasets/", "data/splits/", "models/", "metrics/", "plots/", "reports/")) or f == "dvc.lock":
            continue
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, root / f)
    params = _merge(yaml.safe_load((root / "params.yaml").read_text()), json.loads(json.dumps(TINY)))
    params["promote"]["require"] = {}          # 2-epoch models: no floor, or nothing would take `champion`
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", **env}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, check=True, env=env)
    return root, env


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_server):
    """A fresh copy of the repository (tracked files only), tiny params, its own MLflow db."""
    from prefect.settings import PREFECT_API_URL

    root, env = make_project(tmp_path_factory.mktemp("clone") / "defectops", {"PREFECT_API_URL": PREFECT_API_URL.value()})
    env.pop("MLFLOW_TRACKING_URI", None)
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
    # the operating point: thresholds chosen on val, the line's figures on val and test (12 of 48 clean)
    op = m["operating_point"]
    assert set(op["thresholds"]) == set(m["per_class_AP50"]) and op["rule"] == "recall" and op["target"] == 0.9
    assert op["test"]["images"] == 10 and op["test"]["clean_images"] + op["test"]["defective_images"] == 10
    assert op["val"]["clean_images"] + op["test"]["clean_images"] <= 12
    for split in ("val", "test"):
        for k in ("escape_rate", "overkill_rate"):
            assert op[split][k] is None or 0 <= op[split][k] <= 1
    rows = list(csv.DictReader((root / "plots" / "baseline" / "pr_curve.csv").open()))
    assert len(rows) == 101 and float(rows[0]["recall"]) == 0 and float(rows[-1]["recall"]) == 1
    assert len(list(csv.DictReader((root / "plots" / "baseline" / "per_class_ap.csv").open()))) == 6
    shown = dvc(project, "metrics", "show")
    assert "metrics/baseline.json" in shown and "metrics/dasc.json" in shown
    d = json.loads((root / "metrics" / "dasc.json").read_text())
    assert 3_000_000 < d["params"] < 3_320_000                # DASC-YOLO-n, 6 classes (paper: 3.02 M)
    assert d["GFLOPs"] > m["GFLOPs"] and 0 <= d["mAP50"] <= 1
    info = json.loads((root / "models" / "dasc" / "train_info.json").read_text())
    assert (root / "models" / "dasc" / info["model_cfg"]).is_file()
    # ---- the final trainings read their tune stage's decision: 1-epoch trials are noise, the
    # defaults (the study's first trial) are kept
    tuned = json.loads((root / "models" / "tuned" / "dasc.json").read_text())
    assert tuned["overrides"] == {} and tuned["decision"].startswith("default (")
    assert info["tuned"] == {} and info["iou_loss"] == "ciou"
    assert tuned["default_trial"] == 0 and tuned["default_params"] == {"dasc.protonet_k": 4, "loss.iou": "ciou"}
    assert set(tuned["best_params"]) == {"dasc.protonet_k", "loss.iou"}
    assert tuned["best_value"] >= tuned["default_value"]
    assert sum(tuned["trials"].values()) == 2 and tuned["study"].startswith("defectops-dasc-")
    assert (root / "reports" / "tune" / "dasc" / "history.png").is_file()
    lag_tuned = json.loads((root / "models" / "tuned" / "lagnet.json").read_text())
    assert set(lag_tuned["best_params"]) == {"lagnet.k", "lagnet.n", "loss.iou"} and lag_tuned["overrides"] == {}

    # ---- LAM stage: one map per image, aligned in size, sample grid; LAGNet trained on RGB + LAM
    lams = sorted((root / "data" / "lams" / "synth").glob("*.png"))
    assert len(lams) == 48
    import cv2

    for f in lams[:5]:
        img = next((root / "data" / "datasets" / "synth" / "images").glob(f"{f.stem}.*"))
        assert cv2.imread(str(img)).shape[:2] == (96, 96)          # stored at the loader's scale: long side =
        assert cv2.imread(str(f), cv2.IMREAD_UNCHANGED).shape == (96, 96)   # imgsz (96 here), grey
    li = json.loads((root / "data" / "lams" / "synth" / "lam_info.json").read_text())
    assert li["mode"] == "in_sample" and li["images"] == 48 and set(li["per_split"]) == {"train", "val", "test"}
    assert (root / "reports" / "lam" / "lam_grid.png").is_file()
    g = json.loads((root / "metrics" / "lagnet.json").read_text())
    assert g["latency_input_channels"] == 6 and g["images"] == 10 and 0 <= g["mAP50"] <= 1
    assert 2_300_000 < g["params"] < 2_700_000                # LAGNet-s, width 32, C3 neck, 6 classes: 2.49 M
    assert g["GFLOPs"] > 0
    assert "metrics/lagnet.json" in shown

    # ---- MLflow: one run per stage, nothing from ultralytics' own callback
    rs = runs(project)
    promoted = json.loads((root / "reports" / "promotion.json").read_text())
    expected = [n.replace("<promoted model>", promoted["model"]) for n in RUNS]
    assert sorted(r.info.run_name for r in rs) == sorted(expected)
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
    assert len(runs(project)) == len(RUNS)

    # ---- one evaluate param changed: only evaluate re-runs
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["evaluate"]["latency"]["runs"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(project, "repro")
    assert "Running stage 'evaluate@baseline'" in out and "Running stage 'evaluate@dasc'" in out
    for stage in ("data", "split", "train_baseline", "train_dasc"):
        assert f"Running stage '{stage}'" not in out
    assert json.loads((root / "metrics" / "baseline.json").read_text())["latency_runs"] == 4

    # ---- a DASC-YOLO param changed: only DASC-YOLO retrains
    params["dasc"]["protonet_k"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(project, "status")
    assert "train_dasc" in status and "tune_dasc" in status and "train_baseline" not in status and "split" not in status
    params["dasc"]["protonet_k"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    # ---- a LAGNet param changed: LAGNet retrains, the LAMs are not rebuilt
    params["lagnet"]["k"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(project, "status")
    assert "train_lagnet" in status and "lam:" not in status and "train_baseline" not in status
    params["lagnet"]["k"] = 5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _digests(root: Path, paths: list[str]) -> dict[str, str]:
    import hashlib

    files = [f for p in paths for f in ([root / p] if (root / p).is_file() else sorted((root / p).rglob("*")))]
    return {f.relative_to(root).as_posix(): hashlib.md5(f.read_bytes()).hexdigest() for f in files if f.is_file()}


@pytest.mark.slow
def test_pipeline_outputs_round_trip_through_an_s3_remote(project, tmp_path):
    """The tiny `dvc repro`'s outputs pushed to a DVC remote on S3 (moto's S3 server on 127.0.0.1,
    as MinIO in infra/; tests/s3server.py); a fresh `git clone` of that state pulls every output
    from the bucket and DVC finds nothing to re-run. The project's HEAD, index, working tree and
    .dvc/config are left as they were (the state is committed on a side branch, the remote is
    in .dvc/config.local for the push only)."""
    pytest.importorskip("moto.server", reason="moto[server] not installed (requirements.lock has it)")
    from s3server import AWS_VARS_DROPPED, moto_s3

    root, env = project
    if not (root / "dvc.lock").is_file():
        pytest.skip("needs the outputs of test_dvc_repro_end_to_end (run the module in order)")
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    outs = sorted({o["path"] for s in lock["stages"].values() for o in s.get("outs", [])})

    def sh(*cmd: str, cwd: Path = root, **extra: str) -> str:
        p = subprocess.run(cmd, cwd=cwd, env={**e, **extra}, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
        return p.stdout + p.stderr

    with moto_s3(tmp_path / "moto") as s3:
        e = {**{k: v for k, v in env.items() if k not in AWS_VARS_DROPPED}, **s3.env}
        url = f"s3://{s3.bucket}/dvc"
        # the state after `dvc repro` (dvc.lock, metrics, plots, .gitignore files) as a commit on a side branch
        index = tmp_path / "index"
        shutil.copyfile(root / ".git" / "index", index)
        sh("git", "add", "-A", GIT_INDEX_FILE=str(index))
        tree = sh("git", "write-tree", GIT_INDEX_FILE=str(index)).strip()
        commit = sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit-tree", tree, "-p", "HEAD",
                    "-m", "pipeline outputs").strip()
        sh("git", "update-ref", "refs/heads/s3-snapshot", commit)
        try:
            sh("dvc", "remote", "add", "--local", "-d", "s3", url)
            sh("dvc", "remote", "modify", "--local", "s3", "endpointurl", s3.endpoint)
            out = sh("dvc", "push")
        finally:
            (root / ".dvc" / "config.local").unlink(missing_ok=True)
        assert "files pushed" in out, out
        keys = s3.keys("dvc/files/md5/")
        weights = sum((root / "models" / m / "weights" / "best.pt").stat().st_size
                      for m in ("baseline", "dasc", "lagnet"))
        assert sum(keys.values()) > weights

        clone = tmp_path / "clone"
        sh("git", "clone", "-q", "-b", "s3-snapshot", str(root), str(clone), cwd=tmp_path)
        sh("git", "update-ref", "-d", "refs/heads/s3-snapshot")
        assert not (clone / "models" / "baseline" / "weights").exists()     # in the bucket only
        assert not (clone / "data" / "lams" / "synth").exists()
        sh("dvc", "remote", "add", "-d", "storage", url, cwd=clone)          # as a team commits it
        sh("dvc", "remote", "modify", "storage", "endpointurl", s3.endpoint, cwd=clone)
        out = sh("dvc", "pull", cwd=clone)
        assert "fetched" in out, out
        assert _digests(clone, outs) == _digests(root, outs)
        out = sh("dvc", "status", cwd=clone)
        assert "Data and pipelines are up to date." in out, out
        out = sh("dvc", "repro", "--dry", cwd=clone)
        assert "Running stage" not in out and "Data and pipelines are up to date." in out, out


def defectops(project, *args) -> str:
    root, env = project
    p = subprocess.run(["defectops", *args], cwd=root, env=env, capture_output=True, text=True)
    assert p.returncode == 0, f"defectops {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.mark.slow
def test_dasc_checkpoint_loads_and_predicts_in_a_fresh_process(project):
    """Only ultralytics is imported: unpickling the checkpoint imports the project's blocks
    (registration on import); nothing is installed or downloaded."""
    root, env = project
    test_img = sorted((root / "data" / "datasets" / "synth" / "images").glob("*.jpg"))[0]
    code = ("from ultralytics import YOLO\n"
            f"r = YOLO('models/dasc/weights/best.pt').predict('{test_img}', conf=0.0, verbose=False)[0]\n"
            "print('BOXES', len(r.boxes), type(r.boxes.xyxy).__name__)\n")
    clean = {k: v for k, v in env.items() if not k.startswith("YOLO_")}
    p = subprocess.run([sys.executable, "-c", code], cwd=root, env=clean, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "BOXES" in p.stdout and "Tensor" in p.stdout
    assert "Downloading" not in p.stderr + p.stdout and "AutoUpdate" not in p.stderr + p.stdout


@pytest.mark.slow
@pytest.mark.parametrize("model", ["baseline", "dasc"])
def test_onnx_export_matches_pytorch(project, model):
    root, _ = project
    out = defectops(project, "export", model)
    assert "max abs diff" in out and "CPUExecutionProvider" in out
    onnx = root / "exports" / model / "best.onnx"
    assert onnx.is_file()
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == "batch"          # dynamic batch
    import numpy as np

    y = sess.run(None, {sess.get_inputs()[0].name: np.zeros((3, 3, 96, 96), np.float32)})[0]
    assert y.shape[:2] == (3, 4 + 6)                          # batch 3, boxes + 6 class scores


@pytest.mark.slow
def test_lagnet_exports_as_one_rgb_graph_that_matches_pytorch(project):
    """baseline -> LAM -> LAGNet in one ONNX graph: RGB in, the same boxes as PyTorch out."""
    root, _ = project
    out = defectops(project, "export", "lagnet")
    assert "max abs diff" in out
    onnx = root / "exports" / "lagnet" / "best.onnx"
    import numpy as np
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.shape[0] == "batch" and inp.shape[1] == 3                   # the RGB image only
    y = sess.run(None, {inp.name: np.zeros((2, 3, 96, 96), np.float32)})[0]
    assert y.shape == (2, 4 + 6, 12 * 12 + 6 * 6 + 3 * 3)
    from mlflow.tracking import MlflowClient

    run = next(r for r in runs(project) if r.info.run_name == "export:lagnet")
    assert run.data.metrics["same_count"] == run.data.metrics["images"] == 8   # export.parity_images
    m = MlflowClient(f"sqlite:///{root}/mlflow.db").get_run(run.info.run_id).data.metrics
    assert m["max_rel_diff"] <= 1e-3                           # export.pipeline_rtol


@pytest.mark.slow
@pytest.mark.nightly     # make test-nightly: keeps make test under 25 min beside the line-loop test
def test_out_of_fold_lams_come_from_baselines_that_never_saw_the_image(project):
    root, _ = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["lam"].update(mode="out_of_fold", folds=2)
    params["paths"]["lams"] = "data/lams-oof"
    params["paths"]["reports"] = "reports-oof"
    (root / "params-oof.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = defectops(project, "--params", "params-oof.yaml", "lam")
    assert "LAMs (out_of_fold): 48 images" in out
    info = json.loads((root / "data" / "lams-oof" / "synth" / "lam_info.json").read_text())
    assert info["mode"] == "out_of_fold" and info["folds"] == 2 and info["images"] == 48
    assert len(list((root / "data" / "lams-oof" / "synth").glob("*.png"))) == 48
    # two fold baselines were trained, on disjoint halves of the training images
    split = json.loads((root / "data" / "splits" / "synth.json").read_text())
    seen = []
    for i in range(2):
        lst = root / ".cache" / "work" / f"lam-fold{i}" / "data" / "train.txt"
        seen.append({Path(x).stem for x in lst.read_text().split()})
        assert (root / ".cache" / "work" / f"lam-fold{i}" / "train" / "weights" / "best.pt").is_file()
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == len(split["train"])
    run = next(r for r in runs(project) if r.info.run_name == "lam" and r.data.tags.get("lam_mode") == "out_of_fold")
    assert run.data.params["lam.folds"] == "2" and "conf_in.train" in run.data.metrics


@pytest.mark.slow
@pytest.mark.nightly     # make test-nightly: minutes of training or servers
def test_lagnet_ablation_rows(project):
    root, _ = project
    defectops(project, "ablate", "lagnet", "--rows", "baseline;k3n1", "--epochs", "1")
    data = json.loads((root / "reports" / "ablation" / "lagnet.json").read_text())
    assert list(data["rows"]) == ["baseline", "k3n1"]
    base, full = data["rows"]["baseline"], data["rows"]["k3n1"]
    assert (base["lam"], base["scem"], full["lam"], full["scem"], full["k"], full["n"]) == (False, False, True, True, 3, 1)
    assert full["metrics"]["params"] > base["metrics"]["params"]
    assert full["metrics"]["latency_input_channels"] == 6 and base["metrics"]["latency_input_channels"] == 3
    assert full["paper_mAP"] == 83.9
    md = (root / "reports" / "ablation" / "lagnet.md").read_text()
    assert "| k3n1 | True | True | 3 | 1 |" in md
    rs = [r for r in runs(project) if r.data.tags.get("ablation") == "lagnet"]
    assert sorted(r.data.tags["row"] for r in rs) == ["baseline", "k3n1"]


@pytest.mark.slow
@pytest.mark.nightly     # make test-nightly: minutes of training or servers
def test_dasc_ablation_rows_are_runs_and_a_table(project):
    root, _ = project
    out = defectops(project, "ablate", "dasc", "--rows", "YOLO11;+ProtoNet K=4", "--epochs", "1")
    md = (root / "reports" / "ablation" / "dasc.md").read_text()
    assert "ablation table" in out and "| YOLO11 |" in md and "| +ProtoNet K=4 |" in md
    data = json.loads((root / "reports" / "ablation" / "dasc.json").read_text())
    assert list(data["rows"]) == ["YOLO11", "+ProtoNet K=4"]
    p0 = data["rows"]["YOLO11"]["metrics"]["params"]
    p4 = data["rows"]["+ProtoNet K=4"]["metrics"]["params"]
    assert 2_500_000 < p0 < 2_700_000 and p4 > p0
    rs = [r for r in runs(project) if r.data.tags.get("ablation") == "dasc"]
    assert sorted(r.data.tags["row"] for r in rs) == ["+ProtoNet K=4", "YOLO11"]
    assert all(r.data.tags["dasc.protonet_k"] in ("0", "4") for r in rs)


# ---- registry promotion and serving (the first promotion ran inside `dvc repro`)

def _registry(project):
    from mlflow.tracking import MlflowClient

    root, _ = project
    uri = f"sqlite:///{root}/mlflow.db"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _aliases(project) -> dict:
    c = _registry(project)
    return {k: str(v) for k, v in c.get_registered_model("defect-detector").aliases.items()}


@pytest.mark.slow
def test_first_promotion_registers_an_onnx_champion(project):
    """`dvc repro` promoted twice (the evaluate param change re-ran promote): version 1 became
    the champion (no champion before), the rest challengers unless they beat it by the margin."""
    root, _ = project
    c = _registry(project)
    v1 = c.get_model_version("defect-detector", "1")
    assert v1.tags["promotion"].startswith("champion: no champion yet")
    metrics = {m: json.loads((root / "metrics" / f"{m}.json").read_text())["val"]["mAP50"]
               for m in ("baseline", "dasc", "lagnet")}
    assert metrics[v1.tags["model"]] == max(metrics.values())          # best by val mAP50 (ties: FPS)
    promoted = json.loads((root / "reports" / "promotion.json").read_text())
    assert promoted["chosen_on"] == "val" and set(promoted["candidate_test"]) == set(promoted["candidate"])
    assert _aliases(project)[promoted["alias"]] == promoted["version"]
    if promoted["alias"] == "challenger":
        assert _aliases(project)["champion"] == "1" and str(promoted["champion_before"]) == "1"
    for tag in ("dataset_hash", "git_commit", "params_hash", "test.mAP50", "val.mAP50", "model"):
        assert v1.tags[tag] not in ("", "None")
    promoted = {"version": "1"}
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    info = mlflow.models.get_model_info(f"models:/defect-detector/{promoted['version']}")
    # what `mlflow models serve` serves (encoded image in) with the end-to-end ONNX graph inside
    assert "python_function" in info.flavors and info.signature.inputs.input_names() == ["image"]
    from components.deploy.registry import ONNX_FILE, download_onnx
    from components.deploy.serving import has_nms, read_meta

    assert info.metadata["onnx"] == ONNX_FILE
    graph = download_onnx(f"sqlite:///{root}/mlflow.db", f"models:/defect-detector/{promoted['version']}",
                          root / ".cache" / "v1")
    meta = read_meta(graph)
    assert graph.as_posix().endswith(ONNX_FILE) and has_nms(meta) and len(meta["names"]) >= 2
    # the shipped operating point travels with the graph and the version; the model card beside it
    assert set(meta["decision"]["thresholds"]) == set(meta["names"].values())
    assert json.loads(v1.tags["thresholds"]) == meta["decision"]["thresholds"]
    assert "escape rate" in v1.description and "overkill rate" in v1.description
    run_id = v1.run_id
    arts = {a.path for a in _registry(project).list_artifacts(run_id, "model_card")}
    assert "model_card/model_card.md" in arts, arts
    card = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model_card/model_card.md",
                                                    dst_path=str(root / ".cache" / "card")))
    text = card.read_text()
    for name in meta["names"].values():
        assert f"| {name} | {meta['decision']['thresholds'][name]:.4f} |" in text
    assert "## Verdicts: escapes and overkill" in text and "no champion yet" in text


@pytest.mark.slow
def test_promotion_gate_and_parity_failure(project):
    root, _ = project
    before = _aliases(project)
    params = yaml.safe_load((root / "params.yaml").read_text())
    # a candidate that cannot beat the champion by the margin becomes the challenger
    params["promote"]["margin"] = 1.0
    (root / "params-gate.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = defectops(project, "--params", "params-gate.yaml", "promote")
    assert "alias 'challenger'" in out
    after = _aliases(project)
    assert after["champion"] == before["champion"] and after["challenger"] != before["champion"]
    # a candidate that misses a promote.require floor never takes champion, whatever the margin says
    params["promote"].update(margin=-1.0, require={"mAP50": 1.01})
    (root / "params-floor.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = defectops(project, "--params", "params-floor.yaml", "promote")
    floor = json.loads((root / "reports" / "promotion.json").read_text())
    assert floor["alias"] == "challenger" and floor["reason"].startswith("requirements not met on validation: mAP50")
    assert _aliases(project)["champion"] == before["champion"]
    assert _registry(project).get_model_version("defect-detector", floor["version"]).tags["promotion"].startswith(
        "challenger: requirements not met")
    params["promote"].update(margin=1.0, require={})
    after = _aliases(project)
    versions = _registry(project).search_model_versions("name='defect-detector'")
    # an injected parity failure registers nothing and moves no alias
    params["export"]["parity_rtol"] = params["export"]["pipeline_rtol"] = -1.0
    (root / "params-parity.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rootp, env = project
    p = subprocess.run(["defectops", "--params", "params-parity.yaml", "promote"], cwd=rootp, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no alias moved" in p.stderr
    assert _aliases(project) == after
    assert len(_registry(project).search_model_versions("name='defect-detector'")) == len(versions)


@pytest.mark.slow
def test_predict_serves_the_champion_from_the_registry(project):
    root, _ = project
    img = sorted((root / "data" / "datasets" / "synth" / "images").glob("*.jpg"))[0]
    out = defectops(project, "predict", "--model", "models:/defect-detector@champion", str(img),
                    "--conf", "0.001", "--out", "pred")
    assert "CPUExecutionProvider" in out
    res = json.loads((root / "pred" / "detections.json").read_text())
    dets = res["images"][0]["detections"]
    assert res["provider"] == "CPUExecutionProvider" and len(dets) > 0
    h, w = __import__("cv2").imread(str(img)).shape[:2]
    for d in dets:
        x1, y1, x2, y2 = d["box_xyxy"]
        assert -1 <= x1 < x2 <= w + 1 and -1 <= y1 < y2 <= h + 1 and 0.001 <= d["confidence"] <= 1
    assert (root / "pred" / "annotated" / f"{img.stem}.jpg").is_file()
    rec = res["images"][0]
    assert rec["verdict"] == "NG" and rec["thresholds"] == {"source": "conf override", "conf": 0.001}
    # without --conf: the shipped per-class thresholds decide
    defectops(project, "predict", "--model", "models:/defect-detector@champion", str(img), "--out", "pred2")
    res2 = json.loads((root / "pred2" / "detections.json").read_text())
    rec2 = res2["images"][0]
    assert rec2["thresholds"]["source"] == "per-class operating point" and rec2["verdict"] in ("OK", "NG")
    assert all(d["confidence"] >= res2["thresholds"][d["class"]] for d in rec2["detections"])
    assert (rec2["verdict"] == "NG") == bool(rec2["detections"])


@pytest.mark.slow
def test_two_promotions_at_once_leave_a_consistent_registry(project):
    root, env = project
    c = _registry(project)
    before = {mv.version for mv in c.search_model_versions("name='defect-detector'")}
    procs = [subprocess.Popen(["defectops", "promote"], cwd=root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    versions = {mv.version: mv for mv in c.search_model_versions("name='defect-detector'")}
    new = sorted(set(versions) - before, key=int)
    assert len(new) == 2
    # every new version got its decision, and each alias points at exactly one existing version
    for v in new:
        assert versions[v].tags["promotion"].split(":")[0] in ("champion", "challenger")
    aliases = _aliases(project)
    assert aliases["champion"] in {str(v) for v in versions} and aliases["challenger"] in {str(v) for v in versions}
    decided = [versions[v].tags["promotion"].split(":")[0] for v in new]
    # the lock serialises the decisions: at most one of two equal candidates can take the champion
    assert decided.count("champion") <= 1


# ---- tuning (Optuna)

def _tune_params(project, name: str, **tune) -> str:
    root, _ = project
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["tune"].update(epochs=1, **tune)
    params["paths"].update(models="models-tune", reports="reports-tune")   # the tune stages' outs stay intact
    (root / name).write_text(yaml.safe_dump(params, sort_keys=False))
    return name


@pytest.mark.slow
@pytest.mark.nightly     # make test-nightly: keeps make test under 25 min beside the line-loop test
def test_tune_records_failed_trials_and_goes_on(project):
    """Seeded TPE over DASC-YOLO K x loss (one loss injected broken): every trial is its own
    process and an MLflow child run; a failed trial is recorded and the study goes on; the best
    overrides are written for the final training."""
    root, _ = project
    # seed 3: TPE's seeded start-up draws put the broken loss in trials 1-3 (trial 0 is the default)
    pf = _tune_params(project, "params-tune.yaml", trials=4, study="t-fail", pruner="median", seed=3,
                      space={"dasc": {"protonet_k": [2, 4, 8], "iou": ["ciou", "no-such-loss"]}})
    out = defectops(project, "--params", pf, "tune", "dasc")
    import optuna

    best = json.loads((root / "models-tune" / "tuned" / "dasc.json").read_text())
    study = optuna.load_study(study_name=best["study"], storage=f"sqlite:///{root}/.cache/optuna.db")
    states = [t.state.name for t in study.trials]
    assert len(states) == 4 and "FAIL" in states and "COMPLETE" in states
    for t in study.trials:
        assert (t.state.name == "FAIL") == (t.params["iou"] == "no-such-loss")
        if t.state.name == "FAIL":
            assert "loss.iou" in t.user_attrs["fail_reason"]
    assert best["best_params"]["loss.iou"] == "ciou" and best["best_params"]["dasc.protonet_k"] in (2, 4, 8)
    assert best["default_trial"] == 0 and study.trials[0].params == {"protonet_k": 4, "iou": "ciou"}
    assert best["overrides"] == {} and best["decision"].startswith("default (")   # 1-epoch trials: noise
    assert "best val mAP50" in out
    assert (root / "reports-tune" / "tune" / "dasc" / "history.png").is_file()
    parent = next(r for r in runs(project) if r.info.run_name == "tune:dasc" and r.data.tags["optuna_study"] == best["study"])
    children = [r for r in runs(project) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == [0, 1, 2, 3]


@pytest.mark.slow
@pytest.mark.nightly     # make test-nightly: minutes of training or servers
def test_two_workers_share_one_postgresql_study(project):
    """Two `defectops tune` processes on one PostgreSQL-backed study: N trials, none lost or run
    twice, each with its MLflow child run."""
    psycopg2 = pytest.importorskip("psycopg2")
    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    url = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"       # SQLAlchemy URL, driver named
    try:
        psycopg2.connect(dsn).close()
    except psycopg2.OperationalError as e:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {e}")
    import uuid

    import optuna

    root, env = project
    name = f"pg-{uuid.uuid4().hex[:8]}"
    pf = _tune_params(project, "params-pg.yaml", trials=4, study=name, pruner="none", parallel=1,
                      space={"baseline": {"iou": ["ciou", "eiou", "siou", "mpdiou"]}})
    wenv = {**env, "OPTUNA_STORAGE": url}
    procs = [subprocess.Popen(["defectops", "--params", pf, "tune", "baseline"], cwd=root, env=wenv,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=1200) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    study_name = json.loads((root / "models-tune" / "tuned" / "baseline.json").read_text())["study"]
    assert study_name.startswith(f"{name}-baseline-")
    study = optuna.load_study(study_name=study_name, storage=url)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(len(numbers))) and 4 <= len(numbers) <= 5   # a race may add one, never lose one
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert sum(bool(t.user_attrs.get("default")) for t in study.trials) == 1     # enqueued once by the creator
    parents = [r for r in runs(project) if r.info.run_name == "tune:baseline" and r.data.tags.get("optuna_study") == study_name]
    assert len(parents) == 2
    ids = {p.info.run_id for p in parents}
    children = [r for r in runs(project) if r.data.tags.get("mlflow.parentRunId") in ids]
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == numbers
    optuna.delete_study(study_name=study_name, storage=url)


# ---- scheduled retraining: crash-safe, resumable, warm-started

def _drop_batch(root: Path) -> dict:
    """A batch of new samples in the inbox: 5 good ones (from the synth generator, another seed),
    3 corrupt ones. Returns a snapshot {relative path: bytes}."""
    from components.data.synth import SynthConfig, write_synth_dataset

    from conftest import voc_xml

    tmp = root / ".cache" / "gen"
    write_synth_dataset(SynthConfig(seed=77, images=5, size=96, min_defects=1, max_defects=2, contrast=(0.3, 0.5),
                                    leather_fraction=0.3, jpeg_quality=95, bold=False), tmp, "new")
    m = json.loads((tmp / "new" / "manifest.json").read_text())
    inbox = root / "data" / "inbox"
    (inbox / "annotations").mkdir(parents=True)
    (inbox / "images").mkdir()
    for e in m["images"]:
        shutil.copy(tmp / "new" / e["image"], inbox / "images" / f"{e['name']}.jpg")
        objs = [(m["classes"][b[0]], *b[1:]) for b in e["boxes"]]
        (inbox / "annotations" / f"{e['name']}.xml").write_text(voc_xml(f"{e['name']}.jpg", objs, w=96, h=96))
    (inbox / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (inbox / "annotations" / "broken.xml").write_text(voc_xml("broken.jpg", [(m["classes"][0], 5, 5, 20, 20)], w=96, h=96))
    shutil.copy(tmp / "new" / m["images"][0]["image"], inbox / "images" / "wide.jpg")
    (inbox / "annotations" / "wide.xml").write_text(voc_xml("wide.jpg", [(m["classes"][0], 5, 5, 400, 20)], w=96, h=96))
    shutil.copy(tmp / "new" / m["images"][1]["image"], inbox / "images" / "alien.jpg")
    (inbox / "annotations" / "alien.xml").write_text(voc_xml("alien.jpg", [("rust", 5, 5, 20, 20)], w=96, h=96))
    shutil.rmtree(tmp)
    return {p.relative_to(inbox).as_posix(): p.read_bytes() for p in inbox.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.nightly     # make test-nightly: minutes of training or servers
def test_retrain_survives_crashes_between_steps_and_a_rerun_finishes(project, monkeypatch):
    """A dropped batch (5 good, 3 corrupt): crash after the dataset version is committed (before
    archiving) -> nothing left the inbox; crash at the retraining step -> the inbox is archived;
    a rerun retrains, evaluates and promotes: new dataset version (test split unchanged), new
    model version, quarantine report."""
    import pipelines.retrain as rt

    root, env = project
    monkeypatch.chdir(root)
    monkeypatch.setenv("PREFECT_API_URL", env["PREFECT_API_URL"])
    dvc(project, "repro")                                   # whatever earlier tests left stale
    split0 = json.loads((root / "data" / "splits" / "synth.json").read_text())
    hash0 = json.loads((root / "data" / "datasets" / "synth" / "summary.json").read_text())["content_hash"]
    versions0 = {str(mv.version) for mv in _registry(project).search_model_versions("name='defect-detector'")}
    dropped = _drop_batch(root)
    inbox, archive = root / "data" / "inbox", root / "data" / "inbox-archive"

    def crash(*a, **k):
        raise RuntimeError("injected crash")

    monkeypatch.setattr(rt, "archive_batch", crash)
    with pytest.raises(RuntimeError, match="injected"):
        rt.retrain_flow("params.yaml")
    assert {p.relative_to(inbox).as_posix(): p.read_bytes() for p in inbox.rglob("*") if p.is_file()} == dropped
    (batch,) = [d.name for d in (root / "data" / "raw" / "increments").iterdir() if d.is_dir()]
    assert (root / "data" / "raw" / "increments" / f"{batch}.dvc").is_file()
    log = subprocess.run(["git", "log", "--format=%s"], cwd=root, capture_output=True, text=True).stdout
    assert f"data: add inbox batch(es) {batch}" in log              # the dataset version is committed
    monkeypatch.undo()
    monkeypatch.chdir(root)
    monkeypatch.setenv("PREFECT_API_URL", env["PREFECT_API_URL"])
    real_dvc = rt.dvc
    monkeypatch.setattr(rt, "dvc", lambda *a: crash() if a == ("repro",) else real_dvc(*a))
    with pytest.raises(RuntimeError, match="injected"):
        rt.retrain_flow("params.yaml")
    assert not [p for p in inbox.rglob("*") if p.is_file()]           # archived only now
    arch = {p.relative_to(archive / batch / "files").as_posix(): p.read_bytes()
            for p in (archive / batch / "files").rglob("*") if p.is_file()}
    assert arch == dropped and (archive / batch / "quarantine.md").is_file()
    monkeypatch.setattr(rt, "dvc", real_dvc)
    r = rt.retrain_flow("params.yaml")
    assert r["status"] == "retrained" and r["batches"] == []           # the batch was taken by the first runs
    summary = json.loads((root / "data" / "datasets" / "synth" / "summary.json").read_text())
    assert summary["content_hash"] != hash0 and summary["images"] == 48 + 5 and summary["increments"] == {batch: 5}
    split1 = json.loads((root / "data" / "splits" / "synth.json").read_text())
    assert split1["test"] == split0["test"]
    new = {n for n in split1["train"] + split1["val"] if n.startswith(batch)}
    assert len(new) == 5
    q = json.loads((root / "data" / "raw" / "increments" / batch / "quarantine.json").read_text())
    assert sorted(Path(x["source"]).stem for x in q) == ["alien", "broken", "wide"]
    versions1 = {str(mv.version) for mv in _registry(project).search_model_versions("name='defect-detector'")}
    assert len(versions1 - versions0) == 1 and str(r["promotion"]["version"]) in versions1 - versions0
    assert r["promotion"]["alias"] in ("champion", "challenger")
    # every final training saw the new images; those of the champion's kind started from it if they fit
    for m in ("baseline", "dasc", "lagnet"):
        info = json.loads((root / "models" / m / "train_info.json").read_text())
        assert info["dataset_hash"] == summary["content_hash"]
        assert info["warm_start"] is None or info["warm_start"].startswith("models:/defect-detector/")
    assert "up to date" in dvc(project, "status")


@pytest.mark.slow
def test_interrupted_training_resumes_from_its_last_checkpoint(project, monkeypatch):
    import pipelines.tasks as tasks
    import pipelines.train as tr
    from components.train import same_architecture

    root, env = project
    monkeypatch.chdir(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = 3
    params["retrain"]["warm_start"] = False
    params["paths"].update(models="models-resume", work=".cache/work-resume")
    (root / "params-resume.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    from components.train import train_detector

    isolated = tasks.train_detector_isolated

    def interrupted(req, cb):             # in this process (a closure does not travel to the child)
        def on_epoch(epoch, metrics):
            cb(epoch, metrics)
            if epoch == 2:
                raise KeyboardInterrupt("injected: machine went down after epoch 2")
        return train_detector(req, on_epoch)

    monkeypatch.setattr(tasks, "train_detector_isolated", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tr.train_flow("baseline", "params-resume.yaml")
    assert (root / ".cache" / "work-resume" / "train-baseline-run" / "weights" / "last.pt").is_file()
    monkeypatch.setattr(tasks, "train_detector_isolated", isolated)   # resumed in a child process, as the stage trains
    info = tr.train_flow("baseline", "params-resume.yaml")
    assert info["resumed"] is True and info["epochs_run"] == 3
    rows = list(csv.DictReader((root / "models-resume" / "baseline" / "results.csv").open()))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2, 3]
    assert not (root / ".cache" / "work-resume" / "train-baseline-run").exists()
    # warm starts load only a checkpoint of the same architecture
    best = root / "models-resume" / "baseline" / "weights" / "best.pt"
    assert same_architecture("yolo11n.yaml", best, nc=6)[0]
    assert not same_architecture("yolo11n.yaml", best, nc=3)[0]
    assert not same_architecture("yolo11s.yaml", best, nc=6)[0]


# ---- the line loop: served traffic -> prediction log -> monitor (Evidently) -> review (Label Studio)
# ---- -> inbox -> retrain, with real processes; kill -9 loses nothing

def _line_images(root: Path, out: Path) -> dict[str, list]:
    """The line's traffic: 12 train images as they are and 28 shifted ones (darker and blurred, as
    through a dirty lens at dusk), as JPEG files in ``out``; {sha256 of the file: ground-truth boxes
    [class, x1, y1, x2, y2] in pixels}."""
    import hashlib

    import cv2

    m = json.loads((root / "data" / "datasets" / "synth" / "manifest.json").read_text())
    split = json.loads((root / "data" / "splits" / "synth.json").read_text())
    by_name = {e["name"]: e for e in m["images"]}
    train = [by_name[n] for n in split["train"]]
    out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(40):
        e = train[i % len(train)]
        img = cv2.imread(str(root / "data" / "datasets" / "synth" / e["image"]))
        if i >= 12:
            img = cv2.GaussianBlur((img * 0.35).astype("uint8"), (7, 7), 0)
        f = out / f"line{i:02d}.jpg"
        cv2.imwrite(str(f), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        truth[hashlib.sha256(f.read_bytes()).hexdigest()] = [[m["classes"][b[0]], *b[1:]] for b in e["boxes"]]
    return truth


def _send(url: str, files: list[Path]) -> list[dict]:
    import base64
    import urllib.request

    body = json.dumps({"inputs": {"image": [base64.b64encode(f.read_bytes()).decode() for f in files]}}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=120) as r:
        return json.loads(r.read())["predictions"]


def _predlog_rows(db: Path) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return c.execute("SELECT * FROM predictions ORDER BY id").fetchall()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _kill_after(cmd: list[str], root: Path, env: dict, seconds: float) -> None:
    """``cmd`` in ``root``, SIGKILLed (its whole process group) after ``seconds``."""
    import signal
    import time

    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    time.sleep(seconds)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


@pytest.mark.slow
def test_line_loop_from_served_traffic_through_review_to_a_gated_retrain(project, label_studio, tmp_path):
    """Serve the champion (the prediction log on, images kept); send 40 images, 28 of them darker
    and blurred; ``defectops monitor`` flags drift and pushes pre-annotated tasks to Label Studio;
    the tasks are completed through its API with the ground truth (the reviewer); ``defectops review
    pull`` drops them into the inbox with their provenance; ``defectops retrain`` makes a new dataset
    version and a gated registry version. A monitor, a pull and a retrain killed with SIGKILL on the
    way lose nothing from the prediction log or the inbox."""
    import httpx

    from components.monitor.predlog import PredictionLog
    from headless import free_port, stop_group, wait_http
    from test_review import rect

    root, env = project
    dvc(project, "repro")                                   # whatever earlier tests left stale
    ls = label_studio
    db, store = tmp_path / "predlog.db", tmp_path / "kept"
    env = {**env, "DEFECTOPS_PREDLOG_URL": f"sqlite:///{db}", "DEFECTOPS_PREDLOG_KEEP_IMAGES": "1",
           "DEFECTOPS_PREDLOG_IMAGE_DIR": str(store), "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.api_key}
    truth = _line_images(root, tmp_path / "line")
    files = sorted((tmp_path / "line").iterdir())

    port, log = free_port(), tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["defectops", "serve", "--model", "models:/defect-detector@champion", "--port", str(port)],
                                cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, timeout=180, log=log)
        answers = [p for i in range(0, len(files), 10) for p in _send(f"http://127.0.0.1:{port}/invocations", files[i:i + 10])]
    finally:
        stop_group(proc)
    assert len(answers) == 40 and all(a["verdict"] in ("OK", "NG") for a in answers)
    rows = _predlog_rows(db)
    assert len(rows) == 40                                   # one record per image answered
    champion = _aliases(project)["champion"]

    # a monitor killed half way leaves the log as it was; a full run flags the drift and fills the queue
    _kill_after(["defectops", "monitor"], root, env, 8)
    assert _predlog_rows(db) == rows
    out = defectops((root, env), "monitor")
    assert _predlog_rows(db) == rows and len(list(store.rglob("*.jpg"))) == 40
    report = json.loads((root / "reports" / "monitor" / "monitor.json").read_text())
    assert report["status"] == "drift", (out, report)
    assert {"brightness", "sharpness"} <= set(report["drift"]["drifted_columns"]), report["drift"]
    assert report["champion_version"] == champion
    assert "task(s) pushed" in report["review"]["pushed"], report["review"]
    picked = report["review"]["picked"]
    assert 0 < len(picked) <= 20                              # monitor.review_budget

    api = httpx.Client(base_url=ls.url, headers={"Authorization": f"Token {ls.legacy_token}"}, timeout=60)
    (proj,) = [p for p in api.get("/api/projects", params={"page_size": 100}).json()["results"]
               if p["title"] == "defectops review"]
    tasks = api.get("/api/tasks", params={"project": proj["id"], "fields": "all", "page_size": 100}).json()["tasks"]
    assert len(tasks) == len(picked)
    logged = {r.id: r for r in PredictionLog(f"sqlite:///{db}").window()}
    for t in tasks:                                          # pre-annotated with what the champion answered
        (pred,) = t["predictions"]
        assert t["data"]["model_version"] == pred["model_version"] == champion
        assert len(pred["result"]) == len(logged[t["data"]["prediction_id"]].boxes)
    for t in tasks:                                          # the reviewer: the ground truth
        boxes = truth[t["data"]["image_sha256"]]
        w, h = t["data"]["width"], t["data"]["height"]
        result = [rect(c, 100 * x1 / w, 100 * y1 / h, 100 * (x2 - x1) / w, 100 * (y2 - y1) / h, w, h)
                  for c, x1, y1, x2, y2 in boxes]
        assert api.post(f"/api/tasks/{t['id']}/annotations", json={"result": result}).status_code == 201

    inbox = root / "data" / "inbox"
    defectops((root, env), "review", "pull")
    (folder,) = [d for d in inbox.iterdir() if d.is_dir() and d.name.startswith("review-")]
    manifest = json.loads((folder / "review.json").read_text())
    assert len(manifest["samples"]) == len(tasks)
    assert {s["prediction_id"] for s in manifest["samples"]} == {t["data"]["prediction_id"] for t in tasks}
    assert {s["model_version"] for s in manifest["samples"]} == {champion}
    assert all(s["reviewer"] == ls.user for s in manifest["samples"])
    _kill_after(["defectops", "review", "pull"], root, env, 3)           # nothing new to pull, killed or not
    defectops((root, env), "review", "pull")
    assert [d for d in inbox.iterdir() if d.is_dir() and d.name.startswith("review-")] == [folder]
    dropped = _files(inbox)

    # a retrain killed on the way loses nothing of the inbox: each file is still there or archived
    summary0 = json.loads((root / "data" / "datasets" / "synth" / "summary.json").read_text())
    versions0 = {str(mv.version) for mv in _registry(project).search_model_versions("name='defect-detector'")}
    _kill_after(["defectops", "retrain"], root, env, 6)
    archived = {}
    for a in (root / "data" / "inbox-archive").glob("*/files"):
        archived |= _files(a)
    left = _files(inbox)
    assert all(left.get(k, archived.get(k)) == v for k, v in dropped.items())

    out = defectops((root, env), "retrain")
    assert "retrain: retrained" in out, out
    summary = json.loads((root / "data" / "datasets" / "synth" / "summary.json").read_text())
    assert summary["content_hash"] != summary0["content_hash"]
    assert sum(summary["increments"].values()) - sum(summary0.get("increments", {}).values()) == len(tasks)
    m = json.loads((root / "data" / "datasets" / "synth" / "manifest.json").read_text())
    reviewed = [e["review"] for e in m["images"] if "review" in e]      # provenance kept in the dataset
    assert len(reviewed) == len(tasks) and {r["reviewer"] for r in reviewed} == {ls.user}
    assert {r["model_version"] for r in reviewed} == {champion}
    assert {r["prediction_id"] for r in reviewed} == {t["data"]["prediction_id"] for t in tasks}
    versions1 = {str(mv.version) for mv in _registry(project).search_model_versions("name='defect-detector'")}
    (new,) = versions1 - versions0
    assert re.search(rf" v{new} -> (champion|challenger)$", out.strip()), out          # gated
    assert _predlog_rows(db) == rows                          # the log is only ever read
