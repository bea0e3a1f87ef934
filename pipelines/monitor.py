"""Monitor flow (``defectops monitor``; the ``monitor`` deployment runs it on ``monitor.schedule``).

1. **Window**: the prediction log's records of ``promote.registered_model`` over the last
   ``monitor.window_hours`` (``predlog``; ``DEFECTOPS_PREDLOG_URL`` wins over ``predlog.url``).
   Fewer than ``monitor.min_window`` images: no test, the run says so.
2. **Reference**: up to ``monitor.reference_size`` images of the validation split and the
   ``champion``'s own answers on them (its registered ONNX graph at its shipped thresholds).
3. **Drift**: Evidently's data-drift preset over image statistics, an image embedding, the score
   distribution and the class mix (``components.monitor.drift``); drifted when the share of
   drifted columns reaches ``monitor.drift_share``.
4. **Review**: at most ``monitor.review_budget`` images (near a threshold, drifted, or where the
   ``challenger`` disagrees: ``components.monitor.select``) go to the Label Studio project
   ``review.project`` at ``review.url`` (``LABEL_STUDIO_URL`` wins) when ``LABEL_STUDIO_API_KEY`` is set.
5. **Retrain**: on drift, with ``monitor.trigger_retrain``, a run of the ``retrain`` deployment.

One MLflow run per execution (stage ``monitor``) holds Evidently's HTML report, the JSON summary
and what was picked for review; the latest are also under ``<paths.reports>/monitor/``. The log and
its images are only read.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from prefect import flow, get_run_logger, task

from components.monitor import drift as dr
from components.monitor import review
from components.monitor import select as sel
from components.monitor.predlog import ENV, open_log
from components.settings import Settings
from components.tracking import tracking_uri

from .common import COMPUTE, TRANSIENT, dataset_hash, layout, log_outputs, read_params, stage_run

RETRAIN_DEPLOYMENT = "retrain/retrain"          # flow name / deployment name (infra/prefect.yaml)


def models(params: Settings, cache: Path) -> dict:
    """The ``champion`` (and, when the alias exists, the ``challenger``) of
    ``promote.registered_model`` as ``serving.BoxModel``s with their versions."""
    from components.deploy.predict import quiet_registry, resolve_model
    from components.deploy.registry import alias_version
    from components.deploy.serving import BoxModel

    uri, name = tracking_uri(params.tracking.plain()), params.promote.registered_model
    with quiet_registry():          # no champion (or no registry): predict's one-line ModelError, nothing created
        out = {"champion": BoxModel(resolve_model(f"models:/{name}@champion", uri, cache / "champion"))}
        for alias in ("champion", "challenger"):
            mv = alias_version(uri, name, alias)
            out[f"{alias}_version"] = str(mv.version) if mv is not None else None
        if out["challenger_version"] is not None:
            out["challenger"] = BoxModel(resolve_model(f"models:/{name}@challenger", uri, cache / "challenger"))
    return out


@task(name="drift-reference", **COMPUTE)
def reference_task(model, params: Settings, version: str | None) -> dr.Observations:
    from components.data.views import load_split

    lay = layout(params)
    images = dr.reference_images(lay.dataset, load_split(lay.split_file), params.monitor.reference_size)
    return dr.reference_observations(model, images, f"{lay.dataset} val, champion v{version}")


@task(name="drift-report", **COMPUTE)
def drift_task(reference: dr.Observations, current: dr.Observations, params: Settings, out: Path) -> dr.DriftResult:
    return dr.compare(reference, current, params.monitor.drift_share, out, params.monitor.embedding_components)


@task(name="review-selection", **COMPUTE)
def selection_task(records: list, result: dr.DriftResult, m: dict, cfg, plog) -> sel.Selection:
    from components.deploy.serving import DEFAULT_CONF

    champion = m["champion"]
    thresholds = champion.thresholds or {n: DEFAULT_CONF for n in champion.names.values()}
    queues = {"near_threshold": sel.near_threshold(records, thresholds, cfg.near_threshold, m["champion_version"]),
              "drift": sel.drift_outliers(records, result, cfg.outlier_tail),
              "disagreement": sel.disagreements(records, m["challenger"], plog.image_file, cfg.challenger_checks)
              if m.get("challenger") is not None else []}
    return sel.select(queues, cfg.review_budget, plog.image_file)


@task(name="label-studio-push", **TRANSIENT)
def push_task(items: list, url: str, project: str, class_names: list[str]) -> str:
    """The review items as tasks of the Label Studio ``project`` (created when absent) at ``url``."""
    client = review.connect(url, os.environ[review.ENV_KEY])
    pid = review.ensure_project(client, project, class_names)
    return f"{review.push_tasks(client, pid, items)} task(s) pushed to Label Studio project {project!r} (id {pid})"


def push_review(items: list, cfg, class_names: list[str]) -> str:
    """:func:`push_task` to the ``review`` section's server and project (``LABEL_STUDIO_URL`` wins)
    when ``LABEL_STUDIO_API_KEY`` is set; what happened, in one line (a Label Studio that refuses or
    cannot be reached is said, the monitor's findings are kept)."""
    url = os.environ.get(review.ENV_URL) or cfg.url
    if not items:
        return "nothing to review"
    if not os.environ.get(review.ENV_KEY):
        return f"{len(items)} review item(s) not pushed to {url}: set {review.ENV_KEY} (listed in monitor.json)"
    try:
        return push_task(items, url, cfg.project, class_names)
    except Exception as e:                # noqa: BLE001  (after the task's retries)
        return f"{len(items)} review item(s) not pushed: {type(e).__name__}: {' '.join(str(e).split())[:200]}"


def start_retrain() -> str:
    """A run of the ``retrain`` deployment (not waited for); the reason when it cannot be started."""
    from prefect.deployments import run_deployment

    try:
        fr = run_deployment(RETRAIN_DEPLOYMENT, timeout=0, as_subflow=False)
    except Exception as e:                # noqa: BLE001  the drift is recorded whatever happens here
        return f"not started: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return f"started flow run {fr.id} of {RETRAIN_DEPLOYMENT}"


def finish(run, out: Path, result: dict, drift: dr.DriftResult | None = None) -> dict:
    """``out/monitor.json`` and the MLflow run's metrics, tags and artifacts."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "monitor.json").write_text(json.dumps(result, indent=1, default=str))
    metrics = {"window_images": result["window"]["images"]}
    if drift is not None:
        metrics |= {"drift_share": drift.share, "drifted_columns": len(drift.drifted_columns),
                    "review_items": len(result["review"]["picked"]),
                    **{f"drift_score.{c}": v["score"] for c, v in drift.columns.items() if v["score"] is not None}}
    files = [out / "monitor.json"] + ([drift.html, drift.summary_file] if drift is not None else [])
    log_outputs(run, metrics, [(str(f), "monitor") for f in files],
                {"status": result["status"], "drifted": str(bool(drift and drift.drifted)).lower(),
                 **{k: str(result[k]) for k in ("champion_version", "retrain") if result.get(k)}})
    return result


@flow(name="monitor")
def monitor_flow(params_file: str = "params.yaml", window_hours: float | None = None) -> dict:
    """See the module docstring; ``window_hours`` overrides ``monitor.window_hours``. Returns what
    it found (also ``<paths.reports>/monitor/monitor.json``)."""
    params = read_params(params_file)
    cfg, log, lay = params.monitor, get_run_logger(), layout(params)
    p = params.predlog
    # read-only: the kept images wherever the servers keep them (the environment wins, as for the URL)
    plog = open_log(os.environ.get(ENV["url"]) or p.url, True, os.environ.get(ENV["image_dir"]) or p.image_dir,
                    p.image_cap_mb)
    until = datetime.now(timezone.utc)
    since = until - timedelta(hours=window_hours or cfg.window_hours)
    records = plog.window(since, until, params.promote.registered_model) if plog is not None else []
    result = {"window": {"since": since.isoformat(), "until": until.isoformat(), "images": len(records)}}
    with stage_run("monitor", params, ["monitor", "predlog", "review"], dataset_hash(lay.dataset)) as run:
        if len(records) < cfg.min_window:
            result["status"] = (f"{len(records)} logged image(s) in the window, fewer than monitor.min_window "
                                f"({cfg.min_window}): no drift test" + ("" if plog else " (predlog.url is off)"))
            log.info(result["status"])
            return finish(run, lay.reports / "monitor", result)
        m = models(params, lay.scratch("monitor", "models"))
        ref = reference_task(m["champion"], params, m["champion_version"])
        drift = drift_task(ref, dr.window_observations(records, plog.image_file), params, lay.reports / "monitor")
        picked = selection_task(records, drift, m, cfg, plog)
        names = [m["champion"].names[k] for k in sorted(m["champion"].names)]
        result.update(status="drift" if drift.drifted else "no drift", champion_version=m["champion_version"],
                      drift={k: drift.summary[k] for k in ("drift_share", "threshold", "drifted_columns")},
                      review={**picked.to_dict(), "pushed": push_review(picked.items, params.review, names)})
        log.info("drift share %.2f (threshold %.2f): %s; drifted: %s; %s", drift.share, cfg.drift_share,
                 result["status"], ", ".join(drift.drifted_columns) or "none", result["review"]["pushed"])
        if drift.drifted and cfg.trigger_retrain:
            result["retrain"] = start_retrain()
            log.info("retrain: %s", result["retrain"])
        finish(run, lay.reports / "monitor", result, drift)
    return result
