"""MLflow model registry: versions of ``defect-detector`` (the end-to-end ONNX graph inside a pyfunc
that ``mlflow models serve`` serves) and the aliases that serve them.

Everything goes through MLflow's public API (``mlflow.pyfunc.log_model``, ``register_model``,
``MlflowClient.set_registered_model_alias``). The gate is one pure function (``decide``: by a
fixed ``margin``, or by the paired-bootstrap interval of the mAP50 gain, ``components.bootstrap``); the
alias update is serialised by a lock so two promotions at once cannot interleave their
read-compare-write (``registry_lock``: a file lock beside the local store; with a tracking
*server*, point ``promote.lock_file`` at a path every promoting machine shares).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..detectors import reference


CHAMPION, CHALLENGER = "champion", "challenger"
GATES = ("margin", "bootstrap")


@dataclass(frozen=True)
class Decision:
    alias: str                 # champion | challenger
    candidate: float
    champion: float | None
    margin: float
    reason: str
    gate: str = "margin"
    gain: dict | None = None   # bootstrap gate: components.bootstrap.paired_bootstrap(champion, candidate)


def decide(candidate: float, champion: float | None, margin: float, gate: str = "margin",
           gain: dict | None = None, missed: list[str] | None = None) -> Decision:
    """``challenger`` whatever its scores when the candidate misses a ``promote.require`` bound on
    the validation split (``missed``: the unmet bounds, ``components.decision.check_requirements``),
    with or without a champion. Otherwise ``champion`` when there is none yet, or when the candidate
    beats the champion on the same images (the promotion's validation split): by at least ``margin``
    (``gate="margin"``), or with the lower bound of the paired-bootstrap 95 % interval of its mAP50
    gain (``gain``) above 0 (``gate="bootstrap"``); else ``challenger``."""
    if gate not in GATES:
        raise ValueError(f"promote.gate must be one of {', '.join(GATES)}, got {gate!r}")
    if missed:
        return Decision(CHALLENGER, candidate, champion, margin,
                        "requirements not met on validation: " + "; ".join(missed), gate, gain)
    if champion is None:
        return Decision(CHAMPION, candidate, None, margin, "no champion yet", gate, gain)
    if gate == "bootstrap":
        if gain is None:
            raise ValueError("the bootstrap gate needs the paired-bootstrap gain over the champion")
        lo, hi = gain["ci95"]
        interval = f"mAP50 gain {gain['mAP50']:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}] ({gain['resamples']} resamples)"
        if lo > 0:
            return Decision(CHAMPION, candidate, champion, margin, f"{interval}: lower bound > 0", gate, gain)
        return Decision(CHALLENGER, candidate, champion, margin, f"{interval}: lower bound <= 0", gate, gain)
    if candidate >= champion + margin:
        return Decision(CHAMPION, candidate, champion, margin,
                        f"{candidate:.4f} >= champion {champion:.4f} + margin {margin}", gate, gain)
    return Decision(CHALLENGER, candidate, champion, margin,
                    f"{candidate:.4f} < champion {champion:.4f} + margin {margin}", gate, gain)


@contextmanager
def registry_lock(path: str | Path, timeout: float = 600) -> Iterator[None]:
    """Exclusive lock for the read-champion / compare / move-alias step."""
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout):
        yield


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


SERVING_MODULE = "defectops_serving"
PREDLOG_MODULE = "defectops_predlog"     # components/monitor/predlog.py, shipped beside it (serving imports it)


def _serving_requirements() -> list[str]:
    """What ``components/deploy/serving.py`` imports, pinned to the installed versions."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for names in (("mlflow",), ("numpy",), ("pandas",), ("onnx",), ("onnxruntime", "onnxruntime-gpu"),
                  ("opencv-python", "opencv-python-headless"), ("pillow",),    # pillow: the pixel limit's header read
                  ("sqlalchemy",)):                                             # the prediction log (predlog)
        for n in names:
            try:
                out.append(f"{n}=={version(n)}")
                break
            except PackageNotFoundError:
                continue
    return out


ONNX_FILE = "artifacts/model.onnx"    # where the graph lies inside a registered version's model folder


