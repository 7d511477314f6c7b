"""Pixel, perceptual (VGG) and adversarial losses."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sr_runtime.errors import ConfigError

__all__ = ["pixel_loss", "VGGFeatures", "adversarial_loss"]


def pixel_loss(kind: str, sr: torch.Tensor, hr: torch.Tensor, *, eps: float = 1e-3) -> torch.Tensor:
    """Mean ``l1``, ``mse`` or ``charbonnier`` (sqrt(d^2 + eps^2)) loss."""
    if kind == "l1":
        return F.l1_loss(sr, hr)
    if kind == "mse":
        return F.mse_loss(sr, hr)
    if kind == "charbonnier":
        return torch.sqrt((sr - hr).pow(2) + eps * eps).mean()
    raise ConfigError(f"unknown pixel loss {kind!r}; valid: l1, mse, charbonnier")


# torchvision's vgg19().features layout: numbers are conv widths, "M" max-pooling
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGFeatures(nn.Module):
    """VGG19 up to relu5_4 ("VGG54" in SRGAN), frozen, loaded from a file the user names.

    ``weights``: a torch or safetensors file holding torchvision's ``vgg19`` state dict (the
    ``features.*`` tensors are used; the classifier is ignored). Input: RGB in [0, 1].
    """

    def __init__(self, weights: str | os.PathLike | None) -> None:
        super().__init__()
        if not weights:
            raise ConfigError(
                "the VGG perceptual loss needs VGG19 weights: pass gan.vgg_weights=PATH (torchvision's "
                "vgg19-dcbb9e9d.pth, or a safetensors copy), or set gan.perceptual_weight=0 to train without it"
            )
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"gan.vgg_weights: {path} not found")
        layers: list[nn.Module] = []
        channels = 3
        for v in _VGG19:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1), nn.ReLU(inplace=False)]
                channels = v
        self.features = nn.Sequential(*layers)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        try:
            self.features.load_state_dict(features, strict=True)
        except RuntimeError as e:
            raise ConfigError(f"{path}: not torchvision VGG19 weights ({str(e).splitlines()[0]})") from e
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)
