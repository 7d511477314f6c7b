"""The SRGAN discriminator (Ledig et al., CVPR 2017), used only for training.

Eight 3x3 convolutions (64, 64, 128, 128, 256, 256, 512, 512 channels; stride 2 on every second),
batch norm after all but the first, LeakyReLU(0.2), then dense 1024 -> LeakyReLU -> dense 1.
Deviation: an adaptive average pool before the dense layers makes it accept any patch size
(the paper's 96x96 patches give 6x6 maps, the size pooled to here).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SRGANDiscriminator"]


class SRGANDiscriminator(nn.Module):
    """Input (N, 3, H, W) RGB in [0, 1], H, W >= 16 -> logits (N, 1)."""

    def __init__(self, *, n_feats: int = 64) -> None:
        super().__init__()
        widths = [n_feats, n_feats, 2 * n_feats, 2 * n_feats, 4 * n_feats, 4 * n_feats, 8 * n_feats, 8 * n_feats]
        layers: list[nn.Module] = []
        channels = 3
        for i, width in enumerate(widths):
            layers.append(nn.Conv2d(channels, width, 3, stride=1 + i % 2, padding=1, bias=i == 0))
            if i:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(6))
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * 36, 1024), nn.LeakyReLU(0.2, inplace=True), nn.Linear(1024, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
