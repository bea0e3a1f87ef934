"""params.yaml as typed, frozen settings, parsed once.

``resolve(params_file, layers)`` is the one place where params.yaml and what overrides it meet:
a profile (``profiles/*.yaml``), a tuning study's decision (``models/tuned/<model>.json``), a
trial's point, ``--set`` on a benchmark command. Each layer is a ``{dotted.key: value}`` mapping
with a name; the result is a :class:`Settings` tree of frozen dataclasses, one per params.yaml
section, checked on the way in (unknown or missing keys, wrong types, values outside a choice
list: one :class:`~components.config.ConfigError` line naming the key). ``Settings.overrides``
records which layer set which key to what, and the flows log it on their MLflow run
(``defectops.overrides``) beside the values the run used.

Flows read attributes (``params.loss.iou``, ``params.lam.alpha``): a typo is an AttributeError at
once, not a KeyError deep in a task, and ``tests/test_dvc_params.py`` derives each DVC stage's
reads from those attribute chains. Components receive plain values or single sections, never
params.yaml itself. Importing this module is light (no torch, no ultralytics).
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping, Union

from .config import ConfigError, apply_overrides, load_params, section
from .decision import REQUIREMENTS, RULES

IOU_LOSSES = ("ciou", "eiou", "mpdiou", "piou", "shape_iou", "siou", "uiou")   # the one list (models.iou uses it)
Device = Union[str, int]          # cpu | 0 | "0,1"


@typing.dataclass_transform(frozen_default=True)     # type checkers: subclasses are frozen dataclasses
class _Section:
    """Base of every section, each a frozen dataclass (made so here, for every subclass):
    ``plain()`` gives the section back as params.yaml wrote it (lists, dicts), for logging,
    hashing and components that take a mapping."""

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        dataclass(frozen=True)(cls)

    def plain(self) -> Any:
        return _plain(self)


def _plain(v: Any) -> Any:
    if isinstance(v, Train):
        return _plain(v.args)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v) if f.metadata.get("yaml", True)}
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return types.MappingProxyType({k: _freeze(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


class Paths(_Section):
    """``paths``: the roots every stage reads and writes under (``components.layout.Layout``)."""

    datasets: str
    splits: str
    models: str
    metrics: str
    plots: str
    reports: str
    exports: str
    lams: str
    work: str


class Synth(_Section):
    """``data.synth``: the embedded synthetic dataset (``components.data.synth`` renders it; it is
    that module's ``SynthConfig``). params.yaml must set every knob (the parser uses no defaults;
    ``clean_fraction``'s 0 is for configs built in code)."""

    seed: int
    images: int
    size: int                 # square images, px
    min_defects: int
    max_defects: int
    contrast: tuple[float, float]   # defect strength as a fraction of full scale
    leather_fraction: float
    jpeg_quality: int
    bold: bool                # thicker strokes; shorter, axis-aligned scratches; larger flakes; pits and
                              # flakes inside a square around their centre (tight, consistent boxes)
    clean_fraction: float = 0.0     # share of images rendered without defects (background only)

    def __post_init__(self) -> None:
        if self.images < 1 or self.size < 64:
            raise ConfigError("data.synth: need images >= 1 and size >= 64")
        if not 0 <= self.clean_fraction < 1:
            raise ConfigError(f"data.synth.clean_fraction must be in [0, 1) (got {self.clean_fraction})")
        if not 1 <= self.min_defects <= self.max_defects:
            raise ConfigError("data.synth: need 1 <= min_defects <= max_defects")
        lo, hi = self.contrast
        if not 0 < lo <= hi <= 1:
            raise ConfigError("data.synth.contrast must be [lo, hi] with 0 < lo <= hi <= 1")


class Data(_Section):
    """``data``: the dataset (embedded synthetic or imported), its import checks and the inbox increments."""

    name: str
    source: str
    format: Literal["auto", "voc", "yolo"]
    classes: Union[tuple[str, ...], None]
    clip_px: float
    near_dup_bits: Union[int, None]
    min_class_boxes: int
    follow_symlinks: Literal["never", "inside"]
    increments: str
    synth: Synth


class Split(_Section):
    """``split``: the stratified train / val / test split (+ k folds of the training part)."""

    seed: int
    test_ratio: float
    val_ratio: float
    folds: int
    tolerance: float          # max deviation of image / class box shares from the ratios before rebalancing

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"split.tolerance must be in [0, 1) (got {self.tolerance})")


