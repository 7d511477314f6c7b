"""One contract for every model: RGB (N, 3, h, w) in [0, 1] -> RGB (N, 3, s*h, s*w) in [0, 1].

:class:`DeployModel` wraps a network and reads its :class:`IOSpec` to do what differs between
architectures: bicubic pre-upsampling (MATLAB-compatible, as in training), Y-only networks whose
chroma is upscaled bicubically, and the network's value range. The torch backend runs it and the
exporter exports it, so neither knows which architecture it holds.

:meth:`DeployModel.export_form` is what the exporter traces: the same function, arranged for graph
compilers. For a Y network that ends in sub-pixel outputs (FSRCNN, ESPCN) it is :class:`SubPixelYDeploy`,
which does all the colour work at the low resolution and leaves one depth-to-space at the high one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sr_runtime.color import rgb_to_ycbcr, ycbcr_constants, ycbcr_to_rgb
from sr_runtime.resize import bicubic_phase_filters, pad_symmetric_2, upscale_bicubic
from sr_runtime.spec import IOSpec

__all__ = ["DeployModel", "SubPixelYDeploy"]


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

    def export_form(self) -> nn.Module:
        """The module to trace for a graph compiler: :class:`SubPixelYDeploy` for a Y network with a
        ``sub_pixel_form`` (FSRCNN, ESPCN), else this module. Equal to ``self`` up to float rounding
        (the exporter's parity gate compares the graph with ``self``)."""
        form = getattr(self.net, "sub_pixel_form", None)
        if form is None or self.spec.color != "y" or self.spec.pre_upsample:
            return self
        return SubPixelYDeploy(form(), self.spec).eval()


class SubPixelYDeploy(nn.Module):
    """:class:`DeployModel` of a Y network, with the colour work moved to the low resolution.

    ``phases``: (N, 1, h, w) Y -> (N, s^2, h, w), whose PixelShuffle(s) is the network's output (a
    network's ``sub_pixel_form()``). Everything after the network is linear -- Y's offset, the bicubic
    upscaling of Cb and Cr, YCbCr -> RGB -- and so is everything that feeds the chroma, so per output
    phase it folds into constants applied at (h, w): RGB phase (c, p) = m * (Y_p - 16/255) + bicubic_p(q_c),
    where q_c is one 1x1 mix of the LR RGB (the YCbCr -> RGB matrix's chroma columns times the
    RGB -> CbCr rows; the chroma offsets cancel because each bicubic phase filter sums to 1) and m the
    matrix's Y column (equal for R, G and B). Clamping commutes with the shuffle, so the only operation
    at (s*h, s*w) is one depth-to-space. Measured on shipped FSRCNN x4, 270x480 -> 1080x1920, 2-core AMD
    EPYC (reference module -> this form): OpenVINO FP32 152 -> 45 ms, torch eager 331 -> 119 ms.
    """

    def __init__(self, phases: nn.Module, spec: IOSpec) -> None:
        super().__init__()
        if spec.color != "y" or spec.pre_upsample:
            raise ValueError(f"SubPixelYDeploy needs a Y network that upsamples itself, got {spec}")
        self.phases, self.spec = phases, spec
        c = ycbcr_constants(torch.float64)
        to_ycbcr, to_rgb, offset = c["rgb2ycbcr"], c["ycbcr2rgb"], c["offset"]
        y_gain = to_rgb[:, 0]
        if not torch.allclose(y_gain, y_gain[0].expand(3)):
            raise ValueError("SubPixelYDeploy assumes the same Y coefficient for R, G and B")
        self.y_gain, self.y_offset = float(y_gain[0]), float(offset[0])
        self.register_buffer("_to_y", to_ycbcr[:1, :, None, None].float(), persistent=False)
        self.register_buffer("_chroma", (to_rgb[:, 1:] @ to_ycbcr[1:])[:, :, None, None].float(), persistent=False)
        f = bicubic_phase_filters(spec.scale, torch.float64)  # (s, 5): one row per output phase
        phase_2d = torch.einsum("ha,wb->hwab", f, f).reshape(spec.scale**2, 1, 5, 5)
        self.register_buffer("_bicubic_2d", phase_2d.repeat(3, 1, 1, 1).float(), persistent=False)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        y = F.conv2d(rgb, self._to_y) + self.y_offset
        y_phases = self.phases(y * spec.value_range) / spec.value_range  # (N, s^2, h, w)
        z = (y_phases - self.y_offset) * self.y_gain
        chroma = F.conv2d(rgb, self._chroma)  # (N, 3, h, w): each colour's chroma term, before upscaling
        chroma = pad_symmetric_2(pad_symmetric_2(chroma, 2), 3)  # MATLAB's border, as upscale_bicubic
        chroma = F.conv2d(chroma, self._bicubic_2d, groups=3)  # (N, 3 s^2, h, w), order (colour, phase)
        out = (chroma + torch.cat([z, z, z], dim=1)).clamp(0.0, 1.0)
        return F.pixel_shuffle(out, spec.scale)
