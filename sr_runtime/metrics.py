"""PSNR and SSIM as the SR literature computes them: the only implementation in the project.

Protocol: both images go to the Y plane of BT.601 YCbCr on [0, 255] (MATLAB ``rgb2ycbcr``), a
border of ``crop`` pixels (the scale, by convention) is dropped on each side, then PSNR with a peak
of 255, and SSIM as Wang et al.'s ``ssim_index.m`` (11x11 Gaussian window, sigma 1.5, K1 = 0.01,
K2 = 0.03, 'valid' filtering, mean of the map). A 1-channel image is its own Y plane.

Everything runs in float64 on the inputs' device and is batched: each function returns a float64
tensor with one value per image. :func:`psnr_db` is the same PSNR over all the values of two
outputs, for parity between two forms of one model (ONNX against PyTorch, say), not the protocol.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sr_runtime.color import rgb_to_y
from sr_runtime.errors import InputError

__all__ = ["ROUND_Y", "y_channel_255", "psnr", "psnr_db", "ssim", "psnr_y", "ssim_y"]

ROUND_Y = True
"""Round Y to integers, as MATLAB's ``rgb2ycbcr`` does on uint8 images (what the EDSR/RCAN-style
MATLAB scripts evaluate). Measured on the seven published bicubic rows (Set5 x2-4, Set14 x2-4,
BSD100 x4): rounded Y is within 0.017 dB / 0.0004 SSIM of them, unrounded Y within 0.022 dB / 0.0009."""

_SSIM_K1, _SSIM_K2, _SSIM_SIGMA, _SSIM_SIZE = 0.01, 0.03, 1.5, 11


def y_channel_255(img: torch.Tensor, *, round_y: bool = ROUND_Y) -> torch.Tensor:
    """Y plane in [0, 255] (float64, (N, 1, H, W)) of an (N, 3, H, W) RGB or (N, 1, H, W) image in [0, 1].

    A 1-channel image is returned scaled, not converted. With ``round_y`` the values are rounded
    to integers (half away from zero), like MATLAB ``rgb2ycbcr`` on uint8 input.
    """
    if img.ndim != 4 or img.shape[1] not in (1, 3):
        raise InputError(f"expected an (N, 3, H, W) or (N, 1, H, W) image, got shape {tuple(img.shape)}")
    y = rgb_to_y(img.to(torch.float64)) * 255.0
    return torch.floor(y + 0.5) if round_y else y


def _crop(y: torch.Tensor, crop: int) -> torch.Tensor:
    if crop < 0:
        raise InputError(f"crop must be >= 0, got {crop}")
    h, w = y.shape[-2:]
    if h <= 2 * crop or w <= 2 * crop:
        raise InputError(f"image of {h}x{w} pixels is too small for a {crop}-pixel border crop")
    return y[..., crop : h - crop, crop : w - crop] if crop else y


def _check_pair(sr: torch.Tensor, hr: torch.Tensor) -> None:
    if sr.shape != hr.shape:
        raise InputError(f"SR and HR shapes differ: {tuple(sr.shape)} vs {tuple(hr.shape)}")


def psnr_y(sr_y: torch.Tensor, hr_y: torch.Tensor, *, crop: int, data_range: float = 255.0) -> torch.Tensor:
    """PSNR (dB) per image of two (N, 1, H, W) planes already in [0, ``data_range``]; ``inf`` when equal."""
    _check_pair(sr_y, hr_y)
    diff = _crop(sr_y.to(torch.float64), crop) - _crop(hr_y.to(torch.float64), crop)
    return _psnr_from_mse(diff.pow(2).flatten(1).mean(dim=1), data_range)


def _psnr_from_mse(mse: torch.Tensor, data_range: float) -> torch.Tensor:
    return 10.0 * torch.log10(data_range**2 / mse)  # mse 0: inf


def psnr_db(out: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray, *, data_range: float = 1.0) -> float:
    """PSNR (dB) of ``out`` against ``ref`` over all their values (tensors or arrays of one shape,
    any float dtype, in [0, ``data_range``]), computed in float64; ``inf`` when they are equal.

    For parity between two forms of one model; the literature's protocol is :func:`psnr`.
    """
    a = torch.as_tensor(out).to(torch.float64)
    b = torch.as_tensor(ref).to(device=a.device, dtype=torch.float64)
    _check_pair(a, b)
    return float(_psnr_from_mse((a - b).pow(2).mean(), data_range))


def _gaussian_window(device: torch.device) -> torch.Tensor:
    coords = torch.arange(_SSIM_SIZE, dtype=torch.float64, device=device) - (_SSIM_SIZE - 1) / 2
    g = torch.exp(-(coords**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()  # separable: outer(g, g) is fspecial('gaussian', 11, 1.5)


def ssim_y(sr_y: torch.Tensor, hr_y: torch.Tensor, *, crop: int, data_range: float = 255.0) -> torch.Tensor:
    """SSIM per image of two (N, 1, H, W) planes in [0, ``data_range``] (MATLAB ``ssim_index``).

    Needs at least 11x11 pixels left after the crop; raises InputError otherwise.
    """
    _check_pair(sr_y, hr_y)
    x = _crop(sr_y.to(torch.float64), crop)
    y = _crop(hr_y.to(torch.float64), crop)
    if min(x.shape[-2:]) < _SSIM_SIZE:
        raise InputError(
            f"SSIM needs at least {_SSIM_SIZE}x{_SSIM_SIZE} pixels after the {crop}-pixel crop, got {tuple(x.shape[-2:])}"
        )
    g = _gaussian_window(x.device)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N, 5, H, W): filter all moments at once
    stack = F.conv2d(stack, g.view(1, 1, 1, -1).expand(5, 1, 1, -1), groups=5)  # 'valid' along W
    stack = F.conv2d(stack, g.view(1, 1, -1, 1).expand(5, 1, -1, 1), groups=5)  # 'valid' along H
    mu_x, mu_y, xx, yy, xy = stack.unbind(dim=1)
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(dim=1)


def psnr(sr: torch.Tensor, hr: torch.Tensor, *, crop: int, data_range: float = 255.0) -> torch.Tensor:
    """PSNR (dB) on Y per image of two (N, 3|1, H, W) images in [0, 1]; returns float64 (N,).

    ``crop`` pixels are dropped at each border (the literature uses the scale).
    """
    _check_pair(sr, hr)
    return psnr_y(y_channel_255(sr), y_channel_255(hr), crop=crop, data_range=data_range)


def ssim(sr: torch.Tensor, hr: torch.Tensor, *, crop: int) -> torch.Tensor:
    """SSIM on Y per image of two (N, 3|1, H, W) images in [0, 1]; returns float64 (N,)."""
    _check_pair(sr, hr)
    return ssim_y(y_channel_255(sr), y_channel_255(hr), crop=crop)
