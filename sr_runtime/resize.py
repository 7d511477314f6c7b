"""MATLAB-compatible bicubic resizing: the degradation of the SR literature.

:func:`imresize` reproduces MATLAB's ``imresize(img, scale, 'bicubic')``: Keys cubic kernel with
``a = -0.5``, kernel widened by ``1/scale`` when shrinking (antialiasing), and MATLAB's symmetric
border handling (mirror with the edge pixel repeated), as in ``imresize.m``'s ``contributions()``.
It applies one precomputed weight matrix per axis, so it runs batched on any device, but it is not
meant for ONNX export. :func:`upscale_bicubic` computes the same integer-factor upscaling with
fixed-phase convolutions only, so it exports to ONNX with dynamic height and width.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["imresize", "upscale_bicubic", "bicubic_phase_filters", "modcrop", "pad_symmetric_2", "make_lr", "quantize_u8"]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


# A matrix is out_len x in_len float64 (17 MB for 2040 -> 1020): 128 entries per cache could hold
# ~1 GB for a set of large, differently sized images; one image needs 2, so keep the last few.
_CACHE_SIZE = 8


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _weight_matrix_f64(in_len: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """(out_len, in_len) float64 matrix of MATLAB ``contributions(in_len, out_len, scale, cubic, 4, antialias)``."""
    kernel_width = 4.0
    if scale < 1 and antialias:
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
        kernel_width /= scale
    else:
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)[:, None]  # 1-based output coordinates, as MATLAB
    u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate each output pixel maps to
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left + np.arange(taps)[None, :]  # (out_len, taps), 1-based
    weights = kernel(u - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric borders: index 0 maps to 1, -1 to 2, in_len+1 to in_len... (aux = [1:n, n:-1:1]).
    aux = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    indices = aux[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], indices.shape)
    np.add.at(matrix, (rows, indices), weights)  # mirrored taps can land on the same pixel
    return torch.from_numpy(matrix)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _weight_matrix(
    in_len: int, out_len: int, scale: float, antialias: bool, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    return _weight_matrix_f64(in_len, out_len, scale, antialias).to(device=device, dtype=dtype)


def _output_length(in_len: int, scale: float) -> int:
    # MATLAB: ceil(scale * in). The tolerance keeps 1/3 * 300 from becoming 101 through float noise.
    return max(1, math.ceil(in_len * scale - 1e-9))


def imresize(
    x: torch.Tensor,
    *,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize a batch like MATLAB ``imresize(x, scale, 'bicubic')``.

    ``x``: float tensor (N, C, H, W), any device; returns (N, C, H', W') of the same dtype and
    device, not clamped. Give ``scale`` (H' = ceil(scale * H), as MATLAB) or ``size`` = (H', W')
    (per-axis scale H'/H, W'/W, as MATLAB), or both: then ``size`` fixes the output size and
    ``scale`` the kernel, which is how :func:`make_lr` avoids float noise in ``ceil``.
    Rows are resized first, then columns, as MATLAB does for equal scales.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"imresize expects a float (N, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    if scale is None and size is None:
        raise ValueError("imresize needs scale or size")
    in_h, in_w = x.shape[-2:]
    if scale is not None and scale <= 0:
        raise ValueError(f"imresize scale must be positive, got {scale}")
    if size is None:
        size = (_output_length(in_h, scale), _output_length(in_w, scale))
    out_h, out_w = int(size[0]), int(size[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"imresize output size must be positive, got {size}")
    scale_h = float(scale) if scale is not None else out_h / in_h
    scale_w = float(scale) if scale is not None else out_w / in_w
    w_h = _weight_matrix(in_h, out_h, scale_h, antialias, x.device, x.dtype)  # (out_h, in_h)
    w_w = _weight_matrix(in_w, out_w, scale_w, antialias, x.device, x.dtype)  # (out_w, in_w)
    return torch.matmul(torch.matmul(w_h, x), w_w.T)


def _phase_filters(scale: int) -> torch.Tensor:
    """(scale, 5) float64: for output phase p, the weights of input offsets -2..2 around pixel k.

    Output pixel k*scale + p sits at input coordinate k + (p + 0.5)/scale - 0.5 (0-based), so its
    four cubic taps are a fixed subset of offsets -2..2 and their weights depend on p only.
    """
    filters = np.zeros((scale, 5), dtype=np.float64)
    offsets = np.arange(-2, 3, dtype=np.float64)
    for p in range(scale):
        d = (p + 0.5) / scale - 0.5
        w = _cubic(d - offsets)
        filters[p] = w / w.sum()
    return torch.from_numpy(filters)


# Built at import, not while torch.onnx.export traces (a tensor made during tracing is a TracerWarning).
_PHASE_FILTERS = {s: _phase_filters(s) for s in range(2, 9)}


def bicubic_phase_filters(scale: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(scale, 5) filters of :func:`upscale_bicubic` for a module to keep as a buffer (it then moves
    with the module and a forward pass reads no host tensor); pass it back as ``filters=``."""
    filters = _PHASE_FILTERS.get(scale)
    return (filters if filters is not None else _phase_filters(scale)).to(dtype)


