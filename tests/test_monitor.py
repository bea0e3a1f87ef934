"""The monitor (components/monitor/drift.py, select.py, pipelines/monitor.py): Evidently finds no
drift between two samples of the same synthetic line and finds it, on brightness and sharpness,
when the window's images are darker and blurred; the review selection keeps to its budget and
picks the answers near a threshold and those the challenger disagrees with; the flow runs end to
end on a registered champion and challenger, logs Evidently's report to MLflow, starts the retrain
deployment, pushes its picks to a real Label Studio (skipped where it is not installed) and never
touches the log; ``defectops monitor`` on an empty log says so in one line."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.monitor.predlog import ModelRef, PredictionLog, PredictionRecord, record_for
from conftest import settings, tiny_detector


def synth_images(n: int, seed: int) -> list[np.ndarray]:
    """``n`` images of the embedded synthetic line (``components.data.synth``), seed ``seed``."""
    from components.data.synth import generate

    return [s.image for s in generate(settings({"data.synth.images": n, "data.synth.seed": seed}).data.synth)]


def darker_blurred(img: np.ndarray) -> np.ndarray:
    """A dirty lens on a dimmer light: 60 % of the brightness, a 7 x 7 Gaussian blur."""
    return cv2.GaussianBlur((img.astype(np.float32) * 0.6).astype(np.uint8), (7, 7), 0)


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A tiny real end-to-end ONNX detector (untrained YOLO11n, classes scratch / hole) on ONNX Runtime."""
    from components.deploy.serving import BoxModel

    return BoxModel(tiny_detector(tmp_path_factory.mktemp("det"), "nms.onnx", nms=True))


def log_images(log: PredictionLog, model, images: list[np.ndarray], version: str = "1") -> list[PredictionRecord]:
    """What predict does for each image: answer it, then append its record (and the image) to the log."""
    out = []
    for img in images:
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        t = time.perf_counter()
        answer = model.judge(decoded)
        rec = record_for(ModelRef("defect-detector", version, "champion"), data, decoded, answer,
                         (time.perf_counter() - t) * 1000, "predict")
        assert log.append(rec, data) is not None
        out.append(rec)
    return out


