"""Foreign ONNX files: what an image-to-image graph made by another tool expects, read from the graph
and confirmed by one small probe run.

This project's own ``.onnx`` files carry an ``io_spec`` in their metadata and take RGB in [0, 1]; the
ONNX Runtime backend uses that and never probes. A file without it (PyTorch's ``torch.onnx.export``,
chaiNNer, OpenCV's model zoo, ...) is accepted when it has one float32/float16 input and one output,
both of rank 4 (N, C, H, W) with C = 1 or 3, and :func:`probe_onnx` finds the rest:

- **static H/W (and batch)** from the input's shape: such a graph is run tiled at exactly that shape
  (:func:`graph_limits` -> :class:`ShapeLimits` with min = max, as for static TensorRT engines and
  OpenVINO models);
- **scale** from a probe run: output H/W over input H/W, which must be the same integer on both
  axes (and the channels unchanged). The probe is :data:`PROBE_HW`, odd and not square on purpose,
  so that a graph which needs sizes divisible by something fails it; such a graph is probed once
  more at :data:`RETRY_HW` and then fed sizes padded to a multiple of :data:`RETRY_MULTIPLE`;
- **value range** ([0, 1] or [0, 255]) from the same run: the probe image is smooth (two low
  sinusoids), where any super-resolution model's output is close to a bicubic upscale. It is fed
  once in [0, 1] and once times 255 (one batch of two where the batch axis allows), and each output
  (the second divided by 255) is scored in PSNR against the bicubic upscale. [0, 255] is chosen only
  when it scores :data:`RANGE_MARGIN_DB` better. The two wrong guesses are not alike: a [0, 255]
  model fed [0, 1] sees an almost black image, its biases (a mean shift, say) come out 255 times too
  large, and it scores tens of dB below; a [0, 1] model fed [0, 255] returns a white image where it
  clamps, and where it does not (a ReLU net is linear but for its biases) it returns its output
  without the biases' share, which can score a few dB *better* than the right range on a random or
  poorly trained net. Hence the wide margin, and [0, 1] when both score alike;
- **channels**: 3 is RGB; 1 is the BT.601 Y plane, with chroma upscaled bicubically (as this
  project's own Y networks, :class:`~sr_runtime.deploy.DeployModel`).

A graph that does not fit (several inputs or outputs, a rank-2 classification output, an output
that is not an integer multiple of its input, NaN on the probe) is refused with one
:class:`~sr_runtime.errors.UnsupportedModelError` line. Range and Y conversion are applied around
the session by :func:`adapter`, so the backend keeps the runtime's contract (RGB in [0, 1]).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sr_runtime.backends.base import ShapeLimits
from sr_runtime.errors import UnsupportedModelError
from sr_runtime.metrics import psnr_db
from sr_runtime.spec import IOSpec

__all__ = [
    "PROBE_HW",
    "RETRY_HW",
    "RETRY_MULTIPLE",
    "RANGE_MARGIN_DB",
    "ProbeResult",
    "adapter",
    "check_io",
    "graph_limits",
    "probe_image",
    "probe_onnx",
]

log = logging.getLogger(__name__)

PROBE_HW = (33, 47)
"""First probe size for dynamic H/W: small, odd and not square (a transposed output is caught)."""
RETRY_HW = (64, 96)
"""Second probe size, for graphs that refuse odd sizes (window attention, U-Nets)."""
RETRY_MULTIPLE = 32
"""``multiple_of`` for a graph that ran only at :data:`RETRY_HW`: whatever it needs divides 32."""
RANGE_MARGIN_DB = 10.0
"""How much better [0, 255] must score against the bicubic upscale to be chosen over [0, 1] (in the
tests: 45 dB better for [0, 255] nets, 2.5 dB better for random [0, 1] ReLU nets)."""
RESEMBLE_DB = 20.0
"""Below this PSNR against the bicubic upscale under both ranges, the range is a guess (warned)."""
UNKNOWN_RADIUS = 16
"""Tile overlap radius for a foreign graph, whose receptive field is unknown (as for community
models of unknown families); at most a quarter of a static tile side."""

_USAGE = "sr_runtime runs graphs that map one (N, 1|3, H, W) float image to one upscaled image"


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe_onnx` found."""

    spec: IOSpec
    limits: ShapeLimits
    probe_hw: tuple[int, int]
    psnr_db: tuple[float, float]
    """PSNR against the bicubic upscale of the probe's output fed [0, 1] and fed [0, 255]."""

    def describe(self) -> str:
        s = self.spec
        shape = (
            f"static {self.limits.max_hw[0]}x{self.limits.max_hw[1]} (run tiled at that shape)"
            if self.limits.static_hw
            else "dynamic H/W" + (f" (multiple of {s.multiple_of})" if s.multiple_of > 1 else "")
        )
        return (
            f"x{s.scale}, {'RGB' if s.color == 'rgb' else 'Y (chroma bicubic)'}, range [0, {s.value_range:g}], "
            f"{shape}; probe {self.probe_hw[0]}x{self.probe_hw[1]} vs bicubic: {_fmt_db(self.psnr_db[0])} dB fed "
            f"[0, 1], {_fmt_db(self.psnr_db[1])} dB fed [0, 255]"
        )


