"""DRRN: Tai, Yang, Liu, "Image Super-Resolution via Deep Recursive Residual Network", CVPR 2017.

One recursive block (B1) of ``n_units`` residual units (U9 by default; ``n_units=25`` gives B1U25)
whose two pre-activation convolutions are shared by every unit; each unit adds the block's entry
features (local residual learning) and the output adds the bicubic input (global residual).
Deviation: no batch normalisation inside the units, as in the widely used PyTorch port; the
official Caffe model's BN folds into the convolutions at inference anyway.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sr_runtime.spec import IOSpec

__all__ = ["DRRN"]


class DRRN(nn.Module):
    """Input/output (N, 1, H, W) Y in [0, 1] at the HR size (bicubic pre-upsampled)."""

    def __init__(self, *, scale: int, n_units: int = 9, n_feats: int = 128) -> None:
        super().__init__()
        self.scale = scale
        self.n_units = n_units
        self.entry = nn.Conv2d(1, n_feats, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1, bias=False)
        self.exit = nn.Conv2d(n_feats, 1, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        for layer in (self.entry, self.conv1, self.conv2, self.exit):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        self.exit.weight.data.mul_(0.1)

    @property
    def io_spec(self) -> IOSpec:
        return IOSpec(
            scale=self.scale, in_channels=1, color="y", pre_upsample=True,
            receptive_radius=math.ceil((2 * self.n_units + 2) / self.scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = self.entry(x)
        h = h0
        for _ in range(self.n_units):
            h = self.conv2(self.relu(self.conv1(self.relu(h)))) + h0
        return x + self.exit(self.relu(h))
