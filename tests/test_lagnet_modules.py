"""LAGNet blocks: strip convolutions, SCEM, LGB, dual MobileNetV3, PAN neck."""

from __future__ import annotations

import pytest
import torch

from components.models.lagnet import LGB, SCEM, DualMobileNetV3, LagPAN, StripConv


def _all_grads(m: torch.nn.Module, *inputs):
    y = m(*inputs)
    ys = y if isinstance(y, list) else [y]
    sum((t * torch.randn_like(t)).sum() for t in ys).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient: {missing[:5]}"


@pytest.mark.parametrize("k,n", [(3, 1), (5, 2), (9, 3)])
def test_strip_convs_are_depthwise_1xk_and_kx1(k, n):
    hz, vt = StripConv(16, k, n, True), StripConv(16, k, n, False)
    assert len(hz.convs) == n
    for c in hz.convs:
        assert c.kernel_size == (1, k) and c.groups == 16
    for c in vt.convs:
        assert c.kernel_size == (k, 1) and c.groups == 16
    x = torch.randn(2, 16, 11, 7)
    assert hz(x).shape == x.shape and vt(x).shape == x.shape


def test_strip_conv_reaches_only_along_its_axis():
    hz = StripConv(1, 5, 2, True)
    torch.nn.init.constant_(hz.convs[0].weight, 1.0)
    torch.nn.init.constant_(hz.convs[1].weight, 1.0)
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    with torch.no_grad():
        y = hz(x) - hz(torch.zeros_like(x))
    assert (y[0, 0, 4] != 0).sum() == 9            # two 1x5 convs reach +-4 columns
    assert (y[0, 0, :4] == 0).all() and (y[0, 0, 5:] == 0).all()


def test_even_kernel_rejected():
    with pytest.raises(ValueError, match="odd"):
        StripConv(8, 4, 2, True)


def test_scem_shape_and_gradients():
    torch.manual_seed(0)
    m = SCEM(64, k=5, n=2)   # channel-attention MLP hidden width 64/16 = 4
    x = torch.randn(2, 64, 12, 12)
    assert m(x).shape == x.shape
    _all_grads(m, x)


def test_lgb_equation_and_gradients():
    m = LGB(8, 16).eval()
    r, l = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6)
    att = m.sa(r - l)
    assert torch.allclose(m(r, l), m.fuse(r * att + l * att))
    assert m(r, l).shape == (1, 16, 6, 6)
    _all_grads(m.train(), r, l)


@pytest.mark.parametrize("variant,chans", [("small", [24, 48, 576]), ("large", [40, 112, 960])])
def test_dual_backbone_strides_and_channels(variant, chans):
    m = DualMobileNetV3(variant, width=32)
    assert m.channels == chans
    outs = m(torch.randn(1, 6, 96, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 12, 8), (1, 32, 6, 4), (1, 32, 3, 2)]


def test_dual_backbone_uses_both_inputs_and_all_parameters():
    m = DualMobileNetV3("small", width=16)
    x = torch.randn(2, 6, 64, 64)
    _all_grads(m, x)
    m.eval()
    with torch.no_grad():
        a = m(x)
        x2 = x.clone()
        x2[:, 3:] = 0                                # change only the LAM
        b = m(x2)
    assert not torch.allclose(a[0], b[0])


def test_pan_equations():
    m = LagPAN(8).eval()
    c3, c4, c5 = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)
    p3, p4, p5 = m([c3, c4, c5])
    c5p = m.lat5(c5)
    c4p = torch.nn.functional.interpolate(c5p, size=(4, 4)) + c4
    c3p = torch.nn.functional.interpolate(c4p, size=(8, 8)) + c3
    assert torch.allclose(p3, m.out3(c3p))
    assert torch.allclose(p4, m.down[0](p3) + c4p)
    assert torch.allclose(p5, m.down[1](p4) + c5p)
    _all_grads(m.train(), [c3, c4, c5])


def test_rgb_only_backbone_projects_each_level():
    from components.models.lagnet import MobileNetV3Features

    m = MobileNetV3Features("small", width=16)
    outs = m(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 8, 8), (1, 16, 4, 4), (1, 16, 2, 2)]
    with pytest.raises(ValueError, match="6 channels"):
        DualMobileNetV3("small", 16)(torch.randn(1, 3, 64, 64))


# ---- the whole model through ultralytics' parser

def _model(variant="small", width=32, k=5, n=2, toggles=None, tmp=None):
    from components.models.detect import DefectDetectionModel
    from components.models.lagnet_yolo import LagnetToggles, write_lagnet_yaml

    cfg = write_lagnet_yaml(tmp, variant, width, k, n, 6, toggles or LagnetToggles())
    return DefectDetectionModel(str(cfg), nc=6, verbose=False)


def test_lagnet_model_takes_rgb_plus_lam_and_has_three_strides(tmp_path):
    m = _model(tmp=tmp_path).eval()
    assert m.yaml["channels"] == 6 and m.stride.tolist() == [8.0, 16.0, 32.0]
    with torch.no_grad():
        y = m(torch.rand(2, 6, 96, 96))[0]
    assert y.shape == (2, 4 + 6, 12 * 12 + 6 * 6 + 3 * 3)
    n_scem = sum(1 for x in m.modules() if isinstance(x, SCEM))
    assert n_scem == 3


def test_table4_toggles_change_inputs_and_parameters(tmp_path):
    from components.models.lagnet_yolo import TABLE4

    sizes = {}
    for row, t in TABLE4.items():
        m = _model(toggles=t, tmp=tmp_path / row.strip("+").replace("+", "_"))
        assert m.yaml["channels"] == (6 if t.lam else 3)
        assert any(isinstance(x, SCEM) for x in m.modules()) == t.scem
        sizes[row] = sum(p.numel() for p in m.parameters())
    assert sizes["baseline"] < sizes["+SCEM"] < sizes["+LAM+SCEM"]
    assert sizes["baseline"] < sizes["+LAM"] < sizes["+LAM+SCEM"]
    # the LAM branch is a second MobileNetV3-Small feature extractor (~0.93 M parameters)
    assert 0.8e6 < sizes["+LAM"] - sizes["baseline"] < 1.2e6


def test_scem_kernel_and_depth_come_from_the_config(tmp_path):
    m = _model(k=9, n=3, tmp=tmp_path)
    strips = [c for x in m.modules() if isinstance(x, StripConv) for c in x.convs]
    assert len(strips) == 3 * 2 * 3                           # 3 levels x (h, v) x n
    assert {c.kernel_size for c in strips} == {(1, 9), (9, 1)}
    with pytest.raises(ValueError, match="odd"):
        _model(k=4, tmp=tmp_path)


def test_lagnet_trains_one_step_with_gradients_everywhere(tmp_path):
    m = _model(width=16, tmp=tmp_path).train()
    from types import SimpleNamespace

    m.args = SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
    batch = {"img": torch.rand(2, 6, 64, 64), "batch_idx": torch.tensor([0.0, 1.0]),
             "cls": torch.tensor([[1.0], [3.0]]), "bboxes": torch.tensor([[0.5, 0.5, 0.3, 0.2], [0.3, 0.6, 0.2, 0.5]])}
    loss, _ = m.loss(batch)
    assert torch.isfinite(loss).all() and loss.sum() > 0
    loss.sum().backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
