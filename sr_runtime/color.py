"""Colour conversion (MATLAB ``rgb2ycbcr``, BT.601) and image <-> tensor conversion.

Inside the code an image is an NCHW float tensor in ``[0, 1]``; anything else says so in its name.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "rgb_to_y",
    "image_to_tensor",
    "tensor_to_image",
    "ycbcr_constants",
]

# MATLAB rgb2ycbcr on [0, 1] input: offsets and matrix scaled to [0, 1] output.
_RGB2YCBCR = torch.tensor(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=torch.float64,
) / 255.0
_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64) / 255.0
_YCBCR2RGB = torch.linalg.inv(_RGB2YCBCR)


def ycbcr_constants(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Copies of the conversion constants for a module to keep as buffers, so that they move with it
    (``.to(device)``) and a forward pass reads no host tensor: ``{"rgb2ycbcr": (3, 3), "ycbcr2rgb":
    (3, 3), "offset": (3,)}``. Pass them back to :func:`rgb_to_ycbcr` / :func:`ycbcr_to_rgb`."""
    return {
        "rgb2ycbcr": _RGB2YCBCR.to(dtype),
        "ycbcr2rgb": _YCBCR2RGB.to(dtype),
        "offset": _OFFSET.to(dtype),
    }


def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # (N, 3, H, W) -> (N, 3, H, W), channel mixing as a 1x1 convolution so it exports to ONNX cleanly.
    # .to() is a no-op when the matrix already has x's dtype and device (buffers of a module).
    weight = matrix.to(dtype=x.dtype, device=x.device)[:, :, None, None]
    return torch.nn.functional.conv2d(x, weight)


def rgb_to_ycbcr(
    rgb: torch.Tensor, *, matrix: torch.Tensor | None = None, offset: torch.Tensor | None = None
) -> torch.Tensor:
    """RGB (N, 3, H, W) in [0, 1] -> YCbCr (N, 3, H, W), Y in [16/255, 235/255], as MATLAB.

    ``matrix``/``offset``: the constants of :func:`ycbcr_constants` already on ``rgb``'s device
    (module buffers); by default the module-level float64 CPU constants, copied per call.
    """
    matrix = _RGB2YCBCR if matrix is None else matrix
    offset = _OFFSET if offset is None else offset
    return _apply(matrix, rgb) + offset.to(dtype=rgb.dtype, device=rgb.device)[None, :, None, None]


def ycbcr_to_rgb(
    ycbcr: torch.Tensor, *, matrix: torch.Tensor | None = None, offset: torch.Tensor | None = None
) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (no clamping); ``matrix`` is the inverse matrix ("ycbcr2rgb")."""
    matrix = _YCBCR2RGB if matrix is None else matrix
    offset = _OFFSET if offset is None else offset
    return _apply(matrix, ycbcr - offset.to(dtype=ycbcr.dtype, device=ycbcr.device)[None, :, None, None])


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """Y plane (N, 1, H, W) of RGB (N, 3, H, W) in [0, 1]; a 1-channel input is returned as is."""
    if rgb.shape[1] == 1:
        return rgb
    return rgb_to_ycbcr(rgb)[:, :1]


def image_to_tensor(img_hwc: np.ndarray, *, device: torch.device | str = "cpu", dtype=torch.float32) -> torch.Tensor:
    """HWC (or HW) uint8/uint16/float array -> (1, C, H, W) float tensor in [0, 1]."""
    arr = np.asarray(img_hwc)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"expected an HWC or HW image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == np.uint16:
        scale = 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        scale = 1.0
    else:
        raise ValueError(f"unsupported image dtype {arr.dtype}; expected uint8, uint16 or float")
    tensor = torch.from_numpy(np.ascontiguousarray(arr)).to(device=device)
    tensor = tensor.permute(2, 0, 1)[None].to(dtype) / scale
    return tensor


def tensor_to_image(tensor: torch.Tensor, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) float tensor in [0, 1] -> HWC array of ``dtype``, rounded and clamped."""
    if tensor.ndim == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got shape {tuple(tensor.shape)}")
        tensor = tensor[0]
    dtype = np.dtype(dtype)
    peak = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(dtype)
    if peak is None:
        raise ValueError(f"unsupported output dtype {dtype}; expected uint8 or uint16")
    quantized = (tensor.detach().float().clamp(0, 1) * peak).round()
    torch_dtype = torch.uint8 if dtype == np.uint8 else torch.int32
    return quantized.to(torch_dtype).permute(1, 2, 0).cpu().numpy().astype(dtype, copy=False)
