"""DASC-YOLO blocks: shapes kept, a gradient on every parameter, the paper's initialisations,
and the equations checked on hand-built inputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from components.detectors.dasc.layers import CBAM, CRU, CSA, SRU, ChannelGate, ProtoNet, ResCBAM, SCConv, SpatialGate

BLOCKS = {
    "ChannelGate": lambda c: ChannelGate(c),
    "SpatialGate": lambda c: SpatialGate(),
    "CBAM": lambda c: CBAM(c),
    "ResCBAM": lambda c: ResCBAM(c),
    "SRU": lambda c: SRU(c),
    "CRU": lambda c: CRU(c),
    "SCConv": lambda c: SCConv(c),
    "CSA": lambda c: CSA(c),
    "CSA-unweighted": lambda c: CSA(c, weighted=False),
    "ProtoNet": lambda c: ProtoNet(c, k=4),
}


@pytest.mark.parametrize("name", [n for n in BLOCKS if n not in ("ChannelGate", "SpatialGate")])
@pytest.mark.parametrize("shape", [(2, 64, 20, 20), (1, 32, 13, 7)])
def test_shape_is_kept(name, shape):
    m = BLOCKS[name](shape[1])
    assert m(torch.randn(shape)).shape == shape


@pytest.mark.parametrize("name", list(BLOCKS))
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    m = BLOCKS[name](32).train()
    x = torch.randn(2, 32, 16, 16)
    y = m(x)
    (y * torch.randn_like(y)).sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{name}.{pname} has no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}.{pname}"


def test_cbam_is_woo_et_al_not_ultralytics():
    gate = ChannelGate(64)
    assert gate.mlp[0].out_channels == 64 // 16  # shared MLP, reduction 16
    sg = SpatialGate()
    assert sg.conv.kernel_size == (7, 7) and sg.conv.in_channels == 2  # [max, mean]
    # the max-pool branch matters: a single hot pixel changes the channel weights
    x = torch.zeros(1, 64, 8, 8)
    y = x.clone()
    y[0, 3, 2, 2] = 50.0
    torch.nn.init.constant_(gate.mlp[0].weight, 0.1)
    assert not torch.allclose(gate(x), gate(y))


def test_rescbam_is_residual():
    m = ResCBAM(16)
    x = torch.randn(1, 16, 8, 8)
    assert torch.allclose(m(x), x + m.cbam(x))


def test_sru_gate_and_cross_reconstruction():
    m = SRU(4, groups=2)
    with torch.no_grad():
        m.gn.weight.copy_(torch.tensor([1.0, 1.0, 1.0, 1.0]))
        m.gn.bias.zero_()
    x = torch.randn(1, 4, 3, 3)
    gn = m.gn(x)
    w = torch.sigmoid(gn * 0.25)                       # W_gamma = 1/4 for equal gammas
    w1 = torch.where(w > 0.5, torch.ones_like(w), w)
    w2 = torch.where(w > 0.5, torch.zeros_like(w), w)
    x1, x2 = w1 * x, w2 * x
    expected = torch.cat([x1[:, :2] + x2[:, 2:], x1[:, 2:] + x2[:, :2]], 1)
    assert torch.allclose(m(x), expected, atol=1e-6)


def test_cru_split_and_squeeze():
    m = CRU(64)
    assert (m.up, m.low) == (32, 32)                   # alpha = 1/2
    assert m.squeeze_up.out_channels == 16 and m.squeeze_low.out_channels == 16  # ratio 2
    assert m.gwc.groups == 2


def test_csa_init_and_equation():
    m = CSA(16).eval()
    assert m.alpha.item() == 0.5 and m.lambda_s.item() == 1.0 and m.lambda_g.item() == 1.0
    x = torch.randn(1, 16, 10, 10)
    fs = m.small(x)
    fg = torch.nn.functional.interpolate(m.glob(torch.nn.functional.adaptive_avg_pool2d(x, 1)),
                                         size=(10, 10), mode="bilinear", align_corners=False)
    att = torch.sigmoid(m.fuse(torch.cat([fs, fg], 1)))
    assert torch.allclose(m(x), 0.5 * att * x + 0.5 * x, atol=1e-6)
    with torch.no_grad():
        m.alpha.zero_()
    assert torch.allclose(m(x), x)                     # alpha = 0: identity
    u = CSA(16, weighted=False)
    assert not any("lambda" in n for n, _ in u.named_parameters())


def test_protonet_init_k_and_equation():
    m = ProtoNet(32, k=4).eval()
    assert m.alpha.item() == 0.5 and m.beta.item() == 0.5   # the paper's initialisation
    assert m.prototypes.shape[0] == 5                         # K = 4 defect + 1 background
    assert m.log_tau.exp().item() == pytest.approx(0.1)
    assert m.encoder[3].groups == 4 and m.encoder[4].p == 0.1
    x = torch.randn(2, 32, 6, 6)
    fore, back = m.masks(x)
    assert fore.shape == back.shape == (2, 1, 6, 6)
    assert ((back >= 0) & (back <= 1) & (fore <= 1 - back + 1e-6)).all()
    assert torch.allclose(m(x), x * (1 + 0.5 * fore) - x * (0.5 * back), atol=1e-6)
    for k in (2, 8):
        assert ProtoNet(32, k=k).prototypes.shape[0] == k + 1


def test_protonet_similarity_is_cosine_over_tau():
    m = ProtoNet(8, k=1).eval()
    x = torch.randn(1, 8, 4, 4)
    f = torch.nn.functional.normalize(m.encoder(x), dim=1)
    p = torch.nn.functional.normalize(m.prototypes, dim=1)
    s = torch.einsum("bchw,kc->bkhw", f, p) / 0.1
    fore, back = m.masks(x)
    assert torch.allclose(back, s.softmax(1)[:, :1], atol=1e-6)
    assert s.abs().max() <= 1 / 0.1 + 1e-4               # |cosine| <= 1


def test_zero_gated_dasc_yolo_starts_as_the_yolo11_it_extends():
    """dasc.gate=zero: with YOLO11n's weights copied into the shared layers, DASC-YOLO-n's output
    equals YOLO11n's exactly (every inserted block is the identity at init); without the gate the
    paper's blocks change it."""
    from components.detectors.dasc.config import DascToggles, dasc_yolo_cfg
    from components.models.detect import DefectDetectionModel

    inserted = (ResCBAM, CBAM, SCConv, CSA, ProtoNet)
    def head_inputs(model, x):           # the P3/P4/P5 features Detect receives
        got = []
        h = model.model[-1].register_forward_pre_hook(lambda m, inp: got.append([t.clone() for t in inp[0]]))
        with torch.no_grad():
            model(x)
        h.remove()
        return got[0]

    torch.manual_seed(0)
    base = DefectDetectionModel("yolo11n.yaml", nc=6, verbose=False).eval()
    x = torch.rand(1, 3, 128, 128)
    ref = head_inputs(base, x)
    for gate, same in (("zero", True), ("none", False)):
        dasc = DefectDetectionModel(dasc_yolo_cfg("n", 6, DascToggles(gate=gate, csa_context="local")), nc=6,
                                    verbose=False).eval()
        shared = [m for m in dasc.model if not isinstance(m, inserted)]
        assert len(shared) == len(base.model)
        for a, b in zip(shared, base.model):
            a.load_state_dict(b.state_dict())
        out = head_inputs(dasc, x)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out, ref)) is same


