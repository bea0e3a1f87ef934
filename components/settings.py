"""params.yaml: the one config module. Loading, overrides, validation, flattening and hashing.

``resolve(params_file, layers)`` is the one place where params.yaml and what overrides it meet:
a profile (``profiles/*.yaml``, :func:`load_profile`), a tuning study's decision
(``models/tuned/<model>.json``), a trial's point, ``--set`` on a benchmark command. Each layer is
a ``{dotted.key: value}`` mapping with a name; the result is a :class:`Settings` tree of frozen
pydantic dataclasses, one per params.yaml section, validated by pydantic on the way in (unknown or
missing keys, wrong types, values outside a choice list or a range: one :class:`ConfigError` line
naming the key). ``Settings.overrides`` records which layer set which key to what, and the flows log
it on their MLflow run (``defectops.overrides``) beside the values the run used.

Flows read attributes (``params.loss.iou``, ``params.lam.alpha``): a typo is an AttributeError at
once, not a KeyError deep in a task, and ``tests/test_dvc_params.py`` derives each DVC stage's
reads from those attribute chains. Components receive plain values or single sections, never
params.yaml itself. A choice list is declared by the module that implements the choices and
imported here. Importing this module is light (no torch, no ultralytics): the CLI checks a params
file before anything else starts. Secrets never live in params: credentials come from the
environment (``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL``, AWS_* ...).

A new section: a class below (``_Section`` subclass, fields typed with the ``Strict*`` types so that
``"3"`` or ``true`` is not taken for a number; ranges as ``Field(ge=..., lt=...)``) and a field of
:class:`Settings` named like the params.yaml key.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union

import yaml
from pydantic import (AfterValidator, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr,
                      ValidationError, model_validator)
from pydantic.dataclasses import dataclass as _pydantic_dataclass

from .data.importers import FOLLOW, FORMATS
from .data.views import SPLITS
from .decision import REQUIREMENTS, RULES
from .deploy.registry import GATES
from .detectors.lagnet.coding import NORMALIZE
from .detectors.yolo11.config import SCALES
from .models.iou import IOU_LOSSES

PARAMS_FILE = "params.yaml"


class ConfigError(ValueError):
    """A params file is missing, malformed, or lacks a required key; one line naming the key."""


# ---- reading, overriding, flattening params trees (plain dicts)

def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """A params file as a plain tree (not validated: :func:`resolve` / :func:`load_settings` do)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path.resolve()} (run from the repository root)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_profile(path: str | Path) -> dict[str, Any]:
    """A profile file: ``dotted.key: value`` overrides of params.yaml (``profiles/*.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"profile not found: {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected 'dotted.key: value' lines")
    return data


def section(params: Mapping[str, Any], dotted: str) -> Any:
    """``section(p, "train.epochs")`` with a clear error naming the missing key."""
    node: Any = params
    for i, key in enumerate(dotted.split(".")):
        if not isinstance(node, Mapping) or key not in node:
            raise ConfigError(f"params.yaml has no key '{'.'.join(dotted.split('.')[:i + 1])}'")
        node = node[key]
    return node


def apply_overrides(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with ``dotted.key: value`` leaves replaced (a profile, tuned values,
    ``--set``). A key params.yaml does not have is an error, never a silent new param."""
    p = copy.deepcopy(dict(params))
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = section(p, ".".join(parents)) if parents else p
        if not isinstance(node, dict) or leaf not in node:
            raise ConfigError(f"params.yaml has no key '{dotted}'")
        node[leaf] = copy.deepcopy(value)
    return p


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists are kept as JSON strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v)
        else:
            out[key] = v
    return out


