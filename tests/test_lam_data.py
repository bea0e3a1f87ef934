"""RGB + LAM data path: geometric augmentation keeps image, LAM and boxes aligned; colour
augmentation touches the RGB half only."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import yaml

from components.lam_data import LamDataset, RgbOnlyHSV, lam_data_yaml


def _write(tmp_path, n=4, size=128):
    """n images, each with bright boxes on black; the LAM is a *different* colour coding of the
    same boxes (pure blue, BGR (255, 0, 0)) so both halves can be checked separately."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "lams").mkdir()
    for i in range(n):
        img = np.zeros((size, size + 32 * (i % 2), 3), np.uint8)       # some non-square
        lam = np.zeros_like(img)
        h, w = img.shape[:2]
        lines = []
        for _ in range(2):
            x1, y1 = rng.integers(5, w // 2), rng.integers(5, h // 2)
            x2, y2 = x1 + rng.integers(20, w // 2 - 5), y1 + rng.integers(20, h // 2 - 5)
            img[y1:y2, x1:x2] = 255
            lam[y1:y2, x1:x2] = (255, 0, 0)
            lines.append(f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}")
        cv2.imwrite(str(tmp_path / "images" / f"im{i}.png"), img)
        cv2.imwrite(str(tmp_path / "lams" / f"im{i}.png"), lam)
        (tmp_path / "labels" / f"im{i}.txt").write_text("\n".join(lines) + "\n")
    return {"names": {0: "defect"}, "nc": 1, "lam": str(tmp_path / "lams"), "channels": 6}


def _dataset(tmp_path, augment=True, **hyp):
    from ultralytics.cfg import get_cfg

    data = _write(tmp_path)
    cfg = get_cfg(overrides={"mosaic": 1.0, "degrees": 15.0, "translate": 0.2, "scale": 0.4, "shear": 5.0,
                             "fliplr": 0.5, "flipud": 0.5, "mixup": 0.0, "hsv_h": 0.0, "hsv_s": 0.0,
                             "hsv_v": 0.0, "imgsz": 128, **hyp})
    return LamDataset(img_path=str(tmp_path / "images"), imgsz=128, batch_size=2, augment=augment, hyp=cfg,
                      rect=False, cache=None, single_cls=False, stride=32, pad=0.0, prefix="test: ",
                      task="detect", classes=None, data=data, fraction=1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_augmentation_keeps_rgb_lam_and_boxes_aligned(tmp_path, seed):
    import random

    random.seed(seed)
    np.random.seed(seed)
    ds = _dataset(tmp_path)
    for i in range(len(ds)):
        s = ds[i]
        img = s["img"]
        assert img.shape[0] == 6 and img.dtype == torch.uint8
        rgb, lam = img[:3].float(), img[3:].float()
        # RGB half is white where the LAM half is blue (RGB order: channel 2): same pixels,
        # after mosaic + affine + flips
        bright = rgb.mean(0) > 127
        blue = (lam[2] > 127) & (lam[0] < 64) & (lam[1] < 64)
        assert bright.sum() > 50
        assert (bright ^ blue).float().mean() < 0.01        # interpolation edges only
        # every box (normalised xywh) sits on white pixels, in both halves
        h, w = img.shape[1:]
        for cx, cy, bw, bh in s["bboxes"].tolist():
            x1, x2 = int((cx - bw / 2) * w) + 2, int((cx + bw / 2) * w) - 2
            y1, y2 = int((cy - bh / 2) * h) + 2, int((cy + bh / 2) * h) - 2
            if x2 - x1 < 4 or y2 - y1 < 4:
                continue                                      # boxes clipped to a sliver by the affine
            assert bright[y1:y2, x1:x2].float().mean() > 0.5
            assert blue[y1:y2, x1:x2].float().mean() > 0.5


def test_validation_letterbox_keeps_alignment_and_order(tmp_path):
    ds = _dataset(tmp_path, augment=False)
    s = ds[1]                                  # 160 x 128 image -> 128 x 102 content, 13 px bars
    img = s["img"]
    assert img.shape == (6, 128, 128)
    assert (img[:, :12] == 114).all() and (img[:, -12:] == 114).all()   # same letterbox bars in both
    # RGB|RGB order: the LAM's blue is channel 2 of the second half
    lam = img[3:, 14:-14].float()
    assert lam[2].max() == 255 and lam[0].max() < 64 and lam[1].max() < 64
    assert torch.equal(img[0, 14:-14] > 127, lam[2] > 127)


def test_hsv_jitter_changes_the_rgb_half_only():
    from ultralytics.data.augment import RandomHSV

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (32, 32, 6), dtype=np.uint8)
    hsv = RgbOnlyHSV(0.5, 0.9, 0.9)
    np.random.seed(0)
    out = hsv.apply_image({"img": img.copy()})["img"]
    assert np.array_equal(out[..., 3:], img[..., 3:])
    assert not np.array_equal(out[..., :3], img[..., :3])
    # on the RGB half it is exactly ultralytics' RandomHSV with the same random draw
    np.random.seed(0)
    ref = RandomHSV(0.5, 0.9, 0.9).apply_image({"img": np.ascontiguousarray(img[..., :3])})["img"]
    assert np.array_equal(out[..., :3], ref)


def test_training_transforms_use_the_rgb_only_hsv(tmp_path):
    ds = _dataset(tmp_path, hsv_v=0.4)

    def walk(t):
        for x in getattr(t, "transforms", []):
            yield x
            yield from walk(x)
    kinds = [type(x).__name__ for x in walk(ds.transforms)]
    assert "RgbOnlyHSV" in kinds and "RandomHSV" not in kinds and kinds[-1] == "LamFormat"


def test_missing_lams_are_a_clear_error(tmp_path):
    data = _write(tmp_path)
    (tmp_path / "lams" / "im2.png").unlink()
    from ultralytics.cfg import get_cfg

    with pytest.raises(FileNotFoundError, match="1 image.*no LAM.*im2.png.*defectops lam"):
        LamDataset(img_path=str(tmp_path / "images"), imgsz=64, augment=False, hyp=get_cfg(), data=data)
    with pytest.raises(ValueError, match="no 'lam' folder"):
        LamDataset(img_path=str(tmp_path / "images"), imgsz=64, augment=False, hyp=get_cfg(),
                   data={k: v for k, v in data.items() if k != "lam"})


def test_lam_data_yaml_adds_the_lam_folder_and_six_channels(tmp_path):
    base = tmp_path / "data.yaml"
    base.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "t.txt", "nc": 1, "names": {0: "a"}}))
    d = yaml.safe_load(lam_data_yaml(base, tmp_path / "lams").read_text())
    assert d["lam"] == str((tmp_path / "lams").resolve()) and d["channels"] == 6 and d["train"] == "t.txt"
