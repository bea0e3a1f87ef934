"""What the MLflow UI (and optuna-dashboard) show, checked on real runs in a temporary SQLite store:
the experiment tagged as model training, the dataset as an MLflow dataset input (digest = the
dataset's content hash, source = its DVC path, split sizes), MLflow's source tags and the
pipeline-run id shared by the stages of one `dvc repro`, the per-class AP50 and PR-curve plots of
an evaluation, a registered version's description; and the Optuna dashboard app on the project's
storage. No training: untrained or one-op models, a few tiny images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import numpy as np
import pytest
import yaml

from components.tracking import PIPELINE_RUN_ENV, git_commit
from components.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, PIPELINE_RUN_TAG, start_stage_run
from conftest import settings, tiny_onnx

REPO = Path(__file__).resolve().parents[1]


def client(tracking: dict):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking["uri"], registry_uri=tracking["uri"])


def make_dataset(root: Path, name: str = "tiny", n: int = 10) -> tuple[dict, dict]:
    """A canonical dataset of ``n`` random images (two classes) under ``root/name`` and its split."""
    import cv2

    from components.data.canonical import Box, Contents, Sample, decode_image, sha256_bytes, write_dataset
    from components.data.split import SplitSpec, make_split

    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        ok, buf = cv2.imencode(".png", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        data = buf.tobytes()
        w, h, pix = decode_image(data)
        samples.append(Sample(f"im{i}", ".png", data, w, h, [Box(i % 2, 5, 5, 30 + i, 30)], f"gen/{i}",
                              sha256_bytes(data), pix))
    summary = write_dataset(root, name, Contents(["scratch", "hole"], samples, []), "test", "synth")
    manifest = json.loads((root / name / "manifest.json").read_text())
    split = make_split(manifest["images"], manifest["classes"], SplitSpec(0.2, 0.1, 0, 0))
    return summary, split


# ---------------------------------------------------------------- experiment kind


def test_experiment_is_tagged_as_model_training(tracking):
    run = start_stage_run("split", tracking, {}, {})
    run.end()
    c = client(tracking)
    exp = c.get_experiment_by_name("defectops")
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    # an experiment that existed before (untagged, or a kind the UI only guessed) is tagged on the next run
    other = c.create_experiment("older", tags={EXPERIMENT_KIND_TAG: "genai_development_inferred"})
    start_stage_run("split", {**tracking, "experiment": "older"}, {}, {}).end()
    assert c.get_experiment(other).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    # a kind somebody chose in the UI is theirs
    chosen = c.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    start_stage_run("split", {**tracking, "experiment": "chosen"}, {}, {}).end()
    assert c.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


# ---------------------------------------------------------------- dataset input


def _inputs(tracking: dict, run_id: str) -> dict:
    """A run's dataset inputs by name: (dataset, input tags)."""
    r = client(tracking).get_run(run_id)
    return {i.dataset.name: (i.dataset, {t.key: t.value for t in i.tags}) for i in r.inputs.dataset_inputs}


def test_training_run_logs_the_dataset_with_its_content_hash_dvc_path_and_split_sizes(tracking, tmp_path,
                                                                                        monkeypatch):
    from components.data.split import SplitSpec, make_split
    from pipelines.common import dataset_hash, dataset_records

    monkeypatch.chdir(tmp_path)                                # DVC paths are relative to the repository root
    summary, split = make_dataset(Path("data/datasets"))
    Path("data/splits").mkdir(parents=True)
    Path("data/splits/tiny.json").write_text(json.dumps(split, indent=1))
    params = settings({"paths.datasets": "data/datasets", "paths.splits": "data/splits", "data.name": "tiny",
                       **{f"tracking.{k}": v for k, v in tracking.items()}})
    manifest = json.loads(Path("data/datasets/tiny/manifest.json").read_text())

    def train_run() -> str:                                    # what stage_run(..., dataset="train") logs
        tags = {"dataset_hash": dataset_hash(Path("data/datasets/tiny"))}
        run = start_stage_run("train:baseline", tracking, {}, tags)
        for record in dataset_records(params):
            run.log_dataset(**record, context="train")
        run.end()
        return run.run_id

    first = train_run()
    ins = _inputs(tracking, first)
    ds, tags = ins["tiny"]
    assert ds.digest == manifest["content_hash"] == summary["content_hash"]
    assert ds.digest == client(tracking).get_run(first).data.tags["dataset_hash"]
    assert ds.source_type == "local" and json.loads(ds.source) == {"uri": "data/datasets/tiny"}
    profile = json.loads(ds.profile)
    assert profile["images"] == 10 and profile["boxes"] == 10 and profile["classes"] == ["scratch", "hole"]
    sizes = {k: len(split[k]) for k in ("train", "val", "test")}
    assert sum(sizes.values()) == 10 and sizes["test"] == 2 and sizes["train"] > 0
    assert tags["mlflow.data.context"] == "train" and {k: int(tags[f"split.{k}"]) for k in sizes} == sizes
    sp, sp_tags = ins["tiny:split"]
    assert json.loads(sp.source) == {"uri": "data/splits/tiny.json"} and sp_tags["dataset_digest"] == ds.digest
    assert {k: json.loads(sp.profile)[k] for k in sizes} == sizes and json.loads(sp.profile)["test_ratio"] == 0.2

    # a new split of the same data: the same dataset digest, another split record; the first run keeps its own
    other = make_split(manifest["images"], manifest["classes"], SplitSpec(0.4, 0.1, 0, 0))
    Path("data/splits/tiny.json").write_text(json.dumps(other, indent=1))
    second = _inputs(tracking, train_run())
    assert second["tiny"][0].digest == ds.digest and second["tiny:split"][0].digest != sp.digest
    assert int(second["tiny"][1]["split.test"]) == len(other["test"]) == 4
    assert json.loads(second["tiny:split"][0].profile)["test"] == 4
    assert json.loads(_inputs(tracking, first)["tiny:split"][0].profile)["test"] == 2

    # another dataset version (one image more): another digest, the same DVC path
    make_dataset(Path("data/datasets"), n=11)
    assert dataset_records(params)[0]["digest"] not in (ds.digest, "")
    assert dataset_records(params)[0]["source"] == "data/datasets/tiny"