@pytest.fixture(scope="module")
def reference(detector, tmp_path_factory):
    """The champion's side: 72 validation-like images (the default split's val size), its answers."""
    from components.monitor.drift import reference_observations

    folder = tmp_path_factory.mktemp("ref")
    paths = []
    for i, img in enumerate(synth_images(72, seed=0)):
        paths.append(folder / f"val_{i:03d}.jpg")
        cv2.imwrite(str(paths[-1]), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return reference_observations(detector, paths, "synthetic val")


def test_drift_same_line_none_darker_blurred_flagged(detector, reference, tmp_path):
    from components.monitor.drift import INPUTS, compare, window_observations

    log = PredictionLog(f"sqlite:///{tmp_path}/log.db", tmp_path / "images")
    same = synth_images(40, seed=1)
    log_images(log, detector, same)
    records = log.window()
    assert len(records) == 40 and all(r.image_kept for r in records)
    current = window_observations(records, log.image_file)
    assert not np.isnan(current.embeddings).any()
    ok = compare(reference, current, 0.3, tmp_path / "same")
    assert set(INPUTS) <= set(ok.columns) and {"emb_1", "emb_2", "emb_3", "score_max", "top_class"} <= set(ok.columns)
    assert not ok.drifted and ok.share < 0.3, ok.columns
    for col in ("brightness", "sharpness", "contrast"):
        assert ok.columns[col]["method"] == "K-S p_value" and ok.columns[col]["score"] > 0.05, (col, ok.columns[col])
        assert not ok.columns[col]["drifted"]
    assert ok.html.stat().st_size > 10_000 and "brightness" in ok.html.read_text(errors="ignore")
    assert ok.summary_file.is_file()

    dirty = PredictionLog(f"sqlite:///{tmp_path}/dirty.db", tmp_path / "dirty-images")
    log_images(dirty, detector, [darker_blurred(img) for img in same])
    bad = compare(reference, window_observations(dirty.window(), dirty.image_file), 0.3, tmp_path / "dirty")
    assert bad.drifted and bad.share >= 0.3, bad.columns
    for col in ("brightness", "sharpness"):
        assert col in bad.drifted_columns and bad.columns[col]["score"] < 1e-6, (col, bad.columns[col])
    s = bad.summary
    assert s["drifted"] and s["drift_share"] == bad.share and s["evidently"].startswith("0.7")
    assert s["window"]["images"] == 40 and s["reference"]["images"] == 72


def test_window_without_kept_images_still_compares_the_logged_statistics(detector, reference, tmp_path):
    from components.monitor.drift import compare, window_observations

    log = PredictionLog(f"sqlite:///{tmp_path}/log.db")                # no image store
    log_images(log, detector, [darker_blurred(img) for img in synth_images(30, seed=2)])
    current = window_observations(log.window(), log.image_file)
    assert np.isnan(current.embeddings).all()
    result = compare(reference, current, 0.3, tmp_path)
    assert not any(c.startswith("emb_") for c in result.columns)
    assert "brightness" in result.drifted_columns and result.summary["window"]["with_embedding"] == 0


# ---- the review selection

def _rec(i: int, boxes: list[tuple[str, float]], verdict: str, kept: bool = True, version: str = "1"):
    return PredictionRecord(id=i, ts=datetime.now(timezone.utc), model_name="defect-detector", model_version=version,
                            model_alias="champion", image_sha256=f"{i:064x}", width=64, height=48, verdict=verdict,
                            boxes=[{"cls": ["scratch", "hole"].index(n), "name": n, "conf": c, "xyxy": [1, 2, 30, 40]}
                                   for n, c in boxes],
                            stats={"brightness": 100.0, "contrast": 10.0, "sharpness": 50.0}, image_kept=kept)


def test_near_threshold_closest_first_within_margin_of_its_own_version():
    from components.monitor.select import near_threshold

    thr = {"scratch": 0.5, "hole": 0.4}
    recs = [_rec(1, [("scratch", 0.53)], "NG"), _rec(2, [("scratch", 0.9)], "NG"),
            _rec(3, [("hole", 0.41), ("scratch", 0.95)], "NG"), _rec(4, [], "OK"),
            _rec(5, [("hole", 0.449)], "NG"), _rec(6, [("scratch", 0.51)], "NG", version="0")]
    got = near_threshold(recs, thr, 0.05, version="1")
    assert [c.record.id for c in got] == [3, 1, 5]
    assert got[0].priority == pytest.approx(0.01) and "hole 0.410 vs threshold 0.400" == got[0].detail
    assert [c.record.id for c in near_threshold(recs, thr, 0.05)] == [3, 6, 1, 5]


def test_selection_keeps_the_budget_and_takes_every_reason(detector, tmp_path):
    from components.monitor.select import disagreements, near_threshold, select

    log = PredictionLog(f"sqlite:///{tmp_path}/log.db", tmp_path / "images")
    imgs = synth_images(8, seed=4)
    logged = log_images(log, detector, imgs)           # the tiny detector answers NG with boxes everywhere
    assert all(r.verdict == "NG" and r.boxes for r in logged)
    # the champion's (made-up) answers: 0-1 OK with no box, 2-7 NG with a score 0.016 .. 0.056 over 0.5
    champion = [_rec(r.id, [] if i < 2 else [("scratch", 0.5 + 0.008 * i)], "OK" if i < 2 else "NG")
                for i, r in enumerate(logged)]
    for c, r in zip(champion, logged):
        c.image_sha256 = r.image_sha256
    champion.append(_rec(99, [("scratch", 0.5)], "NG", kept=False))      # nearest of all, but no image
    queues = {"disagreement": disagreements(champion, detector, log.image_file),
              "near_threshold": near_threshold(champion, {"scratch": 0.5, "hole": 0.5}, 0.05)}
    assert [c.record.id for c in queues["disagreement"]][:2] == [logged[1].id, logged[0].id]
    assert all(c.detail.startswith("verdict OK vs challenger NG") for c in queues["disagreement"][:2])
    assert [c.record.id for c in queues["near_threshold"]] == [99] + [r.id for r in logged[2:7]]

    sel = select(queues, 4, log.image_file)
    assert len(sel.items) == 4 and len({i.prediction_id for i in sel.items}) == 4
    assert [i.reason for i in sel.items] == ["disagreement", "near_threshold", "disagreement", "near_threshold"]
    assert [i.prediction_id for i in sel.items] == [logged[1].id, logged[2].id, logged[0].id, logged[3].id]
    assert sel.without_image == 1 and sel.candidates["near_threshold"] == 6
    first = sel.items[0]
    assert first.image == log.image_file(logged[1].image_sha256) and first.image.is_file()
    assert (first.width, first.height, first.model_version) == (64, 48, "1") and first.boxes == []
    assert select(queues, 0, log.image_file).items == []
    everyone = select(queues, 100, log.image_file)                       # every candidate with an image, once
    assert sorted(i.prediction_id for i in everyone.items) == sorted(r.id for r in logged[:7])


def test_drift_outliers_are_the_images_in_the_reference_tail(detector, reference, tmp_path):
    from components.monitor.drift import compare, window_observations
    from components.monitor.select import drift_outliers

    log = PredictionLog(f"sqlite:///{tmp_path}/log.db", tmp_path / "images")
    imgs = synth_images(30, seed=5)
    dark = {3, 7, 11, 19, 23, 27, 29, 13, 17, 5, 1, 2}
    log_images(log, detector, [darker_blurred(im) if i in dark else im for i, im in enumerate(imgs)])
    records = log.window()
    result = compare(reference, window_observations(records, log.image_file), 0.3, tmp_path)
    assert "brightness" in result.drifted_columns or "sharpness" in result.drifted_columns
    picked = drift_outliers(records, result, tail=0.05)
    ids = {c.record.id for c in picked}
    dark_ids = {records[i].id for i in dark}
    assert {c.record.id for c in picked[:len(dark)]} == dark_ids, [(c.record.id, c.detail) for c in picked]
    assert all(c.reason == "drift" for c in picked) and picked == sorted(picked)
    assert all(c.detail.split("=")[0] in result.drifted_columns for c in picked), [c.detail for c in picked]


# ---- the flow, end to end

def _register(uri: str, onnx: Path, thresholds: dict, alias: str, example: Path) -> str:
    """``onnx`` with ``thresholds`` as its shipped operating point, registered as ``defect-detector@alias``."""
    import json
    import shutil

    from components.deploy.export import write_onnx_metadata
    from components.deploy.registry import log_detector_model, register, set_alias
    from components.tracking import start_stage_run

    shipped = onnx.with_name(f"{alias}.onnx")
    shutil.copyfile(onnx, shipped)
    write_onnx_metadata(shipped, {"decision": json.dumps({"rule": "recall", "target": 0.9, "thresholds": thresholds})})
    run = start_stage_run("promote", {"uri": uri, "experiment": "defectops"}, {}, {"model": "baseline"})
    version = register(uri, log_detector_model(uri, run.run_id, shipped, None, example), "defect-detector",
                       {"model": "baseline"})
    set_alias(uri, "defect-detector", alias, version)
    run.end()
    return version


def _project(tmp_path: Path, tracking: dict, monkeypatch, **monitor) -> dict:
    """A project in ``tmp_path``: params (paths there, a kept-image log, ``monitor`` overrides), a
    60-image synthetic dataset and split (30 val), a registered champion (NG at 0.5) and challenger
    (NG only at 0.999), and a window of 24 darker, blurred parts the champion answered and logged."""
    import json

    import yaml

    from components.data.synth import write_synth_dataset
    from components.deploy.serving import BoxModel
    from conftest import REPO

    monkeypatch.chdir(tmp_path)
    for k in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "DEFECTOPS_PREDLOG_URL"):
        monkeypatch.delenv(k, raising=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["paths"] = {k: str(tmp_path / k) for k in params["paths"]}
    params["predlog"].update(url=f"sqlite:///{tmp_path}/predlog.db", keep_images=True, image_dir=str(tmp_path / "kept"))
    params["monitor"].update(min_window=10, reference_size=30, review_budget=5, **monitor)
    params["review"]["url"] = "http://127.0.0.1:8080"
    params["tracking"]["uri"] = tracking["uri"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    write_synth_dataset(settings({"data.synth.images": 60}).data.synth, tmp_path / "datasets", "synth")
    names = sorted(p.stem for p in (tmp_path / "datasets" / "synth" / "images").iterdir())
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "synth.json").write_text(json.dumps({"train": names[:30], "val": names[30:], "test": []}))
    onnx = tiny_detector(tmp_path / "det", "nms.onnx", nms=True)
    example = tmp_path / "datasets" / "synth" / "images" / f"{names[0]}.jpg"
    champion = _register(tracking["uri"], onnx, {"scratch": 0.5, "hole": 0.5}, "champion", example)
    _register(tracking["uri"], onnx, {"scratch": 0.999, "hole": 0.999}, "challenger", example)
    log = PredictionLog(params["predlog"]["url"], tmp_path / "kept")
    log_images(log, BoxModel(onnx.with_name("champion.onnx")), [darker_blurred(im) for im in synth_images(24, 7)],
               version=champion)
    return {"params": str(tmp_path / "params.yaml"), "log": log, "champion": champion}


def test_monitor_flow_end_to_end(tracking, prefect_server, tmp_path, monkeypatch):
    """The window of darker, blurred parts drifts, the review picks within its budget (the
    challenger disagrees everywhere), Label Studio is not configured (said), the retrain
    deployment gets a run, MLflow holds the report, and the log's records and images are as they were."""
    import mlflow
    from prefect.client.orchestration import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    from conftest import snapshot
    from pipelines.monitor import monitor_flow
    from pipelines.retrain import retrain_flow

    project = _project(tmp_path, tracking, monkeypatch, trigger_retrain=True)
    log, champion = project["log"], project["champion"]
    before, kept = log.window(), snapshot(tmp_path / "kept")
    retrain_flow.to_deployment(name="retrain").apply()          # a deployment nobody runs: the run is scheduled

    result = monitor_flow(project["params"])

    assert result["status"] == "drift" and result["window"]["images"] == 24 and result["champion_version"] == champion
    assert {"brightness", "sharpness"} <= set(result["drift"]["drifted_columns"])
    review = result["review"]
    assert len(review["picked"]) == 5 and review["candidates"]["disagreement"] == 24
    assert {p["reason"] for p in review["picked"]} <= {"near_threshold", "drift", "disagreement"}
    assert review["pushed"] == "5 review item(s) not pushed to http://127.0.0.1:8080: set LABEL_STUDIO_API_KEY " \
                               "(listed in monitor.json)"
    assert result["retrain"].startswith("started flow run ")
    flow_run_id = result["retrain"].split()[3]

    async def deployment_of_run():
        async with get_client() as c:
            fr = await c.read_flow_run(flow_run_id)
            return (await c.read_deployment(fr.deployment_id)).name
    assert run_coro_as_sync(deployment_of_run()) == "retrain"

    runs = mlflow.search_runs(experiment_names=["defectops"], filter_string="tags.stage = 'monitor'",
                              output_format="list")
    assert len(runs) == 1 and runs[0].data.tags["drifted"] == "true"
    assert runs[0].data.metrics["drift_share"] >= 0.3 and runs[0].data.metrics["review_items"] == 5
    assert runs[0].data.metrics["drift_score.brightness"] < 1e-6
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "monitor")}
    assert arts == {"monitor/monitor.json", "monitor/drift_report.html", "monitor/drift_summary.json"}
    assert [(r.id, r.image_sha256, r.boxes, r.image_kept) for r in log.window()] == \
        [(r.id, r.image_sha256, r.boxes, r.image_kept) for r in before]
    assert snapshot(tmp_path / "kept") == kept


