"""ESPCN: Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network", CVPR 2016.

(5x5, 64, tanh) -> (3x3, 32, tanh) -> (3x3, scale^2) -> PixelShuffle(scale), on the Y plane, all in LR
space. The convolutions are padded to keep the size (the paper trains on unpadded patches).

``mean`` (not in the paper; 0 keeps the paper's network) is subtracted from the input and added back
to the output, so the nonlinearities see signed local contrast instead of brightness and the zero
padding reads as mid-grey. The shipped weights use ``mean=0.5``: in a 3000-step ESPCN x3 A/B it trained faster
(Set5 x3 31.41 vs 31.34 dB); it is stored with the other hyperparameters in every checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from sr_runtime.archs.blocks import Shifted
from sr_runtime.spec import IOSpec

__all__ = ["ESPCN"]


class ESPCN(nn.Module):
    """Input (N, 1, h, w) Y in [0, 1] -> (N, 1, scale*h, scale*w)."""

    def __init__(self, *, scale: int, n1: int = 64, n2: int = 32, mean: float = 0.0) -> None:
        super().__init__()
        self.scale, self.mean = scale, mean
        self.body = nn.Sequential(
            nn.Conv2d(1, n1, 5, padding=2), nn.Tanh(),
            nn.Conv2d(n1, n2, 3, padding=1), nn.Tanh(),
            nn.Conv2d(n2, scale * scale, 3, padding=1),
        )
        self.shuffle = nn.PixelShuffle(scale)
        # PyTorch's default init gives first-layer pre-activations of ~0.1 on image contrast, so tanh
        # starts (and stays) almost linear; 4x larger first-layer weights trained to +0.2 dB on Set5 x3
        # (30000 steps: 32.34 vs 32.10 dB). Initialisation only: the network is the paper's.
        with torch.no_grad():
            self.body[0].weight.mul_(4.0)

    @property
    def io_spec(self) -> IOSpec:
        return IOSpec(scale=self.scale, in_channels=1, color="y", receptive_radius=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.body(x - self.mean)) + self.mean  # (N, s*s, h, w) -> (N, 1, s*h, s*w)

    def sub_pixel_form(self) -> nn.Module:
        """(N, 1, h, w) -> (N, scale^2, h, w) whose PixelShuffle(scale) is ``forward`` (the shift by the
        mean commutes with the shuffle)."""
        return Shifted(self.body, self.mean)