def test_csa_local_context_varies_over_space_and_global_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 16, 12, 12)
    for local, varies in ((0, False), (7, True)):
        m = CSA(16, local=local).eval()
        fg = m.glob(torch.nn.functional.avg_pool2d(x, 7, 1, 3, count_include_pad=False)) if local else \
            m.glob(torch.nn.functional.adaptive_avg_pool2d(x, 1)).expand(-1, -1, 12, 12)
        assert (fg.flatten(2).std(2).max().item() > 1e-4) is varies
    with pytest.raises(ValueError, match="odd"):
        CSA(16, local=4)


def test_a_dasc_yaml_builds_in_a_fresh_interpreter_without_importing_the_block_modules(tmp_path):
    """Building a model registers the blocks itself (``register_blocks``): no import-order luck."""
    import subprocess
    import sys

    from components.detectors.dasc.config import DascToggles, write_dasc_yaml

    cfg = write_dasc_yaml(tmp_path, "n", 6, DascToggles())
    code = ("import sys; from components.models.detect import DefectDetectionModel; "
            "assert 'components.detectors.dasc.config' not in sys.modules; "
            f"m = DefectDetectionModel(r'{cfg}', nc=6, verbose=False); "
            "print(sorted({type(x).__name__ for x in m.model} & {'ResCBAM', 'SCConv', 'CSA', 'ProtoNet'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['CSA', 'ProtoNet', 'ResCBAM', 'SCConv']"


def test_block_probe_non_affine_share_against_hand_values():
    from studies.dasc_blocks import AffineStats

    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    scaled = AffineStats()
    scaled.add(x, 2 * x - 1)                      # a per-channel affine map: nothing beyond re-scaling
    assert scaled.result()["non_affine"] == pytest.approx(0.0, abs=1e-9)
    noisy = AffineStats()
    e = torch.tensor([1.0, -1.0, -1.0, 1.0]).reshape(1, 1, 2, 2)   # mean 0, uncorrelated with x
    noisy.add(x, x + e)
    r = noisy.result()
    # var(y) = var(x) + var(e) = 1.25 + 1; the affine fit explains 1.25 -> 1 / 2.25 left
    assert r["non_affine"] == pytest.approx(1 / 2.25, abs=1e-4)
    assert r["rel_change"] == pytest.approx(2 / 30 ** 0.5, abs=1e-4)          # ||e|| / ||x||


def test_box_mask_marks_the_cells_whose_centre_lies_in_a_box():
    from components.models.loss import box_mask

    # image 0: box x 0.25..0.75, y 0.25..0.75 on a 4x4 grid (centres 0.125, 0.375, 0.625, 0.875)
    # image 1: box x 0..0.5, y 0.5..1 on a 2x4 grid (x centres 0.125 0.375 ..., y centres 0.25 0.75)
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5]])
    m = box_mask(boxes, torch.tensor([0, 1]), 3, 4, 4)
    assert m.shape == (3, 1, 4, 4)
    assert m[0, 0].tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert m[1, 0].tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert m[2].sum() == 0                                   # an image without boxes: all background
    two = box_mask(torch.tensor([[0.5, 0.5, 0.5, 0.5]] * 2), torch.tensor([0, 0]), 1, 4, 4)
    assert two.max() == 1                                    # overlapping boxes stay a 0/1 mask


