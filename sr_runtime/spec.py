"""The input/output contract an architecture declares as data, and image sizes written ``HxW``.

The runtime and the exporter read an :class:`IOSpec`; nothing branches on architecture names.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from sr_runtime.errors import ConfigError

__all__ = ["IOSpec", "format_hw", "parse_hw"]

_HW = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_hw(text: str, *, flag: str = "shape") -> tuple[int, int]:
    """Parse ``"HxW"`` (e.g. ``"270x480"``) into ``(H, W)``; raises ConfigError naming ``flag``."""
    match = _HW.match(str(text))
    if not match:
        raise ConfigError(f"{flag}: expected HEIGHTxWIDTH such as 270x480, got {text!r}")
    h, w = int(match.group(1)), int(match.group(2))
    if h < 1 or w < 1:
        raise ConfigError(f"{flag}: height and width must be positive, got {text!r}")
    return h, w


def format_hw(hw: tuple[int, int]) -> str:
    """``(H, W)`` as ``"HxW"``."""
    return f"{hw[0]}x{hw[1]}"


@dataclass(frozen=True)
class IOSpec:
    """What a network consumes and produces.

    The *network* sees ``in_channels`` planes (RGB, or the Y plane of YCbCr) in ``[0, 1]``;
    when ``pre_upsample`` is true its input is the LR image already upscaled ``scale`` times
    with MATLAB-compatible bicubic, and its output has the same size as its input. Otherwise
    its output is ``scale`` times its input.
    """

    scale: int
    """Integer upscaling factor of the whole model (LR -> HR)."""
    in_channels: int = 3
    """Planes the network takes and returns: 3 for RGB, 1 for Y."""
    color: Literal["rgb", "y"] = "rgb"
    """``"rgb"``, or ``"y"``: the network sees the Y of BT.601 YCbCr; chroma is upscaled bicubically."""
    pre_upsample: bool = False
    """True when the network's input is the bicubic-upscaled LR image (SRCNN, VDSR, DRRN, RED-Net)."""
    value_range: float = 1.0
    """Range of the network's input and output values: ``[0, value_range]``."""
    multiple_of: int = 1
    """Input height and width (of the LR image) must be multiples of this."""
    min_size: int = 1
    """Smallest LR height/width the network accepts."""
    receptive_radius: int = 0
    """Receptive-field radius in LR input pixels: how far a pixel's context reaches."""

    def __post_init__(self) -> None:
        if not isinstance(self.scale, int) or self.scale < 1:
            raise ValueError(f"IOSpec.scale must be a positive integer, got {self.scale!r}")
        if self.color not in ("rgb", "y"):
            raise ValueError(f"IOSpec.color must be 'rgb' or 'y', got {self.color!r}")
        expected = 3 if self.color == "rgb" else 1
        if self.in_channels != expected:
            raise ValueError(
                f"IOSpec.in_channels={self.in_channels} does not match color={self.color!r} (expected {expected})"
            )
        if self.multiple_of < 1 or self.min_size < 1 or self.receptive_radius < 0:
            raise ValueError(f"IOSpec has an invalid size field: {self!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IOSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown IOSpec fields {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """HR size for an LR input of ``height`` x ``width``."""
        return height * self.scale, width * self.scale