def params_hash(d: Mapping[str, Any]) -> str:
    """Stable short hash of a params (sub)tree, independent of key order."""
    blob = json.dumps(d, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---- the sections

def _freeze(v: Any) -> Any:
    """Mappings read-only, lists tuples, all the way down."""
    if isinstance(v, Mapping):
        return types.MappingProxyType({k: _freeze(x) for k, x in v.items()})
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


def _plain(v: Any) -> Any:
    if isinstance(v, Train):
        return _plain(v.args)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.metadata.get("yaml", True)}
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


Frozen = AfterValidator(_freeze)
Device = Union[StrictStr, StrictInt]          # cpu | 0 | "0,1"
Scale = Literal[SCALES]  # type: ignore[valid-type]


@typing.dataclass_transform(frozen_default=True)     # type checkers: subclasses are frozen dataclasses
class _Section:
    """Base of every section, each made a frozen pydantic dataclass here (unknown keys refused):
    ``plain()`` gives the section back as params.yaml wrote it (lists, dicts), for logging, hashing
    and components that take a mapping."""

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        _pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", defer_build=True))(cls)

    def plain(self) -> Any:
        return _plain(self)


class Paths(_Section):
    """``paths``: the roots every stage reads and writes under (``components.layout.Layout``)."""

    datasets: StrictStr
    splits: StrictStr
    models: StrictStr
    metrics: StrictStr
    plots: StrictStr
    reports: StrictStr
    exports: StrictStr
    lams: StrictStr
    work: StrictStr


Share = Annotated[StrictFloat, Field(gt=0, le=1)]


class Synth(_Section):
    """``data.synth``: the embedded synthetic dataset (``components.data.synth`` renders it; it is
    that module's ``SynthConfig``). params.yaml must set every knob (the parser uses no defaults;
    ``clean_fraction``'s 0 is for configs built in code)."""

    seed: StrictInt
    images: Annotated[StrictInt, Field(ge=1)]
    size: Annotated[StrictInt, Field(ge=64)]      # square images, px
    min_defects: Annotated[StrictInt, Field(ge=1)]
    max_defects: StrictInt
    contrast: tuple[Share, Share]                 # defect strength as a fraction of full scale
    leather_fraction: StrictFloat
    jpeg_quality: StrictInt
    bold: StrictBool          # thicker strokes; shorter, axis-aligned scratches; larger flakes; pits and
                              # flakes inside a square around their centre (tight, consistent boxes)
    clean_fraction: Annotated[StrictFloat, Field(ge=0, lt=1)] = 0.0   # share of images without defects

    @model_validator(mode="after")
    def _ordered(self) -> "Synth":
        if self.min_defects > self.max_defects:
            raise ValueError("need min_defects <= max_defects")
        if self.contrast[0] > self.contrast[1]:
            raise ValueError("contrast must be [lo, hi] with lo <= hi")
        return self


class Data(_Section):
    """``data``: the dataset (embedded synthetic or imported), its import checks and the inbox increments."""

    name: StrictStr
    source: StrictStr
    format: Literal[FORMATS]  # type: ignore[valid-type]
    classes: Union[tuple[StrictStr, ...], None]
    clip_px: StrictFloat
    near_dup_bits: Union[StrictInt, None]
    min_class_boxes: StrictInt
    follow_symlinks: Literal[FOLLOW]  # type: ignore[valid-type]
    increments: StrictStr
    synth: Synth


class Split(_Section):
    """``split``: the stratified train / val / test split (+ k folds of the training part)."""

    seed: StrictInt
    test_ratio: StrictFloat
    val_ratio: StrictFloat
    folds: StrictInt
    tolerance: Annotated[StrictFloat, Field(ge=0, lt=1)]   # max deviation of image / class box shares
                                                            # from the ratios before rebalancing


