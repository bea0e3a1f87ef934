"""RGB + LAM data path for LAGNet through ultralytics' dataset / trainer / validator seams.

Each image is read with its LAM (``<lam dir>/<image stem>.png``, made by ``components/lam.py``)
and the two are stacked into one 6-channel array *before* any augmentation, so mosaic, mixup,
flips, the random affine and the letterbox move RGB, LAM and boxes together (ultralytics'
augmentations are channel-agnostic; its ``Format`` only swaps BGR->RGB for 3-channel arrays,
``LamFormat`` does it for each half). Colour augmentation (HSV) is applied to the RGB half
only: the LAM's colours encode the baseline's confidence, jittering them would change what
the map says. The LAM keeps the *un-jittered* image in its 50 % RGB part (it was made once,
offline); at inference both halves see the same image, so training is slightly harder than
serving, never the other way round.

The data YAML carries ``lam: <dir>`` and ``channels: 6`` (so ultralytics sizes warm-up
tensors right); images are still decoded as 3-channel colour.
"""

from __future__ import annotations

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

RGB_LAM_ORDER = [2, 1, 0, 5, 4, 3]      # BGR|BGR (OpenCV) -> RGB|RGB


def lam_path(lam_dir: str | Path, image: str | Path) -> Path:
    """Where the LAM of ``image`` lives: ``lam_dir/<image stem>.png`` (lossless)."""
    return Path(lam_dir) / f"{Path(image).stem}.png"


class RgbOnlyHSV(RandomHSV):
    """ultralytics' HSV jitter on the RGB half of an RGB+LAM array (the LAM is left alone)."""

    def apply_image(self, labels, params=None):
        img = labels["img"]
        if img.ndim != 3 or img.shape[-1] != 6:
            return super().apply_image(labels, params)
        rgb = {"img": np.ascontiguousarray(img[..., :3])}
        super().apply_image(rgb, params)
        img[..., :3] = rgb["img"]
        return labels


class LamFormat(Format):
    """``Format`` for 6-channel arrays: BGR->RGB on both halves (same ``bgr`` probability)."""

    def _format_img(self, img: np.ndarray):
        if img.ndim == 3 and img.shape[-1] == 6:
            import torch

            img = img.transpose(2, 0, 1)
            if random.uniform(0, 1) > self.bgr:
                img = img[RGB_LAM_ORDER]
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


class LamDataset(YOLODataset):
    """``YOLODataset`` yielding RGB + LAM (6 channels). ``data["lam"]`` is the LAM folder."""

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
        if im.ndim == 3 and im.shape[2] == 6:             # the RAM/buffer copy is already fused
            return im, hw0, hw
        f = lam_path(self.lam_dir, self.im_files[i])
        lam = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if lam is None:
            raise FileNotFoundError(f"unreadable LAM {f}: re-run `defectops lam`")
        if lam.shape[:2] != im.shape[:2]:
            lam = cv2.resize(lam, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_LINEAR)
        fused = np.concatenate([im, lam], axis=2)
        if self.ims[i] is im:                              # keep ultralytics' image buffer consistent
            self.ims[i] = fused
        return fused, hw0, hw

    def build_transforms(self, hyp=None):
        t = super().build_transforms(hyp)
        _swap_hsv(t)
        return t


def build_lam_dataset(cfg, img_path, batch: int, data: dict, mode: str = "train", rect: bool = False,
                      stride: int = 32, fraction: float | None = None) -> LamDataset:
    """``ultralytics.data.build_yolo_dataset`` (detect branch, same arguments) for ``LamDataset``:
    that function has no dataset-class seam."""
    if fraction is None:
        fraction = get_split_fraction(cfg.fraction, "train" if mode == "train" else cfg.split)
    return LamDataset(img_path=img_path, imgsz=cfg.imgsz, batch_size=batch, augment=mode == "train", hyp=cfg,
                      rect=cfg.rect or rect, cache=cfg.cache or None, single_cls=cfg.single_cls or False,
                      stride=stride, pad=0.0 if mode == "train" else 0.5, prefix=colorstr(f"{mode}: "),
                      task=cfg.task, classes=cfg.classes, data=data, fraction=fraction)


class LamValidator(DetectionValidator):
    """ultralytics' detection validator (same mAP, plots) on RGB + LAM batches."""

    def build_dataset(self, img_path, mode="val", batch=None):
        fraction = get_split_fraction(self.args.fraction, self.args.split or "val")
        return build_lam_dataset(self.args, img_path, batch, self.data, mode=mode, stride=self.stride,
                                 fraction=fraction)


class ServedLamValidator(LamValidator):
    """``LamValidator`` that scores what is served: the LAM channels of every batch are replaced by
    the LAM the one-graph model computes (``components.lam.LamMap``: the baseline on the same
    letterboxed RGB batch, at the network's input resolution, normalised and JET-coded as
    configured), so ``evaluate lagnet`` measures the exported pipeline, not the LAM files. Use
    ``served_lam_validator`` to bind the baseline."""

    lam_map = None                                  # a components.lam.LamMap, bound by the factory

    def preprocess(self, batch):
        import torch

        batch = super().preprocess(batch)
        img = batch["img"]
        rgb = img[:, :3]
        lam_map = self.lam_map.to(img.device)
        with torch.inference_mode():
            lam = lam_map(rgb.float()).to(img.dtype)
        batch["img"] = torch.cat([rgb, lam], 1)
        return batch


def served_lam_validator(baseline_weights: str | Path, alpha: float = 0.5, beta: float = 0.5,
                         normalize: str = "none", quantile: float = 0.99) -> type[ServedLamValidator]:
    """A ``ServedLamValidator`` class whose LAMs come from ``baseline_weights`` (fused, eval)."""
    from .lam import LamMap
    from .yolo import YOLO

    base = YOLO(str(baseline_weights)).model.float().fuse().eval()
    lam_map = LamMap(base, alpha, beta, normalize, quantile).eval()
    return type("ServedLamValidator", (ServedLamValidator,), {"lam_map": lam_map, "__module__": __name__})


class LamTrainerMixin:
    """Put before a ``DetectionTrainer`` subclass: RGB + LAM datasets and ``LamValidator``."""

    def build_dataset(self, img_path, mode="train", batch=None):
        gs = max(int(unwrap_model(self.model).stride.max()), 32)
        return build_lam_dataset(self.args, img_path, batch, self.data, mode=mode, rect=mode == "val", stride=gs)

    def get_validator(self):
        DetectionTrainer.get_validator(self)               # sets loss_names
        return LamValidator(self.test_loader, save_dir=self.save_dir, args=copy(self.args),
                            _callbacks=self.callbacks)


def lam_data_yaml(data_yaml: str | Path, lam_dir: str | Path) -> Path:
    """``data_lam.yaml`` beside ``data_yaml``: the same view plus ``lam: <dir>`` and ``channels: 6``."""
    import yaml

    data_yaml = Path(data_yaml)
    data = yaml.safe_load(data_yaml.read_text())
    data.update(lam=str(Path(lam_dir).resolve()), channels=6)
    out = data_yaml.with_name("data_lam.yaml")
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out
