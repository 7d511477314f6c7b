"""VDSR: Kim, Lee, Lee, "Accurate Image Super-Resolution Using Very Deep Convolutional Networks", CVPR 2016.

``depth`` 3x3 convolutions of ``n_feats`` channels with ReLU between them, predicting the residual
that is added to the bicubic-upscaled Y input. Scale-agnostic weights: the paper trains one network
for x2, x3 and x4; ``scale`` here only states the contract.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sr_runtime.spec import IOSpec

__all__ = ["VDSR"]


class VDSR(nn.Module):
    """Input/output (N, 1, H, W) Y in [0, 1] at the HR size (bicubic pre-upsampled)."""

    def __init__(self, *, scale: int, depth: int = 20, n_feats: int = 64) -> None:
        super().__init__()
        self.scale = scale
        self.depth = depth
        layers: list[nn.Module] = [nn.Conv2d(1, n_feats, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(n_feats, n_feats, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(n_feats, 1, 3, padding=1, bias=False))
        self.body = nn.Sequential(*layers)
        for layer in self.body:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.normal_(self.body[-1].weight, std=math.sqrt(2 / (9 * n_feats)) * 0.1)

    @property
    def io_spec(self) -> IOSpec:
        return IOSpec(
            scale=self.scale, in_channels=1, color="y", pre_upsample=True,
            receptive_radius=math.ceil(self.depth / self.scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
