"""Prefect tasks and steps shared by several flows (training, evaluation, ONNX export), so that no
flow imports another flow: each flow module imports ``common`` and ``tasks`` only."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import task

from components.bootstrap import ImageStats, paired_bootstrap
from components.errors import StopError
from components.data.canonical import load_manifest
from components.data.views import load_split
from components.detectors import lam_maker, spec
from components.evaluate import EvalRequest, evaluate_detector, score_split
from components.decision import operating_point_report
from components.settings import Bootstrap, Decision, Evaluate, Export, Lam, Settings
from components.deploy.export import NmsSpec, export_onnx, letterbox_batch, nms_parity, onnx_parity
from components.deploy.promotion import Candidate
from components.tracking import StageRun, git_commit
from components.train import TrainRequest, train_detector_isolated

from .common import COMPUTE, dataset_hash, layout, log_outputs, stage_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochLogger:
    """``train_detector``'s ``on_epoch``: each epoch's metrics into the stage's MLflow run. A
    module-level class, so that it travels to the training process (``train_detector_isolated``)."""

    run: StageRun

    def __call__(self, epoch: int | None, metrics: dict[str, float]) -> None:
        try:  # a tracking hiccup must not kill hours of training; MLflow retries HTTP itself
            self.run.log_metrics(metrics, step=epoch)
        except Exception as e:  # noqa: BLE001
            log.warning("could not log epoch %s to MLflow: %s", epoch, e)


@task(name="train-detector", **COMPUTE)
def train_task(req: TrainRequest, run) -> dict:
    """``req`` trained in its own process (``train_detector_isolated``), each epoch logged to ``run``."""
    t = time.time()
    res = train_detector_isolated(req, EpochLogger(run))
    return {"best": str(res.best), "epochs_run": res.epochs_run, "final": res.final, "train_seconds": round(time.time() - t, 1)}


@task(name="evaluate-detector", **COMPUTE)
def evaluate_task(weights: str, data_yaml: str, cfg: Evaluate, imgsz: int, out_dir: str, plots_dir: str,
                  lam: dict | None = None) -> dict:
    """``cfg``: the ``evaluate`` settings. ``lam``: for LAGNet, the LAM params plus ``maker`` (the LAM
    maker's weights): the LAM of every test batch is computed in the graph from the RGB image, as
    the served one-graph model does."""
    req = EvalRequest.of(cfg, weights, data_yaml, imgsz, validator=_validator(lam))
    return evaluate_detector(req, cfg.latency.plain(), Path(out_dir), Path(plots_dir))


@task(name="validation-score", **COMPUTE)
def val_score_task(weights: str, data_yaml: str, cfg: Evaluate, imgsz: int, lam: dict | None = None,
                   keep: str | None = None) -> dict:
    """The detector on the validation split, scored as :func:`evaluate_task` scores the test split
    (the promotion chooses its candidate by it; the test split only reports); ``keep``: its
    per-image stats go there."""
    return score_split(EvalRequest.of(cfg, weights, data_yaml, imgsz, "val", _validator(lam)),
                       keep=Path(keep) if keep else None)


@task(name="operating-point", **COMPUTE)
def operating_point_task(val_stats: str, test_stats: str | None, names: dict[int, str], cfg: Decision,
                         boot: Bootstrap) -> dict:
    """Per-class thresholds chosen on the validation stats (``cfg``: the ``decision`` settings) and
    the line's figures at them (escape / overkill rates, box recall / precision, 95 % intervals)."""
    return operating_point_report(ImageStats.load(val_stats), ImageStats.load(test_stats) if test_stats else None,
                                  names, cfg, boot.resamples, boot.seed)


def _validator(lam: dict | None):
    """LAGNet's validator computing each batch's LAM in the graph (``lam``: see evaluate_task), or
    None (ultralytics' own)."""
    if not lam:
        return None
    from components.detectors.lagnet import LamCoding
    from components.detectors.lagnet.data import served_lam_validator

    return served_lam_validator(lam["maker"], LamCoding.of(lam))


@task(name="gain-vs-baseline", **COMPUTE)
def gain_task(baseline_stats: str, model_stats: str, resamples: int, seed: int) -> dict:
    """mAP50 gain of the model over the baseline, paired bootstrap over the test images."""
    gain = paired_bootstrap(ImageStats.load(baseline_stats), ImageStats.load(model_stats), resamples, seed)
    return {**gain, **{k: round(gain[k], 4) for k in ("mAP50", "mAP50_a", "mAP50_b")},
            "ci95": [round(v, 4) for v in gain["ci95"]]}


class ParityError(StopError):
    """ONNX Runtime disagrees with PyTorch beyond the tolerance from params."""


@task(name="export-onnx", **COMPUTE)
def export_task(weights: str, out: str, imgsz: int, cfg: Export) -> str:
    return str(export_onnx(weights, out, imgsz, cfg.opset, cfg.dynamic))


@task(name="export-onnx-nms", **COMPUTE)
def export_nms_task(weights: str, out: str, imgsz: int, cfg: Export, images: list[str]) -> dict:
    """The end-to-end graph (boxes after NMS) and its box parity with the PyTorch path."""
    path = export_onnx(weights, out, imgsz, cfg.opset, False, NmsSpec(cfg.nms_conf, cfg.nms_iou, cfg.max_det))
    return {"onnx_nms": str(path), **nms_parity(weights, path, letterbox_batch(images, imgsz))}


@task(name="onnx-parity", **COMPUTE)
def parity_task(weights: str, onnx_path: str, images: list[str], imgsz: int) -> dict:
    return onnx_parity(weights, onnx_path, letterbox_batch(images, imgsz))


@task(name="export-lagnet-pipeline", **COMPUTE)
def lagnet_export_task(baseline: str, weights: str, out: str, imgsz: int, cfg: Export, lam: Lam,
                       images: list[str]) -> dict:
    from components.deploy.export import boxes_parity
    from components.detectors.lagnet import LamCoding
    from components.detectors.lagnet.export import export_pipeline, export_pipeline_nms, load_pipeline, pipeline_parity

    pipe = load_pipeline(baseline, weights, LamCoding.of(lam))
    path = export_pipeline(pipe, out, imgsz, cfg.opset)
    x = letterbox_batch(images, imgsz)
    nms_path = export_pipeline_nms(pipe, Path(out).with_name(NMS_FILE), imgsz, cfg.opset,
                                   cfg.nms_conf, cfg.nms_iou, cfg.max_det)
    return {"onnx": str(path), **pipeline_parity(pipe, path, x), "onnx_nms": str(nms_path),
            **boxes_parity(pipe, nms_path, x)}


NMS_FILE = "best_nms.onnx"


def export_model(model: str, params: Settings) -> dict:
    """Export ``paths.models/model/weights/best.pt`` to ``paths.exports/model/best.onnx`` (outside
    the DVC-tracked model folder; the raw head output) and ``best_nms.onnx`` beside it (the
    end-to-end graph: boxes after NMS, what the promotion registers); fail, and keep nothing, when
    ONNX Runtime and PyTorch disagree on test images (raw outputs; boxes of the NMS graph)."""
    cfg = params.export
    lay = layout(params)
    weights = lay.weights(model)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found: run `dvc repro train_{model}` first")
    info = json.loads(lay.train_info(model).read_text())
    ds = lay.dataset
    manifest = load_manifest(ds)
    image_of = {e["name"]: str(ds / e["image"]) for e in manifest["images"]}
    images = [image_of[n] for n in load_split(lay.split_file)["test"][: cfg.parity_images]]
    out = lay.export(model)
    pipeline = spec(model).export(params) == "pipeline"      # LAM maker -> LAM -> LAGNet, one graph
    with stage_run(f"export:{model}", params, ["export"], dataset_hash(ds),
                   {"model": model, "train_run_id": info["mlflow_run_id"]}) as run:
        if pipeline:
            baseline = lay.weights(lam_maker().key)
            parity = lagnet_export_task(str(baseline), str(weights), str(out), info["imgsz"], cfg,
                                        params.lam, images)
            path = parity.pop("onnx")
        else:
            path = export_task(str(weights), str(out), info["imgsz"], cfg)
            parity = parity_task(str(weights), path, images, info["imgsz"])
            parity.update(export_nms_task(str(weights), str(out.with_name(NMS_FILE)), info["imgsz"], cfg, images))
        nms_path = parity.pop("onnx_nms")
        log_outputs(run, metrics={k: float(v) for k, v in parity.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)},
                    tags={"onnx_provider": parity["provider"]})
        boxes_differ = "same_count" in parity and (parity["same_count"] != parity["images"] or (
            parity["min_matched_iou"] is not None and parity["min_matched_iou"] < 0.99))
        rtol = cfg.pipeline_rtol if pipeline else cfg.parity_rtol
        nms_differ = parity["nms_same_count"] != parity["nms_images"] or parity["nms_unmatched"] > 0 or (
            parity["nms_min_matched_iou"] is not None and parity["nms_min_matched_iou"] < 0.99)
        boxes_differ = boxes_differ or nms_differ
        if parity["max_rel_diff"] > rtol or boxes_differ:
            Path(path).unlink(missing_ok=True)
            Path(nms_path).unlink(missing_ok=True)
            raise ParityError(f"ONNX Runtime differs from PyTorch by {parity['max_rel_diff']:.2e} "
                              f"(relative; tolerance {rtol} from params export)"
                              + (f", boxes: {parity}" if boxes_differ else ""))
        log_outputs(run, artifacts=[(path, "onnx"), (nms_path, "onnx")])
    return {"onnx": path, "onnx_nms": nms_path, **parity}