class Train(_Section):
    """ultralytics' train arguments shared by every detector. The fields the pipeline itself uses
    are typed; ``args`` holds every key of the section (any other ultralytics train argument may be
    added to params.yaml; ultralytics checks those)."""

    device: Device
    seed: int
    imgsz: int
    epochs: int
    batch: int
    threads: Union[int, Literal["auto"], None]
    args: Mapping[str, Any] = field(default_factory=dict, metadata={"yaml": False})

    def ultralytics(self) -> dict:
        """The arguments ultralytics' trainer takes, minus ``device`` and ``seed`` (passed apart)."""
        return {k: v for k, v in _plain(self.args).items() if k not in ("device", "seed")}


class Loss(_Section):
    """``loss``: the box-regression IoU loss of every detector (``components.models.iou``)."""

    iou: Literal[IOU_LOSSES]  # type: ignore[valid-type]


class Baseline(_Section):
    """``baseline``: YOLO11 at a scale, built from ultralytics' own YAML."""

    scale: Literal["n", "s", "m", "l", "x"]


class Dasc(_Section):
    """``dasc``: DASC-YOLO = YOLO11 + its modules, each switchable (``components.dasc.config``)."""

    scale: Literal["n", "s", "m", "l", "x"]
    rescbam: bool
    cbam: bool
    csa: Literal["off", "weighted", "unweighted"]
    scconv: bool
    protonet_k: int
    gate: Literal["none", "zero"]
    csa_context: Literal["global", "local"]
    proto_loss: float


class Lam(_Section):
    """``lam``: the Location Activation Maps (lagnet.md eq. 1) LAGNet reads, made from the baseline."""

    mode: Literal["in_sample", "out_of_fold"]
    folds: int
    alpha: float
    beta: float
    normalize: Literal["none", "image_max", "quantile"]
    quantile: float
    batch: int
    device: Device
    grid_samples: int


class Lagnet(_Section):
    """``lagnet``: LAGNet (``components.lagnet.config``), trained on RGB + LAM."""

    variant: Literal["small", "large"]
    width: int
    k: int
    n: int
    lam: bool
    scem: bool


class Latency(_Section):
    """``evaluate.latency``: the eager PyTorch forward timing."""

    batch: int
    runs: int
    warmup: int


class Bootstrap(_Section):
    """``evaluate.bootstrap``: the paired bootstrap of the mAP50 gain (``components.bootstrap``)."""

    resamples: int
    seed: int


class Evaluate(_Section):
    """``evaluate``: held-out metrics, plots, speed and the gain over the baseline."""

    split: Literal["train", "val", "test"]
    device: Device
    batch: int
    conf: float
    iou: float
    latency: Latency
    bootstrap: Bootstrap


class Export(_Section):
    """``export``: ONNX export and its ONNX Runtime parity checks; the end-to-end graph with NMS."""

    opset: int
    dynamic: bool
    parity_images: int
    parity_rtol: float
    pipeline_rtol: float
    nms_conf: float
    nms_iou: float
    max_det: int


class Tune(_Section):
    """``tune``: one Optuna study per detector (``components.tune``); ``space`` as params.yaml writes it."""

    trials: int
    epochs: int
    warmup_epochs: int
    min_gain: float
    min_score: float
    parallel: int
    seed: int
    pruner: Literal["median", "hyperband", "none"]
    study: str
    storage: str
    space: Mapping[str, Any]      # per detector: {key: list | {low, high} | null} (components.tune)


class Promote(_Section):
    """``promote``: best evaluated detector -> ONNX -> registry alias, through the gate."""

    registered_model: str
    candidates: tuple[str, ...]
    metric: str
    gate: Literal["margin", "bootstrap"]
    margin: float
    require: Mapping[str, float]
    lock_file: str

    def __post_init__(self) -> None:
        bad = sorted(set(self.require) - set(REQUIREMENTS))
        if bad:
            raise ConfigError(f"params.yaml: promote.require: unknown key(s) {', '.join(bad)} "
                              f"(known: {', '.join(REQUIREMENTS)})")
        for k, v in self.require.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"params.yaml: promote.require.{k} must be a number (got {v!r})")


class Decision(_Section):
    """``decision``: the per-class confidence thresholds a promoted model ships with, chosen on the
    validation split (``components.decision``)."""

    rule: Literal[RULES]
    recall: float
    precision: float
    unseen_conf: float

    def __post_init__(self) -> None:
        for k in ("recall", "precision", "unseen_conf"):
            if not 0 < getattr(self, k) <= 1:
                raise ConfigError(f"params.yaml: decision.{k} must be in (0, 1] (got {getattr(self, k)!r})")