class Train(_Section):
    """ultralytics' train arguments shared by every detector. The fields the pipeline itself uses
    are typed; ``args`` holds every key of the section (any other ultralytics train argument may be
    added to params.yaml; ultralytics checks those)."""

    device: Device
    seed: StrictInt
    imgsz: StrictInt
    epochs: StrictInt
    batch: StrictInt
    threads: Union[StrictInt, Literal["auto"], None]
    # start weights (components.transfer): a .pt file or models:/name@alias for every detector, or
    # {detector: ...} for each its own (a detector not listed starts from scratch); null: from scratch
    init: Union[StrictStr, Annotated[Mapping[StrictStr, StrictStr], Frozen], None] = None
    args: Annotated[Mapping[str, Any], Frozen] = dataclasses.field(default_factory=dict, metadata={"yaml": False})

    @model_validator(mode="before")
    @classmethod
    def _keep_every_key(cls, data: Any) -> Any:
        """The section as params.yaml has it goes to ``args``; the typed fields are checked."""
        if isinstance(data, Mapping) and "args" not in data:
            typed = [f for f in cls.__dataclass_fields__ if f != "args"]
            return {**{k: data[k] for k in typed if k in data}, "args": dict(data)}
        return data

    def ultralytics(self) -> dict:
        """The arguments ultralytics' trainer takes, minus ``device`` and ``seed`` (passed apart) and
        ``init`` (the pipeline's: components.transfer)."""
        return {k: v for k, v in _plain(self.args).items() if k not in ("device", "seed", "init")}


class Loss(_Section):
    """``loss``: the box-regression IoU loss of every detector (``components.models.iou``)."""

    iou: Literal[IOU_LOSSES]  # type: ignore[valid-type]


class Baseline(_Section):
    """``baseline``: YOLO11 at a scale, built from ultralytics' own YAML."""

    scale: Scale


class Dasc(_Section):
    """``dasc``: DASC-YOLO = YOLO11 + its modules, each switchable (``components.dasc.config``)."""

    scale: Scale
    rescbam: StrictBool
    cbam: StrictBool
    csa: Literal["off", "weighted", "unweighted"]
    scconv: StrictBool
    protonet_k: StrictInt
    gate: Literal["none", "zero"]
    csa_context: Literal["global", "local"]
    proto_loss: StrictFloat


class Lam(_Section):
    """``lam``: the Location Activation Maps (lagnet.md eq. 1) LAGNet reads, made from the baseline."""

    mode: Literal["in_sample", "out_of_fold"]
    folds: StrictInt
    alpha: StrictFloat
    beta: StrictFloat
    normalize: Literal[NORMALIZE]  # type: ignore[valid-type]
    quantile: StrictFloat
    batch: StrictInt
    device: Device
    grid_samples: StrictInt


class Lagnet(_Section):
    """``lagnet``: LAGNet (``components.lagnet.config``), trained on RGB + LAM."""

    variant: Literal["small", "large"]
    width: StrictInt
    k: StrictInt
    n: StrictInt
    lam: StrictBool
    scem: StrictBool


class Latency(_Section):
    """``evaluate.latency``: the eager PyTorch forward timing."""

    batch: StrictInt
    runs: StrictInt
    warmup: StrictInt


class Bootstrap(_Section):
    """``evaluate.bootstrap``: the paired bootstrap of the mAP50 gain (``components.bootstrap``)."""

    resamples: StrictInt
    seed: StrictInt


class Evaluate(_Section):
    """``evaluate``: held-out metrics, plots, speed and the gain over the baseline."""

    split: Literal[SPLITS]  # type: ignore[valid-type]
    device: Device
    batch: StrictInt
    conf: StrictFloat
    iou: StrictFloat
    latency: Latency
    bootstrap: Bootstrap


class Export(_Section):
    """``export``: ONNX export and its ONNX Runtime parity checks; the end-to-end graph with NMS."""

    opset: StrictInt
    dynamic: StrictBool
    parity_images: StrictInt
    parity_rtol: StrictFloat
    pipeline_rtol: StrictFloat
    nms_conf: StrictFloat
    nms_iou: StrictFloat
    max_det: StrictInt


