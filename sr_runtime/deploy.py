"""One contract for every model: RGB (N, 3, h, w) in [0, 1] -> RGB (N, 3, s*h, s*w) in [0, 1].

:class:`DeployModel` wraps a network and reads its :class:`IOSpec` to do what differs between
architectures: bicubic pre-upsampling (MATLAB-compatible, as in training), Y-only networks whose
chroma is upscaled bicubically, and the network's value range. The torch backend runs it and the
exporter exports it, so neither knows which architecture it holds.
"""

from __future__ import annotations

import torch
from torch import nn

from sr_runtime.color import rgb_to_ycbcr, ycbcr_constants, ycbcr_to_rgb
from sr_runtime.resize import bicubic_phase_filters, upscale_bicubic
from sr_runtime.spec import IOSpec

__all__ = ["DeployModel"]


class DeployModel(nn.Module):
    """Wrap ``net`` (whose ``io_spec`` says what it expects) behind the RGB contract.

    Input: float tensor (N, 3, h, w) in [0, 1], h and w multiples of ``spec.multiple_of``.
    Output: float tensor (N, 3, s*h, s*w), clamped to [0, 1]. Same device and dtype as the input.
    """

    def __init__(self, net: nn.Module, spec: IOSpec | None = None) -> None:
        super().__init__()
        self.net = net
        self.spec: IOSpec = spec if spec is not None else net.io_spec
        # Constants as (non-persistent) buffers: they follow .to(device, dtype), so forward copies
        # nothing from the host; a copy per call is illegal inside CUDA graph capture.
        for name, value in ycbcr_constants().items():
            self.register_buffer(f"_{name}", value, persistent=False)
        if self.spec.pre_upsample or self.spec.color == "y":
            self.register_buffer("_bicubic", bicubic_phase_filters(self.spec.scale), persistent=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        x = upscale_bicubic(rgb, spec.scale, filters=self._bicubic) if spec.pre_upsample else rgb
        if spec.color == "y":
            ycbcr = rgb_to_ycbcr(x, matrix=self._rgb2ycbcr, offset=self._offset)
            y = ycbcr[:, :1]
            y_sr = self.net(y * spec.value_range) / spec.value_range
            cbcr = ycbcr[:, 1:] if spec.pre_upsample else upscale_bicubic(ycbcr[:, 1:], spec.scale, filters=self._bicubic)
            out = ycbcr_to_rgb(torch.cat([y_sr, cbcr], dim=1), matrix=self._ycbcr2rgb, offset=self._offset)
        else:
            out = self.net(x * spec.value_range) / spec.value_range
        return out.clamp(0.0, 1.0)