@task(name="model-card", **COMPUTE)
def card_task(cand: Candidate, params: Settings, result: dict, run_id: str, data_yaml: str, test_stats: str) -> Path:
    """The registered version's model card (``components.deploy.card``) in
    ``<paths.work>/promote-card/card`` (beside the test plots of the candidate's scoring):
    ``result`` is the promotion record (gate, metrics, operating point); the worst test images
    (``test_stats``: the candidate's per-image test stats) are drawn with the registered graph at
    its shipped thresholds."""
    from components.decision import image_verdicts
    from components.deploy.card import (CARD_INPUTS, CardInputs, WORST, card_data, draw_worst, truth_boxes,
                                        worst_images, write_model_card)
    from components.deploy.registry import ONNX_FILE
    from components.deploy.serving import BoxModel

    lay, model, commit, onnx_path, gain = layout(params), cand.model, git_commit(), cand.onnx, cand.gain
    card_dir = lay.scratch("promote-card")
    manifest = load_manifest(lay.dataset)
    classes = list(manifest["classes"])
    folder = Path(card_dir) / "card"
    op = result["operating_point"]
    rows = worst_images(image_verdicts(ImageStats.load(test_stats), op["thresholds"], dict(enumerate(classes))))
    images = Path(data_yaml).parent / "images"
    box_model = BoxModel(onnx_path)
    worst = draw_worst(rows, {r["image"]: images / r["image"] for r in rows}, truth_boxes(manifest, classes),
                       box_model.judge, folder / WORST)
    info = cand.train_info
    lam_grid = lay.report_dir("lam") / "lam_grid.png" if spec(model).reads_lam(params) else None
    inputs = CardInputs(
        detector=spec(model).name(params), registered_model=params.promote.registered_model,
        version=str(result["version"]), classes=classes,
        data=card_data(manifest, load_split(lay.split_file), params.data.name, dataset_hash(lay.dataset),
                       lay.dataset.as_posix()),
        training={k: params.get(k) for k in ("train", "loss", *spec(model).sections)} | {"imgsz_trained": info["imgsz"]},
        metrics={"val": result["candidate"], "test": result["candidate_test"]}, op=op,
        gate={"alias": result["alias"], "reason": result["reason"], "gate": result["gate"], "margin": result["margin"],
              "metric": result["metric"], "chosen_score": result["candidate"][result["metric"]],
              "champion_before": result["champion_before"], "champion_score": result["champion_score"]},
        require=result["require"], missed=result["requirements_missed"], candidates=list(params.promote.candidates),
        deviations=spec(model).deviations, imgsz=int(box_model.imgsz), onnx_file=ONNX_FILE, run_id=run_id,
        commit=commit, gain=gain, confusion=Path(card_dir) / "test" / "confusion_matrix_normalized.png",
        lam_grid=lam_grid, worst=rows)
    card = write_model_card(folder, inputs, worst)
    # what the card shows, as data: the promotion record keeps it (the card can be rendered again from it)
    (folder / CARD_INPUTS).write_text(json.dumps(dataclasses.asdict(inputs), indent=1, default=str))
    return card
