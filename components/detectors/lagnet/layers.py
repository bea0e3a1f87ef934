"""LAGNet blocks (``../shared/papers/lagnet.md``), one block per class.

Dual-branch MobileNetV3 backbone (torchvision, ``weights=None``: nothing is downloaded), LGB
fusion at C3/C4/C5, the PAN neck of eqs (4)-(5) as YOLOv5's (ultralytics' ``C3`` blocks; P3 /
P4 / P5 = ``width`` / 2 ``width`` / 4 ``width`` channels, ``depth`` C3 repeats) and SCEM after
P3/P4/P5. The spatial and channel attentions are CBAM's (``components/models/attention.py``), as
LAGNet names no other.
``config.py`` beside this module wires them into an ultralytics detection model (YAML),
``MobileNetV3Features`` is the single-branch (RGB only, "w/o LAM") backbone of Table 4.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from ultralytics.nn.modules import C3, Conv

from ...models.attention import ChannelGate, SpatialGate

# torchvision MobileNetV3 ``features`` cut points for stride 8 / 16 / 32 outputs
STAGES = {"large": (7, 13), "small": (4, 9)}


class StripConv(nn.Module):
    """``n`` stacked depthwise strip convolutions, all ``1 x k`` (horizontal) or all ``k x 1``
    (vertical): LAGNet eqs (6)-(7). ``k`` must be odd so the output keeps the input size."""

    def __init__(self, c: int, k: int, n: int, horizontal: bool):
        super().__init__()
        if k < 1 or k % 2 == 0:
            raise ValueError(f"strip kernel k must be odd, got {k}")
        if n < 1:
            raise ValueError(f"strip depth n must be >= 1, got {n}")
        size, pad = ((1, k), (0, k // 2)) if horizontal else ((k, 1), (k // 2, 0))
        self.convs = nn.Sequential(*(nn.Conv2d(c, c, size, padding=pad, groups=c) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class SCEM(nn.Module):
    """Strip Convolution Enhancement Module, LAGNet section 3.4, eqs (6)-(10):

    ``P_h = DW_{1xk}^n(P)``, ``P_v = DW_{kx1}^n(P)``;
    ``S = PW(P_* * CA(P_*) * SA(P_*))`` for each branch (channel and spatial attention in
    parallel, both multiplied in); ``P' = Conv1x1(P + Conv1x1(S_h * S_v))``.
    """

    def __init__(self, c: int, k: int = 5, n: int = 2):
        super().__init__()
        self.h = StripConv(c, k, n, horizontal=True)
        self.v = StripConv(c, k, n, horizontal=False)
        self.ca_h, self.sa_h = ChannelGate(c), SpatialGate()
        self.ca_v, self.sa_v = ChannelGate(c), SpatialGate()
        self.pw_h, self.pw_v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.mix = nn.Conv2d(c, c, 1)
        self.out = Conv(c, c, 1)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        ph, pv = self.h(p), self.v(p)
        sh = self.pw_h(ph * self.ca_h(ph) * self.sa_h(ph))
        sv = self.pw_v(pv * self.ca_v(pv) * self.sa_v(pv))
        return self.out(p + self.mix(sh * sv))


class LGB(nn.Module):
    """Location Guidance Block, LAGNet section 3.3, eqs (2)-(3):
    ``C_D = C_R - C_L``; ``C = Conv1x1(C_R * SA(C_D) + C_L * SA(C_D))`` (to ``c_out`` channels)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.sa = SpatialGate()
        self.fuse = Conv(c_in, c_out, 1)

    def forward(self, rgb: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        att = self.sa(rgb - lam)
        return self.fuse(rgb * att + lam * att)


def _mobilenet_stages(variant: str) -> nn.ModuleList:
    """torchvision's MobileNetV3 ``features`` (``weights=None``) cut into stride 8/16/32 stages."""
    if variant not in STAGES:
        raise ValueError(f"variant must be 'large' or 'small', got '{variant}'")
    build = mobilenet_v3_large if variant == "large" else mobilenet_v3_small
    a, b = STAGES[variant]
    f = build(weights=None).features
    return nn.ModuleList([f[:a], f[a:b], f[b:]])


def _run_stages(branch: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    for stage in branch:
        x = stage(x)
        outs.append(x)
    return outs


def _stage_channels(branch: nn.ModuleList) -> list[int]:
    with torch.no_grad():
        return [t.shape[1] for t in _run_stages(branch, torch.zeros(1, 3, 64, 64))]


class MobileNetV3Features(nn.Module):
    """Single-branch backbone (Table 4 rows without LAM): torchvision MobileNetV3 on the RGB
    image, C3/C4/C5 projected to ``width`` channels by a 1x1 conv each."""

    def __init__(self, variant: str = "large", width: int = 128):
        super().__init__()
        self.branch = _mobilenet_stages(variant)
        self.channels = _stage_channels(self.branch)
        self.proj = nn.ModuleList(Conv(c, width, 1) for c in self.channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [p(t) for p, t in zip(self.proj, _run_stages(self.branch, x))]


class DualMobileNetV3(nn.Module):
    """Two torchvision MobileNetV3 feature extractors (``large`` = LAGNet, ``small`` = LAGNet-s),
    one on the RGB image, one on the LAM, fused by an LGB at each of C3, C4, C5 (strides 8/16/32)
    into ``width`` channels. Input: ``(B, 6, H, W)`` = RGB and LAM stacked."""

    def __init__(self, variant: str = "large", width: int = 128):
        super().__init__()
        self.branches = nn.ModuleList([_mobilenet_stages(variant), _mobilenet_stages(variant)])
        self.channels = _stage_channels(self.branches[0])
        self.lgb = nn.ModuleList(LGB(c, width) for c in self.channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] != 6:
            raise ValueError(f"LAGNet takes RGB + LAM stacked (6 channels), got {x.shape[1]}")
        r = _run_stages(self.branches[0], x[:, :3])
        m = _run_stages(self.branches[1], x[:, 3:])
        return [g(a, b) for g, a, b in zip(self.lgb, r, m)]


def pan_widths(width: int) -> tuple[int, int, int]:
    """Neck channels of P3, P4, P5 from one base ``width`` (= P3): YOLOv5's 1 : 2 : 4 ladder
    (YOLOv5-L: 256 / 512 / 1024)."""
    return width, 2 * width, 4 * width


class LagPAN(nn.Module):
    """LAGNet's top-down + bottom-up neck, eqs (4)-(5), built as YOLOv5's PAN (the paper's
    baseline; ``(+)`` in the equations = channel concat followed by a C3 block). ultralytics'
    own ``C3`` (CSP bottleneck, ``shortcut=False`` as in YOLOv5's head) and ``Conv``:

    top-down   ``C5' = Conv1x1(C5)``                               (-> w4)
               ``T4  = C3(cat(Up(C5'), C4))``, ``T4' = Conv1x1(T4)``   (-> w4, -> w3)
               ``P3  = C3(cat(Up(T4'), C3))``                          (-> w3)
    bottom-up  ``P4  = C3(cat(Down(P3), T4'))``                        (-> w4)
               ``P5  = C3(cat(Down(P4), C5'))``                        (-> w5)

    (Up: nearest to the skip's size; Down: 3x3 stride-2 Conv; comments: yolov5l.yaml head layers.)

    ``c_in``: the backbone's C3/C4/C5 channels (one int for all three, or three ints);
    ``width``: P3 channels, P4 = 2 x width, P5 = 4 x width (``pan_widths``); ``depth``: bottleneck
    repeats ``n`` in each of the four C3 blocks (YOLOv5: 3 x depth multiple, L = 3, S = 1).
    Output: ``[P3, P4, P5]`` at the input strides, ``width``, ``2 width``, ``4 width`` channels."""

    def __init__(self, c_in: int | list[int] | tuple[int, int, int], width: int, depth: int = 1):
        super().__init__()
        i3, i4, i5 = (c_in,) * 3 if isinstance(c_in, int) else c_in
        w3, w4, w5 = self.widths = pan_widths(width)
        if depth < 1:
            raise ValueError(f"LagPAN depth (C3 repeats) must be >= 1, got {depth}")
        self.lat5 = Conv(i5, w4, 1)                       # YOLOv5 head layer 10
        self.td4 = C3(w4 + i4, w4, depth, shortcut=False)  # 13
        self.lat4 = Conv(w4, w3, 1)                       # 14
        self.td3 = C3(w3 + i3, w3, depth, shortcut=False)  # 17: P3
        self.down3 = Conv(w3, w3, 3, 2)                   # 18
        self.bu4 = C3(2 * w3, w4, depth, shortcut=False)   # 20: P4
        self.down4 = Conv(w4, w4, 3, 2)                   # 21
        self.bu5 = C3(2 * w4, w5, depth, shortcut=False)   # 23: P5

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="nearest")

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        c3, c4, c5 = feats
        c5p = self.lat5(c5)
        t4 = self.lat4(self.td4(torch.cat([self._up(c5p, c4), c4], 1)))
        p3 = self.td3(torch.cat([self._up(t4, c3), c3], 1))
        p4 = self.bu4(torch.cat([self.down3(p3), t4], 1))
        p5 = self.bu5(torch.cat([self.down4(p4), c5p], 1))
        return [p3, p4, p5]
