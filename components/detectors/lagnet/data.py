"""RGB + LAM data path for LAGNet through ultralytics' dataset / trainer / validator seams.

Each image is read with its baseline confidence map (``<lam dir>/<image stem>.png``, 8-bit grey,
made by ``lam.py``) and a constant *valid* channel (255), stacked into one 5-channel
array (BGR, confidence, valid) *before* any augmentation, so mosaic, mixup, flips, the random
affine and the letterbox move image, map and boxes together (ultralytics' augmentations are
channel-agnostic; its ``Format`` only swaps BGR->RGB for 3-channel arrays, ``LamFormat`` does it
for the colour part). Colour augmentation (HSV) touches the colour part only.

The LAM itself is made on the batch, after augmentation, by ``to_rgb_lam`` in the trainer's and
validator's ``preprocess``: confidence -> ``JET(round(255 c))`` -> blended with the (augmented)
RGB by ``lam.lam_blend``, the same function, order and resolution as the served
one-graph model. Padding that augmentation or the letterbox adds is 114 in every channel; the
valid channel tells it apart (< 184.5) and the confidence there is set to 0. The maps are stored
at the loader's scale, so an un-augmented image meets its map without a resample; validation
runs at the served framing (square letterbox, ``build_lam_dataset``), where the file path's LAM
equals the served one up to the baseline's float rounding (the stored byte is the JET index);
augmented training LAMs differ from a served LAM of the same augmented picture only by the
grey map's resampling, not by resampled colours.

The data YAML carries ``lam: <dir>``, the blend of the ``LamCoding`` (``lam_alpha``, ``lam_beta``)
and ``channels: 6`` (what the model takes, so ultralytics sizes warm-up tensors right); images are decoded as 3-channel colour.
"""

from __future__ import annotations

import functools
import random
from copy import copy
from pathlib import Path

import cv2
import numpy as np
from ultralytics.data.augment import Compose, Format, RandomHSV
from ultralytics.data.dataset import YOLODataset
from ultralytics.data.utils import get_split_fraction
from ultralytics.models.yolo.detect import DetectionTrainer, DetectionValidator
from ultralytics.utils import colorstr
from ultralytics.utils.torch_utils import unwrap_model

from .coding import LamCoding
from .lam import jet_table, lam_blend, lam_path  # noqa: F401  (lam_path: re-exported)

RGB_CONF_ORDER = [2, 1, 0, 3, 4]       # BGR, conf, valid (OpenCV) -> RGB, conf, valid
PAD = 114                              # ultralytics' fill value for mosaic / affine / letterbox
VALID_MIN = (PAD + 255) / 2 / 255      # valid channel above this (in [0, 1]): an image pixel


class RgbOnlyHSV(RandomHSV):
    """ultralytics' HSV jitter on the colour part of a BGR + map array (the maps are left alone)."""

    def apply_image(self, labels, params=None):
        img = labels["img"]
        if img.ndim != 3 or img.shape[-1] <= 3:
            return super().apply_image(labels, params)
        rgb = {"img": np.ascontiguousarray(img[..., :3])}
        super().apply_image(rgb, params)
        img[..., :3] = rgb["img"]
        return labels


class LamFormat(Format):
    """``Format`` for BGR + confidence + valid arrays: BGR->RGB on the colour part only."""

    def _format_img(self, img: np.ndarray):
        if img.ndim == 3 and img.shape[-1] == 5:
            import torch

            img = img.transpose(2, 0, 1)
            if random.uniform(0, 1) > self.bgr:
                img = img[RGB_CONF_ORDER]
            return torch.from_numpy(np.ascontiguousarray(img))
        return super()._format_img(img)


def _swap_hsv(t) -> None:
    """Replace every ``RandomHSV`` inside a (nested) ``Compose`` with ``RgbOnlyHSV``."""
    items = t.transforms if isinstance(t, Compose) else []
    for i, x in enumerate(items):
        if type(x) is RandomHSV:
            y = RgbOnlyHSV.__new__(RgbOnlyHSV)
            y.__dict__.update(x.__dict__)
            items[i] = y
        else:
            _swap_hsv(x)


def to_rgb_lam(img, coding: LamCoding = LamCoding()):
    """A ``(B, 5, H, W)`` batch in [0, 1] (RGB, confidence, valid) -> ``(B, 6, H, W)`` RGB + LAM, the
    model's input: the confidence of padded pixels (valid channel <= ``VALID_MIN``) is 0, then
    ``lam.lam_blend`` codes and blends it with the RGB (``coding``'s blend), as the served graph does."""
    import torch

    if img.ndim != 4 or img.shape[1] != 5:
        raise ValueError(f"expected a (B, 5, H, W) RGB + confidence + valid batch, got {tuple(img.shape)}")
    rgb = img[:, :3]
    conf = torch.where(img[:, 4] > VALID_MIN, img[:, 3], torch.zeros_like(img[:, 3]))
    return torch.cat([rgb, lam_blend(rgb, conf, _jet_on(img.device), coding)], 1)