def log_detector_model(uri: str, run_id: str, onnx_path: str | Path, conf: float | None = None,
                       example_image: str | Path | None = None) -> str:
    """Log the end-to-end ONNX graph (``export_onnx(nms=True)``) in run ``run_id`` as the MLflow
    model ``model`` that a version of ``promote.registered_model`` is: a pyfunc that
    ``mlflow models serve`` answers encoded images with (``components.deploy.serving.ServingModel``: base64
    image in an ``image`` column -> OK / NG verdict and the boxes in image pixels with class names
    that reach the per-class thresholds in the graph's metadata; param ``conf``, default ``conf``:
    one confidence for every class instead, 0 or None = the shipped thresholds), holding the ONNX file itself as ``artifacts/model.onnx`` (:data:`ONNX_FILE`, named in
    the model's metadata with its tensor interface) for any ONNX runtime: ``defectops predict
    --model models:/...`` and the champion's re-scoring download and run that file.
    ``components/deploy/serving.py`` is the model's code as the top-level module ``defectops_serving`` (the
    pickled wrapper refers to that, so the served model does not import the project).
    Returns the model URI."""
    import base64
    import importlib.util
    import shutil
    import sys
    import tempfile

    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    from ..monitor import predlog
    from . import serving

    signature = ModelSignature(inputs=Schema([ColSpec("string", "image")]),
                               params=ParamSchema([ParamSpec("conf", "double", float(conf or 0.0))]))
    example = None
    if example_image is not None:
        example = pd.DataFrame({"image": [base64.b64encode(Path(example_image).read_bytes()).decode()]})
    meta = serving.read_meta(onnx_path)
    metadata = {"onnx": ONNX_FILE, "onnx_input": "images: float32 (1, 3, S, S), RGB in [0, 1], letterboxed to S "
                                                  "(the letterbox rule is in the ONNX metadata)",
                "onnx_output": "output0: float32 (1, max_det, 6), x1 y1 x2 y2 score class in input pixels, "
                               "zero rows after the last box",
                "imgsz": str(meta.get("imgsz")), "names": str(meta.get("names"))}
    if isinstance(meta.get("decision"), dict):         # the shipped operating point, also on the model's page
        metadata["thresholds"] = meta["decision"].get("thresholds")
        metadata["operating_point_rule"] = f"{meta['decision'].get('rule')} {meta['decision'].get('target')}"
    mlflow.set_tracking_uri(uri)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(run_id=run_id):
        onnx_file, code = Path(tmp) / Path(ONNX_FILE).name, Path(tmp) / f"{SERVING_MODULE}.py"
        shutil.copyfile(onnx_path, onnx_file)
        shutil.copyfile(serving.__file__, code)
        shipped = Path(tmp) / f"{PREDLOG_MODULE}.py"
        shutil.copyfile(predlog.__file__, shipped)            # the prediction log, beside it
        module = sys.modules.get(SERVING_MODULE)
        if module is None:
            spec = importlib.util.spec_from_file_location(SERVING_MODULE, code)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[SERVING_MODULE] = module
        with predlog.disabled():                              # MLflow's input-example check is no traffic
            info = mlflow.pyfunc.log_model(name="model", python_model=module.ServingModel(conf),
                                           artifacts={"onnx": str(onnx_file)}, code_paths=[str(code), str(shipped)],
                                           signature=signature, input_example=example, metadata=metadata,
                                           pip_requirements=_serving_requirements())
    return info.model_uri


def register(uri: str, model_uri: str, name: str, tags: dict, description: str | None = None) -> str:
    """Register ``model_uri`` as a new version of ``name`` with ``tags`` and ``description`` (what
    the MLflow UI shows on the version's page, ``version_description``); returns the version."""
    import mlflow

    mlflow.set_registry_uri(uri)
    mlflow.set_tracking_uri(uri)
    mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    if description:
        client(uri).update_model_version(name, mv.version, description=description)
    return str(mv.version)


@dataclass(frozen=True)
class VersionFacts:
    """What :func:`version_description` says of a registered version: the ``detector`` (``model``:
    the params key), the data it was trained and scored on (``dataset``: name, content hash, DVC
    path), its ``test`` metrics through ONNX Runtime on ``split``, and its mAP50 gain over the
    baseline from the evaluation stage (``gain``: ``gain_vs_baseline`` of its metrics, a paired
    bootstrap on the same test images; None for the baseline itself; ``baseline``: the baseline's
    evaluation metrics, or None), its training run and git commit; ``val``: its validation
    metrics, which the promotion chose it and gated it by; ``operating_point``: the shipped
    thresholds and their figures; ``missed``: the ``promote.require`` bounds it misses."""

    detector: str
    model: str
    dataset: dict
    test: dict
    split: str
    gain: dict | None
    baseline: dict | None
    train_run_id: str
    commit: str
    val: dict | None = None
    operating_point: dict | None = None
    missed: list[str] | None = None


