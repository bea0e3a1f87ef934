"""Train a detector through ultralytics' trainer (the public seam: a ``DetectionTrainer``
subclass whose ``get_model`` builds the project's model), from a model YAML, from scratch,
offline.

Each detector's model YAML comes from its package (``components/detectors/<name>/config.py``:
ultralytics' own ``yolo11<scale>.yaml`` for the baseline, nothing is downloaded; generated ones for
DASC-YOLO and LAGNet); a detector that reads a LAM trains on RGB + LAM
(``components/detectors/lagnet/data.py``).
"""

from __future__ import annotations

import csv
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import RANK
from ultralytics.utils.patches import override_configs
from ultralytics.utils.torch_utils import unwrap_model

from .detectors.lagnet.data import LamTrainerMixin
from .models.detect import DefectDetectionModel
from .models.iou import IOU_LOSSES
from .transfer import Transfer, load_weights, transfer
from .yolo import YOLO

log = logging.getLogger(__name__)

EpochCallback = Callable[[int | None, dict[str, float]], None]

# train args owned by this module / the pipeline, not by params.train
_RESERVED = {"data", "project", "name", "exist_ok", "device", "seed", "pretrained", "model",
             "resume", "plots"}


class DefectTrainer(DetectionTrainer):
    """ultralytics' detection trainer building the project's ``DefectDetectionModel``; its box
    loss is the one named in the model YAML it rebuilds from (``iou_loss``, which
    ``train_detector`` sets; see ``components/models/loss.py``). ``LamTrainer`` reads RGB + LAM.

    Each epoch tells the loss how far training is (Unified-IoU's box scaling schedule), and
    ``final_eval`` (validation of best.pt after the last epoch) is flagged, so epoch callbacks
    can tell it from a training epoch.
    """

    in_final_eval = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback("on_train_epoch_start", _set_loss_progress)
        init = self.args.pretrained         # a weights file (train.init, a warm start): see setup_model
        self.init, self.transferred = (str(init) if isinstance(init, (str, Path)) and not self.resume else None), None

    def setup_model(self):
        """ultralytics' own, with ``pretrained`` read by components.transfer in get_model instead of
        ultralytics' load_checkpoint (which reads ultralytics checkpoints only)."""
        with override_configs(self.args, {"pretrained": True} if self.init else None):
            return super().setup_model()

    def get_model(self, cfg=None, weights=None, verbose=True):
        model = DefectDetectionModel(cfg, nc=self.data["nc"], ch=self.data.get("channels", 3),
                                     verbose=verbose and RANK == -1)
        if self.init:                       # after the seeded build: the rest starts as a cold start would
            self.transferred = transfer(model, load_weights(self.init), self.init, self.data["names"])
        elif weights:
            model.load(weights)
        return model

    def final_eval(self):
        self.in_final_eval = True
        try:
            super().final_eval()
        finally:
            self.in_final_eval = False


def _set_loss_progress(trainer: DetectionTrainer) -> None:
    crit = getattr(unwrap_model(trainer.model), "criterion", None)
    if crit is not None and hasattr(crit.bbox_loss, "progress"):
        crit.bbox_loss.progress = trainer.epoch / max(1, trainer.epochs - 1)


class DefectYOLO(YOLO):
    """ultralytics' ``YOLO`` whose detection models are ``DefectDetectionModel`` (a model YAML's
    ``channels`` are kept: LAGNet takes 6)."""

    @property
    def task_map(self):
        m = super().task_map
        m["detect"] = {**m["detect"], "model": DefectDetectionModel}
        return m


class LamTrainer(LamTrainerMixin, DefectTrainer):
    """``DefectTrainer`` on RGB + LAM (the data YAML names the LAM folder; LAGNet)."""


@dataclass
class TrainResult:
    out_dir: Path
    best: Path
    last: Path
    results_csv: Path
    final: dict[str, float]       # last row of results.csv (val metrics of the last epoch)
    epochs_run: int
    init: Transfer | None = None  # what the start weights (``init_weights``) gave: components.transfer


@dataclass(frozen=True)
class TrainRequest:
    """One training: what to train (``model_cfg``, a model YAML, never a ``.pt`` to fetch), on what
    (``data_yaml``), where (``out_dir``) and how: ``train_args`` are ultralytics train arguments
    from params (epochs, imgsz, batch, optimizer, lr0, ... and augmentation), ``iou_loss`` the box
    regression loss (written into the run's copy of the model YAML, :func:`model_yaml`; a resumed
    run keeps its checkpoint's). ``lam``: the model reads RGB + LAM (``data_yaml`` names the LAM
    folder). ``init_weights``: weights to start from (``train.init``, a warm start): the tensors
    that match by name and shape are transferred (``components.transfer``; the result's ``init``
    counts them), the rest start fresh. ``resume``: continue the interrupted run in ``out_dir``
    from its ``weights/last.pt`` (ultralytics' resume: epoch, optimizer, EMA, LR schedule), else
    ``out_dir`` is cleared and training starts over. ``threads``: torch's intra-op threads for a
    CPU training (ultralytics sets cores - 1, one on a 2-core machine, when it picks the device;
    this is applied after that): an int, ``"auto"`` (every core, :func:`resolve_threads`) or None
    (ultralytics' choice); ``train_args["threads"]`` (params ``train.threads``) is used when it is
    None. Plain values only: the request travels to the training process."""

    model_cfg: str | Path
    data_yaml: Path
    out_dir: Path
    train_args: dict
    device: str
    seed: int
    iou_loss: str
    lam: bool = False
    init_weights: str | Path | None = None
    resume: bool = False
    threads: int | str | None = None


