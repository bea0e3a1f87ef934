"""The IoU-loss family against values hand-computed from each paper's formula.

Pair A overlaps: pred (0,0,4,2), target (1,1,5,4): intersection 3, union 8 + 12 - 3 = 17,
IoU = 3/17; enclosing box 5 x 4 (c^2 = 41); centre offset (dx, dy) = (1, 1.5), rho^2 = 3.25.
Pair B is disjoint: pred (0,0,2,2), target (4,0,6,2): IoU 0, enclosing 6 x 2 (c^2 = 40),
(dx, dy) = (4, 0), same shape. MPDIoU uses a 10 x 10 image.
"""

from __future__ import annotations

import math

import pytest
import torch

from components.models.iou import IOU_LOSSES, iou_loss, uiou_ratio

A = (torch.tensor([[0.0, 0, 4, 2]]), torch.tensor([[1.0, 1, 5, 4]]))
B = (torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[4.0, 0, 6, 2]]))
IMG = torch.tensor([10.0, 10.0])
IOU_A = 3 / 17
SHAPE_A = (1 - math.exp(-1 / 3)) ** 4           # omega_w = 0, omega_h = |2-3|/3
V_A = 4 / math.pi ** 2 * (math.atan(4 / 3) - math.atan(4 / 2)) ** 2
GAMMA_A = 2 - 2 * (1 / math.sqrt(3.25)) * (1.5 / math.sqrt(3.25))   # 2 - sin(2 alpha)

EXPECTED = {
    # kind: (pair A, pair B)
    "ciou": (1 - IOU_A + 3.25 / 41 + V_A ** 2 / ((1 - IOU_A) + V_A), 1 + 16 / 40),
    "eiou": (1 - IOU_A + 3.25 / 41 + 0 / 25 + 1 / 16, 1 + 16 / 40),
    "mpdiou": (1 - IOU_A + 2 / 200 + 5 / 200, 1 + 16 / 200 + 16 / 200),
    "piou": (1 - IOU_A + 1 - math.exp(-(2 / 16 + 3 / 12) ** 2), 1 + 1 - math.exp(-1)),
    "shape_iou": (1 - IOU_A + 3.25 / 41 + 0.5 * SHAPE_A, 1 + 16 / 40),
    "siou": (1 - IOU_A + ((1 - math.exp(-GAMMA_A * 0.04)) + (1 - math.exp(-GAMMA_A * 0.140625))
                          + SHAPE_A) / 2,
             1 + (1 - math.exp(-2 * (4 / 6) ** 2)) / 2),
    # ratio 2 at progress 0: pred -> (-2,-1,6,3), target -> (-1,-.5,7,5.5); B -> touching boxes
    "uiou": (0.5852283704474086, 1 + 16 / 80),
}


def test_every_loss_has_expected_values():
    assert set(EXPECTED) == set(IOU_LOSSES)


@pytest.mark.parametrize("kind", IOU_LOSSES)
def test_hand_computed_values(kind):
    a = iou_loss(*A, kind, img_wh=IMG, progress=0.0)
    b = iou_loss(*B, kind, img_wh=IMG, progress=0.0)
    assert a.item() == pytest.approx(EXPECTED[kind][0], abs=1e-5)
    assert b.item() == pytest.approx(EXPECTED[kind][1], abs=1e-5)


def test_uiou_follows_the_epoch_schedule():
    assert uiou_ratio(0) == 2.0 and uiou_ratio(1) == 0.5 and uiou_ratio(0.5) == pytest.approx(1.25)
    # ratio 0.5 at the last epoch: pred -> (1,.5,3,1.5), target -> (2,1.75,4,3.25): disjoint in y
    assert iou_loss(*A, "uiou", progress=1.0).item() == pytest.approx(1.1963960594923506, abs=1e-5)


@pytest.mark.parametrize("kind", IOU_LOSSES)
def test_identical_boxes_give_the_minimum(kind):
    torch.manual_seed(0)
    t = torch.tensor([[2.0, 3, 9, 7]]).repeat(64, 1)
    same = iou_loss(t, t, kind, img_wh=IMG, progress=0.3)
    assert same.abs().max().item() < 1e-5
    other = iou_loss(t + torch.randn_like(t) * 0.5, t, kind, img_wh=IMG, progress=0.3)
    assert (other > same + 1e-6).all()


