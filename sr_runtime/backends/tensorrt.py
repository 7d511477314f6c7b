"""TensorRT backend: an engine built by ``sr-export`` or by the automatic fast path, checked against
its sidecar, run with ``execute_async_v3`` on torch CUDA tensors (no pycuda).

The sidecar ``X.engine.json`` beside ``X.engine`` is written by ``sr_runtime.export.tensorrt_build`` (its
``EngineRecord``); this module reads the same JSON without importing ``sr_export``. Fields used:
``tensorrt_version``, ``gpu_name``, ``precision`` ("fp32"|"fp16"), ``profile`` (``min``/``opt``/``max``
as ``"HxW"`` strings of the LR input, ``batch`` ``{min, opt, max}``), ``io_spec`` (IOSpec dict),
``input_name``/``output_name``, ``command`` (rebuilds the engine), and optionally ``engine_sha256``
and ``onnx_file``/``onnx_sha256``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from sr_runtime.backends.base import Backend, ShapeLimits, parse_device
from sr_runtime.errors import BackendUnavailableError, ConfigError, EngineMismatchError, InputError
from sr_runtime.spec import IOSpec, parse_hw

__all__ = ["IO_ALIGNMENT", "TensorRTBackend", "check_sidecar", "import_tensorrt", "read_sidecar", "sidecar_path"]

log = logging.getLogger(__name__)

_INSTALL_HINT = (
    "TensorRT is not installed: pip install tensorrt --extra-index-url https://pypi.nvidia.com "
    "(or pip install -e '.[trt]'); it needs an NVIDIA GPU and a CUDA build of torch"
)
_REQUIRED = ("tensorrt_version", "gpu_name", "precision", "profile")
IO_ALIGNMENT = 256
"""Bytes: TensorRT requires I/O tensor addresses aligned to 256 bytes (``set_tensor_address``)."""


def import_tensorrt():
    """The ``tensorrt`` module; raises BackendUnavailableError with the install command otherwise."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(_INSTALL_HINT) from e
    return trt


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar record of ``engine_path``; raises EngineMismatchError when missing or malformed."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineMismatchError(
            f"{engine_path}: no sidecar {path.name} beside the engine, so it cannot be checked against this "
            f"machine; rebuild it with sr-export"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineMismatchError(f"{path}: unreadable engine sidecar ({e}); rebuild the engine with sr-export") from e
    missing = [k for k in _REQUIRED if k not in record] if isinstance(record, dict) else list(_REQUIRED)
    if missing:
        raise EngineMismatchError(f"{path}: engine sidecar lacks {missing}; rebuild the engine with sr-export")
    return record


def _parse_hw(text: Any, what: str) -> tuple[int, int]:
    try:
        return parse_hw(text, flag=f"engine sidecar profile {what}")
    except ConfigError as e:
        raise EngineMismatchError(f"{e}; rebuild the engine") from e


def _limits(record: dict[str, Any]) -> ShapeLimits:
    profile = record["profile"]
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sidecar(
    engine_path: str | Path,
    record: dict[str, Any],
    *,
    tensorrt_version: str,
    gpu_name: str,
    precision: str | None = None,
) -> None:
    """Raise EngineMismatchError unless the engine was built for this TensorRT version and GPU (and
    ``precision`` when given), its bytes are the ones the sidecar hashed, and the ONNX file it was
    built from, when it lies beside the engine, is unchanged. The message gives the rebuild command."""
    engine_path = Path(engine_path)
    mismatches = []
    if str(record["tensorrt_version"]) != str(tensorrt_version):
        mismatches.append(f"TensorRT {record['tensorrt_version']} (here: {tensorrt_version})")
    if str(record["gpu_name"]) != str(gpu_name):
        mismatches.append(f"GPU {record['gpu_name']!r} (here: {gpu_name!r})")
    if precision is not None and record["precision"] != precision:
        mismatches.append(f"precision {record['precision']} ({precision} was asked for)")
    if record.get("engine_sha256") and _sha256(engine_path) != record["engine_sha256"]:
        mismatches.append("other engine bytes (the .engine file was replaced after its sidecar was written)")
    onnx_file = record.get("onnx_file")
    if onnx_file and record.get("onnx_sha256"):
        onnx_path = engine_path.with_name(Path(onnx_file).name)
        if onnx_path.is_file() and _sha256(onnx_path) != record["onnx_sha256"]:
            mismatches.append(f"another version of {onnx_path.name} (the ONNX beside it changed since the build)")
    if mismatches:
        rebuild = record.get("command") or "sr-export (same arguments)"
        raise EngineMismatchError(
            f"{engine_path}: engine was built for {'; '.join(mismatches)}. TensorRT engines only run where "
            f"they were built; rebuild it here with: {rebuild}"
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
            engine_path, record, tensorrt_version=trt.__version__, gpu_name=torch.cuda.get_device_name(dev),
            precision=precision,
        )
        if spec is None:
            if not record.get("io_spec"):
                raise EngineMismatchError(f"{engine_path}: sidecar has no io_spec; rebuild the engine with sr-export")
            spec = IOSpec.from_dict(record["io_spec"])
        with torch.cuda.device(dev):
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
            if engine is None:
                raise EngineMismatchError(
                    f"{engine_path}: TensorRT could not deserialize the engine; rebuild with: {record.get('command')}"
                )
            context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailableError(f"{engine_path}: TensorRT could not create an execution context (GPU memory?)")
        self.input_name = record.get("input_name", "lr")
        self.output_name = record.get("output_name", "sr")
        to_torch = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        try:
            in_dtype = to_torch[engine.get_tensor_dtype(self.input_name)]
            self.output_dtype = to_torch[engine.get_tensor_dtype(self.output_name)]
        except KeyError as e:
            raise EngineMismatchError(f"{engine_path}: engine I/O dtype {e} is not float32 or float16") from e
        super().__init__(
            spec=spec,
            device=dev,
            precision=str(record["precision"]),
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