def test_proto_mask_loss_is_the_bce_of_one_minus_m_back_against_the_box_mask():
    from components.models.loss import proto_mask_loss

    back = torch.full((1, 1, 2, 2), 0.8)                    # foreground probability 0.2 everywhere
    boxes, idx = torch.tensor([[0.25, 0.5, 0.5, 1.0]]), torch.tensor([0])   # the left column
    # two cells with target 1: -log 0.2 each; two with target 0: -log 0.8 each; mean of the four
    want = (2 * -math.log(0.2) + 2 * -math.log(0.8)) / 4
    assert proto_mask_loss([back], boxes, idx).item() == pytest.approx(want, rel=1e-5)
    perfect = torch.tensor([[[[1e-6, 1.0], [1e-6, 1.0]]]])  # M_back 0 inside the box, 1 outside
    assert proto_mask_loss([perfect, back], boxes, idx).item() == pytest.approx(want / 2, rel=1e-3)


def test_dasc_proto_loss_adds_a_fourth_loss_item_that_trains_the_prototypes():
    """dasc.proto_loss > 0: the detection loss gains ``proto_loss`` (gain x the mask BCE), its
    gradient reaches the prototypes, and copies of the model keep no forward's mask."""
    import copy

    from ultralytics.cfg import get_cfg

    from components.detectors.dasc.config import DascToggles, dasc_yolo_cfg
    from components.models.detect import DefectDetectionModel

    torch.manual_seed(0)
    batch = {"img": torch.rand(2, 3, 64, 64), "batch_idx": torch.tensor([0.0, 1.0]),
             "bboxes": torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.3, 0.3, 0.2, 0.4]]),
             "cls": torch.tensor([[1.0], [2.0]])}
    items = {}
    for gain in (0.0, 2.0):
        torch.manual_seed(0)
        m = DefectDetectionModel(dasc_yolo_cfg("n", 6, DascToggles(proto_loss=gain)), nc=6, verbose=False)
        m.args = get_cfg()
        loss, items[gain] = m(batch)
        assert len(loss) == (4 if gain else 3)
    assert set(items[2.0]) == set(items[0.0]) | {"proto_loss"}
    for k in items[0.0]:                                     # the detection terms are unchanged
        assert items[2.0][k].item() == pytest.approx(items[0.0][k].item(), rel=1e-5)
    protos = [p for n, p in m.named_parameters() if n.endswith("prototypes")]
    torch.autograd.backward(loss[3])
    assert len(protos) == 3 and all(p.grad.abs().sum() > 0 for p in protos)
    assert not any(hasattr(b, "last_back") for b in copy.deepcopy(m).modules())
    with pytest.raises(ValueError, match="protonet_k"):
        DascToggles(protonet_k=0, proto_loss=1.0)


# A DASC-YOLO trained on NEU-DET (studies/results/neu_cpu/) before its layers moved: the checkpoint pickles them
# as components.models.dasc.*. Its head output on a fixed input, recorded with the code before the move.
NEU_DASC = Path(__file__).parents[1] / "studies" / "results" / "neu_cpu" / "weights" / "cpu-dasc-paper.pt"
NEU_DASC_OUT = {"boxes": 741357.6722283363, "scores": 199.3620203656514}     # sums over rand(2, 3, 224, 224), seed 0


def test_a_checkpoint_saved_before_the_layers_moved_loads_and_scores_as_before():
    import sys
    import zipfile

    from components.yolo import YOLO

    pickled = b"".join(zipfile.ZipFile(NEU_DASC).read(n) for n in zipfile.ZipFile(NEU_DASC).namelist()
                       if n.endswith("data.pkl"))
    assert b"components.models.dasc" in pickled and b"components.detectors" not in pickled   # really the old paths
    with pytest.raises(ModuleNotFoundError, match="components.models.dasc"):
        torch.load(NEU_DASC, map_location="cpu", weights_only=False)       # without the alias map: unloadable
    m = YOLO(str(NEU_DASC)).model.float().eval()
    assert "components.models.dasc" not in sys.modules                       # mapped while loading only
    assert {ResCBAM, SCConv, CSA, ProtoNet} <= {type(x) for x in m.modules()}   # the classes of today's package
    with torch.inference_mode():
        y = m(torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)))[0].double()
    assert y.shape == (2, 4 + 6, 28 * 28 + 14 * 14 + 7 * 7)
    assert float(y[:, :4].sum()) == pytest.approx(NEU_DASC_OUT["boxes"], rel=1e-6)
    assert float(y[:, 4:].sum()) == pytest.approx(NEU_DASC_OUT["scores"], rel=1e-5)
