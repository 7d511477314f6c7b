"""SRCNN: Dong, Loy, He, Tang, "Image Super-Resolution Using Deep Convolutional Networks", TPAMI 2016.

Deviation: the paper's convolutions are unpadded (the output is smaller than the input); here they
are zero-padded so the output keeps the input's size, as most re-implementations do. The paper's
9-1-5 network is the default; ``f2=5`` gives 9-5-5.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sr_runtime.spec import IOSpec

__all__ = ["SRCNN"]


class SRCNN(nn.Module):
    """Three convolutions on the bicubic-upscaled Y plane: patch extraction, mapping, reconstruction.

    Input/output: (N, 1, H, W) in [0, 1], H and W the HR size (see ``io_spec``).
    """

    def __init__(self, *, scale: int, f1: int = 9, f2: int = 1, f3: int = 5, n1: int = 64, n2: int = 32) -> None:
        super().__init__()
        self.scale = scale
        self.conv1 = nn.Conv2d(1, n1, f1, padding=f1 // 2)
        self.conv2 = nn.Conv2d(n1, n2, f2, padding=f2 // 2)
        self.conv3 = nn.Conv2d(n2, 1, f3, padding=f3 // 2)
        self.relu = nn.ReLU(inplace=True)
        self._radius = f1 // 2 + f2 // 2 + f3 // 2
        for m in (self.conv1, self.conv2):
            nn.init.normal_(m.weight, std=math.sqrt(2 / (m.out_channels * m.kernel_size[0] ** 2)))
            nn.init.zeros_(m.bias)
        nn.init.normal_(self.conv3.weight, std=1e-3)
        nn.init.zeros_(self.conv3.bias)

    @property
    def io_spec(self) -> IOSpec:
        return IOSpec(
            scale=self.scale, in_channels=1, color="y", pre_upsample=True,
            receptive_radius=math.ceil(self._radius / self.scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.conv3(x)