def same_architecture(model_cfg: str | Path, weights: str | Path, nc: int, ch: int = 3) -> tuple[bool, str]:
    """Does checkpoint ``weights`` fit the model ``model_cfg`` builds, tensor for tensor (same
    names and shapes)? Warm starts only load a checkpoint that does."""
    from ultralytics.nn.tasks import load_checkpoint

    new = DefectDetectionModel(str(model_cfg), nc=nc, ch=ch, verbose=False).state_dict()
    old = load_checkpoint(str(weights))[0].float().state_dict()
    if new.keys() != old.keys():
        return False, f"{len(set(new) ^ set(old))} tensors differ by name"
    bad = [k for k in new if new[k].shape != old[k].shape]
    return (not bad), (f"{len(bad)} tensors differ in shape (e.g. {bad[0]})" if bad else "all tensors match")


def training_key(req: TrainRequest, data_hash: str | None, init: str | None) -> str:
    """A hash of what a training's result depends on: the model YAML (its text), the trainer
    arguments, device, seed, box loss, LAM input, the data (``data_hash``) and the start weights
    (``init``: what they are, e.g. ``models:/defect-detector/3``; None for a cold start)."""
    from .settings import params_hash

    cfg = Path(req.model_cfg)
    return params_hash({"cfg": cfg.read_text() if cfg.is_file() else str(req.model_cfg), "args": req.train_args,
                        "device": req.device, "seed": req.seed, "iou": req.iou_loss, "lam": req.lam,
                        "data": data_hash, "init": init})


@dataclass(frozen=True)
class ScratchRun:
    """A training's folder in scratch (DVC clears a stage's outs before a rerun; scratch survives),
    with the :func:`training_key` of its inputs beside it (``<run_dir>.key``): an interrupted run
    whose key is the same resumes from its ``last.pt``; a finished one is moved to its output."""

    run_dir: Path
    key: str

    @property
    def key_file(self) -> Path:
        return self.run_dir.with_name(self.run_dir.name + ".key")

    def resumable(self) -> bool:
        f = self.key_file
        return f.is_file() and f.read_text() == self.key and (self.run_dir / "weights" / "last.pt").is_file()

    def claim(self) -> None:
        """A fresh run starts here: its key is written first."""
        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        self.key_file.write_text(self.key)

    def finish(self, out: Path) -> None:
        """The finished run becomes ``out`` (replacing it); the key goes (the architecture and its
        loss are next to the weights: :func:`model_yaml`)."""
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(self.run_dir), str(out))
        self.key_file.unlink()


def resolve_threads(value: int | str | None, share: int = 1) -> int | None:
    """``train.threads`` as a thread count: ``"auto"`` = this machine's cores divided among
    ``share`` trainings side by side (at least 1); an int as it is; None stays None."""
    import os

    if value is None:
        return None
    if value == "auto":
        return max(1, (os.cpu_count() or 1) // max(1, share))
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"train.threads must be a positive int, 'auto' or null (got {value!r})")
    return value