class Retrain(_Section):
    """``retrain``: the inbox, its archive and the scheduled retraining (``defectops retrain``)."""

    inbox: str
    archive: str
    schedule: str
    timezone: str
    warm_start: bool
    git_commit: bool


class Predict(_Section):
    """``predict``: ``defectops predict`` defaults."""

    conf: Union[float, None]
    iou: float
    out: str


class Ablation(_Section):
    """``ablation``: the papers' ablation grids (``defectops ablate``)."""

    epochs: int
    rows: Union[Literal["all"], tuple[str, ...]]
    lagnet_rows: Union[Literal["all"], tuple[str, ...]]


class Tracking(_Section):
    """``tracking``: the MLflow experiment and store (``MLFLOW_TRACKING_URI`` wins over ``uri``)."""

    experiment: str
    uri: str


@dataclass(frozen=True)
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
    ablation: Ablation
    tracking: Tracking
    overrides: tuple[Override, ...] = field(default=(), metadata={"yaml": False})

    @classmethod
    def parse(cls, params: Mapping[str, Any], overrides: tuple[Override, ...] = ()) -> "Settings":
        """Check a params tree (params.yaml, merged) and build the settings; one ConfigError line
        naming the first bad key otherwise."""
        if not isinstance(params, Mapping):
            raise ConfigError("params.yaml: the top level must be a mapping")
        s = _build(cls, params, "")
        return dataclasses.replace(s, overrides=tuple(overrides))

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


def _build(tp: type, node: Any, where: str) -> Any:
    hints = typing.get_type_hints(tp)
    if not isinstance(node, Mapping):
        raise ConfigError(f"params.yaml: '{where.rstrip('.')}' must be a mapping, got {node!r}")
    own = [f for f in fields(tp) if f.metadata.get("yaml", True)]
    names = {f.name for f in own}
    if tp is not Train:
        extra = sorted(set(node) - names)
        if extra:
            raise ConfigError(f"params.yaml: unknown key '{where}{extra[0]}'")
    kw = {}
    for f in own:
        if f.name not in node:
            raise ConfigError(f"params.yaml has no key '{where}{f.name}'")
        kw[f.name] = _value(hints[f.name], node[f.name], f"{where}{f.name}")
    if tp is Train:
        kw["args"] = _freeze(dict(node))
    return tp(**kw)


def _value(tp: Any, v: Any, key: str) -> Any:
    origin, targs = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, type) and issubclass(tp, _Section):
        return _build(tp, v, key + ".")
    if origin is Union:
        for t in targs:
            try:
                return _value(t, v, key)
            except ConfigError:
                continue
        raise ConfigError(f"params.yaml: {key} = {v!r} is none of {_describe(tp)}")
    if origin is Literal:
        if v not in targs or isinstance(v, bool):
            raise ConfigError(f"params.yaml: {key} must be one of {', '.join(map(str, targs))} (got {v!r})")
        return v
    if tp is type(None):
        if v is not None:
            raise ConfigError(f"params.yaml: {key} must be null (got {v!r})")
        return None
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"params.yaml: {key} must be a list (got {v!r})")
        if len(targs) == 2 and targs[1] is Ellipsis:
            return tuple(_value(targs[0], x, f"{key}[{i}]") for i, x in enumerate(v))
        if len(v) != len(targs):
            raise ConfigError(f"params.yaml: {key} must be a list of {len(targs)} (got {v!r})")
        return tuple(_value(t, x, f"{key}[{i}]") for i, (t, x) in enumerate(zip(targs, v)))
    if origin in (collections.abc.Mapping, dict) or tp is Mapping:
        if not isinstance(v, Mapping):
            raise ConfigError(f"params.yaml: {key} must be a mapping (got {v!r})")
        return _freeze(dict(v))
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"params.yaml: {key} must be true or false (got {v!r})")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"params.yaml: {key} must be an integer (got {v!r})")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"params.yaml: {key} must be a number (got {v!r})")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"params.yaml: {key} must be a string (got {v!r})")
        return v
    if tp is Any:
        return _freeze(v)
    raise TypeError(f"settings: no rule for {tp!r} ({key})")


def _describe(tp: Any) -> str:
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


def load_settings(params_file: str | Path = "params.yaml") -> Settings:
    """params.yaml as it is (what ``dvc repro`` runs with), parsed."""
    return resolve(params_file)
