"""LAM (LAGNet eq. 1): hand-computed blend values and pixel alignment through the letterbox."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from components.detectors.lagnet import LamCoding
from components.detectors.lagnet.lam import JET_BGR, fuse_levels, lam_image, lam_map, level_confidence, unletterbox


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


class _LevelZeroBrightness(torch.nn.Module):
    """A stand-in detector: level-0 (stride 8) class score = mean brightness of each 8x8 cell,
    levels 1 and 2 score 0. Output ``(B, 4 + 2, anchors)`` like ultralytics' Detect."""

    stride = torch.tensor([8.0, 16.0, 32.0])

    def forward(self, x):
        b, _, h, w = x.shape
        lvl0 = torch.nn.functional.avg_pool2d(x.mean(1, keepdim=True), 8).flatten(2)
        rest = torch.zeros(b, 1, (h // 16) * (w // 16) + (h // 32) * (w // 32))
        score = torch.cat([lvl0, rest], 2)
        return torch.cat([torch.zeros(b, 4, score.shape[2]), score, torch.zeros_like(score)], 1), None


def test_make_lams_puts_a_box_shaped_response_on_the_box(tmp_path):
    from components.detectors.lagnet.lam import make_lams

    # 200 x 100 image letterboxed to 160: scale 0.8 -> 160 x 80 content, 40 px padding on top;
    # the box (40..120, 30..80) lands on 32..96 x 64..104: whole 8-px cells of level 0. The map is
    # stored at the loader's scale: the 160 x 80 content, the padding cut off, not resized back.
    img = np.zeros((100, 200, 3), np.uint8)
    img[30:80, 40:120] = 255
    f = tmp_path / "wide.png"
    cv2.imwrite(str(f), img)
    out = make_lams(lam_map(_LevelZeroBrightness()), [f], tmp_path / "lams", 160, 4,
                    boxes={str(f): np.array([[40, 30, 120, 80]])})
    rec = out[str(f)]
    conf = cv2.imread(str(rec["lam"]), cv2.IMREAD_UNCHANGED)   # the grey map the training path reads
    assert conf.shape == (80, 160) and conf.dtype == np.uint8
    assert conf[44, 64] == 255 and conf[40, 152] == 0          # box centre: 1; background: 0
    small = cv2.resize(img, (160, 80), interpolation=cv2.INTER_LINEAR)   # the image as the loader sizes it
    lam = lam_image(small, conf / 255.0)                        # its colour LAM (the grid's picture)
    inside = np.rint(0.5 * 255 + 0.5 * JET_BGR[255].astype(float)).tolist()
    assert lam[44, 64].tolist() == inside
    assert lam[40, 152].tolist() == [64, 0, 0]               # confidence 0 -> JET(0) / 2
    hot = conf > 127                                          # only where the box is: 32..96 x 24..64
    ys, xs = np.nonzero(hot)
    assert abs(xs.min() - 32) <= 2 and abs(xs.max() + 1 - 96) <= 2
    assert abs(ys.min() - 24) <= 2 and abs(ys.max() + 1 - 64) <= 2
    assert rec["conf_in"] > 0.85 and rec["conf_out"] < 0.05     # bilinear edges cost a little


def test_in_graph_lam_matches_the_hand_computed_blend():
    from components.detectors.lagnet.lam import LamMap

    x = torch.zeros(1, 3, 32, 32)
    x[0, :, 8:24, 8:24] = 0.6                               # 2 x 2 level-0 cells, brightness 0.6
    lam = LamMap(_LevelZeroBrightness())(x)[0]
    idx = int(np.rint(0.6 * 255))                             # 153
    jet_rgb = JET_BGR[idx][::-1] / 255.0
    # pixel 15 interpolates between cells 1 and 2, both 0.6; the RGB there is 0.6 too
    assert lam[:, 15, 15].tolist() == pytest.approx((0.5 * 0.6 + 0.5 * jet_rgb).tolist(), abs=1e-6)
    assert lam[:, 30, 30].tolist() == pytest.approx((0.5 * JET_BGR[0][::-1] / 255.0).tolist(), abs=1e-6)


def test_out_of_fold_folds_partition_the_training_images():
    from components.detectors.lagnet.lam import oof_folds

    names = [f"img{i:03d}" for i in range(10)]
    folds = oof_folds(names, 3, seed=0)
    assert sorted(n for f in folds for n in f) == names and [len(f) for f in folds] == [4, 3, 3]
    assert folds == oof_folds(list(reversed(names)), 3, seed=0)          # order-independent, seeded
    with pytest.raises(ValueError, match="folds"):
        oof_folds(names, 1, seed=0)


def test_opencv_unletterbox_equals_the_torch_one():
    from components.detectors.lagnet.lam import unletterbox_np

    conf = torch.rand(1, 160, 160)
    a = unletterbox(conf, (100, 200), 0.8, (0.0, 40.0))[0].numpy()
    b = unletterbox_np(conf[0].numpy(), (100, 200), 0.8, (0.0, 40.0))
    assert a.shape == b.shape == (100, 200)
    assert np.abs(a - b).max() < 1e-4


def test_normalize_confidence_against_hand_computed_values():
    from components.detectors.lagnet.lam import normalize_confidence

    conf = torch.tensor([[[0.0, 0.1], [0.2, 0.4]], [[0.0, 0.0], [0.0, 0.0]]])
    assert normalize_confidence(conf, LamCoding(normalize="none")) is conf
    got = normalize_confidence(conf, LamCoding(normalize="image_max"))
    assert got[0].flatten().tolist() == pytest.approx([0.0, 0.25, 0.5, 1.0])
    assert got[1].abs().sum().item() == 0.0                   # an empty map stays empty
    # 100 values 0.00..0.99; q = 0.95 -> k = ceil(0.05 * 100) = 5th largest = 0.95
    ramp = (torch.arange(100.0) / 100).reshape(1, 10, 10)
    got = normalize_confidence(ramp, LamCoding(normalize="quantile", quantile=0.95)).flatten()
    assert got[19].item() == pytest.approx(0.19 / 0.95) and got[95:].tolist() == [1.0] * 5
    with pytest.raises(ValueError, match="normalize"):
        normalize_confidence(conf, LamCoding(normalize="softmax"))


@pytest.mark.parametrize("normalize", ["none", "image_max"])
def test_lam_file_equals_the_in_graph_lam(tmp_path, normalize):
    """The LAM the training / validation path makes from the confidence-map file and the LAM the
    served graph computes are the same map on the image, also when the image is resized (80 x 64
    letterboxed to 64): the file is stored at the loader's scale and holds the very JET index."""
    from components.detectors.lagnet.lam import LamMap, make_lams
    from components.detectors.lagnet.data import file_lam_batch

    rng = np.random.default_rng(0)
    for shape in ((64, 64), (64, 80)):
        img = (rng.random((*shape, 3)) * 120).astype(np.uint8)
        img[16:40, 8:56] += 120                               # a bright band: high confidence there
        f = tmp_path / f"im{shape[1]}.png"
        cv2.imwrite(str(f), img)
        make_lams(lam_map(_LevelZeroBrightness(), LamCoding(normalize=normalize)), [f], tmp_path / "lams", 64, 1)
        files = file_lam_batch([f], tmp_path / "lams", 64)[0]
        x = files[None, :3]                                   # the letterboxed RGB both paths see
        in_graph = LamMap(_LevelZeroBrightness(), LamCoding(normalize=normalize))(x)[0]
        diff = (files[3:] - in_graph).abs()
        if shape == (64, 64):
            assert diff.max().item() < 1e-6
        else:       # content rows 6..57 (51 px); the bars' confidence is 0 on the file path
            assert cv2.imread(str(tmp_path / "lams" / f.name), cv2.IMREAD_UNCHANGED).shape == (51, 64)
            assert diff[:, 6:57].max().item() < 1e-6
            jet0 = torch.tensor(JET_BGR[0][::-1].copy() / 255.0).float()
            assert torch.allclose(files[3:, :6], 0.5 * files[:3, :6] + 0.5 * jet0[:, None, None], atol=1e-6)
    if normalize == "image_max":                              # the stretch reached the colour coding
        lm = LamMap(_LevelZeroBrightness(), LamCoding(normalize=normalize))
        assert lm.confidence(x).max().item() == pytest.approx(1.0) and lm.raw_confidence(x).max().item() < 0.9


def test_served_validator_feeds_lagnet_what_the_pipeline_feeds_it():
    from types import SimpleNamespace

    from components.detectors.lagnet.lam import LamMap
    from components.detectors.lagnet.data import ServedLamValidator

    cls = type("V", (ServedLamValidator,), {"lam_map": LamMap(_LevelZeroBrightness(), LamCoding(normalize="image_max"))})
    v = object.__new__(cls)
    v.device, v.args = torch.device("cpu"), SimpleNamespace(quantize=32, half=False)
    rgb = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    stale = torch.zeros(2, 2, 32, 32, dtype=torch.uint8)       # whatever the map files said, + valid
    out = v.preprocess({"img": torch.cat([rgb, stale], 1)})["img"]
    x = rgb.float() / 255
    expected = torch.cat([x, LamMap(_LevelZeroBrightness(), LamCoding(normalize="image_max"))(x)], 1)
    assert torch.equal(out, expected)


def test_lam_coding_is_one_checked_request_built_from_the_lam_section():
    from conftest import settings

    lam = settings({"lam.alpha": 0.3, "lam.beta": 0.7, "lam.normalize": "quantile", "lam.quantile": 0.9}).lam
    assert LamCoding.of(lam) == LamCoding(0.3, 0.7, "quantile", 0.9)
    assert LamCoding.of({"alpha": 0.2, "other": 1}) == LamCoding(alpha=0.2)          # the rest: eq. 1's defaults
    coding = LamCoding(0.3, 0.7)
    assert coding.blend_keys() == {"lam_alpha": 0.3, "lam_beta": 0.7}
    assert LamCoding.of_data({"lam_alpha": 0.3, "lam_beta": 0.7, "nc": 2}) == coding   # the data YAML round trip
    assert LamCoding.of_data({}) == LamCoding()
    with pytest.raises(ValueError, match=r"lam.quantile must be in \(0, 1\], got 0"):
        LamCoding(normalize="quantile", quantile=0)
    with pytest.raises(ValueError, match="lam.normalize must be one of none, image_max, quantile"):
        LamCoding.of({"normalize": "softmax"})
