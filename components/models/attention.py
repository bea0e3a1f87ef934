"""CBAM's two attention gates (Woo et al., ECCV 2018), shared by DASC-YOLO's CBAM / ResCBAM
(``components/detectors/dasc/layers.py``) and LAGNet's SCEM / LGB
(``components/detectors/lagnet/layers.py``), which names no other attention."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ChannelGate(nn.Module):
    """CBAM channel attention (Woo et al., ECCV 2018, eq. 2):
    ``Mc = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))``, one MLP shared by both pooled vectors,
    hidden width ``c / reduction`` (16)."""

    def __init__(self, c: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, c // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(c, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + mx)


class SpatialGate(nn.Module):
    """CBAM spatial attention (Woo et al., eq. 3): ``Ms = sigmoid(conv7x7([MaxPool_c(F); AvgPool_c(F)]))``
    (conv + BN as in the authors' code)."""

    def __init__(self, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return torch.sigmoid(self.bn(self.conv(pooled)))