@pytest.mark.parametrize("kind", IOU_LOSSES)
@pytest.mark.parametrize("pair", [A, B], ids=["overlap", "disjoint"])
def test_finite_gradients_and_descent_toward_target(kind, pair):
    pred0, target = pair
    losses = []
    for t in (0.0, 0.25, 0.5, 0.75):
        p = (pred0 + t * (target - pred0)).clone().requires_grad_(True)
        loss = iou_loss(p, target, kind, img_wh=IMG, progress=0.0).sum()
        loss.backward()
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
        losses.append(loss.item())
    assert all(x > y for x, y in zip(losses, losses[1:])), losses


def test_ciou_matches_ultralytics():
    from ultralytics.utils.metrics import bbox_iou

    torch.manual_seed(1)
    xy = torch.rand(200, 2) * 50
    p = torch.cat([xy, xy + torch.rand(200, 2) * 20 + 1], 1)
    xy2 = xy + torch.randn(200, 2) * 5
    t = torch.cat([xy2, xy2 + torch.rand(200, 2) * 20 + 1], 1)
    ours = iou_loss(p, t, "ciou")
    theirs = 1 - bbox_iou(p, t, xywh=False, CIoU=True).squeeze(-1)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_unknown_loss_and_missing_image_size():
    with pytest.raises(ValueError, match="unknown IoU loss"):
        iou_loss(*A, "giou2")
    with pytest.raises(ValueError, match="img_wh"):
        iou_loss(*A, "mpdiou")


@pytest.mark.parametrize("kind", IOU_LOSSES)
def test_detection_loss_uses_the_selected_iou(kind):
    """Through ultralytics' loss: finite, differentiable, and only CIoU equals the default."""
    from ultralytics.cfg import get_cfg

    from components.models import DefectDetectionModel

    torch.manual_seed(0)
    model = DefectDetectionModel("yolo11n.yaml", nc=3, verbose=False, iou_loss=kind)
    model.args = get_cfg()
    batch = {"img": torch.rand(2, 3, 64, 64), "batch_idx": torch.tensor([0.0, 1.0, 1.0]),
             "cls": torch.tensor([[0.0], [1.0], [2.0]]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.4, 0.3], [0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.5]])}
    loss, items = model.loss(batch)
    assert torch.isfinite(loss).all() and loss.sum() > 0
    loss.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.criterion.bbox_loss.kind == kind


def test_the_loss_travels_with_the_model_yaml(tmp_path):
    """No trainer class per loss: the choice is written into the run's copy of the model YAML
    (``model_yaml``), which ultralytics' trainer rebuilds the model from (``get_model``), and into
    the model's YAML dict, which a checkpoint keeps."""
    from ultralytics.cfg import get_cfg

    from components.models import DefectDetectionModel
    from components.train import TrainRequest, model_yaml, train_detector

    model = DefectDetectionModel("yolo11n.yaml", nc=3, verbose=False, iou_loss="siou")
    assert model.yaml["iou_loss"] == "siou"
    rebuilt = DefectDetectionModel(model.yaml, nc=3, verbose=False)            # what get_model does
    rebuilt.args = get_cfg()
    assert rebuilt.iou_loss == "siou" and rebuilt.init_criterion().bbox_loss.kind == "siou"
    torch.save({"model": rebuilt}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=False)["model"]
    assert DefectDetectionModel(loaded.yaml, nc=3, verbose=False).iou_loss == "siou"
    assert DefectDetectionModel("yolo11n.yaml", nc=3, verbose=False).iou_loss == "ciou"   # the default
    written = model_yaml("yolo11s.yaml", "eiou", tmp_path / "run")
    assert written == tmp_path / "run" / "yolo11s.yaml"                       # the name keeps the scale guess
    small = DefectDetectionModel(str(written), nc=3, verbose=False)
    assert small.iou_loss == "eiou" and small.yaml["scale"] == "s"
    (tmp_path / "out" / "weights").mkdir(parents=True)
    (tmp_path / "out" / "weights" / "best.pt").write_bytes(b"an earlier run")
    with pytest.raises(ValueError, match="loss.iou must be one of"):
        train_detector(TrainRequest("yolo11n.yaml", tmp_path / "d.yaml", tmp_path / "out", {}, "cpu", 0, "giou2"))
    assert (tmp_path / "out" / "weights" / "best.pt").read_bytes() == b"an earlier run"   # refused before clearing
