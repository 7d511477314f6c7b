"""Small layers that several architectures share, named by what they are."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MeanShift", "PixelShuffleUpsampler", "ResidualBlock", "conv"]


def conv(in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True) -> nn.Conv2d:
    """A stride-1 convolution that keeps the spatial size ("same" padding, odd kernels)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Module):
    """Add ``sign * mean`` per channel (EDSR subtracts the dataset mean at the head, adds it back at the tail).

    A fixed buffer rather than a 1x1 convolution: it exports to a single ``Add`` and carries no weights
    to train or to lose in FP16.
    """

    def __init__(self, mean: tuple[float, ...], *, sign: float) -> None:
        super().__init__()
        self.register_buffer("shift", sign * torch.tensor(mean).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift.to(x.dtype)


class ResidualBlock(nn.Module):
    """conv - ReLU - conv, scaled by ``res_scale``, plus identity (EDSR: no batch norm)."""

    def __init__(self, n_feats: int, *, kernel_size: int = 3, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(n_feats, n_feats, kernel_size), nn.ReLU(inplace=True), conv(n_feats, n_feats, kernel_size)
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class PixelShuffleUpsampler(nn.Sequential):
    """Sub-pixel upsampling (Shi et al. 2016): conv to ``r*r*C`` planes, then PixelShuffle(r).

    Scales 2^n use n x2 stages; scale 3 uses one x3 stage. ``act`` (a module factory) follows each
    shuffle when given (SRResNet uses PReLU; EDSR uses none).
    """

    def __init__(self, scale: int, n_feats: int, *, act: type[nn.Module] | None = None) -> None:
        if scale & (scale - 1) == 0:
            factors = [2] * int(math.log2(scale))
        elif scale == 3:
            factors = [3]
        else:
            raise ValueError(f"PixelShuffleUpsampler supports scales 2^n and 3, got {scale}")
        layers: list[nn.Module] = []
        for r in factors:
            layers += [conv(n_feats, r * r * n_feats, 3), nn.PixelShuffle(r)]  # (N, C*r*r, H, W) -> (N, C, rH, rW)
            if act is not None:
                layers.append(act(n_feats) if act is nn.PReLU else act())
        super().__init__(*layers)