@functools.lru_cache(maxsize=None)
def _jet_on(device):
    """The JET table on ``device``, made once per device (``to_rgb_lam`` runs on every batch)."""
    return jet_table(device)


def batch_to_rgb_lam(batch: dict, data: dict) -> dict:
    """``to_rgb_lam`` on ``batch["img"]`` with the blend of the data YAML (``LamCoding.of_data``):
    the trainer's and the validator's last preprocessing step."""
    batch["img"] = to_rgb_lam(batch["img"], LamCoding.of_data(data))
    return batch


def read_conf(image: str | Path, lam_dir: str | Path) -> np.ndarray:
    """``image``'s stored confidence map (8-bit grey, ``<lam dir>/<stem>.png``), checked."""
    f = lam_path(lam_dir, image)
    conf = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
    if conf is None:
        raise FileNotFoundError(f"unreadable confidence map {f}: re-run `defectops lam`")
    if conf.ndim != 2:
        raise ValueError(f"{f} is not a grey confidence map (shape {conf.shape}; LAM folders made before "
                         "the maps were stored grey): re-run `defectops lam`")
    return conf


def stack_conf(im: np.ndarray, conf: np.ndarray) -> np.ndarray:
    """``im`` (BGR) stacked with ``conf`` (resized to ``im`` if it differs) and the valid channel
    (255): the ``(H, W, 5)`` uint8 array ``LamDataset`` augments."""
    if conf.shape[:2] != im.shape[:2]:
        conf = cv2.resize(conf, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.concatenate([im, conf[..., None], np.full_like(conf[..., None], 255)], axis=2)


def with_conf(im: np.ndarray, image: str | Path, lam_dir: str | Path) -> np.ndarray:
    """``im`` (BGR, possibly resized on load) stacked with ``image``'s confidence map (resized to
    ``im``) and the valid channel (255): the ``(H, W, 5)`` uint8 array ``LamDataset`` augments."""
    return stack_conf(im, read_conf(image, lam_dir))


def read_rgb_conf(image: str | Path, lam_dir: str | Path) -> np.ndarray:
    """``with_conf`` for an image file, the image resized (bilinear) to its map's size, the loader's
    scale, as ``LamDataset`` and the letterbox resize it."""
    im = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if im is None:
        raise FileNotFoundError(f"cannot read image {image}")
    conf = read_conf(image, lam_dir)
    if conf.shape != im.shape[:2]:
        im = cv2.resize(im, (conf.shape[1], conf.shape[0]), interpolation=cv2.INTER_LINEAR)
    return stack_conf(im, conf)


def file_lam_batch(images: list, lam_dir: str | Path, imgsz: int, coding: LamCoding = LamCoding()):
    """The ``(B, 6, imgsz, imgsz)`` float RGB + LAM batch the validation path feeds LAGNet for
    ``images`` (square letterbox, maps from ``lam_dir``): for comparing with the served LAM."""
    import torch
    from ultralytics.data.augment import LetterBox

    lb = LetterBox((imgsz, imgsz), auto=False)
    x = np.stack([lb(image=read_rgb_conf(p, lam_dir)).transpose(2, 0, 1)[RGB_CONF_ORDER] for p in images])
    return to_rgb_lam(torch.from_numpy(np.ascontiguousarray(x)).float() / 255.0, coding)


class LamDataset(YOLODataset):
    """``YOLODataset`` yielding BGR + confidence map + valid (5 channels, ``to_rgb_lam`` makes the
    model's 6). ``data["lam"]`` is the confidence-map folder."""

    format_class = LamFormat

    def __init__(self, *args, data: dict, **kwargs):
        if not data.get("lam"):
            raise ValueError("the data YAML has no 'lam' folder: LAGNet needs the LAM stage's output")
        self.lam_dir = Path(data["lam"])
        super().__init__(*args, data={**data, "channels": 3}, **kwargs)   # decode images as colour
        missing = [f for f in self.im_files if not lam_path(self.lam_dir, f).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) have no LAM in {self.lam_dir} (e.g. "
                                    f"{lam_path(self.lam_dir, missing[0]).name}): run `defectops lam`")

    def load_image(self, i: int, rect_mode: bool = True):
        im, hw0, hw = super().load_image(i, rect_mode)
        if im.ndim == 3 and im.shape[2] == 5:             # the RAM/buffer copy is already fused
            return im, hw0, hw
        fused = with_conf(im, self.im_files[i], self.lam_dir)
        if self.ims[i] is im:                              # keep ultralytics' image buffer consistent
            self.ims[i] = fused
        return fused, hw0, hw

    def build_transforms(self, hyp=None):
        t = super().build_transforms(hyp)
        _swap_hsv(t)
        return t


def build_lam_dataset(cfg, img_path, batch: int, data: dict, mode: str = "train", stride: int = 32,
                      fraction: float | None = None) -> LamDataset:
    """``ultralytics.data.build_yolo_dataset`` (detect branch, same arguments) for ``LamDataset``:
    that function has no dataset-class seam. Validation is always at the *served framing*, the
    square ``imgsz`` letterbox the exported one-graph model takes, never rect batches (whose
    half-stride grey border the served baseline would see and the stored maps do not hold): a LAM
    depends on the framing, so LAGNet is scored on the very inputs it is served."""
    if fraction is None:
        fraction = get_split_fraction(cfg.fraction, "train" if mode == "train" else cfg.split)
    return LamDataset(img_path=img_path, imgsz=cfg.imgsz, batch_size=batch, augment=mode == "train", hyp=cfg,
                      rect=bool(cfg.rect) and mode == "train", cache=cfg.cache or None, single_cls=cfg.single_cls or False,
                      stride=stride, pad=0.0 if mode == "train" else 0.5, prefix=colorstr(f"{mode}: "),
                      task=cfg.task, classes=cfg.classes, data=data, fraction=fraction)


class LamValidator(DetectionValidator):
    """ultralytics' detection validator (same mAP, plots) on RGB + LAM batches (LAMs made from the
    confidence-map files by ``to_rgb_lam``)."""

    def preprocess(self, batch):
        return batch_to_rgb_lam(super().preprocess(batch), self.data)

    def build_dataset(self, img_path, mode="val", batch=None):
        fraction = get_split_fraction(self.args.fraction, self.args.split or "val")
        return build_lam_dataset(self.args, img_path, batch, self.data, mode=mode, stride=self.stride,
                                 fraction=fraction)


class ServedLamValidator(LamValidator):
    """``LamValidator`` that scores what is served: the LAM channels of every batch are replaced by
    the LAM the one-graph model computes (``lam.LamMap``: the LAM maker on the same
    letterboxed RGB batch, at the network's input resolution, normalised and JET-coded as
    configured), so ``evaluate lagnet`` measures the exported pipeline, not the LAM files. Use
    ``served_lam_validator`` to bind the baseline."""

    lam_map = None                                  # a lam.LamMap, bound by the factory

    def preprocess(self, batch):
        import torch

        batch = DetectionValidator.preprocess(self, batch)     # the files' maps are not used
        img = batch["img"]
        rgb = img[:, :3]
        lam_map = self.lam_map.to(img.device)
        with torch.inference_mode():
            lam = lam_map(rgb.float()).to(img.dtype)
        batch["img"] = torch.cat([rgb, lam], 1)
        return batch


def served_lam_validator(baseline_weights: str | Path, coding: LamCoding = LamCoding()) -> type[ServedLamValidator]:
    """A ``ServedLamValidator`` class whose LAMs come from ``baseline_weights`` (fused, eval), coded per ``coding``."""
    from .lam import LamMap
    from ...yolo import YOLO

    base = YOLO(str(baseline_weights)).model.float().fuse().eval()
    lam_map = LamMap(base, coding).eval()
    return type("ServedLamValidator", (ServedLamValidator,), {"lam_map": lam_map, "__module__": __name__})


class LamTrainerMixin:
    """Put before a ``DetectionTrainer`` subclass: RGB + LAM datasets and ``LamValidator``."""

    def build_dataset(self, img_path, mode="train", batch=None):
        gs = max(int(unwrap_model(self.model).stride.max()), 32)
        return build_lam_dataset(self.args, img_path, batch, self.data, mode=mode, stride=gs)

    def preprocess_batch(self, batch):
        return batch_to_rgb_lam(super().preprocess_batch(batch), self.data)

    def get_validator(self):
        DetectionTrainer.get_validator(self)               # sets loss_names
        return LamValidator(self.test_loader, save_dir=self.save_dir, args=copy(self.args),
                            _callbacks=self.callbacks)


def lam_data_yaml(data_yaml: str | Path, lam_dir: str | Path, coding: LamCoding = LamCoding()) -> Path:
    """``data_lam.yaml`` beside ``data_yaml``: the same view plus ``lam: <dir>``, the LAM blend of
    ``coding`` (``lam_alpha``, ``lam_beta``, eq. 1) and ``channels: 6``."""
    import yaml

    data_yaml = Path(data_yaml)
    data = yaml.safe_load(data_yaml.read_text())
    data.update(lam=str(Path(lam_dir).resolve()), **coding.blend_keys(), channels=6)
    out = data_yaml.with_name("data_lam.yaml")
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out
