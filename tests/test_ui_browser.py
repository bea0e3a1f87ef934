"""The MLflow UI in a real browser: ``mlflow server`` (a subprocess on 127.0.0.1, a free port, a
SQLite store and an artifacts folder in a temporary directory) holding a small store logged to it
with the project's own functions (``start_stage_run``, ``StageRun.log_dataset``, ``registry.register``,
``version_description``), opened in headless Chromium (Debian's ``chromium``) over the DevTools
protocol (``tests/headless.py``). It checks what the comparison and promotion desk shows: the
experiment's training-runs table lists the training and evaluation runs by name, the registered
model ``defect-detector`` shows its ``champion`` alias on the right version, the version's page
its description; optuna-dashboard shows a tuning study; the monitor's Evidently drift report (its
HTML file) shows the dataset verdict and the drifted columns, and a review task pushed to a real
Label Studio (``tests/labelstudio.py``; skipped where it is not installed) shows the model's boxes
after a login through Label Studio's form. Screenshots go to ``reports/ui/`` (``DEFECTOPS_UI_SHOTS`` to put them
elsewhere); ``docs/img/`` holds copies for the README. Skips when chromium is not installed
(``make test`` installs it where apt-get can, ``tests/ensure_chromium.sh``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import isolate_mlflow, tiny_onnx
from headless import Browser, chromium_path, free_port, stop_group, wait_http

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("DEFECTOPS_UI_SHOTS") or REPO / "reports" / "ui")
MODEL = "defect-detector"
NO_CHROMIUM = "chromium not installed (Debian: apt-get install chromium; `make test` installs it where it can)"

# the evaluation runs log the same metric names (compared side by side in the UI)
EVAL = {"baseline": {"test.mAP50": 0.682, "test.mAP50-95": 0.351, "test.precision": 0.671, "test.recall": 0.633,
                     "gain_vs_baseline_mAP50": 0.0},
        "dasc": {"test.mAP50": 0.687, "test.mAP50-95": 0.356, "test.precision": 0.664, "test.recall": 0.648,
                 "gain_vs_baseline_mAP50": 0.005}}
DATASET = {"name": "synth", "digest": "3f9c2a7e51d04b68", "source": "data/datasets/synth",
           "profile": {"images": 600, "boxes": 1450, "classes": ["scratch", "pit", "flake"]},
           "tags": {"split.train": 420, "split.val": 60, "split.test": 120}}


def build_store(uri: str, tmp: Path, mp: pytest.MonkeyPatch) -> dict:
    """What one `dvc repro` leaves in MLflow, in small, logged to the tracking server ``uri``: train
    and evaluate runs of the baseline and DASC-YOLO (named as their stages name them, one
    pipeline-run id, the dataset as a dataset input), then `promote` registering each as an ONNX
    version of ``defect-detector`` with its description, DASC-YOLO last, as ``champion``."""
    from components.tracking import PIPELINE_RUN_ENV
    from components.deploy.registry import (CHAMPION, VersionFacts, log_detector_model, register, set_alias,
                                            version_description)
    from components.tracking import start_stage_run

    tracking = isolate_mlflow(mp, uri)
    mp.setenv(PIPELINE_RUN_ENV, "dvc-20260101T120000-4242")
    names = {"baseline": "YOLO11n", "dasc": "DASC-YOLO-n"}
    train_ids, eval_ids = {}, {}
    for key in names:
        mp.setenv("DVC_STAGE", f"train_{key}")
        run = start_stage_run(f"train:{key}", tracking, {"train": {"epochs": 60, "imgsz": 224, "seed": 0}},
                              {"model": key, "git_commit": "0123456789abcdef0123456789abcdef01234567",
                               "dataset_hash": DATASET["digest"]})
        run.log_dataset(**DATASET, context="train")
        for epoch in range(3):
            run.log_metrics({"metrics/mAP50B": EVAL[key]["test.mAP50"] * (epoch + 1) / 3}, step=epoch)
        run.end()
        train_ids[key] = run.run_id
        mp.setenv("DVC_STAGE", f"evaluate@{key}")
        run = start_stage_run(f"evaluate:{key}", tracking, {"evaluate": {"split": "test"}},
                              {"model": key, "train_run_id": run.run_id, "dataset_hash": DATASET["digest"]})
        run.log_dataset(**DATASET, context="test")
        run.log_metrics(EVAL[key])
        run.end()
        eval_ids[key] = run.run_id

    mp.setenv("DVC_STAGE", "promote")
    onnx_path = tiny_onnx(tmp / "model.onnx")
    versions = {}
    for key in names:                          # the baseline first (champion), then DASC-YOLO beats it
        run = start_stage_run("promote", tracking, {}, {"model": key})
        gain = None if key == "baseline" else {"mAP50": 0.005, "ci95": [-0.014, 0.025], "images": 360,
                                               "resamples": 2000}
        description = version_description(VersionFacts(
            names[key], key, {"name": DATASET["name"], "hash": DATASET["digest"], "source": DATASET["source"]},
            {k.removeprefix("test."): v for k, v in EVAL[key].items() if k in ("test.mAP50", "test.mAP50-95")},
            "test", gain, {"mAP50": EVAL["baseline"]["test.mAP50"]}, train_ids[key], "0123456"))
        model_uri = log_detector_model(uri, run.run_id, onnx_path)
        versions[key] = register(uri, model_uri, MODEL, {"model": key, "train_run_id": train_ids[key]}, description)
        set_alias(uri, MODEL, CHAMPION, versions[key])
        card = log_card(uri, run.run_id, tmp / f"card-{key}") if key == "dasc" else None
        run.end()
    return {"experiment_id": run.experiment_id, "versions": versions, "evaluations": eval_ids,
            "card_run": run.run_id if card else None}


def log_card(uri: str, run_id: str, folder: Path) -> Path | None:
    """The model card of the default run's promotion (rendered again from the inputs that
    ``reports/promotion.json`` keeps: the committed default run's real figures; its pictures stay
    with that run), logged as ``model_card/`` of ``run_id``; None when the record has none."""
    import mlflow

    from components.deploy.card import CardInputs, write_model_card

    record = json.loads((REPO / "reports" / "promotion.json").read_text())
    if "model_card_inputs" not in record:
        return None
    inputs = CardInputs(**{**record["model_card_inputs"], "confusion": None, "lam_grid": None})
    card = write_model_card(folder, inputs)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifacts(str(folder), "model_card")
    return card


@pytest.fixture(scope="module")
def mlflow_ui(tmp_path_factory):
    """``mlflow server`` on a fresh SQLite store, filled by ``build_store`` through its REST API (as
    the stages log to ``MLFLOW_TRACKING_URI=http://...``; artifacts through the server into its
    artifacts folder): yields its URL and the store's ids; the server's whole process group is
    stopped afterwards, whatever happened."""
    if chromium_path() is None:
        pytest.skip(NO_CHROMIUM)
    tmp = tmp_path_factory.mktemp("mlflow-ui")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",   # no job runner processes
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(k, None)
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server",
                                 "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
                                 "--artifacts-destination", str(tmp / "mlartifacts"), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"],
                                cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc, timeout=120, log=log)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
            store = build_store(url, tmp, mp)
        yield {**store, "url": url}
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def browser(mlflow_ui):
    with Browser(1400, 900) as b:
        # the UI's own per-browser settings, as a user would leave them: the *Model training* side of
        # the sidebar switch, the assistant panel closed (it opens itself on a first visit)
        b.open(f"{mlflow_ui['url']}/health", ("OK",))
        b.evaluate("""(() => {
            localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning'));
            localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');
            localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');
        })()""")
        yield b


def screenshot(b: Browser, name: str) -> Path:
    """The page as ``SHOTS/name``, a small PNG (128 colours: a UI screenshot loses nothing visible)."""
    from PIL import Image

    path = b.screenshot(SHOTS / name)
    with Image.open(path) as im:
        colors = im.convert("RGB").getcolors(4096)                     # None: more than that
        assert im.size == (b.width, b.height) and (colors is None or len(colors) > 16), "a blank page"
        small = im.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)
    return path


def _close_assistant(b: Browser) -> None:
    """Should the assistant panel be open anyway (another MLflow version), close it for the screenshot."""
    if b.click('[data-component-id="mlflow.assistant.chat_panel.close"]'):
        b.evaluate("new Promise(r => setTimeout(r, 500))")


def test_mlflow_runs_page_lists_the_training_and_evaluation_runs(mlflow_ui, browser):
    url = f"{mlflow_ui['url']}/#/experiments/{mlflow_ui['experiment_id']}/runs"
    runs = ("train:baseline", "train:dasc", "evaluate:baseline", "evaluate:dasc")
    # every run by name, the dataset input (name and digest) in the Dataset column and, in the Models
    # column of promote's runs, the registered model (fetched separately by the UI: waited for too,
    # a loaded machine renders it after the runs)
    shown = browser.open(url, (*runs, f"{DATASET['name']} ({DATASET['digest']})"))
    _close_assistant(browser)                # an open assistant panel narrows the table
    deadline = time.monotonic() + 30
    while "defect-detector" not in shown and time.monotonic() < deadline:
        time.sleep(0.5)
        shown = browser.text()
    assert "defectops" in shown and "defect-detector" in shown, shown[:2000]
    screenshot(browser, "mlflow_runs.png")


def test_mlflow_model_page_shows_the_champion_alias_and_the_version_description(mlflow_ui, browser):
    champion = mlflow_ui["versions"]["dasc"]
    shown = browser.open(f"{mlflow_ui['url']}/#/models/{MODEL}", (MODEL, "champion", f"Version {champion}"))
    # the alias is on the row of the version it points to, not on the baseline's
    rows = browser.evaluate("""[...document.querySelectorAll('tr, [role="row"]')]
                               .map(r => r.innerText).filter(t => t.includes('champion'))""")
    assert rows and all(f"Version {champion}" in r for r in rows), rows
    assert "model" in shown and "dasc" in shown                        # the version tags
    _close_assistant(browser)
    screenshot(browser, "mlflow_model.png")

    # the version's page: its description (rendered Markdown) says the detector, data, metrics and gain
    shown = browser.open(f"{mlflow_ui['url']}/#/models/{MODEL}/versions/{champion}",
                         ("Source Run", "DASC-YOLO-n defect detector", f"content hash {DATASET['digest']}",
                          "test metrics (test split, ONNX Runtime): mAP50 0.6870",
                          "gain over the baseline: mAP50 +0.0050, 95 % CI [-0.0140, +0.0250]"))
    assert "champion" in shown


def test_mlflow_compare_page_shows_the_evaluations_metrics_side_by_side(mlflow_ui, browser):
    """*Compare* on the two evaluation runs (the page the runs table's Compare button opens)."""
    ids = list(mlflow_ui["evaluations"].values())
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([mlflow_ui["experiment_id"]])})
    shown = browser.open(f"{mlflow_ui['url']}/#/compare-runs?{query}",
                         ("Comparing 2 Runs", "evaluate:baseline", "evaluate:dasc", "test.mAP50",
                          "gain_vs_baseline_mAP50"))
    assert "0.682" in shown and "0.687" in shown
    _close_assistant(browser)
    for section in ("Visualizations", "Parameters"):      # folded: the metrics table in view
        browser.click_text(section)
    browser.evaluate("new Promise(r => setTimeout(r, 500))")
    screenshot(browser, "mlflow_compare.png")


