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
from components.decision import check_requirements, flat_metrics, shipped_decision
from components.deploy.card import CARD, CARD_INPUTS
from components.deploy.export import write_onnx_metadata
from components.config import git_commit, params_hash
from components.data.views import load_split, write_yolo_data_yaml
from components.detectors import display_name
from components.deploy.registry import (CHAMPION, GATES, alias_version, client, decide, download_onnx, log_detector_model,
                                 register, registry_lock, set_alias, version_description)
from components.tracking import tracking_uri

from .common import COMPUTE, TRANSIENT, dataset_hash, layout, log_outputs, read_params, stage_run
from .tasks import card_task, export_model, operating_point_task


SELECT = "val"   # the split the candidate is chosen and the champion gate decided on


def choose(metrics: dict[str, dict], metric: str) -> str:
    """Best model by ``metric`` on the validation split (each metrics JSON's ``val`` scores, or
    the metrics themselves when the evaluation split is ``val``), ties broken by FPS."""
    if not metrics:
        raise FileNotFoundError("no evaluated candidates: run `dvc repro` (evaluate stages) first")
    return max(metrics, key=lambda m: (val_scores(m, metrics[m])[metric], metrics[m].get("fps", 0.0)))


def val_scores(model: str, metrics: dict) -> dict:
    """The validation scores in a detector's metrics JSON (``evaluate`` writes them as ``val``)."""
    if metrics.get("split") == SELECT:
        return metrics
    if SELECT not in metrics:
        raise FileNotFoundError(f"metrics of {model} have no validation scores (written before the promotion chose "
                                f"on the validation split): run `dvc repro` (evaluate stages) again")
    return metrics[SELECT]


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
def register_task(uri: str, run_id: str, onnx_path: str, example_image: str, conf: float | None, name: str,
                  tags: dict, description: str | None = None) -> str:
    return register(uri, log_detector_model(uri, run_id, onnx_path, conf, example_image), name, tags, description)


