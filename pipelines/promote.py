"""Promotion flow (DVC stage ``promote``): best evaluated detector -> ONNX -> registry alias.

1. Pick the best of ``promote.candidates`` by ``promote.metric`` on the **validation** split
   (the ``val`` scores in their ``metrics/<model>.json``; ties: FPS). The test split is reported,
   never used to choose: neither the candidate nor the champion gate looks at it.
2. Export it to ONNX with the parity check (``export`` flow): a failed export or parity check
   raises here, before anything touches the registry. What is registered is the end-to-end graph
   (``best_nms.onnx``: letterboxed batch in, boxes after NMS out, class names / input size /
   stride / letterbox rule in its metadata).
3. Score that graph through ONNX Runtime (ultralytics' validator on the ONNX file; it takes a
   ``(B, max_det, 6)`` output as end-to-end and skips its own NMS) on the validation split (the
   gate's scores: the same evaluator and images the current champion is re-scored with) and on
   the held-out test split (reported in the registry and the promotion record).
4. Log it as the MLflow model a version is (``registry.log_detector_model``): a pyfunc that
   ``mlflow models serve -m models:/defect-detector@champion --env-manager local`` serves (encoded
   image in, boxes in image pixels and class names out), holding the graph itself as
   ``artifacts/model.onnx`` for any ONNX runtime; register it as a new version of
   ``promote.registered_model`` tagged with dataset hash, git commit, params hash, metrics and the
   source model, its description saying what it is (detector, data hash, test metrics, mAP50 gain
   over the baseline from the evaluation stage; ``registry.version_description``).
5. Under the registry lock: re-score the current ``champion`` (its ``model.onnx``) on the same
   validation split and move ``champion`` to the new version only if it wins (``promote.gate``): by
   ``promote.margin`` (``margin``), or with the lower bound of the paired-bootstrap 95 % interval of
   its mAP50 gain over the re-scored champion above 0 (``bootstrap``; both ONNX scorings keep their
   per-image stats, ``evaluate.bootstrap`` sets resamples and seed); else it becomes
   ``challenger``. The decision is a version tag and ``reports/promotion.json``.

Between 3 and 4 the shipped operating point is chosen on the candidate's ONNX validation stats
(``decision``; ``components.decision``), written into the graph's metadata and reported with the
escape / overkill rates on val and test; ``promote.require`` bounds on validation keep a candidate
that misses one from ``champion`` (``registry.decide``). Before the alias moves, the version's
model card (``components.deploy.card``) is logged as the promotion run's ``model_card/``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from prefect import flow, get_run_logger, task

from components.bootstrap import ImageStats, paired_bootstrap
from components.data.canonical import load_manifest
from components.data.views import load_split, write_yolo_data_yaml
from components.decision import check_requirements, shipped_decision
from components.deploy.card import CARD_INPUTS
from components.deploy.export import write_onnx_metadata
from components.deploy.promotion import (SELECT, Candidate, choose, evaluated, promotion_record, run_metrics,
                                         run_tags, val_scores)
from components.deploy.registry import (CHAMPION, alias_version, client, decide, download_onnx, log_detector_model, register,
                                        registry_lock, set_alias, VersionFacts, version_description)
from components.detectors import display_name, reference, spec
from components.settings import Settings, params_hash
from components.tracking import git_commit, tracking_uri

from .common import COMPUTE, TRANSIENT, dataset_hash, layout, log_outputs, read_params, stage_run
from .tasks import card_task, export_model, operating_point_task



@task(name="onnx-score", **COMPUTE)
def onnx_score(onnx_path: str, data_yaml: str, imgsz: int, split: str, keep: str | None = None,
               plots: str | None = None) -> dict:
    """Metrics of an ONNX file on ``split``; ``keep``: also write its per-image stats there (``.npz``);
    ``plots``: ultralytics' plots (confusion matrix, curves) into that folder."""
    from components.evaluate import validate_keeping_stats
    from components.yolo import YOLO

    args = dict(data=data_yaml, split=split, imgsz=imgsz, batch=1, device="cpu", rect=False, plots=bool(plots),
                verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        yolo = YOLO(onnx_path, task="detect")
        # absolute: ultralytics puts a relative project under its own runs/ folder
        where = dict(project=str(Path(plots).resolve().parent), name=Path(plots).name, exist_ok=True) if plots else dict(
            project=tmp, name="val")
        if keep:
            res, stats = validate_keeping_stats(yolo, None, **args, **where)
            stats.save(keep)
        else:
            res = yolo.val(**args, **where)
    return {"mAP50": float(res.box.map50), "mAP50-95": float(res.box.map), "precision": float(res.box.mp),
            "recall": float(res.box.mr)}


@task(name="paired-bootstrap", **COMPUTE)
def bootstrap_gain(champion_stats: str, candidate_stats: str, resamples: int, seed: int) -> dict:
    """mAP50 gain of the candidate over the re-scored champion, paired bootstrap over the validation images."""
    return paired_bootstrap(ImageStats.load(champion_stats), ImageStats.load(candidate_stats), resamples, seed)


@task(name="register-detector", **TRANSIENT)
def register_task(uri: str, run_id: str, cand: Candidate, example_image: str, name: str, tags: dict,
                  description: str | None = None) -> str:
    """The candidate's graph logged as the run's MLflow model (served at its shipped thresholds) and
    registered as a new version of ``name``."""
    return register(uri, log_detector_model(uri, run_id, cand.onnx, None, example_image), name, tags, description)


@flow(name="promote")
def promote_flow(params_file: str = "params.yaml") -> dict:
    """See the module docstring."""
    params = read_params(params_file)
    cfg, lay = params.promote, layout(params)
    metrics = evaluated({m: lay.metrics_file(m) for m in cfg.candidates})
    best = choose(metrics, cfg.metric)
    get_run_logger().info("candidate: %s (validation %s %.4f; test %.4f, reported only)", best, cfg.metric,
                          val_scores(best, metrics[best])[cfg.metric], metrics[best][cfg.metric])
    info = json.loads(lay.train_info(best).read_text())
    used = ["promote", "export", "evaluate.split"] + (["evaluate.bootstrap"] if cfg.gate == "bootstrap" else [])
    with (stage_run("promote", params, used + ["decision"], dataset_hash(lay.dataset),
                    {"candidate": best, "train_run_id": info["mlflow_run_id"]}, dataset=params.evaluate.split) as run,
          tempfile.TemporaryDirectory() as kept):
        # a view of its own: two promotions at once never rebuild each other's image links
        data_yaml = write_yolo_data_yaml(lay.dataset, load_split(lay.split_file), Path(kept) / "view")
        # per-image stats of the ONNX scorings: the operating point (val), its test figures, and the
        # bootstrap gate's pairing of candidate and champion
        keep = {k: str(Path(kept) / f"{k}.npz") for k in ("candidate", "candidate_test", "champion")}
        cand = score_candidate(best, params, (info, metrics[best]), data_yaml, keep)
        version = register_candidate(cand, params, run.run_id, data_yaml)
        with registry_lock(cfg.lock_file):
            champ, champ_score, gain = rescore_champion(params, info["imgsz"], data_yaml, keep)
            d = decide(cand.val[cfg.metric], champ_score, cfg.margin, cfg.gate, gain, cand.missed)
            result = promotion_record(cand, version, d, None if champ is None else str(champ.version), cfg, run.run_id)
            # the card before the alias: a version never serves as champion without its card
            card = card_task(cand, params, result, run.run_id, str(data_yaml), keep["candidate_test"])
            log_outputs(run, artifacts=[(str(card.parent), "model_card")])
            publish(tracking_uri(params.tracking.plain()), cfg.registered_model, version, d, result["model_card"])
        result["model_card_inputs"] = json.loads(card.with_name(CARD_INPUTS).read_text())
        lay.promotion.parent.mkdir(parents=True, exist_ok=True)
        lay.promotion.write_text(json.dumps(result, indent=1))
        log_outputs(run, metrics=run_metrics(cand), artifacts=[(str(lay.promotion), None)], tags=run_tags(result))
        get_run_logger().info("%s v%s -> %s (%s)", cfg.registered_model, version, d.alias, d.reason)
    return result


def score_candidate(model: str, params: Settings, records: tuple[dict, dict], data_yaml: Path,
                    keep: dict[str, str]) -> Candidate:
    """Export ``model`` (a failed parity check raises here, before the registry is touched), score
    its end-to-end graph on the validation split (the gate's scores) and the test split (reported;
    its plots for the card), choose the operating point on validation and write it into the graph.
    ``records``: its training record and its evaluation metrics (the gain over the reference)."""
    info, evaluation = records
    lay, cfg = layout(params), params.promote
    exported = export_model(model, params)
    onnx_path, imgsz = exported["onnx_nms"], info["imgsz"]
    val = onnx_score(onnx_path, str(data_yaml), imgsz, SELECT, keep["candidate"])
    test = onnx_score(onnx_path, str(data_yaml), imgsz, params.evaluate.split, keep["candidate_test"],
                      plots=str(lay.scratch("promote-card") / "test"))
    op = operating_point_task(keep["candidate"], keep["candidate_test"],
                              dict(enumerate(load_manifest(lay.dataset)["classes"])), params.decision,
                              params.evaluate.bootstrap)
    write_onnx_metadata(onnx_path, {"decision": json.dumps(shipped_decision(op))})     # travels with the graph
    missed = check_requirements({**val, "escape_rate": op["val"]["escape_rate"],
                                 "overkill_rate": op["val"]["overkill_rate"]}, cfg.require)
    return Candidate(model, info, exported, val, test, op, missed, evaluation.get("gain_vs_baseline"))


def register_candidate(cand: Candidate, params: Settings, run_id: str, data_yaml: Path) -> str:
    """A new version of ``promote.registered_model``: the candidate's graph, tagged (source, data,
    code, params, scores) and described for the MLflow UI (``registry.version_description``)."""
    lay, model = layout(params), cand.model
    tags = cand.version_tags(dataset_hash(lay.dataset), git_commit(),
                             params_hash({k: params.get(k) for k in ("train", "loss", *spec(model).sections)}))
    base_file = lay.metrics_file(reference().key)
    description = version_description(VersionFacts(
        display_name(model, params), model, {"name": params.data.name, "hash": tags["dataset_hash"],
                                             "source": lay.dataset.as_posix()},
        cand.test, params.evaluate.split, cand.gain, json.loads(base_file.read_text()) if base_file.is_file() else None,
        cand.train_info["mlflow_run_id"], tags["git_commit"], val=cand.val, operating_point=cand.op,
        missed=cand.missed))
    image = next(iter(sorted(Path(data_yaml).parent.joinpath("images").iterdir())))
    return register_task(tracking_uri(params.tracking.plain()), run_id, cand, str(image),
                         params.promote.registered_model, tags, description)


def rescore_champion(params: Settings, imgsz: int, data_yaml: Path, keep: dict[str, str]) -> tuple:
    """The current champion (its registry version, or None), its score re-measured on the same
    validation images as the candidate, and with the bootstrap gate its paired-bootstrap gain
    over it; (None, None, None) without a champion. Under the registry lock."""
    cfg, uri = params.promote, tracking_uri(params.tracking.plain())
    champ = alias_version(uri, cfg.registered_model, CHAMPION)
    if champ is None:
        return None, None, None
    with tempfile.TemporaryDirectory() as tmp:
        champ_onnx = download_onnx(uri, f"models:/{cfg.registered_model}/{champ.version}", tmp)
        score = onnx_score(str(champ_onnx), str(data_yaml), int(champ.tags.get("imgsz", imgsz)), SELECT,
                           keep["champion"])[cfg.metric]
    boot = params.evaluate.bootstrap
    gain = bootstrap_gain(keep["champion"], keep["candidate"], boot.resamples, boot.seed) if cfg.gate == "bootstrap" \
        else None
    return champ, score, gain


def publish(uri: str, name: str, version: str, d, model_card: str) -> None:
    """The version's card tag, then the alias the gate chose, then the decision as a tag."""
    client(uri).set_model_version_tag(name, version, "model_card", model_card)
    set_alias(uri, name, d.alias, version)
    client(uri).set_model_version_tag(name, version, "promotion", f"{d.alias}: {d.reason}")
