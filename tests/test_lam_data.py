"""RGB + LAM data path: geometric augmentation keeps image, confidence map and boxes aligned;
colour augmentation touches the RGB only; the LAM is coded and blended on the batch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import yaml

from components.detectors.lagnet import LamCoding
from components.detectors.lagnet.data import LamDataset, RgbOnlyHSV, lam_data_yaml


def _write(tmp_path, n=4, size=128):
    """n images, each with bright boxes on black, and their confidence maps (grey, 255 on the
    boxes, 0 elsewhere), so image, map and boxes can be checked for alignment."""
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "lams").mkdir()
    for i in range(n):
        img = np.zeros((size, size + 32 * (i % 2), 3), np.uint8)       # some non-square
        conf = np.zeros(img.shape[:2], np.uint8)
        h, w = img.shape[:2]
        lines = []
        for _ in range(2):
            x1, y1 = rng.integers(5, w // 2), rng.integers(5, h // 2)
            x2, y2 = x1 + rng.integers(20, w // 2 - 5), y1 + rng.integers(20, h // 2 - 5)
            img[y1:y2, x1:x2] = (0, 0, 255)                            # red (BGR): tells the order
            conf[y1:y2, x1:x2] = 255
            lines.append(f"0 {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}")
        cv2.imwrite(str(tmp_path / "images" / f"im{i}.png"), img)
        cv2.imwrite(str(tmp_path / "lams" / f"im{i}.png"), conf)
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
def test_geometric_augmentation_keeps_image_map_and_boxes_aligned(tmp_path, seed):
    import random

    random.seed(seed)
    np.random.seed(seed)
    ds = _dataset(tmp_path)
    for i in range(len(ds)):
        s = ds[i]
        img = s["img"]
        assert img.shape[0] == 5 and img.dtype == torch.uint8          # RGB, confidence, valid
        red, conf, valid = img[0].float(), img[3].float(), img[4].float()
        # the red boxes and the map's hot pixels are the same pixels after mosaic + affine + flips
        bright, hot = red > 127, conf > 127
        assert bright.sum() > 50
        assert (bright ^ hot).float().mean() < 0.01                    # interpolation edges only
        # mosaic / affine padding is 114 in every channel; the valid channel marks it
        pad = valid == 114                                             # (edges are interpolated)
        assert (img[:, pad] == 114).all()
        assert img[2][valid == 255].float().max() < 64                 # RGB order: red is channel 0
        for cx, cy, bw, bh in s["bboxes"].tolist():                    # boxes sit on hot, valid pixels
            h, w = img.shape[1:]
            x1, x2 = int((cx - bw / 2) * w) + 2, int((cx + bw / 2) * w) - 2
            y1, y2 = int((cy - bh / 2) * h) + 2, int((cy + bh / 2) * h) - 2
            if x2 - x1 < 4 or y2 - y1 < 4:
                continue                                      # boxes clipped to a sliver by the affine
            assert bright[y1:y2, x1:x2].float().mean() > 0.5 and hot[y1:y2, x1:x2].float().mean() > 0.5
            assert (valid[y1:y2, x1:x2] > 184).all()


def test_validation_letterbox_keeps_alignment_and_marks_the_bars(tmp_path):
    ds = _dataset(tmp_path, augment=False)
    s = ds[1]                                  # 160 x 128 image -> 128 x 102 content, 13 px bars
    img = s["img"]
    assert img.shape == (5, 128, 128)
    assert (img[:, :12] == 114).all() and (img[:, -12:] == 114).all()   # the same bars in every channel
    assert (img[4, 14:-14] == 255).all()                                   # content: valid
    assert torch.equal(img[0, 14:-14] > 127, img[3, 14:-14] > 127)


def test_to_rgb_lam_codes_and_blends_as_the_served_graph_and_zeroes_padding():
    from components.detectors.lagnet.lam import JET_BGR
    from components.detectors.lagnet.data import to_rgb_lam

    x = torch.zeros(1, 5, 2, 2)
    x[0, :3] = 0.4                                             # grey RGB
    x[0, 3] = torch.tensor([[0.6, 1.0], [114 / 255, 114 / 255]])
    x[0, 4] = torch.tensor([[1.0, 1.0], [1.0, 114 / 255]])     # bottom right: padding
    out = to_rgb_lam(x, LamCoding(alpha=0.5, beta=0.5))[0]
    assert out.shape == (6, 2, 2) and torch.equal(out[:3], x[0, :3])
    jet = JET_BGR[:, ::-1] / 255.0                             # RGB
    for (r, c), idx in {(0, 0): 153, (0, 1): 255, (1, 0): 114, (1, 1): 0}.items():   # round(255 c)
        assert out[3:, r, c].tolist() == pytest.approx((0.2 + 0.5 * jet[idx]).tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="5, H, W"):
        to_rgb_lam(torch.zeros(1, 6, 2, 2))


def test_hsv_jitter_changes_the_rgb_half_only():
    from ultralytics.data.augment import RandomHSV

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (32, 32, 5), dtype=np.uint8)
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


def test_missing_or_colour_maps_are_a_clear_error(tmp_path):
    data = _write(tmp_path)
    (tmp_path / "lams" / "im2.png").unlink()
    from ultralytics.cfg import get_cfg

    with pytest.raises(FileNotFoundError, match="1 image.*no LAM.*im2.png.*defectops lam"):
        LamDataset(img_path=str(tmp_path / "images"), imgsz=64, augment=False, hyp=get_cfg(), data=data)
    with pytest.raises(ValueError, match="no 'lam' folder"):
        LamDataset(img_path=str(tmp_path / "images"), imgsz=64, augment=False, hyp=get_cfg(),
                   data={k: v for k, v in data.items() if k != "lam"})
    cv2.imwrite(str(tmp_path / "lams" / "im2.png"), np.zeros((8, 8, 3), np.uint8))   # an old colour LAM
    ds = LamDataset(img_path=str(tmp_path / "images"), imgsz=64, augment=False, hyp=get_cfg(), data=data)
    with pytest.raises(ValueError, match="im2.png is not a grey confidence map.*defectops lam"):
        ds.load_image(ds.im_files.index(str(tmp_path / "images" / "im2.png")))


def test_lam_data_yaml_adds_the_lam_folder_blend_and_six_channels(tmp_path):
    base = tmp_path / "data.yaml"
    base.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "t.txt", "nc": 1, "names": {0: "a"}}))
    d = yaml.safe_load(lam_data_yaml(base, tmp_path / "lams", LamCoding(alpha=0.3, beta=0.7)).read_text())
    assert d["lam"] == str((tmp_path / "lams").resolve()) and d["channels"] == 6 and d["train"] == "t.txt"
    assert (d["lam_alpha"], d["lam_beta"]) == (0.3, 0.7)