@flow(name="promote")
def promote_flow(params_file: str = "params.yaml") -> dict:
    """See the module docstring."""
    params = read_params(params_file)
    log = get_run_logger()
    cfg = params.promote
    metric = cfg.metric
    gate = cfg.gate
    if gate not in GATES:
        raise ValueError(f"promote.gate must be one of {', '.join(GATES)}, got {gate!r}")
    if gate == "bootstrap" and metric != "mAP50":
        raise ValueError(f"promote.gate bootstrap compares mAP50: set promote.metric to mAP50, not {metric}")
    boot = params.evaluate.bootstrap if gate == "bootstrap" else None
    lay = layout(params)
    metrics = {m: json.loads(lay.metrics_file(m).read_text()) for m in cfg.candidates
               if lay.metrics_file(m).is_file()}
    best = choose(metrics, metric)
    log.info("candidate: %s (validation %s %.4f; test %.4f, reported only)", best, metric,
             val_scores(best, metrics[best])[metric], metrics[best][metric])
    ds = lay.dataset
    uri = tracking_uri(params.tracking.plain())
    name = cfg.registered_model
    info = json.loads(lay.train_info(best).read_text())
    imgsz = info["imgsz"]
    split_name = params.evaluate.split
    split = load_split(lay.split_file)
    data_yaml = write_yolo_data_yaml(ds, split, lay.scratch("promote"))
    out = lay.promotion
    used = ["promote", "export", "evaluate.split"] + (["evaluate.bootstrap"] if boot else [])
    used += ["decision"]
    with (stage_run("promote", params, used, dataset_hash(ds),
                    {"candidate": best, "train_run_id": info["mlflow_run_id"]}, dataset=split_name) as run,
          tempfile.TemporaryDirectory() as kept):
        # per-image stats of the ONNX scorings: the operating point (val), its test figures, and the
        # bootstrap gate's pairing of candidate and champion
        keep = {k: str(Path(kept) / f"{k}.npz") for k in ("candidate", "candidate_test", "champion")}
        card_dir = lay.scratch("promote-card")
        exported = export_model(best, params)                     # raises on a failed parity check
        onnx_path = exported["onnx_nms"]                          # the end-to-end graph
        cand = onnx_score(onnx_path, str(data_yaml), imgsz, SELECT, keep["candidate"])     # the gate's scores
        cand_test = onnx_score(onnx_path, str(data_yaml), imgsz, split_name, keep["candidate_test"],
                               plots=str(card_dir / "test"))                              # reported only
        classes = load_manifest(ds)["classes"]
        op = operating_point_task(keep["candidate"], keep["candidate_test"], dict(enumerate(classes)),
                                  params.decision, params.evaluate.bootstrap)
        write_onnx_metadata(onnx_path, {"decision": json.dumps(shipped_decision(op))})     # travels with the graph
        missed = check_requirements({**cand, "escape_rate": op["val"]["escape_rate"],
                                     "overkill_rate": op["val"]["overkill_rate"]}, cfg.require)
        tags = {"model": best, "dataset_hash": dataset_hash(ds), "git_commit": git_commit(),
                "params_hash": params_hash({k: params.get(k) for k in ("train", "loss", best)}),
                "train_run_id": info["mlflow_run_id"], "imgsz": imgsz,
                **{f"test.{k}": round(v, 4) for k, v in cand_test.items()},
                **{f"val.{k}": round(v, 4) for k, v in cand.items()},
                "thresholds": json.dumps(op["thresholds"]),
                **{f"{s}.{k}": op[s][k] for s in ("val", "test") for k in ("escape_rate", "overkill_rate")}}
        base_file = lay.metrics_file("baseline")
        description = version_description(
            display_name(best, params), best, {"name": params.data.name, "hash": tags["dataset_hash"],
                                               "source": ds.as_posix()},
            cand_test, split_name, metrics[best].get("gain_vs_baseline"),
            json.loads(base_file.read_text()) if base_file.is_file() else None, info["mlflow_run_id"],
            tags["git_commit"], val=cand, operating_point=op, missed=missed)
        image = next(iter(sorted(Path(data_yaml).parent.joinpath("images").iterdir())))
        version = register_task(uri, run.run_id, onnx_path, str(image), None,     # served at the shipped thresholds
                                name, tags, description)
        with registry_lock(cfg.lock_file):
            champ = alias_version(uri, name, CHAMPION)
            champ_score = gain = None
            if champ is not None:
                with tempfile.TemporaryDirectory() as tmp:
                    champ_onnx = download_onnx(uri, f"models:/{name}/{champ.version}", tmp)
                    champ_imgsz = int(champ.tags.get("imgsz", imgsz))
                    champ_score = onnx_score(str(champ_onnx), str(data_yaml), champ_imgsz, SELECT,
                                             keep["champion"])[metric]
                if boot:
                    gain = bootstrap_gain(keep["champion"], keep["candidate"], boot.resamples, boot.seed)
            d = decide(cand[metric], champ_score, cfg.margin, gate, gain, missed)
            result = {"model": best, "version": version, "alias": d.alias, "reason": d.reason, "metric": metric,
                      "chosen_on": SELECT, "candidate": cand, "candidate_test": cand_test,
                      "champion_before": None if champ is None else str(champ.version),
                      "champion_score": champ_score, "gate": gate, "margin": cfg.margin, "gain": gain,
                      "require": dict(cfg.require), "requirements_missed": missed, "operating_point": op,
                      "onnx": exported["onnx"], "onnx_registered": onnx_path,
                      "serve": f"mlflow models serve -m models:/{name}/{version} --env-manager local",
                      "parity": {k: v for k, v in exported.items() if k not in ("onnx", "onnx_nms")},
                      "model_card": f"runs:/{run.run_id}/model_card/{CARD}"}
            # the card before the alias: a version never serves as champion without its card
            card = card_task(best, params, result, run.run_id, tags["git_commit"], onnx_path, str(data_yaml),
                             metrics[best].get("gain_vs_baseline"), str(card_dir), keep["candidate_test"])
            log_outputs(run, artifacts=[(str(card.parent), "model_card")])
            client(uri).set_model_version_tag(name, version, "model_card", result["model_card"])
            set_alias(uri, name, d.alias, version)
            client(uri).set_model_version_tag(name, version, "promotion", f"{d.alias}: {d.reason}")
        result["model_card_inputs"] = json.loads(card.with_name(CARD_INPUTS).read_text())
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        tags = {"registered_version": version, "alias": d.alias, "gate": gate,
                "requirements": "met" if not missed else "; ".join(missed)[:500]}
        if gain is not None:
            tags.update(gain_mAP50=round(gain["mAP50"], 4), gain_ci95=f"[{gain['ci95'][0]:.4f}, {gain['ci95'][1]:.4f}]")
        log_outputs(run, metrics={**{f"test.{k}": v for k, v in cand_test.items()},
                                  **{f"val.{k}": v for k, v in cand.items()}, **flat_metrics(op)},
                    artifacts=[(str(out), None)], tags=tags)
        log.info("%s v%s -> %s (%s)", name, version, d.alias, d.reason)
    return result
