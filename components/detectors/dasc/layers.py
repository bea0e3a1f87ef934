"""DASC-YOLO blocks (``../shared/papers/dasc-yolo.md``), one block per class.

Every block keeps its input shape (``c`` channels in, ``c`` out) so it can be inserted anywhere
in a YOLO11 graph; ``config.py`` beside this module places them. CBAM's two gates
(``ChannelGate``, ``SpatialGate``) are shared with LAGNet: ``components/models/attention.py``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from ultralytics.nn.modules import Conv, DWConv

from ...models.attention import ChannelGate, SpatialGate


class Gated(nn.Module):
    """Optional zero-initialised residual gate for an inserted block (ReZero / LayerScale idea):
    ``y = x + g * (f(x) - x)`` with a learnt scalar ``g`` starting at 0, so a network with every
    DASC block gated starts as the YOLO11 it extends and each block only departs from identity
    as far as training finds useful. Not in the paper (``dasc.gate``: none = the paper's blocks)."""

    def _init_gate(self, gate: bool) -> None:
        self.gated = bool(gate)
        if self.gated:
            self.gate = nn.Parameter(torch.zeros(1))

    def _out(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.gate * (y - x) if self.gated else y


# --------------------------------------------------------------------------- CBAM / ResCBAM

class CBAM(Gated):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018): ``F' = Mc(F) * F``,
    ``F'' = Ms(F') * F'``. Not ultralytics' ``CBAM``, which has no max-pool branch and no MLP."""

    def __init__(self, c: int, reduction: int = 16, kernel: int = 7, gate: bool = False):
        super().__init__()
        self.channel = ChannelGate(c, reduction)
        self.spatial = SpatialGate(kernel)
        self._init_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self.channel(x)
        return self._out(x, y * self.spatial(y))


class ResCBAM(Gated):
    """DASC-YOLO ResCBAM (section 3.4, Fig. 5a): identity mapping + attention refinement,
    ``y = x + CBAM(x)`` (gated: ``x + g * CBAM(x)``)."""

    def __init__(self, c: int, reduction: int = 16, kernel: int = 7, gate: bool = False):
        super().__init__()
        self.cbam = CBAM(c, reduction, kernel)
        self._init_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(x, x + self.cbam(x))


# --------------------------------------------------------------------------- SCConv

class SRU(nn.Module):
    """Spatial Reconstruction Unit of SCConv (Li, Wen, He, CVPR 2023, section 3.1).

    GroupNorm, then weights ``W_gamma = gamma_i / sum_j gamma_j`` of its scale factors;
    ``W = sigmoid(W_gamma * GN(X))`` is gated at 0.5 into informative ``W1`` (1 above the
    threshold) and non-informative ``W2`` (0 above it) parts; ``X1 = W1 X``, ``X2 = W2 X`` are
    cross-reconstructed: ``[X11 + X22, X12 + X21]``.
    """

    def __init__(self, c: int, groups: int = 16, gate: float = 0.5):
        super().__init__()
        self.gn = nn.GroupNorm(math.gcd(groups, c), c)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gn = self.gn(x)
        w_gamma = (self.gn.weight / self.gn.weight.sum()).view(1, -1, 1, 1)
        w = torch.sigmoid(gn * w_gamma)
        info = w > self.gate
        x1 = torch.where(info, torch.ones_like(w), w) * x
        x2 = torch.where(info, torch.zeros_like(w), w) * x
        h = x.shape[1] // 2
        x11, x12 = x1[:, :h], x1[:, h:]
        x21, x22 = x2[:, :x.shape[1] - h], x2[:, x.shape[1] - h:]
        return torch.cat([x11 + x22, x12 + x21], 1)


class CRU(nn.Module):
    """Channel Reconstruction Unit of SCConv (Li, Wen, He, CVPR 2023, section 3.2).

    Split ``alpha = 1/2`` of the channels into an upper (rich) and a lower part, squeeze each
    by ratio 2 (1x1); upper: group-wise 3x3 conv (groups 2) + point-wise conv; lower: point-wise
    conv concatenated with its input; fuse with ``softmax(GAP([Y1; Y2]))`` weights and add
    the two halves.
    """

    def __init__(self, c: int, alpha: float = 0.5, squeeze: int = 2, groups: int = 2, kernel: int = 3):
        super().__init__()
        self.up = int(alpha * c)
        self.low = c - self.up
        up_s, low_s = max(1, self.up // squeeze), max(1, self.low // squeeze)
        self.squeeze_up = nn.Conv2d(self.up, up_s, 1, bias=False)
        self.squeeze_low = nn.Conv2d(self.low, low_s, 1, bias=False)
        self.gwc = nn.Conv2d(up_s, c, kernel, padding=kernel // 2, groups=math.gcd(groups, math.gcd(up_s, c)))
        self.pwc_up = nn.Conv2d(up_s, c, 1, bias=False)
        self.pwc_low = nn.Conv2d(low_s, c - low_s, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, low = torch.split(x, [self.up, self.low], 1)
        up, low = self.squeeze_up(up), self.squeeze_low(low)
        y1 = self.gwc(up) + self.pwc_up(up)
        y2 = torch.cat([self.pwc_low(low), low], 1)
        out = torch.cat([y1, y2], 1)
        out = F.softmax(F.adaptive_avg_pool2d(out, 1), dim=1) * out
        a, b = out.chunk(2, 1)
        return a + b


class SCConv(Gated):
    """Spatial and Channel reconstruction Convolution (Li, Wen, He, CVPR 2023): ``CRU(SRU(x))``,
    channels in = channels out. DASC-YOLO uses it in the deep backbone layers (section 3.4)."""

    def __init__(self, c: int, groups: int = 16, threshold: float = 0.5, alpha: float = 0.5, squeeze: int = 2,
                 gate: bool = False):
        super().__init__()
        self.sru = SRU(c, groups, threshold)
        self.cru = CRU(c, alpha, squeeze)
        self._init_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(x, self.cru(self.sru(x)))


# --------------------------------------------------------------------------- CSA

class CSA(Gated):
    """Cross-Scale Attention, DASC-YOLO section 3.2, eqs (1)-(2):

    ``F_fusion = Concat[lambda_s * F_s(x), lambda_g * F_g(x)]``,
    ``F_csa = alpha * sigmoid(W_fusion F_fusion) * x + (1 - alpha) * x``.

    ``F_s``: small-object branch, compress (1x1, c -> c/4), a depthwise 3x3 for local detail,
    expand (1x1, c/4 -> c): the paper's "compression-expansion convolutional layer", kept cheap.
    ``F_g``: global branch, adaptive average pooling (to 1 x 1 by default: the paper's "channel
    attention weights"; a coarser grid such as 3 x 3 works in PyTorch but does not export to
    ONNX unless it divides the feature size), a 1x1 conv with channel reduction 4, bilinear
    resize back to the input size. ``W_fusion``: 1x1 conv to c.
    ``lambda_s, lambda_g`` start at 1, ``alpha`` at 0.5 (the paper gives no initial values).
    ``weighted=False`` is Table 3's "w/o weighted fusion": plain concatenation (lambdas fixed at 1).
    ``local=k > 0`` (not in the paper): the global branch pools a ``k`` x ``k`` window around every
    pixel (stride 1) instead of the whole map, so it carries spatial context (a 1 x 1 pool broadcast
    back is the same vector at every pixel); exports to ONNX at any input size. (An int, not a
    name: ultralytics' YAML parser evaluates string arguments.)
    """

    def __init__(self, c: int, reduction: int = 4, pool: int = 1, weighted: bool = True, gate: bool = False,
                 local: int = 0):
        super().__init__()
        if local < 0 or (local and local % 2 == 0):
            raise ValueError(f"CSA local window must be 0 (global) or odd, got {local}")
        self.local = int(local)
        cr = max(1, c // reduction)
        self.small = nn.Sequential(Conv(c, cr, 1), DWConv(cr, cr, 3), Conv(cr, c, 1))
        self.pool = pool
        self.glob = nn.Sequential(nn.Conv2d(c, cr, 1), nn.SiLU())  # no BN: 1 x 1 input
        self.fuse = nn.Conv2d(c + cr, c, 1)
        self.weighted = weighted
        if weighted:
            self.lambda_s = nn.Parameter(torch.ones(1))
            self.lambda_g = nn.Parameter(torch.ones(1))
        else:
            self.register_buffer("lambda_s", torch.ones(1))
            self.register_buffer("lambda_g", torch.ones(1))
        self.alpha = nn.Parameter(torch.full((1,), 0.5))
        self._init_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fs = self.small(x)
        if self.local:
            fg = self.glob(F.avg_pool2d(x, self.local, 1, self.local // 2, count_include_pad=False))
        else:
            fg = self.glob(F.adaptive_avg_pool2d(x, self.pool))
            fg = F.interpolate(fg, size=x.shape[-2:], mode="bilinear", align_corners=False)
        att = torch.sigmoid(self.fuse(torch.cat([self.lambda_s * fs, self.lambda_g * fg], 1)))
        return self._out(x, self.alpha * att * x + (1 - self.alpha) * x)


# --------------------------------------------------------------------------- ProtoNet

class ProtoNet(Gated):
    """Prototype attention, DASC-YOLO section 3.3, eqs (3)-(4).

    Encoder: 1x1 conv (c -> c), 3x3 group conv (groups 4), dropout 0.1. Prototypes: one
    background prototype plus ``k`` defect prototypes (``k`` = the paper's K: **K counts defect
    prototypes only**, so K=4 means 5 prototype vectors), all L2-normalised, as are the encoded
    pixel features. ``S = f p^T / tau`` (eq. 3) per pixel, softmax over prototypes; the
    background probability is the suppression mask ``M_back``, the max over defect
    prototypes the enhancement mask ``M_fore``;
    ``F = F (1 + alpha M_fore) - F (beta M_back)`` (eq. 4), alpha = beta = 0.5 at init.
    ``tau`` is learnt as ``exp(log_tau)`` (always positive), starting at 0.1.
    Similarities are pixel-wise (the masks are spatial), not of a pooled image vector.
    """

    def __init__(self, c: int, k: int = 4, groups: int = 4, dropout: float = 0.1, tau: float = 0.1,
                 gate: bool = False):
        super().__init__()
        if k < 1:
            raise ValueError("ProtoNet needs k >= 1 defect prototypes")
        ce = max(groups, c // groups * groups)
        self.k = k
        self.encoder = nn.Sequential(nn.Conv2d(c, ce, 1, bias=False), nn.BatchNorm2d(ce), nn.SiLU(),
                                     nn.Conv2d(ce, ce, 3, padding=1, groups=groups, bias=False),
                                     nn.Dropout2d(dropout))
        self.prototypes = nn.Parameter(torch.randn(k + 1, ce) * 0.1)  # row 0: background
        self.log_tau = nn.Parameter(torch.tensor(math.log(tau)))
        self.alpha = nn.Parameter(torch.tensor(0.5))
        self.beta = nn.Parameter(torch.tensor(0.5))
        self._init_gate(gate)

    def masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = F.normalize(self.encoder(x), dim=1)                    # (B, ce, H, W)
        p = F.normalize(self.prototypes, dim=1)                    # (K+1, ce)
        s = torch.einsum("bchw,kc->bkhw", f, p) / self.log_tau.exp()
        prob = s.softmax(1)
        return prob[:, 1:].amax(1, keepdim=True), prob[:, :1]     # M_fore, M_back

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fore, back = self.masks(x)
        self.last_back = back                  # read by the optional mask loss (DefectDetectionLoss)
        return self._out(x, x * (1 + self.alpha * fore) - x * (self.beta * back))

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("last_back", None)           # a forward's mask is not part of the model: copies and
        return state                           # checkpoints leave it out