def test_no_dataset_yet_logs_no_input(tmp_path):
    from pipelines.common import dataset_records

    params = settings({"paths.datasets": str(tmp_path / "none"), "paths.splits": str(tmp_path), "data.name": "tiny"})
    assert dataset_records(params) == []


# ---------------------------------------------------------------- source tags, pipeline run


def test_runs_carry_mlflow_source_tags_and_keep_git_commit(tracking, monkeypatch):
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.strip()
    commit = git_commit(REPO)                                  # <sha>[-dirty], as stage_run tags it
    monkeypatch.setenv("DVC_STAGE", "evaluate@dasc")
    monkeypatch.setenv(PIPELINE_RUN_ENV, "repro-42")
    run = start_stage_run("evaluate:dasc", tracking, {}, {"git_commit": commit})
    run.end()
    tags = client(tracking).get_run(run.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == sha and len(sha) == 40
    assert tags["git_commit"] == commit                         # the project's own tag stays
    assert tags["mlflow.source.name"] == "dvc.yaml:evaluate@dasc" and tags["mlflow.source.type"] == "LOCAL"
    assert tags[PIPELINE_RUN_TAG] == "repro-42"


def test_outside_git_and_dvc_there_is_no_commit_and_the_source_is_the_command(tracking, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                # not a git checkout
    monkeypatch.setattr(sys, "argv", ["/venv/bin/defectops", "train", "baseline"])
    run = start_stage_run("train:baseline", tracking, {}, {})
    run.end()
    tags = client(tracking).get_run(run.run_id).data.tags
    assert "mlflow.source.git.commit" not in tags
    assert tags["mlflow.source.name"] == "defectops train baseline"
    assert tags[PIPELINE_RUN_TAG].startswith("proc-") and tags[PIPELINE_RUN_TAG].endswith(f"-{os.getpid()}")


FAKE_DVC = textwrap.dedent("""\
    import os, subprocess, sys
    # like `dvc repro`: every stage a separate process with DVC_STAGE set; and one without it
    child = [sys.executable, "-c", "from components.tracking import pipeline_run_id; print(pipeline_run_id())"]
    for stage in ("train_baseline", "evaluate@baseline"):
        print(subprocess.run(child, env={**os.environ, "DVC_STAGE": stage}, capture_output=True, text=True,
                             check=True).stdout.strip())
    env = {k: v for k, v in os.environ.items() if k != "DVC_STAGE"}
    print(subprocess.run(child, env=env, capture_output=True, text=True, check=True).stdout.strip())
""")


def test_the_stages_of_one_dvc_repro_share_a_pipeline_run_and_the_next_repro_gets_another(tmp_path):
    fake = tmp_path / "bin" / "dvc"                            # a process named dvc, as `dvc repro` is
    fake.parent.mkdir()
    fake.write_text(FAKE_DVC)
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_STAGE", PIPELINE_RUN_ENV)}
    env["PYTHONPATH"] = str(REPO)

    def repro() -> list[str]:
        return subprocess.run([sys.executable, str(fake)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              check=True).stdout.split()

    first, second = repro(), repro()
    assert first[0] == first[1] and first[0].startswith("dvc-")          # both stages: one id
    assert second[0] == second[1] and second[0] != first[0]              # the next repro: another
    assert first[2].startswith("proc-") and first[2] != first[0]         # not run by DVC: its own
    # an id passed down (retrain's `dvc repro`, tune's trial processes) wins
    env[PIPELINE_RUN_ENV] = "retrain-7"
    assert repro() == ["retrain-7"] * 3


# ---------------------------------------------------------------- evaluation plots


def test_evaluation_run_has_per_class_ap_and_pr_curve_plots(tracking, tmp_path):
    """A real (untrained, 64 px) YOLO11n through evaluate_detector, its report folder logged as the
    evaluate flow logs it (artifact folder ``plots``)."""
    import cv2
    import torch
    from PIL import Image
    from ultralytics.nn.tasks import DetectionModel

    from components.evaluate import PER_CLASS_PLOT, EvalRequest, evaluate_detector

    ds = tmp_path / "ds"
    for d in ("images", "labels"):
        (ds / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    files = []
    for i in range(4):
        cv2.imwrite(str(ds / "images" / f"im{i}.jpg"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        (ds / "labels" / f"im{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.3 0.3\n")
        files.append(str(ds / "images" / f"im{i}.jpg"))
    (ds / "test.txt").write_text("\n".join(files) + "\n")
    (ds / "data.yaml").write_text(yaml.safe_dump({"path": str(ds), "names": {0: "scratch", 1: "hole"}, "nc": 2,
                                                  **{k: str(ds / "test.txt") for k in ("train", "val", "test")}}))
    model = DetectionModel("yolo11n.yaml", nc=2, verbose=False)
    model.names = {0: "scratch", 1: "hole"}
    torch.save({"model": model, "train_args": {}}, tmp_path / "w.pt")
    metrics = evaluate_detector(EvalRequest(tmp_path / "w.pt", ds / "data.yaml", "test", 64, 4, 0.001, 0.7, "cpu"),
                                {"batch": 1, "runs": 1, "warmup": 0}, tmp_path / "report", tmp_path / "plots")
    assert list(metrics["per_class_AP50"]) == ["scratch", "hole"]

    run = start_stage_run("evaluate:baseline", tracking, {}, {})
    run.log_artifact(tmp_path / "report", "plots")
    run.end()
    arts = {Path(a.path).name: a for a in client(tracking).list_artifacts(run.run_id, "plots")}
    assert PER_CLASS_PLOT in arts and "BoxPR_curve.png" in arts
    assert arts[PER_CLASS_PLOT].file_size > 5000
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(run_id=run.run_id, artifact_path=f"plots/{PER_CLASS_PLOT}",
                               dst_path=str(tmp_path / "dl"), tracking_uri=tracking["uri"])
    with Image.open(local) as im:
        assert im.format == "PNG" and im.width >= 600


def test_per_class_plot_draws_one_bar_per_class_at_its_ap():
    from components.evaluate import per_class_ap_figure

    ax = per_class_ap_figure({"scratch": 0.5, "hole": 0.0, "patch": 0.91}, "t").axes[0]
    bars = sorted(ax.patches, key=lambda p: p.get_y())                # top to bottom
    assert [round(b.get_width(), 4) for b in bars] == [0.5, 0.0, 0.91]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["scratch", "hole", "patch"]
    assert ax.get_lines()[0].get_xdata()[0] == pytest.approx(np.mean([0.5, 0.0, 0.91]))


# ---------------------------------------------------------------- registered version description


def test_registered_version_description_says_detector_data_metrics_and_gain(tracking, tmp_path):
    from components.detectors import display_name
    from components.deploy.registry import VersionFacts, log_detector_model, register, version_description

    path = tiny_onnx(tmp_path / "m.onnx")
    params = settings({"dasc.scale": "n", "baseline.scale": "n", "lagnet.variant": "small", "lagnet.lam": True})
    gain = {"mAP50": 0.0123, "ci95": [-0.004, 0.031], "mAP50_a": 0.61, "mAP50_b": 0.6223, "images": 72,
            "resamples": 2000}
    description = version_description(VersionFacts(
        display_name("dasc", params), "dasc",
        {"name": "synth", "hash": "0123abcd4567ef89", "source": "data/datasets/synth"},
        {"mAP50": 0.6222, "mAP50-95": 0.3301}, "test", gain, {"mAP50": 0.61}, "run123", "abc"))
    run = start_stage_run("promote", tracking, {}, {})
    version = register(tracking["uri"], log_detector_model(tracking["uri"], run.run_id, path),
                       "defect-detector", {"model": "dasc"}, description)
    run.end()
    mv = client(tracking).get_model_version("defect-detector", version)
    text = mv.description
    assert "DASC-YOLO-n" in text and "`dasc`" in text
    assert "0123abcd4567ef89" in text and "data/datasets/synth" in text
    assert "mAP50 0.6222" in text and "mAP50-95 0.3301" in text
    assert "gain over the baseline: mAP50 +0.0123, 95 % CI [-0.0040, +0.0310]" in text
    assert mv.tags["model"] == "dasc"

    base = version_description(VersionFacts(display_name("baseline", params), "baseline",
                                            {"name": "synth", "hash": "h", "source": "s"}, {"mAP50": 0.61}, "test",
                                            None, {"mAP50": 0.61}, "r", "c"))
    assert "YOLO11n" in base and "this is the baseline" in base
    assert display_name("lagnet", params) == "LAGNet-s"


# ---------------------------------------------------------------- optuna-dashboard


def _get(app, path: str) -> tuple[str, dict]:
    env: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(env)
    status = {}

    def start_response(s, headers, exc_info=None):
        status["s"] = s

    body = b"".join(app(env, start_response))
    return status["s"], json.loads(body)


def test_optuna_dashboard_serves_the_projects_study(tmp_path, monkeypatch):
    import optuna

    from defectops.optuna_ui import dashboard_app

    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    own = f"sqlite:///{tmp_path}/optuna.db"
    params = yaml.safe_load((REPO / "params.yaml").read_text())       # the project's params, its own storage
    params["tune"]["storage"] = own
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="defectops-dasc-abc", storage=own, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)

    status, body = _get(dashboard_app(str(tmp_path / "params.yaml")), "/api/studies")
    assert status.startswith("200")
    assert [s["study_name"] for s in body["study_summaries"]] == ["defectops-dasc-abc"]

    # OPTUNA_STORAGE wins over tune.storage, as for the tuning stages
    env_db = f"sqlite:///{tmp_path}/shared.db"
    optuna.create_study(study_name="shared-study", storage=env_db)
    monkeypatch.setenv("OPTUNA_STORAGE", env_db)
    _, body = _get(dashboard_app(str(tmp_path / "params.yaml")), "/api/studies")
    assert [s["study_name"] for s in body["study_summaries"]] == ["shared-study"]


def test_make_optuna_ui_runs_the_dashboard_module():
    if not shutil.which("make"):
        pytest.skip("make not installed")
    out = subprocess.run(["make", "-n", "optuna-ui"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "-m defectops.optuna_ui" in out


# ---------------------------------------------------------------- the flows' stage_run


def test_stage_run_of_a_flow_logs_the_dataset_and_every_tag(tracking, tmp_path, monkeypatch, prefect_server):
    """``pipelines.common.stage_run`` as the train / evaluate flows call it (``dataset=``), in a flow."""
    from prefect import flow

    from pipelines.common import stage_run

    monkeypatch.chdir(tmp_path)
    summary, split = make_dataset(Path("data/datasets"))
    Path("data/splits").mkdir(parents=True)
    Path("data/splits/tiny.json").write_text(json.dumps(split))
    params = settings({"paths.datasets": "data/datasets", "paths.splits": "data/splits", "data.name": "tiny",
                       "evaluate.split": "test", **{f"tracking.{k}": v for k, v in tracking.items()}})
    monkeypatch.setenv("DVC_STAGE", "evaluate@baseline")

    @flow(name="ui-check")
    def evaluate_like() -> str:
        with stage_run("evaluate:baseline", params, ["evaluate"], summary["content_hash"], {"model": "baseline"},
                       dataset="test") as run:
            return run.run_id

    run_id = evaluate_like()
    r = client(tracking).get_run(run_id)
    ins = _inputs(tracking, run_id)
    assert set(ins) == {"tiny", "tiny:split"}
    ds, tags = ins["tiny"]
    assert ds.digest == summary["content_hash"] == r.data.tags["dataset_hash"]
    assert json.loads(ds.source)["uri"] == "data/datasets/tiny"
    assert tags["mlflow.data.context"] == "test" and int(tags["split.test"]) == len(split["test"])
    assert r.data.tags["mlflow.source.name"] == "dvc.yaml:evaluate@baseline"
    assert r.data.tags[PIPELINE_RUN_TAG] and r.data.tags["git_commit"] and r.info.status == "FINISHED"
    # what overrode params.yaml, and from where, is on the run beside the values it used
    assert json.loads(r.data.tags["defectops.overrides"])["data.name"] == {"value": "tiny", "source": "test"}
