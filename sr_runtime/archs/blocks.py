"""Small layers that several architectures share, named by what they are."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["MeanShift", "PixelShuffleUpsampler", "ResidualBlock", "Shifted", "conv", "sub_pixel_conv"]


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
        y = self.body(x)
        # No multiply at res_scale 1 (the baselines): in training it is a full pass over the features and
        # its backward another, about 5% of an EDSR-baseline step on a CPU, for nothing.
        return x + (y if self.res_scale == 1.0 else y * self.res_scale)


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


class Shifted(nn.Module):
    """``x -> layers(x - mean) + mean``: the mean shift of the Y networks around any layer stack."""

    def __init__(self, layers: nn.Module, mean: float) -> None:
        super().__init__()
        self.layers, self.mean = layers, mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x - self.mean) + self.mean


def sub_pixel_conv(deconv: nn.ConvTranspose2d) -> nn.Conv2d:
    """The stride-1 convolution whose PixelShuffle equals ``deconv`` (a transposed convolution).

    A transposed convolution with stride ``s`` computes each output phase (row ``s*q + rh``, column
    ``s*k + rw``) as an ordinary convolution of the input with the kernel taps ``s*t + r + padding``:
    so ``pixel_shuffle(conv(x), s) == deconv(x)`` with one output plane per channel and phase, all at the
    input's resolution. Compilers run that as a plain convolution and one depth-to-space instead of a
    scatter into the high-resolution grid (ONNX Runtime, OpenVINO and torch's own transposed
    convolution are all slower). Needs an output exactly ``stride`` times the input (equal strides,
    ``output_padding = stride - 1``, ``kernel = 2 * padding + 1``), no groups and no dilation; raises
    ValueError otherwise.
    """
    s = deconv.stride[0]
    k_h, k_w = deconv.kernel_size
    p_h, p_w = deconv.padding
    if (deconv.stride[1] != s or deconv.output_padding != (s - 1, s - 1) or deconv.groups != 1
            or deconv.dilation != (1, 1) or k_h != 2 * p_h + 1 or k_w != 2 * p_w + 1):
        raise ValueError(
            "sub_pixel_conv needs an output exactly stride times the input (equal strides, output_padding = "
            "stride - 1, kernel = 2 * padding + 1), groups 1 and dilation 1; got "
            f"stride {deconv.stride}, kernel {deconv.kernel_size}, padding {deconv.padding}, output_padding "
            f"{deconv.output_padding}, groups {deconv.groups}, dilation {deconv.dilation}")

    def taps(k: int, p: int) -> tuple[int, list[list[tuple[int, int]]]]:
        # For phase r, output s*q + r reads input q - t with kernel tap j = s*t + r + p, 0 <= j < k.
        per_phase = [[(t, s * t + r + p) for t in range(-k, k + 1) if 0 <= s * t + r + p < k] for r in range(s)]
        radius = max(abs(t) for phase in per_phase for t, _ in phase)
        return radius, per_phase

    u_h, rows = taps(k_h, p_h)
    u_w, cols = taps(k_w, p_w)
    c_in, c_out = deconv.in_channels, deconv.out_channels
    w = deconv.weight.detach().double()  # (c_in, c_out, k_h, k_w)
    weight = torch.zeros(c_out, s, s, c_in, 2 * u_h + 1, 2 * u_w + 1, dtype=torch.float64)
    for rh in range(s):
        for th, jh in rows[rh]:
            for rw in range(s):
                for tw, jw in cols[rw]:
                    # input q - t is offset -t: conv tap index radius - t
                    weight[:, rh, rw, :, u_h - th, u_w - tw] = w[:, :, jh, jw].T
    conv = nn.Conv2d(c_in, c_out * s * s, (2 * u_h + 1, 2 * u_w + 1), padding=(u_h, u_w),
                     bias=deconv.bias is not None)
    conv = conv.to(device=deconv.weight.device, dtype=deconv.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(weight.reshape(c_out * s * s, c_in, 2 * u_h + 1, 2 * u_w + 1))
        if deconv.bias is not None:
            conv.bias.copy_(deconv.bias.detach().repeat_interleave(s * s))
    return conv