def version_description(facts: VersionFacts) -> str:
    """What a registered version is (:class:`VersionFacts`), as Markdown for the MLflow UI."""
    f = facts
    detector, model, dataset, test, split, gain, baseline = (f.detector, f.model, f.dataset, f.test, f.split, f.gain,
                                                             f.baseline)
    train_run_id, commit, val, operating_point, missed = f.train_run_id, f.commit, f.val, f.operating_point, f.missed
    scores = ", ".join(f"{k} {v:.4f}" for k, v in test.items())
    lines = [f"**{detector}** defect detector (`{model}`): served by `mlflow models serve` (encoded image in, "
             f"boxes out), the end-to-end ONNX graph (boxes after NMS) inside as `{ONNX_FILE}`.", "",
             f"- data: `{dataset['name']}`, content hash `{dataset['hash']}` (DVC path `{dataset['source']}`)",
             f"- test metrics ({split} split, ONNX Runtime): {scores}"]
    if val is not None:
        lines.append("- validation metrics (ONNX Runtime; the promotion chose and gated on these): "
                     + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
    if gain is not None:
        lo, hi = gain["ci95"]
        ref = f" ({gain['mAP50_a']:.4f} -> {gain['mAP50_b']:.4f})" if "mAP50_a" in gain else ""
        lines.append(f"- gain over the baseline: mAP50 {gain['mAP50']:+.4f}, 95 % CI [{lo:+.4f}, {hi:+.4f}]{ref} "
                     f"(paired bootstrap over {gain.get('images', '?')} test images, "
                     f"{gain.get('resamples', '?')} resamples, PyTorch evaluation)")
    elif model == reference().key:
        lines.append("- gain over the baseline: none, this is the baseline")
    else:
        lines.append("- gain over the baseline: not measured (no baseline evaluation)")
    if baseline is not None and model != reference().key:
        lines.append(f"- baseline on the same split (PyTorch): mAP50 {baseline['mAP50']:.4f}")
    if operating_point is not None:
        op = operating_point
        target = f" {op['target']}" if op.get("target") is not None else ""
        lines.append(f"- shipped thresholds (rule {op['rule']}{target}, chosen on validation): "
                     + ", ".join(f"{c} {t:.3f}" for c, t in op["thresholds"].items())
                     + (f"; flagged: {', '.join(op['flags'])}" if op.get("flags") else ""))
        for split in ("val", "test"):
            r = op.get(split)
            if r:
                lines.append(f"- {split} verdicts ({r['images']} images, {r['clean_images']} clean): escape rate "
                             f"{_rate(r['escape_rate'], r.get('escape_ci95'), r.get('escape_exact95'))}, overkill "
                             f"rate {_rate(r['overkill_rate'], r.get('overkill_ci95'), r.get('overkill_exact95'))}")
    if missed:
        lines.append(f"- requirements (promote.require) not met on validation: {'; '.join(missed)}: never champion")
    lines.append(f"- training run `{train_run_id}`, git `{commit}`; model card: the promotion run's `model_card/`")
    return "\n".join(lines)


def _rate(v: float | None, ci: list[float] | None, exact: list[float] | None = None) -> str:
    """A rate with its bootstrap 95 % interval and its exact (Clopper-Pearson) one."""
    if v is None:
        return "not measured"
    return (f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            + (f" (exact 95 % [{exact[0]:.3f}, {exact[1]:.3f}])" if exact else ""))


def alias_version(uri: str, name: str, alias: str):
    """The model version ``alias`` points to, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client(uri).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def champion_version(uri: str, name: str) -> str | None:
    """The version the ``champion`` alias of ``name`` points to in the registry at ``uri``, or None
    (no such model, or no champion yet). Other errors (an unreachable server) raise."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client(uri).get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):    # no model / no alias
            return None
        raise


def latest_version(uri: str, name: str) -> str | None:
    """The highest registered version of ``name`` in the registry at ``uri``, or None."""
    versions = client(uri).search_model_versions(f"name='{name}'")
    return str(max(int(v.version) for v in versions)) if versions else None


def set_alias(uri: str, name: str, alias: str, version: str) -> None:
    client(uri).set_registered_model_alias(name, alias, str(version))


def download_onnx(uri: str, model_uri: str, dst: str | Path) -> Path:
    """Download a registered ONNX model (``models:/name@alias``, ``models:/name/3``, ``runs:/...``)
    from the tracking/registry store ``uri`` and return the path of its ``.onnx`` file."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    found = sorted(local.rglob("*.onnx")) if local.is_dir() else [local]
    if not found:
        raise FileNotFoundError(f"{model_uri} holds no .onnx file")
    return found[0]


def champion_weights(uri: str, name: str, model: str, dst: str | Path) -> tuple[Path | None, str]:
    """The PyTorch weights the current ``champion`` was exported from, if it is a ``model``
    detector: its version's ``train_run_id`` tag names the training run that logged
    ``weights/best.pt``. Returns ``(path or None, what happened)``."""
    import mlflow

    champ = alias_version(uri, name, CHAMPION)
    if champ is None:
        return None, f"no {CHAMPION} in {name}"
    if champ.tags.get("model") != model:
        return None, f"{CHAMPION} v{champ.version} is a {champ.tags.get('model')} detector, not {model}"
    run_id = champ.tags.get("train_run_id")
    if not run_id:
        return None, f"{CHAMPION} v{champ.version} has no train_run_id tag"
    mlflow.set_tracking_uri(uri)
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="weights/best.pt", dst_path=str(dst))
    return Path(path), f"models:/{name}/{champ.version}"
