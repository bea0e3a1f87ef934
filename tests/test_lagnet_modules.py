"""LAGNet blocks: strip convolutions, SCEM, LGB, dual MobileNetV3, PAN neck."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.detectors.lagnet.layers import LGB, SCEM, DualMobileNetV3, LagPAN, StripConv


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


def test_pan_is_yolov5_pan_with_ultralytics_c3_blocks():
    # replaces the former test_pan_equations: the neck is now YOLOv5's PAN (concat + C3 after
    # each merge, P3/P4/P5 = w/2w/4w channels), no longer sums at one width
    from ultralytics.nn.modules import C3, Conv

    w, d = 8, 2
    m = LagPAN([16, 24, 40], w, depth=d)
    assert m.widths == (8, 16, 32)
    c3s = {name: x for name, x in m.named_children() if isinstance(x, C3)}
    assert list(c3s) == ["td4", "td3", "bu4", "bu5"]
    # (in, out) of each C3: after cat(Up(C5'), C4), cat(Up(T4'), C3), cat(Down(P3), T4'), cat(Down(P4), C5')
    assert {k: (x.cv1.conv.in_channels, x.cv3.conv.out_channels) for k, x in c3s.items()} == {
        "td4": (16 + 24, 16), "td3": (8 + 16, 8), "bu4": (8 + 8, 16), "bu5": (16 + 16, 32)}
    for x in c3s.values():
        assert len(x.m) == d and not any(b.add for b in x.m)      # YOLOv5 head: C3(..., False)
    for name, k, s, cin, cout in [("lat5", 1, 1, 40, 16), ("lat4", 1, 1, 16, 8),
                                  ("down3", 3, 2, 8, 8), ("down4", 3, 2, 16, 16)]:
        conv = getattr(m, name)
        assert isinstance(conv, Conv)
        assert (conv.conv.kernel_size, conv.conv.stride) == ((k, k), (s, s))
        assert (conv.conv.in_channels, conv.conv.out_channels) == (cin, cout)


def test_pan_dataflow_shapes_and_gradients():
    m = LagPAN(8, 8).eval()
    c3, c4, c5 = torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)
    p3, p4, p5 = m([c3, c4, c5])
    assert [tuple(p.shape) for p in (p3, p4, p5)] == [(1, 8, 8, 8), (1, 16, 4, 4), (1, 32, 2, 2)]
    up = torch.nn.functional.interpolate
    c5p = m.lat5(c5)
    t4 = m.lat4(m.td4(torch.cat([up(c5p, size=(4, 4)), c4], 1)))
    assert torch.allclose(p3, m.td3(torch.cat([up(t4, size=(8, 8)), c3], 1)))
    assert torch.allclose(p4, m.bu4(torch.cat([m.down3(p3), t4], 1)))
    assert torch.allclose(p5, m.bu5(torch.cat([m.down4(p4), c5p], 1)))
    _all_grads(m.train(), [c3, c4, c5])
    with pytest.raises(ValueError, match="depth"):
        LagPAN(8, 8, depth=0)


def test_rgb_only_backbone_projects_each_level():
    from components.detectors.lagnet.layers import MobileNetV3Features

    m = MobileNetV3Features("small", width=16)
    outs = m(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 8, 8), (1, 16, 4, 4), (1, 16, 2, 2)]
    with pytest.raises(ValueError, match="6 channels"):
        DualMobileNetV3("small", 16)(torch.randn(1, 3, 64, 64))


# ---- the whole model through ultralytics' parser

def _model(variant="small", width=32, k=5, n=2, toggles=None, tmp=None):
    from components.models.detect import DefectDetectionModel
    from components.detectors.lagnet.config import LagnetToggles, lagnet_cfg, write_lagnet_yaml

    cfg = write_lagnet_yaml(tmp, lagnet_cfg(variant, width, k, n, 6, toggles or LagnetToggles()))
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
    from components.detectors.lagnet.config import TABLE4

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


def test_model_neck_is_c3_pan_and_head_takes_per_level_channels(tmp_path):
    from ultralytics.nn.modules import C3, Detect

    m = _model(width=16, tmp=tmp_path)
    assert isinstance(m.model[1], LagPAN)
    assert sum(isinstance(x, C3) for x in m.model[1].modules()) == 4
    assert all(not isinstance(x, C3) for layer in m.model[2:] for x in layer.modules())
    assert [s.h.convs[0].in_channels for s in m.model[5:8]] == [16, 32, 64]   # SCEM at P3, P4, P5
    det = m.model[-1]
    assert isinstance(det, Detect) and det.f == [5, 6, 7]
    assert [b[0].conv.in_channels for b in det.cv2] == [16, 32, 64]
    assert m.stride.tolist() == [8.0, 16.0, 32.0]


def test_neck_depth_reaches_the_c3_blocks(tmp_path):
    from components.models.detect import DefectDetectionModel
    from components.detectors.lagnet.config import lagnet_cfg, write_lagnet_yaml

    cfg = write_lagnet_yaml(tmp_path, lagnet_cfg("small", 16, 5, 2, 6, depth=3))
    m = DefectDetectionModel(str(cfg), nc=6, verbose=False)
    assert m.yaml["lagnet"]["depth"] == 3
    assert [len(c.m) for c in (m.model[1].td4, m.model[1].td3, m.model[1].bu4, m.model[1].bu5)] == [3] * 4
    with pytest.raises(ValueError, match="depth"):
        write_lagnet_yaml(tmp_path, lagnet_cfg("small", 16, 5, 2, 6, depth=0))


@pytest.mark.parametrize("variant", ["large", "small"])
def test_paper_widths_give_the_paper_parameter_counts(variant, tmp_path):
    from components.detectors.lagnet.config import PAPER_PARAMS_M, PAPER_WIDTH

    m = _model(variant, PAPER_WIDTH[variant], tmp=tmp_path)
    params = sum(p.numel() for p in m.parameters())
    assert abs(params / 1e6 / PAPER_PARAMS_M[variant] - 1) < 0.10, (variant, params)
    m.eval()
    with torch.no_grad():
        y = m(torch.rand(1, 6, 224, 224))[0]
    assert y.shape == (1, 4 + 6, 28 * 28 + 14 * 14 + 7 * 7)


def test_paper_profile_uses_the_large_paper_width():
    from pathlib import Path

    import yaml

    from components.detectors.lagnet.config import PAPER_WIDTH

    prof = yaml.safe_load((Path(__file__).parents[1] / "profiles" / "paper-gpu-lagnet.yaml").read_text())
    assert prof["lagnet.variant"] == "large" and prof["lagnet.width"] == PAPER_WIDTH["large"]


@pytest.mark.parametrize("scem", [False, True])
def test_rgb_only_config_builds_and_runs(scem, tmp_path):
    from components.detectors.lagnet.config import LagnetToggles

    m = _model(width=16, toggles=LagnetToggles(lam=False, scem=scem), tmp=tmp_path).eval()
    assert m.yaml["channels"] == 3 and isinstance(m.model[1], LagPAN)
    with torch.no_grad():
        y = m(torch.rand(1, 3, 224, 224))[0]
    assert y.shape == (1, 4 + 6, 28 * 28 + 14 * 14 + 7 * 7)


def test_pipeline_export_with_the_c3_neck(tmp_path):
    # baseline -> LAM -> LAGNet as one ONNX graph (components/detectors/lagnet/export.py) on tiny random models
    import numpy as np
    from ultralytics.nn.tasks import DetectionModel

    from components.detectors.lagnet.export import LagnetPipeline, export_pipeline, pipeline_parity

    torch.manual_seed(0)
    base = DetectionModel("yolo11n.yaml", nc=6, verbose=False).fuse().eval()
    lag = _model(width=16, tmp=tmp_path).fuse().eval()
    pipe = LagnetPipeline(base, lag).eval()
    onnx_path = export_pipeline(pipe, tmp_path / "pipeline.onnx", 96, 17)
    r = pipeline_parity(pipe, onnx_path, np.random.default_rng(0).random((2, 3, 96, 96), dtype=np.float32), conf=0.001)
    assert r["shape"] == [2, 4 + 6, 12 * 12 + 6 * 6 + 3 * 3]
    assert r["max_rel_diff"] < 1e-4 and r["same_count"] == 2 and r["unmatched"] == 0


# LAGNet-s and its LAM maker trained on NEU-DET (studies/results/neu_cpu/) before the layers moved: the checkpoint
# pickles them as components.models.lagnet.*. Head outputs on a fixed input, recorded with the code before the move
# (sums over rand(2, C, 224, 224), seed 0): LAGNet on 6 channels, and the one graph LAM maker -> LAM (quantile) -> LAGNet.
NEU_WEIGHTS = Path(__file__).parents[1] / "studies" / "results" / "neu_cpu" / "weights"
NEU_LAGNET_OUT = {"boxes": 840477.9224877357, "scores": 2.0905419713896958}
NEU_PIPELINE_OUT = {"boxes": 892214.603023529, "scores": 31.379074875543903}


def _sums(y: torch.Tensor) -> dict[str, float]:
    y = y.double()
    return {"boxes": float(y[:, :4].sum()), "scores": float(y[:, 4:].sum())}


def test_a_checkpoint_saved_before_the_layers_moved_loads_and_scores_as_before():
    import sys

    from components.detectors.lagnet import LamCoding
    from components.detectors.lagnet.export import load_pipeline
    from components.yolo import YOLO

    with pytest.raises(ModuleNotFoundError, match="components.models.lagnet"):
        torch.load(NEU_WEIGHTS / "cpu-lagnet-s-60.pt", map_location="cpu", weights_only=False)   # the old paths
    m = YOLO(str(NEU_WEIGHTS / "cpu-lagnet-s-60.pt")).model.float().eval()
    assert "components.models.lagnet" not in sys.modules and isinstance(m.model[0], DualMobileNetV3)
    with torch.inference_mode():
        got = _sums(m(torch.rand(2, 6, 224, 224, generator=torch.Generator().manual_seed(0)))[0])
    assert got == pytest.approx(NEU_LAGNET_OUT, rel=1e-5)
    pipe = load_pipeline(NEU_WEIGHTS / "cpu-base-mosaic.pt", NEU_WEIGHTS / "cpu-lagnet-s-60.pt",
                         LamCoding(normalize="quantile", quantile=0.99))
    with torch.inference_mode():
        got = _sums(pipe(torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))))
    assert got == pytest.approx(NEU_PIPELINE_OUT, rel=1e-5)