def test_mlflow_artifacts_view_shows_the_model_card(mlflow_ui, browser):
    """The champion's model card in the MLflow UI: the promotion run's *Artifacts* tab, ``model_card/``."""
    if mlflow_ui["card_run"] is None:
        pytest.skip("reports/promotion.json holds no model card inputs (a promotion before model cards)")
    url = (f"{mlflow_ui['url']}/#/experiments/{mlflow_ui['experiment_id']}/runs/{mlflow_ui['card_run']}"
           f"/artifacts/model_card/model_card.md")
    shown = browser.open(url, ("model_card.md", "Model card", "Operating point", "escape rate"))
    assert "Verdicts: escapes and overkill" in shown and "threshold" in shown
    _close_assistant(browser)
    screenshot(browser, "mlflow_model_card.png")
    # the part a quality engineer signs off: the operating-point table and the rates, scrolled into view
    assert browser.evaluate("""(() => { const h = [...document.querySelectorAll('h2')]
                                  .find(e => e.innerText.trim() === 'Operating point');
                                  if (h) h.scrollIntoView(); return !!h; })()""")
    browser.evaluate("new Promise(r => setTimeout(r, 500))")
    screenshot(browser, "mlflow_model_card_operating_point.png")


# ---------------------------------------------------------------- optuna-dashboard (make optuna-ui)


