"""What the promotion decides and records, apart from running it (``pipelines/promote.py``):

- :func:`choose`: the candidate, the best evaluated detector on the **validation** split (ties:
  FPS); the test split is reported, never used to choose.
- :class:`Candidate`: the chosen detector as it is registered (its end-to-end ONNX graph, the
  graph's validation and test scores, the shipped operating point, the ``promote.require``
  bounds it misses) and the tags of its registry version.
- :func:`promotion_record`: what ``reports/promotion.json`` keeps of a promotion, once the gate
  (``registry.decide``) has decided; :func:`run_tags` / :func:`run_metrics`: what the promotion's
  MLflow run logs of it.
- :func:`registry_state`, :func:`retrain_status`, :func:`promotion_of`: what a retrain's
  promote step did, read from the registry before and after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..decision import flat_metrics
from .card import CARD
from .registry import CHAMPION, Decision, champion_version, client, latest_version

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


def evaluated(metric_files: dict[str, Path]) -> dict[str, dict]:
    """The metrics JSON of each candidate that has been evaluated (``metric_files``: by model)."""
    return {m: json.loads(f.read_text()) for m, f in metric_files.items() if f.is_file()}


@dataclass
class Candidate:
    """The detector being promoted, as registered: ``exported`` is the export step's answer (its
    raw graph ``onnx``, the end-to-end graph ``onnx_nms`` that is registered, the parity
    figures); ``val`` / ``test`` the end-to-end graph's scores through ONNX Runtime (``val`` is
    what the gate compares); ``op`` the operating point chosen on ``val``; ``missed`` the
    ``promote.require`` bounds it misses on validation (never champion then); ``gain``: its mAP50
    gain over the reference detector from the evaluation stage (``gain_vs_baseline``; None for the
    reference itself)."""

    model: str
    train_info: dict
    exported: dict
    val: dict
    test: dict
    op: dict
    missed: list[str] = field(default_factory=list)
    gain: dict | None = None

    @property
    def onnx(self) -> str:
        """The registered graph (boxes after NMS)."""
        return self.exported["onnx_nms"]

    def version_tags(self, dataset_hash: str | None, commit: str, params_hash: str) -> dict:
        """The registry version's tags: source model, data, code and params, the graph's scores,
        the shipped thresholds and their escape / overkill rates."""
        op = self.op
        return {"model": self.model, "dataset_hash": dataset_hash, "git_commit": commit, "params_hash": params_hash,
                "train_run_id": self.train_info["mlflow_run_id"], "imgsz": self.train_info["imgsz"],
                **{f"test.{k}": round(v, 4) for k, v in self.test.items()},
                **{f"val.{k}": round(v, 4) for k, v in self.val.items()},
                "thresholds": json.dumps(op["thresholds"]),
                **{f"{s}.{k}": op[s][k] for s in ("val", "test") for k in ("escape_rate", "overkill_rate")}}


def promotion_record(cand: Candidate, version: str, d: Decision, champion_before: str | None, promote,
                     run_id: str) -> dict:
    """``reports/promotion.json``: the candidate, its registered ``version``, the gate's decision
    ``d`` against the champion it was compared with (``champion_before``: its version, None when
    there was none), the ``promote`` settings it was judged by and where its model card is
    (the promotion run ``run_id``'s ``model_card/``)."""
    name = promote.registered_model
    return {"model": cand.model, "version": version, "alias": d.alias, "reason": d.reason, "metric": promote.metric,
            "chosen_on": SELECT, "candidate": cand.val, "candidate_test": cand.test,
            "champion_before": champion_before, "champion_score": d.champion, "gate": d.gate,
            "margin": promote.margin, "gain": d.gain, "require": dict(promote.require),
            "requirements_missed": cand.missed, "operating_point": cand.op,
            "onnx": cand.exported["onnx"], "onnx_registered": cand.onnx,
            "serve": f"mlflow models serve -m models:/{name}/{version} --env-manager local",
            "parity": {k: v for k, v in cand.exported.items() if k not in ("onnx", "onnx_nms")},
            "model_card": f"runs:/{run_id}/model_card/{CARD}"}


def run_tags(record: dict) -> dict:
    """The promotion run's tags: the version, its alias, the gate, the requirements and the
    bootstrap gain over the champion when the gate measured one."""
    missed, gain = record["requirements_missed"], record["gain"]
    tags = {"registered_version": record["version"], "alias": record["alias"], "gate": record["gate"],
            "requirements": "met" if not missed else "; ".join(missed)[:500]}
    if gain is not None:
        tags.update(gain_mAP50=round(gain["mAP50"], 4), gain_ci95=f"[{gain['ci95'][0]:.4f}, {gain['ci95'][1]:.4f}]")
    return tags


def run_metrics(cand: Candidate) -> dict[str, float]:
    """The promotion run's metrics: the graph's test and validation scores and the operating point's figures."""
    return {**{f"test.{k}": v for k, v in cand.test.items()}, **{f"val.{k}": v for k, v in cand.val.items()},
            **flat_metrics(cand.op)}


def registry_state(uri: str, name: str) -> dict:
    """What the retrain compares before and after ``dvc repro``: the version the ``champion`` alias
    points to and the highest registered version of ``name`` (None when there is none)."""
    return {"champion": champion_version(uri, name), "latest": latest_version(uri, name)}


def retrain_status(reg_before: dict, reg_after: dict, hash_before: str | None, hash_after: str | None) -> dict:
    """The retrain's outcome from the registry before and after the promote step:
    ``retrained`` when a new version was registered (champion or challenger) or the champion
    moved, with that ``version`` (the one whose outputs get a model commit); else ``dataset
    updated`` when the dataset changed, else ``up to date`` (``version`` None)."""
    def num(v):
        return int(v) if v is not None else 0

    version = None
    if num(reg_after.get("latest")) > num(reg_before.get("latest")):
        version = str(reg_after["latest"])                          # a new version, whatever its alias
    elif reg_after.get("champion") is not None and reg_after.get("champion") != reg_before.get("champion"):
        version = str(reg_after["champion"])                        # an existing version became champion
    if version is not None:
        status = "retrained"
    else:
        status = "dataset updated" if hash_after != hash_before else "up to date"
    return {"status": status, "version": version,
            "new_champion": reg_after.get("champion") != reg_before.get("champion")}


def promotion_of(uri: str, name: str, version: str, report: Path, since: float = 0.0) -> dict:
    """The promotion of ``version``: the promote stage's report when it was written (after
    ``since``) about that version, else what the registry says (source model, alias, the
    ``promotion`` tag)."""
    if report.is_file() and report.stat().st_mtime >= since:
        r = json.loads(report.read_text())
        if str(r.get("version")) == str(version):
            return r
    mv = client(uri).get_model_version(name, str(version))
    aliases = list(getattr(mv, "aliases", None) or [])
    alias = CHAMPION if CHAMPION in aliases else (aliases[0] if aliases else None)
    return {"model": mv.tags.get("model"), "version": str(version), "alias": alias,
            "reason": mv.tags.get("promotion", "")}
