"""TensorRT optimization profile: min/opt/max LR input shapes, written out explicitly.

Shapes are of the *LR input* ``lr`` (N, 3, H, W); the output is ``scale`` times larger. A profile
is validated against the model's :class:`~sr_runtime.spec.IOSpec` (``min_size``, ``multiple_of``)
so that an engine is never built for inputs the model cannot take.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sr_runtime.errors import ConfigError
from sr_runtime.spec import IOSpec, format_hw, parse_hw

__all__ = [
    "ShapeProfile",
    "default_profile",
    "DEFAULT_MIN",
    "DEFAULT_OPT",
    "DEFAULT_MAX",
]

DEFAULT_MIN: tuple[int, int] = (32, 32)
"""Smallest LR input by default: tiles near a border."""
DEFAULT_OPT: tuple[int, int] = (270, 480)
"""Shape TensorRT tunes for by default: a 1080p frame at x4 (or a large tile)."""
DEFAULT_MAX: tuple[int, int] = (1088, 1920)
"""Largest LR input by default: a whole 1080p frame (1080 rounded up to a multiple of 32)."""

def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _round_down(value: int, multiple: int) -> int:
    return value // multiple * multiple


@dataclass(frozen=True)
class ShapeProfile:
    """LR input shapes (H, W) and batch sizes for one TensorRT optimization profile.

    ``min <= opt <= max`` per dimension, for sizes and batches alike. Validate against a model
    with :meth:`validate`.
    """

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]
    batch: tuple[int, int, int] = (1, 1, 1)
    """Batch (min, opt, max)."""

    def __post_init__(self) -> None:
        for field_name in ("min", "opt", "max"):
            hw = getattr(self, field_name)
            if len(hw) != 2 or any(not isinstance(v, int) or v < 1 for v in hw):
                raise ConfigError(f"ShapeProfile.{field_name} must be (height, width) positive ints, got {hw!r}")
        if len(self.batch) != 3 or any(not isinstance(v, int) or v < 1 for v in self.batch):
            raise ConfigError(f"ShapeProfile.batch must be (min, opt, max) positive ints, got {self.batch!r}")
        for axis, name in ((0, "height"), (1, "width")):
            lo, mid, hi = self.min[axis], self.opt[axis], self.max[axis]
            if not lo <= mid <= hi:
                raise ConfigError(
                    f"profile {name}s must satisfy min <= opt <= max, got min {format_hw(self.min)}, "
                    f"opt {format_hw(self.opt)}, max {format_hw(self.max)}; fix --min-shape/--opt-shape/--max-shape"
                )
        if not self.batch[0] <= self.batch[1] <= self.batch[2]:
            raise ConfigError(f"profile batch must satisfy min <= opt <= max, got {self.batch}")

    def input_shapes(self, channels: int = 3) -> dict[str, tuple[int, int, int, int]]:
        """``{"min"|"opt"|"max": (N, C, H, W)}`` as TensorRT's ``set_shape`` takes them."""
        return {
            "min": (self.batch[0], channels, *self.min),
            "opt": (self.batch[1], channels, *self.opt),
            "max": (self.batch[2], channels, *self.max),
        }

    def validate(self, spec: IOSpec) -> None:
        """Raise ConfigError unless every shape is at least ``spec.min_size`` and a multiple of ``spec.multiple_of``."""
        m = spec.multiple_of
        for field_name, flag in (("min", "--min-shape"), ("opt", "--opt-shape"), ("max", "--max-shape")):
            h, w = getattr(self, field_name)
            if h < spec.min_size or w < spec.min_size:
                fixed = (max(h, spec.min_size), max(w, spec.min_size))
                raise ConfigError(
                    f"{flag} {h}x{w} is smaller than the model's minimum input {spec.min_size}x{spec.min_size}; "
                    f"use {flag} {format_hw((_round_up(fixed[0], m), _round_up(fixed[1], m)))}"
                )
            if h % m or w % m:
                fixed = (_round_up(h, m), _round_up(w, m))
                raise ConfigError(
                    f"{flag} {h}x{w}: the model needs heights and widths that are multiples of {m}; "
                    f"use {flag} {format_hw(fixed)}"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "min": format_hw(self.min),
            "opt": format_hw(self.opt),
            "max": format_hw(self.max),
            "batch": {"min": self.batch[0], "opt": self.batch[1], "max": self.batch[2]},
            "input_shapes": {k: list(v) for k, v in self.input_shapes().items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShapeProfile:
        try:
            batch = data.get("batch", {"min": 1, "opt": 1, "max": 1})
            return cls(
                min=parse_hw(data["min"], flag="profile.min"),
                opt=parse_hw(data["opt"], flag="profile.opt"),
                max=parse_hw(data["max"], flag="profile.max"),
                batch=(int(batch["min"]), int(batch["opt"]), int(batch["max"])),
            )
        except (KeyError, TypeError) as e:
            raise ConfigError(f"malformed profile record {data!r}: missing or invalid {e}") from e

    def scaled_max(self, factor: float, spec: IOSpec) -> tuple[int, int]:
        """``max`` shrunk by ``factor`` (< 1) per side, aligned down to ``multiple_of`` but not below ``min``."""
        m = spec.multiple_of
        return (
            max(_round_up(self.min[0], m), _round_down(int(self.max[0] * factor), m)),
            max(_round_up(self.min[1], m), _round_down(int(self.max[1] * factor), m)),
        )


def default_profile(
    spec: IOSpec,
    *,
    min_hw: tuple[int, int] | None = None,
    opt_hw: tuple[int, int] | None = None,
    max_hw: tuple[int, int] | None = None,
    batch: int = 1,
) -> ShapeProfile:
    """A profile from the shapes given, the defaults filling the rest.

    Default shapes (not the ones given) are raised to ``spec.min_size`` and rounded up to
    ``spec.multiple_of``, and ``opt`` is clipped into ``[min, max]``; shapes given are kept as
    they are and validated. ``batch`` is the opt and max batch (min is 1). Raises ConfigError.
    """
    if batch < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch}")
    m = spec.multiple_of

    def fit(hw: tuple[int, int]) -> tuple[int, int]:
        return (_round_up(max(hw[0], spec.min_size), m), _round_up(max(hw[1], spec.min_size), m))

    lo = min_hw if min_hw is not None else fit(DEFAULT_MIN)
    hi = max_hw if max_hw is not None else fit(DEFAULT_MAX)
    if opt_hw is not None:
        mid = opt_hw
    else:
        mid = fit(DEFAULT_OPT)
        mid = (min(max(mid[0], lo[0]), hi[0]), min(max(mid[1], lo[1]), hi[1]))
    profile = ShapeProfile(min=lo, opt=mid, max=hi, batch=(1, batch, batch))
    profile.validate(spec)
    return profile
