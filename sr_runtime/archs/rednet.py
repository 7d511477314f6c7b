"""RED-Net: Mao, Shen, Yang, "Image Restoration Using Very Deep Convolutional Encoder-Decoder Networks
with Symmetric Skip Connections", NIPS 2016.

Unpadded convolutions shrink the bicubic-upscaled Y input; mirrored transposed convolutions grow it
back; encoder features are added to the decoder's at the mirrored position (every ``skip_every``
layers) and the input is added to the output.

* :class:`RED10` is the variant the seed study built: 5 convolutions with 32/48/64/96/128 channels and
  kernels 7/7/5/5/3, 5 transposed convolutions, a skip at every layer.
* :class:`RED30` is the paper's 30-layer network: 15 + 15 layers of 3x3 with 64 channels, a skip every
  2 layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from sr_runtime.spec import IOSpec

__all__ = ["RED10", "RED30"]


class _REDNet(nn.Module):
    def __init__(self, scale: int, channels: Sequence[int], kernels: Sequence[int], skip_every: int) -> None:
        super().__init__()
        if len(channels) != len(kernels):
            raise ValueError(f"channels and kernels must have one entry per layer, got {channels} and {kernels}")
        self.scale = scale
        self.skip_every = skip_every
        widths = [1, *channels]
        self.encoder = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], k) for i, k in enumerate(kernels))
        self.decoder = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], k) for i, k in reversed(list(enumerate(kernels)))
        )
        self.relu = nn.ReLU(inplace=True)
        self._shrink = sum(k - 1 for k in kernels)  # total size lost by the encoder, in HR pixels
        for layer in [*self.encoder, *self.decoder]:
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.decoder[-1].weight, std=1e-3)

    @property
    def io_spec(self) -> IOSpec:
        return IOSpec(
            scale=self.scale, in_channels=1, color="y", pre_upsample=True,
            min_size=math.ceil((self._shrink + 1) / self.scale),
            receptive_radius=math.ceil(self._shrink / self.scale),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.encoder)
        skips = []
        h = x
        for i, layer in enumerate(self.encoder):
            h = self.relu(layer(h))
            skips.append(h)
        for j, layer in enumerate(self.decoder):
            h = layer(h)
            mirror = n - 2 - j  # encoder layer whose output has this decoder output's shape; -1 is the input
            if mirror < 0:
                return h + x
            if (mirror + 1) % self.skip_every == 0:
                h = h + skips[mirror]
            h = self.relu(h)
        raise AssertionError("unreachable")


class RED10(_REDNet):
    """RED10 (seed-study variant). Input/output (N, 1, H, W) Y in [0, 1]; H, W >= 23 (HR pixels)."""

    def __init__(
        self,
        *,
        scale: int,
        channels: tuple[int, ...] = (32, 48, 64, 96, 128),
        kernels: tuple[int, ...] = (7, 7, 5, 5, 3),
        skip_every: int = 1,
    ) -> None:
        super().__init__(scale, tuple(channels), tuple(kernels), skip_every)


class RED30(_REDNet):
    """RED30 (Mao et al. 2016). Input/output (N, 1, H, W) Y in [0, 1]; H, W >= 31 (HR pixels)."""

    def __init__(self, *, scale: int, n_layers: int = 15, n_feats: int = 64, skip_every: int = 2) -> None:
        super().__init__(scale, (n_feats,) * n_layers, (3,) * n_layers, skip_every)