def test_monitor_flow_pushes_the_picks_to_label_studio(label_studio, tracking, prefect_server, tmp_path,  # noqa: F811
                                                       monkeypatch):
    """With LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY set, the picks become pre-annotated tasks of
    ``review.project`` (a real Label Studio server, ``tests/labelstudio.py``)."""
    import yaml

    from components.monitor import review
    from pipelines.monitor import monitor_flow

    project = _project(tmp_path, tracking, monkeypatch)
    params = yaml.safe_load(Path(project["params"]).read_text())
    params["review"]["project"] = "monitor test review"
    Path(project["params"]).write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.api_key)
    result = monitor_flow(project["params"])
    client = review.connect(label_studio.url, label_studio.api_key)
    pid = review.find_project(client, "monitor test review")
    assert result["review"]["pushed"] == f"5 task(s) pushed to Label Studio project 'monitor test review' (id {pid})"
    tasks = client.get("/api/tasks", params={"project": pid, "fields": "all"}).json()
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    picked = {p["prediction_id"] for p in result["review"]["picked"]}
    assert len(tasks) == 5 and {t["data"]["prediction_id"] for t in tasks} == picked
    assert all(t["predictions"] and t["predictions"][0]["result"] for t in tasks)     # the champion's boxes


def test_monitor_command_says_when_the_window_is_too_small(tracking, prefect_server, tmp_path, monkeypatch, capsys):
    """``defectops monitor`` on an empty log: one line that says why nothing was tested, exit 0,
    and the MLflow run of the stage records it; reading the log creates no database."""
    import mlflow
    import yaml

    from conftest import REPO
    from defectops.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEFECTOPS_PREDLOG_URL", raising=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["paths"] = {k: str(tmp_path / k) for k in params["paths"]}
    params["predlog"]["url"] = f"sqlite:///{tmp_path}/predlog.db"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert main(["--params", str(tmp_path / "params.yaml"), "monitor", "--hours", "2"], guard=False) == 0
    said = "0 logged image(s) in the window, fewer than monitor.min_window (20): no drift test"
    assert capsys.readouterr().out.strip() == f"monitor: {said}"
    assert not (tmp_path / "predlog.db").exists()
    (run,) = mlflow.search_runs(experiment_names=["defectops"], output_format="list")
    assert run.data.tags["stage"] == "monitor" and run.data.tags["status"] == said
    assert run.data.metrics["window_images"] == 0
