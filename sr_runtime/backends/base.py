"""The one small interface every inference backend implements (Polygraphy's runner pattern).

The base class owns the checks: a backend receives only inputs it can run, and its result is
checked against the model's contract. A subclass implements :meth:`Backend._run` (and
:meth:`Backend._release` when it holds device memory); it is a context manager.

Contract of :meth:`Backend.run`: ``lr`` is a float tensor (N, 3, h, w) in [0, 1] of dtype
``input_dtype`` on ``device``, h and w multiples of ``spec.multiple_of``, at least ``min_shape`` and
at most ``max_shape``; the result is (N, 3, s*h, s*w) in [0, 1] on the same device.

Thread safety: a backend is not re-entrant. Use one backend (one Upscaler) per thread.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import torch

from sr_runtime.errors import BackendUnavailableError, InputError
from sr_runtime.options import PRECISIONS
from sr_runtime.spec import IOSpec

__all__ = ["Backend", "ShapeLimits", "PRECISIONS", "parse_device", "resolve_file_spec", "torch_devices"]



@dataclass(frozen=True)
class ShapeLimits:
    """Input sizes a backend accepts beyond what the IOSpec says (a TensorRT profile, say)."""

    min_hw: tuple[int, int] = (1, 1)
    max_hw: tuple[int, int] | None = None
    min_batch: int = 1
    max_batch: int | None = None

    @property
    def static_hw(self) -> bool:
        """True when the backend runs exactly one input height and width."""
        return self.max_hw is not None and self.min_hw == self.max_hw

    @property
    def static_batch(self) -> bool:
        return self.max_batch is not None and self.min_batch == self.max_batch


class Backend(abc.ABC):
    """A loaded model on one device at one precision. Subclasses implement :meth:`_run`."""

    name: str = "backend"

    def __init__(
        self,
        *,
        spec: IOSpec,
        device: torch.device | str,
        precision: str,
        input_dtype: torch.dtype,
        limits: ShapeLimits | None = None,
        fixed_batch: bool = False,
        fixed_shape: bool = False,
        source: str = "",
    ) -> None:
        if precision not in PRECISIONS:
            raise BackendUnavailableError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.spec = spec
        self.device = torch.device(device)
        self.precision = precision
        self.input_dtype = input_dtype
        self.limits = limits or ShapeLimits()
        self.fixed_batch = fixed_batch
        """True when every call should get the same batch size (compiled graphs, static engines)."""
        self.fixed_shape = fixed_shape
        """True when every call should get the same tile height and width too: each new shape costs
        a recompile (torch.compile) or a capture (CUDA graphs), so the caller pads to one tile shape."""
        self.source = source
        """What was loaded, for logs: a checkpoint, an ONNX file, an engine."""
        self.fast_path: dict | None = None
        """When the fast path chose this form: its name, the parity (dB against PyTorch FP32; None when
        exact), the probe's speed-up over torch FP32 and the probe size. Set by the fast path."""
        self.model_file: Path | None = None
        """The file the model came from, once resolved: the checkpoint a model name stood for (also when
        a faster form of it runs), or the artifact given. Set by the factory that opened it."""
        self._closed = False

    @property
    def scale(self) -> int:
        return self.spec.scale

    def describe(self) -> str:
        """One line for the log: backend, device, precision, what runs."""
        return f"{self.name} on {self.device} at {self.precision}" + (f" ({self.source})" if self.source else "")

    def run(self, lr: torch.Tensor) -> torch.Tensor:
        """Check ``lr`` against the contract, run the model, check the result (see the module doc)."""
        if self._closed:
            raise InputError(f"{self.name} backend is closed; create a new one")
        self._check_input(lr)
        sr = self._run(lr)
        n, _, h, w = lr.shape
        expected = (n, 3, h * self.spec.scale, w * self.spec.scale)
        if tuple(sr.shape) != expected:
            raise InputError(
                f"{self.describe()} returned shape {tuple(sr.shape)} for input {tuple(lr.shape)}; expected "
                f"{expected} (scale {self.spec.scale}). The model file does not match the scale it was given"
            )
        return sr

    def _check_input(self, lr: torch.Tensor) -> None:
        if not isinstance(lr, torch.Tensor):
            raise InputError(f"{self.name} backend takes a torch.Tensor, got {type(lr).__name__}")
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise InputError(f"{self.name} backend takes (N, 3, h, w) RGB tensors, got shape {tuple(lr.shape)}")
        if lr.dtype != self.input_dtype:
            raise InputError(f"{self.name} backend at {self.precision} takes {self.input_dtype} input, got {lr.dtype}")
        if lr.device != self.device and not (
            lr.device.type == self.device.type == "cuda" and self.device.index is None
        ):
            raise InputError(f"{self.name} backend runs on {self.device}, input is on {lr.device}")
        n, _, h, w = lr.shape
        m = self.spec.multiple_of
        if h % m or w % m:
            raise InputError(f"input {h}x{w} is not a multiple of {m} in height and width, as the model requires")
        min_h = max(self.spec.min_size, self.limits.min_hw[0])
        min_w = max(self.spec.min_size, self.limits.min_hw[1])
        if h < min_h or w < min_w:
            raise InputError(f"input {h}x{w} is smaller than the smallest the model accepts ({min_h}x{min_w})")
        if self.limits.max_hw is not None and (h > self.limits.max_hw[0] or w > self.limits.max_hw[1]):
            raise InputError(
                f"input {h}x{w} is larger than the largest this {self.name} model accepts "
                f"({self.limits.max_hw[0]}x{self.limits.max_hw[1]}); use a smaller --tile or rebuild with a larger profile"
            )
        if n < self.limits.min_batch or (self.limits.max_batch is not None and n > self.limits.max_batch):
            raise InputError(
                f"batch {n} is outside the range this {self.name} model accepts "
                f"[{self.limits.min_batch}, {self.limits.max_batch}]; use a --batch in that range"
            )

    @abc.abstractmethod
    def _run(self, lr: torch.Tensor) -> torch.Tensor:
        """Run the model on a checked input; return (N, 3, s*h, s*w) on ``self.device``."""

    def _release(self) -> None:
        """Free what the backend holds (sessions, engines, device buffers)."""

    def close(self) -> None:
        """Release the backend's resources; :meth:`run` raises afterwards. Idempotent."""
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def resolve_file_spec(path, file_spec: IOSpec | None, spec: IOSpec | None, scale: int | None) -> IOSpec:
    """The IOSpec of a model file (ONNX, OpenVINO IR): the one given, else the file's own metadata,
    else ``IOSpec(scale)`` when a scale is given. Raises InputError when none is known and
    UnsupportedScaleError when ``scale`` contradicts it."""
    import logging

    from sr_runtime.errors import UnsupportedScaleError

    if file_spec is None and spec is None:
        if scale is None:
            raise InputError(f"{path}: the model carries no io_spec metadata (not exported by sr-export); pass --scale")
        logging.getLogger(__name__).warning(
            "%s has no io_spec metadata: assuming scale %d, RGB, no size constraints", getattr(path, "name", path), scale
        )
        spec = IOSpec(scale=scale)
    spec = spec or file_spec
    if scale is not None and spec.scale != scale:
        raise UnsupportedScaleError(f"{path}: the model upscales x{spec.scale}, but scale {scale} was asked for")
    return spec


def torch_devices() -> list[str]:
    """Devices torch can run on here: ``cpu`` and each ``cuda:N``."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return devices


def parse_device(device: torch.device | str) -> torch.device:
    """``device`` as a torch.device with an explicit CUDA index; raises BackendUnavailableError
    naming the devices present when it is not one of them (never a silent fall back to CPU)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise BackendUnavailableError(
            f"invalid device {device!r}; available: {', '.join(torch_devices())} (e.g. --device cpu or cuda:0)"
        ) from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"device {device!r} asked for, but torch sees no CUDA GPU (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda}); available: {', '.join(torch_devices())}"
            )
        dev = torch.device("cuda", torch.cuda.current_device() if dev.index is None else dev.index)
        if dev.index >= torch.cuda.device_count():
            raise BackendUnavailableError(f"device {device!r} does not exist; available: {', '.join(torch_devices())}")
    elif dev.type != "cpu":
        raise BackendUnavailableError(f"device {device!r} is not supported; available: {', '.join(torch_devices())}")
    return dev
