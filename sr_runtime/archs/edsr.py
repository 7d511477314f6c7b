"""EDSR: Lim, Son, Kim, Nah, Lee, "Enhanced Deep Residual Networks for Single Image Super-Resolution",
CVPRW 2017.

Head conv, ``n_resblocks`` residual blocks without batch norm (scaled by ``res_scale``), a body conv
with a long skip, a sub-pixel upsampler and a tail conv, between a mean shift by the DIV2K RGB mean.
The baseline is 16 x 64 with ``res_scale=1``; the large model 32 x 256 with ``res_scale=0.1``.
Values are in [0, 1] (the paper's code works in [0, 255]; the mean shift is scaled accordingly).
"""

from __future__ import annotations

import torch
from torch import nn

from sr_runtime.archs.blocks import MeanShift, PixelShuffleUpsampler, ResidualBlock, conv
from sr_runtime.spec import IOSpec

__all__ = ["EDSR"]

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class EDSR(nn.Module):
    """Input (N, 3, h, w) RGB in [0, 1] -> (N, 3, scale*h, scale*w)."""

    def __init__(self, *, scale: int, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.n_resblocks = n_resblocks
        self.sub_mean = MeanShift(DIV2K_MEAN, sign=-1.0)
        self.add_mean = MeanShift(DIV2K_MEAN, sign=1.0)
        self.head = conv(3, n_feats, 3)
        self.body = nn.Sequential(
            *(ResidualBlock(n_feats, res_scale=res_scale) for _ in range(n_resblocks)), conv(n_feats, n_feats, 3)
        )
        self.tail = nn.Sequential(PixelShuffleUpsampler(scale, n_feats), conv(n_feats, 3, 3))

    @property
    def io_spec(self) -> IOSpec:
        return IOSpec(scale=self.scale, receptive_radius=2 * self.n_resblocks + 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.tail(x))