@pytest.fixture(scope="module")
def optuna_ui(tmp_path_factory):
    """``python -m defectops.optuna_ui`` (what ``make optuna-ui`` runs) on a temporary SQLite storage
    named by ``tune.storage`` of a temporary params file, holding one small study shaped like a
    ``tune_dasc`` study (its trials' val mAP50 per epoch as intermediate values)."""
    if chromium_path() is None:
        pytest.skip(NO_CHROMIUM)
    import optuna
    import yaml

    tmp = tmp_path_factory.mktemp("optuna-ui")
    storage = f"sqlite:///{tmp}/optuna.db"
    params = yaml.safe_load((REPO / "params.yaml").read_text())   # a whole params file: every key is checked
    params["tune"]["storage"] = storage
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="defectops-dasc-3f9c2a7e", storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0))

    def objective(trial: optuna.Trial) -> float:              # tune.space.dasc's searched leaves
        k = trial.suggest_categorical("protonet_k", [2, 4, 8])
        iou = trial.suggest_categorical("iou", ["ciou", "eiou", "mpdiou", "piou", "shape_iou", "siou", "uiou"])
        score = 0.6 + 0.01 * k ** 0.5 + 0.003 * len(iou)
        for epoch in range(4):                                 # val mAP50 per epoch, as the trials report it
            trial.report(score * (epoch + 1) / 4, epoch)
        return score

    study.optimize(objective, n_trials=6)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "OPTUNA_STORAGE"}
    log = tmp / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "defectops.optuna_ui", "--params", str(tmp / "params.yaml"),
                                 "--host", "127.0.0.1", "--port", str(port)],
                                cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/api/studies", proc, timeout=120, log=log)
        study_id = optuna.storages.get_storage(storage).get_study_id_from_name(study.study_name)
        yield {"url": url, "study": study.study_name, "study_id": study_id, "best": study.best_value}
    finally:
        stop_group(proc)