def pad_symmetric_2(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Pad 2 pixels on both sides of ``dim`` like MATLAB (mirror with the edge repeated).

    Two steps of width one, with slices only, so it works for a length of 1 and exports to ONNX:
    [x0 | x0 .. x(n-1) | x(n-1)], then [x1 | that | x(n-2)] (both x0 when n = 1, as MATLAB).
    """
    n = x.shape[dim]
    once = torch.cat([x.narrow(dim, 0, 1), x, x.narrow(dim, n - 1, 1)], dim=dim)
    m = once.shape[dim]
    return torch.cat([once.narrow(dim, 2, 1), once, once.narrow(dim, m - 3, 1)], dim=dim)


def upscale_bicubic(x: torch.Tensor, scale: int, *, filters: torch.Tensor | None = None) -> torch.Tensor:
    """MATLAB bicubic upscaling by an integer factor, built from ONNX-exportable ops.

    ``x``: float tensor (N, C, h, w); returns (N, C, scale*h, scale*w), same dtype and device,
    not clamped. Equals ``imresize(x, scale=scale)`` up to float rounding. Height and width stay
    dynamic under ``torch.onnx.export``: padding is slicing + concatenation, each axis is one
    convolution with ``scale`` fixed 5-tap filters (one per output phase) followed by an interleave.
    ``filters``: :func:`bicubic_phase_filters` already on ``x``'s device (a module buffer); by default
    the float64 CPU filters, copied per call.
    """
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ValueError(f"upscale_bicubic needs a positive integer scale, got {scale!r}")
    scale = int(scale)
    if scale == 1:
        return x
    n, c, h, w = x.shape
    if filters is None:
        filters = _PHASE_FILTERS.get(scale)
        if filters is None:
            filters = _phase_filters(scale)
    weight = filters.to(device=x.device, dtype=x.dtype)  # (scale, 5); a no-op for a buffer on x's device
    planes = x.reshape(-1, 1, h, w)  # (N*C, 1, h, w): channels folded into the batch
    padded = pad_symmetric_2(planes, 3)
    cols = F.conv2d(padded, weight[:, None, None, :])  # (N*C, scale, h, w): one plane per column phase
    cols = cols.permute(0, 2, 3, 1).flatten(2).unsqueeze(1)  # (N*C, 1, h, w*scale)
    padded = pad_symmetric_2(cols, 2)
    rows = F.conv2d(padded, weight[:, None, :, None])  # (N*C, scale, h, w*scale): one plane per row phase
    rows = rows.permute(0, 2, 1, 3).flatten(1, 2)  # (N*C, h*scale, w*scale)
    return rows.reshape(n, c, rows.shape[1], rows.shape[2])


def modcrop(img, scale: int):
    """Crop so that height and width are multiples of ``scale``, dropping the last rows/columns.

    Works on HWC/HW numpy arrays and (..., H, W) tensors (NCHW); returns a view of the same type.
    """
    if isinstance(img, torch.Tensor):
        h, w = img.shape[-2:]
        return img[..., : h - h % scale, : w - w % scale]
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    return arr[: h - h % scale, : w - w % scale]


def quantize_u8(x: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] floats to the 256 levels of uint8 as MATLAB does (half away from zero, saturated).

    Returns floats in [0, 1], same dtype and device.
    """
    return torch.floor(x.clamp(0.0, 1.0) * 255.0 + 0.5) / 255.0


def make_lr(hr: torch.Tensor, scale: int, *, quantize: bool = True) -> torch.Tensor:
    """The bicubic LR of the literature: MATLAB ``imresize(hr, 1/scale, 'bicubic')``.

    ``hr``: float (N, C, H, W) in [0, 1] with H and W multiples of ``scale`` (see :func:`modcrop`).
    With ``quantize`` the result is rounded to 8-bit levels like MATLAB's uint8 ``imresize``.
    """
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"make_lr: HR size {h}x{w} is not a multiple of scale {scale}; modcrop it first")
    lr = imresize(hr, scale=1.0 / scale, size=(h // scale, w // scale))
    return quantize_u8(lr) if quantize else lr