class Tune(_Section):
    """``tune``: one Optuna study per detector (``components.tune``); ``space`` as params.yaml writes it."""

    trials: StrictInt
    epochs: StrictInt
    warmup_epochs: StrictInt
    min_gain: StrictFloat
    min_score: StrictFloat
    parallel: StrictInt
    seed: StrictInt
    pruner: Literal["median", "hyperband", "none"]
    study: StrictStr
    storage: StrictStr
    space: Annotated[Mapping[str, Any], Frozen]  # per detector: {key: list | {low, high} | null} (components.tune)


class Promote(_Section):
    """``promote``: best evaluated detector -> ONNX -> registry alias, through the gate."""

    registered_model: StrictStr
    candidates: tuple[StrictStr, ...]
    metric: StrictStr
    gate: Literal[GATES]  # type: ignore[valid-type]
    margin: StrictFloat
    require: Annotated[Mapping[Literal[tuple(REQUIREMENTS)], StrictFloat], Frozen]  # type: ignore[misc]
    lock_file: StrictStr

    @model_validator(mode="after")
    def _bootstrap_scores_map50(self) -> "Promote":
        if self.gate == "bootstrap" and self.metric != "mAP50":
            raise ValueError(f"gate bootstrap compares mAP50: set promote.metric to mAP50, not {self.metric}")
        return self


class Decision(_Section):
    """``decision``: the per-class confidence thresholds a promoted model ships with, chosen on the
    validation split (``components.decision``)."""

    rule: Literal[RULES]  # type: ignore[valid-type]
    recall: Share
    precision: Share
    unseen_conf: Share


class Retrain(_Section):
    """``retrain``: the inbox, its archive and the scheduled retraining (``defectops retrain``)."""

    inbox: StrictStr
    archive: StrictStr
    schedule: StrictStr
    timezone: StrictStr
    warm_start: StrictBool
    git_commit: StrictBool


class Predict(_Section):
    """``predict``: ``defectops predict`` defaults."""

    conf: Union[StrictFloat, None]
    iou: StrictFloat
    out: StrictStr


class Predlog(_Section):
    """``predlog``: the prediction log that ``defectops predict`` / ``serve`` append one record per
    image to (``components.monitor.predlog``; ``DEFECTOPS_PREDLOG_URL`` wins over ``url``)."""

    url: StrictStr                                     # SQLAlchemy URL (sqlite:///..., postgresql://...); off: none
    keep_images: StrictBool
    image_dir: StrictStr
    image_cap_mb: Annotated[StrictFloat, Field(gt=0)]


class Monitor(_Section):
    """``monitor``: the prediction log's window against the champion's data (Evidently) and the
    review queue (``defectops monitor``, ``components.monitor.drift`` / ``select``)."""

    schedule: StrictStr
    timezone: StrictStr
    window_hours: Annotated[StrictFloat, Field(gt=0)]
    min_window: Annotated[StrictInt, Field(ge=1)]
    reference_size: Annotated[StrictInt, Field(ge=2)]
    embedding_components: Annotated[StrictInt, Field(ge=0)]
    drift_share: Share
    trigger_retrain: StrictBool
    review_budget: Annotated[StrictInt, Field(ge=0)]
    near_threshold: Annotated[StrictFloat, Field(ge=0, le=1)]
    outlier_tail: Share
    challenger_checks: Annotated[StrictInt, Field(ge=0)]


class Review(_Section):
    """``review``: the Label Studio server of the review queue (``components.monitor.review``,
    ``defectops review pull``); ``LABEL_STUDIO_URL`` wins over ``url``, the API key comes only from
    ``LABEL_STUDIO_API_KEY``."""

    url: StrictStr
    project: Annotated[StrictStr, Field(min_length=1)]


class Ablation(_Section):
    """``ablation``: the papers' ablation grids (``defectops ablate``)."""

    epochs: StrictInt
    rows: Union[Literal["all"], tuple[StrictStr, ...]]
    lagnet_rows: Union[Literal["all"], tuple[StrictStr, ...]]


