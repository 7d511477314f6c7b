"""TensorRT backend: an engine built by ``sr-export`` or by the automatic fast path, checked against
its sidecar, run with ``execute_async_v3`` on torch CUDA tensors (no pycuda).

The sidecar ``X.engine.json`` beside ``X.engine`` (:mod:`sr_runtime.backends.tensorrt_sidecar`)
gives the TensorRT version and GPU it was built for, the precision, the profile (the backend's
shape limits), the IOSpec, the I/O names and the command that rebuilds it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from sr_runtime.backends.base import Backend, ShapeLimits, parse_device
from sr_runtime.backends.tensorrt_sidecar import EngineRecord, check_sidecar, import_tensorrt, read_sidecar
from sr_runtime.errors import BackendUnavailableError, ConfigError, EngineMismatchError, InputError
from sr_runtime.spec import IOSpec, parse_hw

__all__ = ["IO_ALIGNMENT", "TensorRTBackend"]

log = logging.getLogger(__name__)

IO_ALIGNMENT = 256
"""Bytes: TensorRT requires I/O tensor addresses aligned to 256 bytes (``set_tensor_address``)."""


def _parse_hw(text: Any, what: str) -> tuple[int, int]:
    try:
        return parse_hw(text, flag=f"engine sidecar profile {what}")
    except ConfigError as e:
        raise EngineMismatchError(f"{e}; rebuild the engine") from e


def _limits(record: EngineRecord) -> ShapeLimits:
    profile = record.profile
    batch = profile.get("batch", {"min": 1, "max": 1})
    return ShapeLimits(
        min_hw=_parse_hw(profile.get("min"), "min"),
        max_hw=_parse_hw(profile.get("max"), "max"),
        min_batch=int(batch.get("min", 1)),
        max_batch=int(batch.get("max", 1)),
    )


def aligned(tensor: torch.Tensor, alignment: int = IO_ALIGNMENT) -> torch.Tensor:
    """``tensor`` as a contiguous tensor whose address is a multiple of ``alignment`` bytes: itself
    when it already is, else a copy (a view into a batch, say, can start anywhere; a fresh CUDA
    allocation is aligned to 512 bytes)."""
    tensor = tensor.contiguous()
    if tensor.data_ptr() % alignment == 0:
        return tensor
    # Over-allocate by one alignment and start at the first aligned element, whatever the allocator.
    element = tensor.element_size()
    buffer = torch.empty(tensor.numel() + alignment // element, dtype=tensor.dtype, device=tensor.device)
    offset = (-buffer.data_ptr() % alignment) // element
    copy = buffer[offset : offset + tensor.numel()].view(tensor.shape)
    copy.copy_(tensor)
    return copy


def bind_address(context: Any, name: str, tensor: torch.Tensor) -> None:
    """``context.set_tensor_address(name, tensor)``, raising when TensorRT rejects it (it returns
    False for a misaligned or unknown tensor and would then run on stale buffers)."""
    if not context.set_tensor_address(name, tensor.data_ptr()):
        raise BackendUnavailableError(
            f"TensorRT rejected the address of I/O tensor {name!r} ({tensor.data_ptr():#x}, shape "
            f"{tuple(tensor.shape)}); see the TensorRT log above"
        )


class TensorRTBackend(Backend):
    """Run a serialized TensorRT engine on a CUDA device.

    ``engine_path``: an ``.engine`` file with its ``.engine.json`` sidecar. ``precision``: None to
    take the engine's, or the precision you require (a mismatch raises EngineMismatchError).
    Input and output are torch CUDA tensors used directly as TensorRT's I/O buffers (inputs not
    aligned to 256 bytes are copied first). The engine runs on a stream of its own, ordered after the
    caller's current stream by an event wait (not the legacy default stream, which would synchronise
    the whole device per tile), and the caller's stream waits for it, so no host synchronisation is
    needed between tiles.
    Raises BackendUnavailableError without TensorRT or CUDA, EngineMismatchError for an engine
    built elsewhere (other GPU, TensorRT version, precision, ONNX).
    """

    name = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        *,
        device: torch.device | str = "cuda",
        precision: str | None = None,
        spec: IOSpec | None = None,
    ) -> None:
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise InputError(f"{engine_path}: engine file not found")
        trt = import_tensorrt()
        dev = parse_device(device)
        if dev.type != "cuda":
            raise BackendUnavailableError(f"TensorRT runs on CUDA devices only, {dev} was asked for; use --device cuda")
        record = read_sidecar(engine_path)
        check_sidecar(
            record, tensorrt_version=trt.__version__, gpu_name=torch.cuda.get_device_name(dev), precision=precision,
            engine_path=engine_path,
        )
        if spec is None:
            if not record.io_spec:
                raise EngineMismatchError(f"{engine_path}: sidecar has no io_spec; rebuild the engine with sr-export")
            spec = IOSpec.from_dict(record.io_spec)
        with torch.cuda.device(dev):
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if engine is None:
                raise EngineMismatchError(
                    f"{engine_path}: TensorRT could not deserialize the engine; rebuild with: {record.command}"
                )
            context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailableError(f"{engine_path}: TensorRT could not create an execution context (GPU memory?)")
        self.input_name = record.input_name
        self.output_name = record.output_name
        to_torch = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        try:
            in_dtype = to_torch[engine.get_tensor_dtype(self.input_name)]
            self.output_dtype = to_torch[engine.get_tensor_dtype(self.output_name)]
        except KeyError as e:
            raise EngineMismatchError(f"{engine_path}: engine I/O dtype {e} is not float32 or float16") from e
        super().__init__(
            spec=spec,
            device=dev,
            precision=str(record.precision),
            input_dtype=in_dtype,
            limits=_limits(record),
            fixed_batch=False,
            source=f"engine {engine_path.name}",
        )
        self._runtime, self._engine, self._context = runtime, engine, context
        self._stream = torch.cuda.Stream(dev)

    def _run(self, lr: torch.Tensor) -> torch.Tensor:
        with torch.cuda.device(self.device):  # cuda:1 works whatever the current device is
            x = aligned(lr)
            if not self._context.set_input_shape(self.input_name, tuple(x.shape)):
                raise InputError(
                    f"input shape {tuple(x.shape)} is outside the engine's optimization profile {self.limits}"
                )
            out = torch.empty(tuple(self._context.get_tensor_shape(self.output_name)), dtype=self.output_dtype,
                              device=self.device)
            bind_address(self._context, self.input_name, x)
            bind_address(self._context, self.output_name, out)
            caller = torch.cuda.current_stream(self.device)
            self._stream.wait_stream(caller)  # the input was written on the caller's stream
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise BackendUnavailableError("TensorRT execute_async_v3 failed; see the TensorRT log above")
            # The allocator must not hand x's or out's memory to other work before the engine is done.
            x.record_stream(self._stream)
            out.record_stream(self._stream)
            caller.wait_stream(self._stream)  # the caller reads the output on its own stream
        return out if out.dtype == self.input_dtype else out.to(self.input_dtype)

    def _release(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None
        self._stream = None
