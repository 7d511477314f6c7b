"""SRResNet: Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial
Network", CVPR 2017 (the generator of SRGAN).

9x9 head with PReLU, ``n_blocks`` residual blocks (conv-BN-PReLU-conv-BN), conv-BN with a long skip,
sub-pixel x2 stages with PReLU, 9x9 tail. Deviation: input and output are in [0, 1] with a linear
output (the paper maps the output to [-1, 1] with tanh).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sr_runtime.archs.blocks import PixelShuffleUpsampler, conv
from sr_runtime.spec import IOSpec

__all__ = ["SRResNet"]


class _BNResidualBlock(nn.Module):
    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(n_feats, n_feats, 3, bias=False), nn.BatchNorm2d(n_feats), nn.PReLU(n_feats),
            conv(n_feats, n_feats, 3, bias=False), nn.BatchNorm2d(n_feats),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """Input (N, 3, h, w) RGB in [0, 1] -> (N, 3, scale*h, scale*w); scale a power of two."""

    def __init__(self, *, scale: int, n_blocks: int = 16, n_feats: int = 64) -> None:
        super().__init__()
        if scale & (scale - 1):
            raise ValueError(f"SRResNet upsamples with x2 stages; scale must be a power of two, got {scale}")
        self.scale = scale
        self.n_blocks = n_blocks
        self.head = nn.Sequential(conv(3, n_feats, 9), nn.PReLU(n_feats))
        self.body = nn.Sequential(
            *(_BNResidualBlock(n_feats) for _ in range(n_blocks)),
            conv(n_feats, n_feats, 3, bias=False), nn.BatchNorm2d(n_feats),
        )
        self.upsample = PixelShuffleUpsampler(scale, n_feats, act=nn.PReLU)
        self.tail = conv(n_feats, 3, 9)

    @property
    def io_spec(self) -> IOSpec:
        return IOSpec(scale=self.scale, receptive_radius=4 + 2 * self.n_blocks + 2 + math.ceil(4 / self.scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = h + self.body(h)
        return self.tail(self.upsample(h))