class Tracking(_Section):
    """``tracking``: the MLflow experiment and store (``MLFLOW_TRACKING_URI`` wins over ``uri``)."""

    experiment: StrictStr
    uri: StrictStr


@dataclasses.dataclass(frozen=True)
class Override:
    key: str
    value: Any
    source: str       # "profile profiles/neu-cpu.yaml", "tuned models/tuned/dasc.json", "--set", ...


class Settings(_Section):
    """params.yaml, every section typed and frozen; ``overrides``: which layer set which key
    (:func:`resolve`). Build it with :func:`load_settings` / :func:`resolve`, not by hand."""

    paths: Paths
    data: Data
    split: Split
    train: Train
    loss: Loss
    baseline: Baseline
    dasc: Dasc
    lam: Lam
    lagnet: Lagnet
    evaluate: Evaluate
    export: Export
    tune: Tune
    promote: Promote
    decision: Decision
    retrain: Retrain
    predict: Predict
    predlog: Predlog
    monitor: Monitor
    review: Review
    ablation: Ablation
    tracking: Tracking
    overrides: tuple[Override, ...] = dataclasses.field(default=(), metadata={"yaml": False})

    @classmethod
    def parse(cls, params: Mapping[str, Any], overrides: tuple[Override, ...] = ()) -> "Settings":
        """Check a params tree (params.yaml, merged) and build the settings; one ConfigError line
        naming the first bad key otherwise."""
        if not isinstance(params, Mapping):
            raise ConfigError("params.yaml: the top level must be a mapping")
        if "overrides" in params:
            raise ConfigError("params.yaml: unknown key 'overrides'")
        try:
            return cls(**{str(k): v for k, v in params.items()}, overrides=tuple(overrides))
        except ValidationError as e:
            raise ConfigError(_message(e.errors()[0], params)) from None

    def get(self, dotted: str) -> Any:
        """The value at ``dotted`` as params.yaml holds it (lists, dicts): for keys only known at
        run time (``tune.space`` targets, what a stage logs). Flows read attributes instead."""
        return section(self.plain(), dotted)

    def override(self, values: Mapping[str, Any], source: str) -> "Settings":
        """These settings with ``values`` (``{dotted.key: value}``) laid over them, recorded as
        coming from ``source``."""
        return resolve(self.plain(), [(source, values)], base=self.overrides)

    def overrides_record(self) -> dict[str, dict]:
        """``{key: {"value": v, "source": s}}``: what overrode params.yaml, the last layer winning."""
        return {o.key: {"value": _plain(o.value), "source": o.source} for o in self.overrides}


def trainer_args(params: Settings) -> tuple[dict[str, Any], str | int, int]:
    """The settings' ``train`` section as ultralytics train arguments, minus ``device`` and
    ``seed``, which the caller passes itself: ``(args, device, seed)``."""
    t = params.train
    return t.ultralytics(), t.device, t.seed


# ---- pydantic's errors as one line naming the key

_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _bare(tp: Any) -> Any:
    """``Annotated[int, Strict()]`` -> ``int``."""
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _describe(tp: Any) -> str:
    tp = _bare(tp)
    origin, targs = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        return " | ".join(_describe(t) for t in targs)
    if origin is Literal:
        return " | ".join(map(repr, targs))
    if tp is type(None):
        return "null"
    if origin is tuple:
        return "a list"
    return getattr(tp, "__name__", str(tp))


def _expected(tp: Any) -> str:
    """What a value of type ``tp`` must be, as the end of a sentence."""
    tp = _bare(tp)
    origin, targs = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return f"must be one of {', '.join(map(str, targs))}"
    if origin is tuple:
        return f"must be a list of {len(targs)}" if targs and targs[-1] is not Ellipsis else "must be a list"
    if tp is type(None):
        return "must be null"
    if tp in _KINDS:
        return f"must be {_KINDS[tp]}"
    return "must be a mapping"