def _fmt_db(db: float) -> str:
    return "inf" if db == math.inf else "NaN/Inf" if db == -math.inf else f"{db:.1f}"


def _dims(shape: Sequence[Any] | None) -> list[Any]:
    return list(shape) if shape is not None else []


def _static(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def check_io(path: Path, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
    """Refuse a graph that is not one image in, one image out (UnsupportedModelError, one line).

    ``inputs``/``outputs``: ONNX Runtime's ``NodeArg`` lists (``name``, ``shape``)."""
    if len(inputs) != 1 or len(outputs) != 1:
        raise UnsupportedModelError(
            f"{path}: not an image-to-image model: it has {len(inputs)} input(s) {[i.name for i in inputs]} "
            f"and {len(outputs)} output(s) {[o.name for o in outputs]}; {_USAGE}"
        )
    for role, arg in (("input", inputs[0]), ("output", outputs[0])):
        dims = _dims(arg.shape)
        if dims and len(dims) != 4:
            raise UnsupportedModelError(
                f"{path}: not an image-to-image model: its {role} {arg.name!r} has shape {dims} (rank {len(dims)}), "
                f"not (N, C, H, W); {_USAGE}"
            )
    c_in = _static(_dims(inputs[0].shape)[1]) if _dims(inputs[0].shape) else None
    if c_in is not None and c_in not in (1, 3):
        raise UnsupportedModelError(
            f"{path}: its input {inputs[0].name!r} has {c_in} channels; {_USAGE} (1 = Y, 3 = RGB)"
        )


def graph_limits(input_shape: Sequence[Any] | None) -> ShapeLimits | None:
    """ShapeLimits for the static axes of a (N, C, H, W) input: H and W both fixed -> that one
    shape; a fixed batch -> that batch. None when every axis is dynamic."""
    dims = _dims(input_shape)
    if len(dims) != 4:
        return None
    n, _, h, w = (_static(d) for d in dims)
    if n is None and (h is None or w is None):
        return None
    hw = (h, w) if h is not None and w is not None else None
    return ShapeLimits(
        min_hw=hw or (1, 1),
        max_hw=hw,
        min_batch=n or 1,
        max_batch=n,
    )


def probe_image(channels: int, hw: tuple[int, int]) -> torch.Tensor:
    """A smooth (1, channels, h, w) float32 image in about [0.2, 0.8]: two low sinusoids, a little
    different per colour channel; 1 channel: its BT.601 Y plane."""
    from sr_runtime.color import rgb_to_ycbcr

    h, w = hw
    yy = torch.linspace(0, 1, h, dtype=torch.float64)[:, None]
    xx = torch.linspace(0, 1, w, dtype=torch.float64)[None, :]
    planes = [
        0.5 + 0.2 * torch.sin(2 * math.pi * (0.8 * yy + 0.5 * xx + phase)) * torch.cos(math.pi * (xx - yy))
        for phase in (0.0, 0.15, 0.3)
    ]
    rgb = torch.stack(planes)[None].float()
    return rgb_to_ycbcr(rgb)[:, :1] if channels == 1 else rgb


def _psnr_to(out: np.ndarray, ref: torch.Tensor) -> float:
    out = np.asarray(out, dtype=np.float64)
    if not np.isfinite(out).all():
        return -math.inf
    return psnr_db(out, ref)


def _run_pair(
    run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, limits: ShapeLimits | None
) -> tuple[np.ndarray, np.ndarray]:
    """The graph's outputs for ``x`` and ``255 * x``: one call with a batch of two where the batch
    axis allows (dynamic, or fixed at two or more: the rest filled with ``x``), else two calls."""
    fixed = limits.max_batch if limits is not None else None
    if fixed == 1:
        return run(x), run(x * 255)
    batch = [x, x * 255] + [x] * ((fixed or 2) - 2)
    out = run(np.concatenate(batch))
    return out[:1], out[1:2]


def probe_onnx(
    path: Path,
    run: Callable[[np.ndarray], np.ndarray],
    input_shape: Sequence[Any] | None,
    input_dtype: np.dtype,
) -> ProbeResult:
    """Find scale, channels, value range and shape limits of a graph without ``io_spec`` metadata.

    ``run(x)``: the session's single output for a (N, C, h, w) array of ``input_dtype``.
    ``input_shape``: the graph's input shape (ints for static axes). See the module doc for how.
    Raises UnsupportedModelError, one line naming ``path``, for a graph that is not image-to-image.
    """
    dims = _dims(input_shape)
    limits = graph_limits(input_shape)
    c_static = _static(dims[1]) if len(dims) == 4 else None
    channels = [c_static] if c_static is not None else [3, 1]
    sizes: list[tuple[tuple[int, int], int]]
    if limits is not None and limits.static_hw:
        sizes = [(limits.max_hw, 1)]
    else:
        h_fix, w_fix = (_static(d) for d in dims[2:4]) if len(dims) == 4 else (None, None)
        sizes = [((h_fix or PROBE_HW[0], w_fix or PROBE_HW[1]), 1), ((h_fix or RETRY_HW[0], w_fix or RETRY_HW[1]), RETRY_MULTIPLE)]

    failures: list[str] = []
    for c in channels:
        for hw, multiple_of in sizes:
            x = probe_image(c, hw)
            try:
                out1, out255 = _run_pair(run, x.numpy().astype(input_dtype), limits)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types; reported below
                failures.append(f"{c}x{hw[0]}x{hw[1]}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
                continue
            return _result(path, x, hw, multiple_of, out1, out255, limits)
    raise UnsupportedModelError(
        f"{path}: ONNX Runtime cannot run this graph on a probe image ({'; '.join(failures)}); {_USAGE}"
    )


def _result(path, x, hw, multiple_of, out1, out255, limits) -> ProbeResult:
    n, c, h, w = x.shape
    out1 = np.asarray(out1)
    if out1.ndim != 4:
        raise UnsupportedModelError(
            f"{path}: not an image-to-image model: for a {tuple(x.shape)} input it returns shape {out1.shape}; {_USAGE}"
        )
    _, oc, oh, ow = out1.shape
    if oc != c:
        raise UnsupportedModelError(
            f"{path}: the graph returns {oc} channel(s) for {c}; {_USAGE} with the same channels in and out"
        )
    if oh % h or ow % w or oh // h != ow // w or oh < h:
        raise UnsupportedModelError(
            f"{path}: not an upscaler: a {h}x{w} input gives a {oh}x{ow} output, not the same integer multiple "
            f"of both sides; {_USAGE}"
        )
    scale = oh // h
    ref = F.interpolate(x.double(), scale_factor=scale, mode="bicubic", align_corners=False) if scale > 1 else x.double()
    db1 = _psnr_to(out1, ref)
    db255 = _psnr_to(np.asarray(out255, dtype=np.float64) / 255.0, ref)
    if db1 == db255 == -math.inf:
        raise UnsupportedModelError(f"{path}: the graph returns NaN/Inf on a smooth probe image, fed [0, 1] and [0, 255]")
    value_range = 255.0 if db255 > db1 + RANGE_MARGIN_DB else 1.0
    static = limits is not None and limits.static_hw
    side = min(limits.max_hw) if static else None
    radius = min(UNKNOWN_RADIUS, side // 4) if side else UNKNOWN_RADIUS
    spec = IOSpec(
        scale=scale,
        in_channels=c,
        color="rgb" if c == 3 else "y",
        value_range=value_range,
        multiple_of=1 if static else multiple_of,
        receptive_radius=radius,
    )
    result = ProbeResult(spec=spec, limits=limits or ShapeLimits(), probe_hw=hw, psnr_db=(db1, db255))
    log.info("%s: no io_spec metadata; probed: %s", Path(path).name, result.describe())
    if max(db1, db255) < RESEMBLE_DB:
        log.warning(
            "%s: the probe's output resembles a bicubic upscale in neither range (%s / %s dB); assuming [0, %g]",
            Path(path).name, _fmt_db(db1), _fmt_db(db255), value_range,
        )
    if scale == 1:
        log.warning(
            "%s: output size equals input size: run as a 1x image-to-image model (networks that expect a "
            "bicubic-upscaled input are not detected)", Path(path).name,
        )
    return result


class _Adapter(nn.Module):
    """RGB [0, 1] -> the graph's channels and range -> RGB [0, 1]: a DeployModel (Y conversion,
    bicubic chroma, value range) around the raw session call, computed in float32."""

    def __init__(self, spec: IOSpec, run_raw: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype) -> None:
        super().__init__()
        from sr_runtime.deploy import DeployModel

        self._deploy = DeployModel(_Raw(run_raw, dtype), spec)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self._deploy(lr.float()).to(lr.dtype)


class _Raw(nn.Module):
    def __init__(self, run_raw: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype) -> None:
        super().__init__()
        self._run_raw, self._dtype = run_raw, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_raw(x.to(self._dtype).contiguous()).float()


def adapter(
    spec: IOSpec, run_raw: Callable[[torch.Tensor], torch.Tensor], dtype: torch.dtype, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What the backend runs in place of ``run_raw`` for a graph that is not RGB in [0, 1] (a Y or a
    [0, 255] graph): ``run_raw`` takes and returns the graph's own tensors (``dtype``); the adapter
    takes and returns RGB in [0, 1]. None when the graph already is RGB in [0, 1]."""
    if spec.color == "rgb" and spec.value_range == 1.0:
        return None
    return _Adapter(spec, run_raw, dtype).to(device).eval()
