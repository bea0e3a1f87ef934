"""LAM (LAGNet eq. 1): hand-computed blend values and pixel alignment through the letterbox."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from components.lam import JET_BGR, fuse_levels, lam_image, level_confidence, unletterbox


def _pred(nc=2, hot=0.9):
    """A (1, 4 + nc, 21) head output for a 32x32 input (levels 4x4, 2x2, 1x1): class-1 score
    ``hot`` on the 2x2 block of level-0 cells (1..2, 1..2), 0 elsewhere."""
    scores = torch.zeros(1, nc, 21)
    lvl0 = torch.zeros(4, 4)
    lvl0[1:3, 1:3] = hot
    scores[0, 1, :16] = lvl0.flatten()
    return torch.cat([torch.zeros(1, 4, 21), scores], 1)


def test_levels_and_fusion():
    levels = level_confidence(_pred(), (32, 32), (8, 16, 32))
    assert [tuple(m.shape) for m in levels] == [(1, 4, 4), (1, 2, 2), (1, 1, 1)]
    conf = fuse_levels(levels, (32, 32))[0]
    # pixel (15, 15) samples between level-0 cells 1 and 2 in both axes: both 0.9
    assert conf[15, 15].item() == pytest.approx(0.9, abs=1e-6)
    assert conf[0, 31].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="anchors"):
        level_confidence(_pred(), (64, 64), (8, 16, 32))


def test_lam_blend_matches_hand_computation():
    conf = fuse_levels(level_confidence(_pred(), (32, 32), (8, 16, 32)), (32, 32))[0].numpy()
    img = np.zeros((32, 32, 3), np.uint8)
    img[15, 15] = (10, 100, 200)
    img[0, 31] = (40, 60, 80)
    lam = lam_image(img, conf)
    # 255 * 0.9 = 229.5 -> 230; OpenCV's JET colour of 230, blended 1:1 with the pixel
    jet230 = cv2.applyColorMap(np.array([[230]], np.uint8), cv2.COLORMAP_JET)[0, 0].astype(float)
    assert lam[15, 15].tolist() == [int(np.rint(0.5 * a + 0.5 * b)) for a, b in zip((10, 100, 200), jet230)]
    # confidence 0 -> JET(0) = dark blue (128, 0, 0) in BGR
    assert JET_BGR[0].tolist() == [128, 0, 0]
    assert lam[0, 31].tolist() == [int(np.rint(0.5 * 40 + 64)), 30, 40]


def test_lam_pixels_line_up_with_the_image_through_the_letterbox():
    # a 200 x 100 (w x h) image letterboxed to 160: scale 0.8, content 160 x 80, 40 px top padding
    h, w, imgsz, ratio, pad = 100, 200, 160, 0.8, (0.0, 40.0)
    box = (50, 20, 90, 60)                                    # x1, y1, x2, y2 in the image
    conf_in = torch.zeros(1, imgsz, imgsz)
    x1, y1, x2, y2 = (int(box[0] * ratio), int(box[1] * ratio + pad[1]),
                      int(box[2] * ratio), int(box[3] * ratio + pad[1]))
    conf_in[0, y1:y2, x1:x2] = 1.0
    conf = unletterbox(conf_in, (h, w), ratio, pad)[0].numpy()
    assert conf.shape == (h, w)
    inside = conf[box[1] + 2:box[3] - 2, box[0] + 2:box[2] - 2]
    outside = conf.copy()
    outside[box[1] - 3:box[3] + 3, box[0] - 3:box[2] + 3] = 0
    assert inside.min() > 0.95 and outside.max() < 0.05
    ys, xs = np.nonzero(conf > 0.5)
    assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
    assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1


def test_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ"):
        lam_image(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4)))