def _walk(loc: tuple, tree: Any) -> list[tuple[str, Any, Any]]:
    """The steps of an error location through the settings' types and the params tree, from the
    root down: ``(key, type, value)``. Stops at a union (its members' own errors say less than the
    union does) and at a mapping's key."""
    steps = [("", Settings, tree)]
    for part in loc:
        key, tp, node = steps[-1]
        tp = _bare(tp)
        targs = typing.get_args(tp)
        if typing.get_origin(tp) is Union or part == "[key]":
            break
        if typing.get_origin(tp) is tuple:
            key = f"{key}[{part}]"
            tp = targs[0] if targs[-1] is Ellipsis else (targs[part] if part < len(targs) else None)
        elif dataclasses.is_dataclass(tp):
            key = f"{key}.{part}" if key else str(part)
            tp = tp.__pydantic_fields__[part].annotation if part in tp.__pydantic_fields__ else None
        else:                                                       # a key of a mapping
            key, tp = f"{key}.{part}", (targs[1] if len(targs) == 2 else Any)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
        steps.append((key, tp, node))
    return steps


def _message(err: Mapping[str, Any], tree: Mapping[str, Any]) -> str:
    steps = _walk(tuple(err["loc"]), tree)
    (key, tp, value), (parent_key, parent, parent_value) = steps[-1], steps[max(len(steps) - 2, 0)]
    kind, ctx, origin = err["type"], err.get("ctx") or {}, typing.get_origin(_bare(tp))
    if kind == "missing" and len(steps) == len(err["loc"]) + 1 and typing.get_origin(_bare(parent)) is not tuple:
        return f"params.yaml has no key '{key}'"
    if origin is Union:
        return f"params.yaml: {key} = {value!r} is none of {_describe(tp)}"
    if kind in ("unexpected_keyword_argument", "extra_forbidden", "invalid_key"):
        return f"params.yaml: unknown key '{key}'"
    if err["loc"][-1] == "[key]":                                 # a mapping's key outside its choice list
        known = typing.get_args(_bare(typing.get_args(_bare(parent))[0]))
        return f"params.yaml: unknown key '{key}' (known: {', '.join(map(str, known))})"
    if kind == "missing" and typing.get_origin(_bare(parent)) is tuple:    # a list one item short
        return f"params.yaml: {parent_key} {_expected(parent)} (got {parent_value!r})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        bound = next(b for b in _BOUNDS if b in ctx)
        return f"params.yaml: {key} must be {_BOUNDS[bound]} {ctx[bound]:g} (got {value!r})"
    if kind == "value_error":
        return f"params.yaml: {key}: {ctx['error']}"
    return f"params.yaml: {key} {_expected(tp)} (got {value!r})"


# ---- params.yaml + layers -> Settings

Layer = tuple[str, Mapping[str, Any]]     # (source, {dotted.key: value})


def resolve(params: str | Path | Mapping[str, Any], layers: list[Layer] | tuple[Layer, ...] = (),
            base: tuple[Override, ...] = ()) -> Settings:
    """params.yaml (a path, or an already-loaded tree) with each ``(source, {dotted.key: value})``
    layer laid over it in order (a later layer wins on a shared key; a key params.yaml lacks is an
    error), parsed into :class:`Settings` that remember which layer set what."""
    tree = load_params(params) if isinstance(params, (str, Path)) else copy.deepcopy(dict(params))
    record = list(base)
    for source, values in layers:
        tree = apply_overrides(tree, dict(values))
        record += [Override(k, _freeze(v), source) for k, v in values.items()]
    return Settings.parse(tree, tuple(record))


def load_settings(params_file: str | Path = PARAMS_FILE) -> Settings:
    """params.yaml as it is (what ``dvc repro`` runs with), parsed."""
    return resolve(params_file)
