"""``defectops``: the command line. Each subcommand runs one Prefect flow.

Exit codes: 0 ok, 1 the work failed (e.g. nothing usable to import), 2 bad usage/config (a bad
params file stops every command before anything starts; for ``predict`` / ``serve``, no such
model), 3 ``predict``: some input files could not be read as images.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.errors import StopError
from components.layout import Layout
from components.data.importers import FORMATS
from components.settings import ConfigError, load_settings

def _flows(a: argparse.Namespace, name: str):
    """The flow module ``pipelines.<name>``, imported after the console is set for people
    (``console.setup``: Prefect's run records and tracebacks go to the log file, ``--verbose``
    shows them), so ``--help`` and argument errors never wait for Prefect."""
    import importlib

    import pipelines  # noqa: F401  (its Prefect environment first: Prefect reads it when imported)

    from .console import setup

    setup(getattr(a, "verbose", False))
    return importlib.import_module(f"pipelines.{name}")


EPILOG = "Run from the repository root (where params.yaml lives). Every value not given as an " \
         "option comes from params.yaml."


def _data_import(a: argparse.Namespace) -> int:
    if not Path(a.src).is_dir():         # the common mistake, answered before anything heavy loads
        print(f"error: source folder not found: {a.src}", file=sys.stderr)
        return 1
    import_flow = _flows(a, "data").import_flow

    root = a.root or str(_preview_root(Layout.from_params(load_settings(a.params))))
    s = import_flow(a.src, a.name, root, a.format, a.params)
    _print_summary(s, f"{root}/{a.name}")
    print(f"next: defectops data profile {a.name}  (writes profiles/{a.name}.yaml; the data stage of "
          f"`make run PROFILE={a.name}` imports the source into the pipeline)")
    return 0


def _preview_root(lay: Layout) -> Path:
    """Where ``data import`` checks a source (scratch): the pipeline's own import is the data stage's."""
    return lay.work / "import"


def _data_profile(a: argparse.Namespace) -> int:
    import json

    import yaml

    from components.data.canonical import load_manifest
    from components.dataprofile import propose, render
    from components.settings import resolve

    params = load_settings(a.params)
    lay = Layout.from_params(params)
    roots = [Path(a.root)] if a.root else [_preview_root(lay), lay.datasets]
    ds = next((r / a.name for r in roots if (r / a.name / "manifest.json").is_file()), roots[0] / a.name)
    manifest = load_manifest(ds)
    summary = json.loads((ds / "summary.json").read_text())
    out = Path(a.out or f"profiles/{a.name}.yaml")
    if out.exists() and not a.force:
        raise FileExistsError(f"{out} exists (--force replaces it)")
    p = propose(manifest, summary, a.name, a.hours, (1 - params.split.test_ratio) * (1 - params.split.val_ratio))
    text = render(p, f"profiles/{out.name}: proposed by `defectops data profile {a.name}` from {ds}/manifest.json\n"
                     f"quick check: make run PROFILE=\"{out.stem} smoke\"   real run: make run PROFILE={out.stem}")
    resolve(a.params, [(f"profile {out}", yaml.safe_load(text))])      # a value params.yaml refuses stops here
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    v = p.values
    return _say(f"{out}: {len(v['data.classes'])} classes, train.imgsz {v['train.imgsz']}, train.batch "
                f"{v['train.batch']}, train.epochs {v['train.epochs']} ({a.hours:g} h budget); the reasons are "
                f"its comments",
                f"next: make run PROFILE=\"{out.stem} smoke\"  (2-epoch pass of the whole chain), then "
                f"make run PROFILE={out.stem}")


def _print_summary(s: dict, where: str) -> None:
    print(f"{where}: {s['images']} images, {s['boxes']} boxes, {len(s['classes'])} classes "
          f"({', '.join(s['classes'])}), {s['quarantined']} quarantined, {s.get('clean_images', 0)} clean images")
    for w in s.get("warnings", []):
        print(f"warning: {w}")
    if s["quarantined"]:
        print(f"quarantine report: {where}/quarantine.md")


def _data_synth(a: argparse.Namespace) -> int:
    synth_flow = _flows(a, "data").synth_flow

    lay = Layout.from_params(load_settings(a.params))
    root, name = a.root or str(lay.datasets), a.name or lay.data_name
    _print_summary(synth_flow(root, name, a.params), f"{root}/{name}")
    return 0


def _data_prepare(a: argparse.Namespace) -> int:
    prepare_flow = _flows(a, "data").prepare_flow

    s = prepare_flow(a.params)
    _print_summary(s, str(Layout.from_params(load_settings(a.params)).dataset))   # valid from the cwd
    return 0


def _data_split(a: argparse.Namespace) -> int:
    split_flow = _flows(a, "data").split_flow

    r = split_flow(a.params)
    print("split:", {k: r["counts"][k]["images"] for k in ("train", "val", "test")},
          f"folds={r['folds']}")
    return 0


def _train(a: argparse.Namespace) -> int:
    train_flow = _flows(a, "train").train_flow

    info = train_flow(a.model, a.params, a.tuned)
    print(f"{a.model}: {info['epochs_run']} epochs in {info['train_seconds']} s -> {info['best']}")
    return 0


def _evaluate(a: argparse.Namespace) -> int:
    evaluate_flow = _flows(a, "evaluate").evaluate_flow

    m = evaluate_flow(a.model, a.params)
    print(f"{a.model} on {m['split']}: mAP50={m['mAP50']} mAP50-95={m['mAP50-95']} P={m['precision']} "
          f"R={m['recall']} F1={m['F1']} params={m['params']} GFLOPs={m['GFLOPs']} "
          f"FPS={m['fps']} (batch {m['latency_batch']}, {m['latency_device']})")
    return 0


def _say(*lines: str) -> int:
    print("\n".join(lines))
    return 0


def _export(a: argparse.Namespace) -> int:
    export_flow = _flows(a, "export").export_flow

    r = export_flow(a.model, a.params)
    return _say(f"{a.model}: {r['onnx']} (ONNX Runtime vs PyTorch on {r['shape'][0]} test images: max abs diff "
                f"{r['max_abs_diff']:.2e}, relative {r['max_rel_diff']:.2e}; provider {r['provider']})",
                *([f"{a.model}: {r['onnx_nms']} (end to end, boxes after NMS: {r['nms_same_count']} of "
                   f"{r['nms_images']} images with the PyTorch path's box count, {r['nms_boxes']} boxes, "
                   f"{r['nms_unmatched']} unmatched)"] if r.get("onnx_nms") else []))


def _lam(a: argparse.Namespace) -> int:
    lam_flow = _flows(a, "lam").lam_flow

    info = lam_flow(a.params)
    return _say(f"LAMs ({info['mode']}): {info['images']} images in {info['seconds']} s",
                *(f"  {s}: mean confidence {v['conf_in']} inside boxes, {v['conf_out']} outside; "
                  f"JET luminance {v['jet_in']} vs {v['jet_out']}" for s, v in info["per_split"].items()))


def _tune(a: argparse.Namespace) -> int:
    tune_flow = _flows(a, "tune").tune_flow

    r = tune_flow(a.model, a.trials, a.params)
    return _say(f"{r['study']}: best val mAP50 {r['best_value']:.4f} (trial {r['best_trial']}, {r['best_params']}); "
                f"default {r['default_value']}; decision: {r['decision']}, applied {r['overrides'] or 'nothing'}; "
                f"trials {r['trials']}, {r['epochs_spent']} epochs spent")


def _promote(a: argparse.Namespace) -> int:
    promote_flow = _flows(a, "promote").promote_flow

    r = promote_flow(a.params)
    return _say(f"{r['model']} -> registered version {r['version']}, alias '{r['alias']}' ({r['reason']})")


def _predict(a: argparse.Namespace) -> int:
    """Exit 0: every image predicted; 3: some file(s) could not be read (an ``error`` record each
    in detections.json, the count on stderr); 2: no such model / alias / version, or no registry."""
    from components.deploy.predict import ModelError, attach_log, expand, open_detector, predict
    from components.tracking import tracking_uri

    params = load_settings(a.params)
    cfg = params.predict
    images = expand(a.paths)
    if not images:
        print("error: no files found", file=sys.stderr)
        return 2
    uri = tracking_uri(params.tracking.plain())
    try:
        detector = attach_log(open_detector(a.model, uri), params.predlog, a.model, uri)   # one record per image
    except ModelError as e:
        return _model_error(a, e)
    from tqdm import tqdm

    out = Path(a.out or cfg.out)
    with tqdm(total=len(images), desc="predict", unit="img", disable=len(images) < 2) as bar:
        r = predict(detector, images, out, a.conf if a.conf is not None else cfg.conf, cfg.iou,
                    progress=bar.update)
    n = sum(len(i.get("detections", [])) for i in r["images"])
    used = (f"conf {r['conf']} for every class" if r["conf"] is not None else
            "the shipped per-class thresholds" if r["thresholds"] else "conf 0.25 (the model ships no thresholds)")
    print(f"{a.model} ({detector.path.name}, ONNX Runtime {r['provider']}): {len(images) - r['failed']} image(s): "
          f"{r['ng']} NG, {r['ok']} OK at {used}; {n} detection(s) -> {out / 'detections.json'}, {out / 'annotated'}/")
    if r["failed"]:
        print(f"error: {r['failed']} of {len(images)} file(s) failed (unreadable, corrupt or not images): see the "
              f"\"error\" entries in {out / 'detections.json'}", file=sys.stderr)
        return 3
    return 0


def _model_error(a: argparse.Namespace, e: Exception) -> int:
    """No such model (``ModelError``): its one line, exit 2; the traceback in the log (and with --verbose)."""
    import logging

    logging.getLogger(__name__).debug("cannot load the model %s", a.model, exc_info=True)
    if getattr(a, "verbose", False):
        import traceback

        traceback.print_exc()
    print(f"error: {e}", file=sys.stderr)
    return 2


def _serve(a: argparse.Namespace) -> int:
    """Serve a registered version over HTTP (``components.deploy.server``); exit 2 when there is no
    such model or it cannot be loaded."""
    from components.deploy.predict import ModelError, open_pyfunc, served_model
    from components.deploy.server import log_to, serve
    from components.deploy.serving import MAX_PIXELS
    from components.tracking import tracking_uri

    params = load_settings(a.params)
    uri = tracking_uri(params.tracking.plain())
    if a.max_request_mb <= 0 or a.max_rows < 1:
        print("error: --max-request-mb and --max-rows must be positive", file=sys.stderr)
        return 2
    try:
        log_to(params.predlog, served_model(a.model, uri))       # the served model logs one record per image
        model = open_pyfunc(a.model, uri)
    except ModelError as e:
        return _model_error(a, e)
    print(f"serving {a.model} on http://{a.host}:{a.port}/invocations (POST, MLflow's JSON; /ping): requests up to "
          f"{a.max_request_mb:g} MiB and {a.max_rows} rows, images up to {MAX_PIXELS:,} pixels; Ctrl-C stops it",
          flush=True)
    serve(model, a.host, a.port, int(a.max_request_mb * (1 << 20)), a.max_rows)
    return 0


def _report(a: argparse.Namespace) -> int:
    """Print the results table (fits 100 columns) and write it as Markdown to <reports>/summary.md."""
    from components.detectors import MODELS
    from components.summary import load_results, render

    lay = Layout.from_params(load_settings(a.params))
    metrics, promotion = load_results(lay.metrics, MODELS, lay.reports / "promotion.json")
    text, md = render(metrics, promotion)
    out = Path(a.out) if a.out else lay.reports / "summary.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    return _say(text.rstrip("\n"), f"(also in {out})")


def _retrain(a: argparse.Namespace) -> int:
    retrain_flow = _flows(a, "retrain").retrain_flow

    r = retrain_flow(a.params)
    for b in r["batches"]:
        print(f"batch {b['batch']}: {b['images']} image(s) added, {b['quarantined']} quarantined"
              + (f" (report: {b['quarantine']})" if b.get("quarantine") else ""))
    p = r.get("promotion")
    print(f"retrain: {r['status']}; dataset {r['dataset_hash_before']} -> {r.get('dataset_hash')}"
          + (f"; {p['model']} v{p['version']} -> {p['alias']}" if p else ""))
    return 0


def _monitor(a: argparse.Namespace) -> int:
    """Exit 0: the window was compared (drift or not) or was too small (said); 2: no champion."""
    from components.deploy.predict import ModelError

    monitor_flow = _flows(a, "monitor").monitor_flow
    try:
        r = monitor_flow(a.params, a.hours)
    except ModelError as e:
        return _model_error(a, e)
    d = r.get("drift")
    print(f"monitor: {r['status']}" + (f"; drift share {d['drift_share']:.2f} (threshold {d['threshold']:.2f}), "
                                       f"drifted: {', '.join(d['drifted_columns']) or 'none'}" if d else ""))
    if d:
        print(f"review: {len(r['review']['picked'])} image(s); {r['review']['pushed']}")
    if r.get("retrain"):
        print(f"retrain: {r['retrain']}")
    return 0


def _review_pull(a: argparse.Namespace) -> int:
    """Finished reviews of the Label Studio project -> one new folder of ``retrain.inbox``
    (``components.monitor.review``); exit 1 when Label Studio refuses or cannot be reached."""
    import json
    import os

    from components.data.canonical import load_manifest
    from components.monitor import review

    params = load_settings(a.params)
    dataset = Layout.from_params(params).dataset
    if not (dataset / "manifest.json").is_file():
        raise StopError(f"no dataset at {dataset} to take the class names from: build it first (dvc repro split)")
    url, title = os.environ.get(review.ENV_URL) or params.review.url, a.project or params.review.project
    client = review.connect(url, os.environ.get(review.ENV_KEY, ""))
    pid = review.find_project(client, title)
    if pid is None:
        raise StopError(f"no Label Studio project {title!r} at {url} (the monitor creates it when it pushes)")
    folder = review.pull_annotations(client, pid, Path(params.retrain.inbox), load_manifest(dataset)["classes"])
    if folder is None:
        return _say(f"review: nothing new to pull from Label Studio project {title!r}")
    n = len(json.loads((folder / review.MANIFEST).read_text())["samples"])
    return _say(f"review: {n} reviewed image(s) -> {folder} (`defectops retrain` takes them in)")


def _deploy(a: argparse.Namespace) -> int:
    deploy = _flows(a, "deploy").deploy

    for line in deploy(a.params, a.prefect_file):
        print(line)
    return 0


def _ablate(a: argparse.Namespace) -> int:
    ablate = _flows(a, "ablate")

    rows = [r.strip() for r in a.rows.split(";")] if a.rows else None
    r = (ablate.ablate_dasc_flow if a.study == "dasc" else ablate.ablate_lagnet_flow)(rows, a.epochs, a.params)
    print(f"ablation table: {r['table']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from components.detectors import MODELS

    p = argparse.ArgumentParser(prog="defectops", description="Surface-defect detection MLOps "
                                "pipeline: data, training, evaluation (DVC + Prefect + MLflow).",
                                epilog=EPILOG)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show Prefect's run logs and tracebacks (always in .cache/logs/defectops.log)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="import, synthesise and split datasets", epilog=EPILOG)
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    imp = dsub.add_parser("import", help="check a VOC/YOLO dataset: import it into <paths.work>/import/NAME "
                          "(scratch; bad samples quarantined) to see its counts and quarantine report; the "
                          "pipeline's import is the data stage's (data.source)",
                          epilog="VOC: NEU-DET layout (IMAGES/ + ANNOTATIONS/) or GC10-DET layout "
                          "(class-numbered image folders + lable/). YOLO: Roboflow/ultralytics export "
                          "(data.yaml + train|valid|test/images|labels). Exit 1 when nothing usable "
                          "remains.")
    imp.add_argument("src", help="source folder (only read, never modified)")
    imp.add_argument("--name", required=True, help="dataset name (folder under --root)")
    imp.add_argument("--format", default="auto", choices=FORMATS)
    imp.add_argument("--root", default=None, help="destination root (default: <paths.work>/import)")
    imp.set_defaults(func=_data_import)
    pro = dsub.add_parser("profile", help="propose profiles/NAME.yaml from an imported dataset: data keys, "
                          "train.imgsz from the smallest boxes, batch, epochs for a time budget (each "
                          "value's reason as a comment)")
    pro.add_argument("name", help="dataset name (as given to `data import --name`)")
    pro.add_argument("--hours", type=float, default=8.0,
                     help="time budget of the three final trainings on this machine (default: 8)")
    pro.add_argument("--root", default=None, help="where the dataset is (default: <paths.work>/import, "
                     "then paths.datasets)")
    pro.add_argument("--out", default=None, help="profile file (default: profiles/NAME.yaml)")
    pro.add_argument("--force", action="store_true", help="replace an existing profile file")
    pro.set_defaults(func=_data_profile)
    syn = dsub.add_parser("synth", help="generate the seeded synthetic dataset (params data.synth)")
    syn.add_argument("--name", default=None, help="dataset name (default: data.name)")
    syn.add_argument("--root", default=None, help="destination root (default: paths.datasets)")
    syn.set_defaults(func=_data_synth)
    prep = dsub.add_parser("prepare", help="DVC stage 'data': synth or import per data.source")
    prep.set_defaults(func=_data_prepare)
    spl = dsub.add_parser("split", help="DVC stage 'split': stratified, seeded train/val/test (+k-fold)")
    spl.set_defaults(func=_data_split)

    lm = sub.add_parser("lam", help="DVC stage 'lam': Location Activation Maps for every image, from the "
                        "trained baseline (lam.mode in_sample | out_of_fold)", epilog=EPILOG)
    lm.set_defaults(func=_lam)
    tr = sub.add_parser("train", help="train a detector (DVC stages train_baseline, train_dasc, train_lagnet)", epilog=EPILOG)
    tr.add_argument("model", choices=MODELS)
    tr.add_argument("--tuned", default=None, help="best params of a tune stage (models/tuned/<model>.json) "
                    "overriding params.yaml")
    tr.set_defaults(func=_train)
    ev = sub.add_parser("evaluate", help="evaluate a trained detector on the test split", epilog=EPILOG)
    ev.add_argument("model", choices=MODELS)
    ev.set_defaults(func=_evaluate)
    ex = sub.add_parser("export", help="export a trained detector to ONNX and check ONNX Runtime parity",
                        epilog=EPILOG)
    ex.add_argument("model", choices=MODELS)
    ex.set_defaults(func=_export)
    tu = sub.add_parser("tune", help="Optuna study over tune.space.<model>; run it on several machines with "
                        "OPTUNA_STORAGE=postgresql://... to share one study", epilog=EPILOG)
    tu.add_argument("model", choices=MODELS)
    tu.add_argument("--trials", type=int, default=None, help="trials in the study (default: tune.trials)")
    tu.set_defaults(func=_tune)
    pr = sub.add_parser("promote", help="DVC stage 'promote': best evaluated detector on the validation split -> "
                        "ONNX (parity checked) -> MLflow registry version; 'champion' alias only if it beats the "
                        "champion through promote.gate on the same validation images, else 'challenger' "
                        "(test scores reported only)", epilog=EPILOG)
    pr.set_defaults(func=_promote, on_stop=" (no alias moved)")
    pd = sub.add_parser("predict", help="run an ONNX model (file or models:/NAME@ALIAS) on images/folders",
                        epilog="Writes <out>/detections.json and <out>/annotated/. The MLflow store is "
                        "tracking.uri (MLFLOW_TRACKING_URI wins). A file that cannot be read as an image "
                        "gets an \"error\" entry and the rest are predicted; exit 3 if any failed, 2 if the "
                        "model, alias, version or registry is not found.")
    pd.add_argument("--model", required=True, help="models:/defect-detector@champion, models:/NAME/VERSION or a .onnx")
    pd.add_argument("paths", nargs="+", help="images and/or folders of images")
    pd.add_argument("--out", default=None, help="output folder (default: predict.out)")
    pd.add_argument("--conf", type=float, default=None, help="one confidence threshold for every class (default: predict.conf; null: "
                                                              "the model's shipped per-class thresholds)")
    pd.set_defaults(func=_predict)
    from components.deploy.server import MAX_REQUEST_MB, MAX_ROWS

    sv = sub.add_parser("serve", help="serve a registered version over HTTP (/invocations, /ping: the contract of "
                        "`mlflow models serve`) with a request size cap, the pixel limit before decoding and "
                        "4xx answers that never echo the request", epilog="The MLflow store is tracking.uri "
                        "(MLFLOW_TRACKING_URI wins). Exit 2 if the model, alias, version or registry is not found.")
    sv.add_argument("--model", required=True, help="models:/defect-detector@champion, models:/NAME/VERSION, runs:/... "
                    "or a local MLflow model folder")
    sv.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    sv.add_argument("--port", type=int, default=5001, help="port (default: 5001)")
    sv.add_argument("--max-request-mb", type=float, default=MAX_REQUEST_MB,
                    help=f"largest request body in MiB, 413 above (default: {MAX_REQUEST_MB})")
    sv.add_argument("--max-rows", type=int, default=MAX_ROWS, help=f"most images per request, 413 above "
                    f"(default: {MAX_ROWS})")
    sv.set_defaults(func=_serve)
    rp = sub.add_parser("report", help="the detectors' results in one table that fits 100 columns (val / test "
                        "mAP50, gain over the baseline, FPS, escape / overkill rates, per-class AP50, the "
                        "promotion), also written as Markdown", epilog="Reads <paths.metrics>/<model>.json and "
                        "<paths.reports>/promotion.json; writes <paths.reports>/summary.md. `dvc metrics show` "
                        "keeps every figure, for machines.")
    rp.add_argument("--out", default=None, help="Markdown file (default: <paths.reports>/summary.md)")
    rp.set_defaults(func=_report)
    rt = sub.add_parser("retrain", help="new samples in retrain.inbox -> validated (quarantine) -> new DVC dataset "
                        "version -> archive inbox -> dvc repro (retrain, evaluate, promote through the gate)",
                        epilog=EPILOG)
    rt.set_defaults(func=_retrain)
    mo = sub.add_parser("monitor", help="the prediction log's last monitor.window_hours against the champion's "
                        "validation data (Evidently drift report in MLflow); review picks to Label Studio; on drift "
                        "with monitor.trigger_retrain, a retrain run", epilog=EPILOG)
    mo.add_argument("--hours", type=float, default=None, help="window length (default: monitor.window_hours)")
    mo.set_defaults(func=_monitor)
    rv = sub.add_parser("review", help="the review queue in Label Studio (review.url or LABEL_STUDIO_URL, "
                        "key in LABEL_STUDIO_API_KEY)", epilog=EPILOG)
    rvsub = rv.add_subparsers(dest="review_command", required=True, metavar="SUBCOMMAND")
    rvp = rvsub.add_parser("pull", help="finished reviews -> one new folder of retrain.inbox (images, YOLO labels, "
                           "review.json with each sample's provenance)", epilog=EPILOG)
    rvp.add_argument("--project", default=None, help="Label Studio project title (default: review.project)")
    rvp.set_defaults(func=_review_pull)
    dp = sub.add_parser("deploy", help="create the work pools and every flow's Prefect deployment "
                        "(infra/prefect.yaml; the retrain cron from retrain.schedule) on PREFECT_API_URL",
                        epilog=EPILOG)
    dp.add_argument("--prefect-file", default="infra/prefect.yaml")
    dp.set_defaults(func=_deploy)
    ab = sub.add_parser("ablate", help="run a paper's ablation grid (each row an MLflow run)", epilog=EPILOG)
    ab.add_argument("study", choices=["dasc", "lagnet"],
                    help="dasc: DASC-YOLO Table 3; lagnet: LAGNet Tables 4 + 5 (needs the lam stage)")
    ab.add_argument("--rows", default=None,
                    help="';'-separated row names (default: ablation.rows / ablation.lagnet_rows)")
    ab.add_argument("--epochs", type=int, default=None, help="epochs per row (default: ablation.epochs)")
    ab.set_defaults(func=_ablate)
    return p


def check_params(path: str | Path) -> None:
    """Parse the params file before any flow, server or registry is touched: a bad file is one
    ConfigError line naming the file given (the settings' messages say ``params.yaml``)."""
    try:
        load_settings(path)
    except ConfigError as e:
        msg = " ".join(str(e).split())
        if msg.startswith("params.yaml"):
            msg = f"{path}{msg[len('params.yaml'):]}"
        raise ConfigError(msg) from None


def main(argv: list[str] | None = None, guard: bool | None = None) -> int:
    """``guard`` (default: only for a real command line, ``argv`` None): the processes this
    command starts die with it, even on ``kill -9`` (``defectops/guard.py``)."""
    args = build_parser().parse_args(argv)
    try:
        check_params(args.params)      # before Prefect, MLflow or a server starts: fails in well under a second
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .console import log_file

    if guard if guard is not None else argv is None:
        from .guard import start

        start()
    log = log_file()
    try:
        return args.func(args)
    except StopError as e:           # bad input data, a failed parity check: the run says why
        print(f"error: {e}{getattr(args, 'on_stop', '')}", file=sys.stderr)
        return 1
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:            # anything else a flow raised: one line, the traceback in the log
        if args.verbose:
            raise
        print(f"error: {type(e).__name__}: {e} (traceback: --verbose, or {log})", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
