"""Start a training from what another one learned (``train.init``): a weights file on disk or a
registered model version, whose tensors that match the new model in name and shape are
transferred; the rest start fresh.

- :func:`init_for`: ``train.init`` for one detector (one value for all, or a ``{detector: init}`` map).
- :func:`resolve_init`: ``init`` (a ``.pt`` / ``.pth`` path, or ``models:/name@alias`` /
  ``models:/name/version``) -> a local weights file. A registered version is found through the
  MLflow client; its PyTorch weights are the ``.pt`` its training run logged (the version's
  ``train_run_id`` tag, which the promotion sets; else the version's own run).
- :func:`load_weights`: the file -> an ultralytics checkpoint's model (EMA first, as ultralytics
  reads it), or a plain state dict (torchvision's ImageNet weights, ``model.state_dict()``). Only
  names that match transfer: torchvision's MobileNetV3 ``features.<i>...`` are not LAGNet's
  ``model.0.branches.<b>.<stage>.<i>...``, so such a file needs its names mapped first.
- :func:`transfer`: the weights into a model about to train, through ultralytics' own transfer
  (``BaseModel.load``, what its ``pretrained=`` does: ``intersect_dicts`` by name and shape; rows
  of the class-logit tensors remapped by class name; a first convolution of another channel count
  filled across channels), counted: :class:`Transfer`. Nothing matching is an :class:`InitError`.
- :func:`plan_init`: all three on a freshly built model before training starts, so a bad ``init``
  is one error line before any epoch, and the flow can log the count and the source.

``components/train.py``'s trainer calls :func:`load_weights` and :func:`transfer` when it builds
the model (the random initialisation is the seeded one a cold start gets: only the transferred
tensors differ).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
BEST = "weights/best.pt"          # where a training run of this project logs its weights


class InitError(ValueError):
    """``init`` cannot start the training (no such file or version, not weights, nothing matches):
    the CLI prints it as one line."""


@dataclass(frozen=True)
class InitSource:
    """What ``init`` resolved to."""

    init: str                     # as configured: a path or a models:/ URI
    path: Path                    # the local weights file
    sha256: str                   # of that file
    version: str | None = None    # registry version (models:/ only)
    run_id: str | None = None     # the run that logged the weights (models:/ only)

    def where(self) -> str:
        if self.version is None:
            return self.init
        return f"{self.init} (version {self.version}, run {self.run_id})"


@dataclass(frozen=True)
class Transfer:
    """How many of the model's tensors came from the source (``tensors`` of ``total``; ``partial``
    of them in part: class rows remapped by name, a first convolution across channel counts);
    the rest kept their fresh initialisation."""

    source: str
    tensors: int
    total: int
    partial: int = 0
    sha256: str | None = None

    def line(self) -> str:
        part = f", {self.partial} in part" if self.partial else ""
        return (f"init: transferred {self.tensors}/{self.total} tensors{part} from {self.source}; "
                f"{self.total - self.tensors} start fresh")

    def tags(self) -> dict[str, Any]:
        """The MLflow tags of the training run."""
        out = {"init": self.source, "init.tensors": self.tensors, "init.total": self.total,
               "init.partial": self.partial}
        if self.sha256:
            out["init.sha256"] = self.sha256
        return out


def init_for(init: str | Mapping[str, str] | None, model: str, detectors: Iterable[str]) -> str | None:
    """``train.init`` for detector ``model``: the one value for every detector, or its entry of a
    ``{detector: init}`` mapping (a detector not listed starts from scratch; a key that is none of
    ``detectors`` is an :class:`InitError`, not a silent cold start)."""
    if not isinstance(init, Mapping):
        return init or None
    unknown = sorted(set(init) - set(detectors))
    if unknown:
        raise InitError(f"train.init: {', '.join(unknown)} is no detector (known: {', '.join(detectors)})")
    return init.get(model) or None


def resolve_init(init: str | Path, tracking_uri: str | None = None, dst: str | Path = ".cache/init") -> InitSource:
    """``init`` as a local weights file: a path as it is (it must exist), a ``models:/`` URI
    downloaded from the registry at ``tracking_uri`` (MLflow's default when None) into ``dst``."""
    init = str(init).strip()
    m = _MODELS_URI.match(init)
    if init.startswith("models:/") and not m:
        raise InitError(f"init {init!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    if not m:
        path = Path(init).expanduser()
        if not path.is_file():
            raise InitError(f"init {init!r}: no such file")
        return InitSource(init, path, _sha256(path))
    return _from_registry(init, m["name"], m["alias"], m["version"], tracking_uri, Path(dst))


def _from_registry(init: str, name: str, alias: str | None, version: str | None, uri: str | None,
                   dst: Path) -> InitSource:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as e:
        what = f"alias '{alias}'" if alias else f"version {version}"
        raise InitError(f"init {init!r}: the registry has no {what} of model '{name}' "
                        f"({e.message.splitlines()[0] if e.message else e.error_code})") from None
    runs = [r for r in dict.fromkeys((mv.tags.get("train_run_id"), mv.run_id)) if r]
    for run_id in runs:
        found = sorted(_pt_artifacts(client, run_id), key=lambda p: (p != BEST, p))
        if found:
            dst.mkdir(parents=True, exist_ok=True)
            path = Path(client.download_artifacts(run_id, found[0], str(dst / f"{name}-v{mv.version}")))
            return InitSource(init, path, _sha256(path), str(mv.version), run_id)
    raise InitError(f"init {init!r}: version {mv.version} keeps no PyTorch weights (.pt) in its run"
                    f"{'s' if len(runs) > 1 else ''} {', '.join(runs) or '(none)'}")


def _pt_artifacts(client, run_id: str, path: str | None = None):
    for f in client.list_artifacts(run_id, path):
        if f.is_dir:
            yield from _pt_artifacts(client, run_id, f.path)
        elif f.path.endswith(".pt"):
            yield f.path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_weights(path: str | Path):
    """The weights in ``path``: an ultralytics checkpoint's model (its EMA first, as ultralytics
    reads it; loaded with ultralytics' ``torch_safe_load`` and the project's map of moved modules,
    ``components.detectors.legacy``, so old checkpoints load), an
    ``nn.Module`` saved whole, or a plain state dict (tensors by name: torchvision's weights files,
    ``model.state_dict()``; also under a ``state_dict`` / ``model`` key). A plain state dict is read
    with ``weights_only=True``: no code from the file runs."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InitError(f"init '{path}': no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):                     # not a refused class: not a pickle of weights
            raise InitError(f"init '{path}': not a PyTorch weights file") from None
        obj = _checkpoint(path)                                    # pickled classes: a checkpoint
    except (RuntimeError, EOFError, OSError) as e:
        raise InitError(f"init '{path}': not a PyTorch weights file ({_first_line(e)})") from None
    return _weights_of(obj, path)


def _checkpoint(path: Path) -> dict:
    from ultralytics.nn import tasks

    from .detectors import legacy

    if path.suffix.lower() != ".pt":
        raise InitError(f"init '{path}': holds pickled classes, which load from an ultralytics checkpoint (.pt) only")
    legacy.install()                       # the project's moved module paths, as every loader here maps them
    try:
        return tasks.torch_safe_load(str(path))[0]
    except ModuleNotFoundError as e:
        raise InitError(f"init '{path}': its pickled model needs module '{e.name}', which is not installed "
                        f"or was moved") from None
    except (TypeError, AttributeError) as e:
        raise InitError(f"init '{path}': not a loadable checkpoint ({_first_line(e)})") from None


def _weights_of(obj: Any, path: Path):
    import torch

    if isinstance(obj, dict):
        for key in ("ema", "model", "state_dict"):
            if isinstance(obj.get(key), torch.nn.Module):
                return obj[key]
            if isinstance(obj.get(key), dict) and _tensors(obj[key]):
                return dict(obj[key])
        if _tensors(obj):
            return dict(obj)
    if isinstance(obj, torch.nn.Module):
        return obj
    raise InitError(f"init '{path}': holds neither a model nor a state dict of tensors")


def _tensors(d: dict) -> bool:
    import torch

    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values()) and any(
        v.is_floating_point() for v in d.values())


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _as_module(weights):
    """A state dict as ``BaseModel.load`` reads its source: something with ``.float().state_dict()``."""
    import torch

    if isinstance(weights, torch.nn.Module):
        return weights

    class StateDict(torch.nn.Module):
        def __init__(self, state: dict):
            super().__init__()
            self.state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}

        def state_dict(self, *args, **kwargs):
            return dict(self.state)

    return StateDict(weights)


def transfer(model, weights, source: str, names: dict | None = None, sha256: str | None = None) -> Transfer:
    """Load ``weights`` (:func:`load_weights`) into ``model`` (an ultralytics ``BaseModel`` about to
    train) through ultralytics' ``BaseModel.load``; ``names``: the classes the model will learn
    (ultralytics then remaps class-logit rows by class name: a class the source knew by that name
    keeps its row). Returns what came over; :class:`InitError` when nothing did (and ``model`` is
    unchanged)."""
    import torch

    source_model = _as_module(weights)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    loaded: list[set[str]] = []             # what ultralytics hands to load_state_dict: the name + shape matches
    hook = model.register_load_state_dict_pre_hook(lambda m, state, *args: loaded.append(set(state)))
    if names:
        model.names = dict(names)
    try:
        model.load(source_model, verbose=False)
    finally:
        hook.remove()
    after = model.state_dict()
    whole = set(after) & loaded[-1] if loaded else set()
    partial = {k for k, v in after.items() if k not in whole and k in before and before[k].shape == v.shape
               and not torch.equal(before[k], v)}
    t = Transfer(source, len(whole) + len(partial), len(after), len(partial), sha256)
    if not t.tensors:
        src = next(iter(source_model.state_dict()), "?")
        raise InitError(f"init {source}: no tensor matches the model by name and shape (the source has e.g. "
                        f"'{src}', the model '{next(iter(after), '?')}'): nothing to transfer")
    log.info(t.line())
    return t


def plan_init(init: str | Path, model_cfg: str | Path, names: list[str], ch: int = 3, tracking_uri: str | None = None,
              dst: str | Path = ".cache/init") -> tuple[InitSource, Transfer]:
    """``init`` resolved (:func:`resolve_init`) and transferred into the model ``model_cfg`` builds
    (classes ``names``, ``ch`` input channels) as a dry run, before a training starts: the training
    transfers the same tensors. Raises :class:`InitError` (one line) on a bad ``init``."""
    from .models.detect import DefectDetectionModel

    src = resolve_init(init, tracking_uri, dst)
    model = DefectDetectionModel(str(model_cfg), nc=len(names), ch=ch, verbose=False)
    return src, transfer(model, load_weights(src.path), src.where(), dict(enumerate(names)), src.sha256)