def test_optuna_dashboard_shows_the_tuning_study(optuna_ui):
    with Browser(1400, 900) as b:
        shown = b.open(f"{optuna_ui['url']}/dashboard/studies/{optuna_ui['study_id']}",
                       (optuna_ui["study"], "Best Trial", "protonet_k", "Hyperparameter Importance"))
        assert f"{optuna_ui['best']:.3f}".rstrip("0") in shown
        screenshot(b, "optuna_dashboard.png")


# ---------------------------------------------------------------- the monitor's Evidently report (defectops monitor)


def _drift_rows(b: Browser) -> dict[str, str]:
    """The rows the Evidently report's drift table shows: column -> its *Data Drift* cell."""
    rows = b.evaluate("""[...document.querySelectorAll('tr')]
                         .map(r => [...r.querySelectorAll('td')].map(c => c.innerText.trim()))""")
    return {cells[1]: next((c for c in cells if c in ("Detected", "Not Detected")), "")
            for cells in rows if len(cells) > 5 and cells[1]}


@pytest.mark.skipif(chromium_path() is None, reason=NO_CHROMIUM)
def test_evidently_drift_report_in_the_browser(tmp_path):
    """The HTML report ``compare`` writes (the one ``defectops monitor`` logs to MLflow), built as
    the monitor builds it: a reference of synthetic validation images with a tiny real detector's
    answers against a prediction-log window of the same line, darker and blurred. Opened from its
    file and sorted by drift score, it shows Evidently's dataset verdict and, per column, the
    verdict ``compare`` read from the same run: brightness and sharpness drifted."""
    import cv2

    from components.deploy.serving import BoxModel
    from components.monitor.drift import compare, reference_observations, window_observations
    from components.monitor.predlog import PredictionLog
    from conftest import tiny_detector
    from test_monitor import darker_blurred, log_images, synth_images

    detector = BoxModel(tiny_detector(tmp_path / "det", "nms.onnx", nms=True))
    paths = []
    for i, img in enumerate(synth_images(40, seed=0)):
        paths.append(tmp_path / f"val_{i:03d}.jpg")
        cv2.imwrite(str(paths[-1]), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    reference = reference_observations(detector, paths, "synthetic val")
    log = PredictionLog(f"sqlite:///{tmp_path}/log.db", tmp_path / "images")
    log_images(log, detector, [darker_blurred(img) for img in synth_images(30, seed=1)])
    result = compare(reference, window_observations(log.window(), log.image_file), 0.3, tmp_path / "drift")
    assert result.drifted and {"brightness", "sharpness"} <= set(result.drifted_columns), result.columns

    with Browser(1400, 1300) as b:
        n, k = len(result.columns), len(result.drifted_columns)
        shown = b.open(result.html.as_uri(), ("Dataset Drift is detected. Dataset drift detection threshold is 0.3",
                                              f"Drift is detected for {100 * k / n:.1f}% of columns ({k} out of {n})",
                                              "Drift Score"), timeout=60)
        assert b.click_text("Drift Score")             # sorted by p-value: the drifted columns first
        deadline = time.monotonic() + 20
        while True:
            rows = _drift_rows(b)
            if {c for c, v in rows.items() if v == "Detected"} == set(result.drifted_columns):
                break
            assert time.monotonic() < deadline, (rows, result.drifted_columns, shown[:2000])
            time.sleep(0.3)
        assert all(rows[c] == "Not Detected" for c in rows if c not in result.drifted_columns), rows
        assert rows["brightness"] == rows["sharpness"] == "Detected"
        screenshot(b, "evidently_drift.png")


# ---------------------------------------------------------------- a review task in Label Studio (defectops monitor)


def _login(b: Browser, ls) -> None:
    """Label Studio's own login form (``/user/login/``) with the admin's e-mail and password."""
    b.open(f"{ls.url}/user/login/", ("Email Address", "Password"))
    b.evaluate(f"""(() => {{ document.querySelector('input[name=email]').value = {json.dumps(ls.user)};
        document.querySelector('input[name=password]').value = {json.dumps(ls.password)};
        document.querySelector('form').submit(); }})()""")
    deadline = time.monotonic() + 30
    while b.evaluate("location.pathname.startsWith('/user/login') || document.readyState !== 'complete'"):
        assert time.monotonic() < deadline, f"not logged in: {b.evaluate('location.href')}\n{b.text()[:1000]}"
        time.sleep(0.3)


@pytest.mark.skipif(chromium_path() is None, reason=NO_CHROMIUM)
def test_label_studio_task_shows_the_model_pre_annotation(label_studio, tmp_path):  # noqa: F811
    """A review task as the monitor pushes it (``components.monitor.review``: the project, the
    uploaded image, the model's boxes as the task's prediction), opened in Label Studio's labelling
    view after logging in through its login form: the image and both boxes, each region listed with
    its class and score. The boxes are a synthetic image's own (exact) boxes with scores, standing in
    for the champion's answer."""
    import cv2

    from components.data.synth import CLASS_NAMES, generate
    from components.monitor import review
    from conftest import settings

    synth = settings({"data.synth.images": 12, "data.synth.size": 256, "data.synth.seed": 3}).data.synth
    sample = next(s for s in generate(synth) if len(s.boxes) == 2 and s.boxes[0][0] != s.boxes[1][0])
    image = tmp_path / f"{sample.name}.jpg"
    cv2.imwrite(str(image), sample.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    boxes = [{"cls": c, "name": CLASS_NAMES[c], "conf": 0.81 - 0.2 * i, "xyxy": [x1, y1, x2, y2]}
             for i, (c, x1, y1, x2, y2) in enumerate(sample.boxes)]
    client = review.connect(label_studio.url, label_studio.api_key)
    pid = review.ensure_project(client, "browser review", list(CLASS_NAMES))
    item = review.ReviewItem(7, image, 256, 256, boxes, "3", "near_threshold")
    assert review.push_tasks(client, pid, [item]) == 1
    tasks = client.get("/api/tasks", params={"project": pid}).json()
    (task,) = tasks["tasks"] if isinstance(tasks, dict) else tasks

    with Browser(1400, 900) as b:
        _login(b, label_studio)
        regions = [f"{x['name']}\n{x['conf']:.2f}" for x in boxes]      # the regions panel: class, score
        shown = b.open(f"{label_studio.url}/projects/{pid}/data?task={task['id']}",
                       ("browser review", "Regions", *regions), timeout=60)
        panel = shown[shown.rindex("Regions"):]
        assert [n for n in CLASS_NAMES if n in panel] == sorted({x["name"] for x in boxes}, key=CLASS_NAMES.index)
        deadline = time.monotonic() + 20                  # the uploaded image itself, drawn at its size
        while not b.evaluate("[...document.images].some(i => i.complete && i.naturalWidth === 256)"):
            assert time.monotonic() < deadline, "the task's image did not load"
            time.sleep(0.3)
        screenshot(b, "labelstudio_task.png")