def model_yaml(model_cfg: str | Path, iou_loss: str, out_dir: Path) -> Path:
    """``model_cfg`` with ``iou_loss`` in it, written as ``out_dir/<its file name>`` (the name keeps
    ultralytics' scale guess): the model YAML the run trains, kept beside its weights. ultralytics'
    trainer (and a multi-GPU launch) rebuilds the model from this file, so the loss travels with it."""
    import yaml
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load(model_cfg)
    cfg.pop("yaml_file", None)
    cfg["iou_loss"] = iou_loss
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / Path(model_cfg).name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def train_detector(req: TrainRequest, on_epoch: EpochCallback | None = None) -> TrainResult:
    """Train as ``req`` says (:class:`TrainRequest`) into ``req.out_dir``. ``on_epoch(epoch,
    metrics)`` is called after each epoch's validation with the losses, val metrics and learning
    rates, and once more with ``epoch=None`` and the val metrics of best.pt (keys prefixed ``best/``).
    """
    model_cfg, data_yaml, iou_loss, init_weights = req.model_cfg, req.data_yaml, req.iou_loss, req.init_weights
    device, seed = req.device, req.seed
    train_args = dict(req.train_args)
    threads = resolve_threads(train_args.pop("threads", None) if req.threads is None else req.threads)
    if not str(model_cfg).endswith((".yaml", ".yml")):
        raise ValueError(f"train from a model YAML, not '{model_cfg}' (no weights are downloaded)")
    if iou_loss not in IOU_LOSSES:                  # before out_dir is cleared
        raise ValueError(f"loss.iou must be one of {', '.join(IOU_LOSSES)} (got '{iou_loss}')")
    clash = _RESERVED & set(train_args)
    if clash:
        raise ValueError(f"params.train must not set {sorted(clash)}: the pipeline sets them")
    out_dir = Path(req.out_dir).resolve()
    last = out_dir / "weights" / "last.pt"
    resume = req.resume and last.is_file()
    if out_dir.exists() and not resume:
        shutil.rmtree(out_dir)
    model = DefectYOLO(str(last) if resume else model_yaml(model_cfg, iou_loss, out_dir))
    trainer = LamTrainer if req.lam else DefectTrainer
    if on_epoch is not None:
        def _cb(tr: DetectionTrainer) -> None:
            if getattr(tr, "in_final_eval", False):
                on_epoch(None, {f"best/{k}": float(v) for k, v in tr.metrics.items()})
                return
            metrics = {**tr.label_loss_items(tr.tloss, prefix="train"), **tr.metrics, **tr.lr}
            on_epoch(tr.epoch + 1, {k: float(v) for k, v in metrics.items()})

        model.add_callback("on_fit_epoch_end", _cb)
    if threads:
        def _threads(tr: DetectionTrainer) -> None:
            import torch

            torch.set_num_threads(int(threads))

        model.add_callback("on_pretrain_routine_start", _threads)
    if resume:
        log.info("resuming %s from %s", out_dir, last)
        model.train(trainer=trainer, resume=True, data=str(data_yaml), device=device,
                    workers=train_args.get("workers", 0), plots=True)
    else:
        model.train(trainer=trainer, data=str(data_yaml), project=str(out_dir.parent),
                    name=out_dir.name, exist_ok=True, device=device, seed=seed,
                    pretrained=str(init_weights) if init_weights else False, plots=True, **train_args)
    results_csv = out_dir / "results.csv"
    rows = list(csv.DictReader(results_csv.open())) if results_csv.is_file() else []
    final = {k.strip(): float(v) for k, v in rows[-1].items()} if rows else {}
    best = out_dir / "weights" / "best.pt"
    if not best.is_file():
        raise RuntimeError(f"training finished without {best}")
    return TrainResult(out_dir, best, last, results_csv, final, len(rows), getattr(model.trainer, "transferred", None))


def train_detector_isolated(req: TrainRequest, on_epoch: EpochCallback | None = None) -> TrainResult:
    """:func:`train_detector` in a fresh interpreter (a spawned child process), returning its
    result or raising its error.

    Why: on CPU ultralytics augments in the training process itself (it sets ``workers=0``) and
    draws from Python's global ``random``. Inside a Prefect flow a background thread draws from
    that same generator at wall-clock times (the events client's websocket pings,
    ``websockets``' ``random.getrandbits``), so two runs of one stage trained on different
    augmentation streams. A child process has no such threads: a stage's training repeats bit for
    bit, as a direct call does (``benchmarks/results/repro_check.md``). The arguments, including
    ``on_epoch``, must pickle (a module-level callable, not a closure); the child inherits
    stdout/stderr, so ultralytics' progress shows as before.
    """
    import multiprocessing as mp
    import sys

    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file and getattr(main, "__spec__", None) is None and not Path(main_file).is_file():
        log.warning("training in this process: a child cannot re-import this program's main module (%s); "
                    "inside a Prefect flow the training may then not repeat bit for bit", main_file)
        return train_detector(req, on_epoch)
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_train_child, args=(send, req, on_epoch), name="defectops-train")
    child.start()
    send.close()
    try:
        ok, value = recv.recv()
    except EOFError:                        # killed (OOM, signal) before it could answer
        child.join()
        raise RuntimeError(f"the training process died (exit code {child.exitcode}) without a result") from None
    except BaseException:                   # Ctrl-C / cancellation here: stop the child too
        child.terminate()
        child.join()
        raise
    child.join()
    if not ok:
        raise value
    return value


def _train_child(send, req: TrainRequest, on_epoch: EpochCallback | None) -> None:
    import multiprocessing as mp
    import os
    import pickle
    import threading

    def orphaned() -> None:                 # the parent was killed (e.g. SIGKILL): do not train on alone
        mp.parent_process().join()
        os._exit(1)

    threading.Thread(target=orphaned, name="defectops-parent-watch", daemon=True).start()
    try:
        result = (True, train_detector(req, on_epoch))
    except BaseException as e:  # noqa: BLE001  (handed to the parent, which raises it)
        try:
            pickle.dumps(e)
            result = (False, e)
        except Exception:  # noqa: BLE001  (an exception that does not pickle: its type and message)
            result = (False, RuntimeError(f"{type(e).__name__}: {e}"))
    send.send(result)
    send.close()
