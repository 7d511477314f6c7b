"""OpenVINO backend: an ``.onnx`` file or an OpenVINO IR (``.xml`` + ``.bin``) with input ``lr``
N x 3 x h x w in [0, 1] -> output ``sr``, on the CPU at FP32 or BF16.

A model with dynamic batch, height and width (as sr-export writes it) is compiled once and runs
every tile size and batch without a recompile; a model traced at a fixed shape keeps that shape
(its limits say so, and the Upscaler tiles to it). The inference precision is always set
explicitly: OpenVINO's CPU plugin would otherwise run BF16 on its own on CPUs with AMX (its
default hint there), which is a silent precision change. BF16 is offered only where the CPU
plugin lists it in ``OPTIMIZATION_CAPABILITIES``; elsewhere asking for it is an error, never a
fall back to FP32.

The IOSpec comes from the ONNX ``io_spec`` metadata (sr-export writes it; OpenVINO exposes ONNX
metadata as ``rt_info["framework"]`` and keeps it when the model is saved as IR), or from
``rt_info["sr_runtime"]["io_spec"]`` (written there when the export library converts a model to IR:
``save_ir``), else from ``spec``/``scale``.
``openvino`` is imported only inside this module.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from sr_runtime.backends.base import Backend, ShapeLimits, resolve_file_spec
from sr_runtime.errors import BackendUnavailableError, InputError
from sr_runtime.spec import IOSpec

__all__ = [
    "OpenVINOBackend",
    "OV_PRECISIONS",
    "SUFFIXES",
    "IR_SPEC_PATH",
    "available_devices",
    "cpu_capabilities",
    "import_openvino",
    "read_ov_model",
    "read_ov_spec",
]

log = logging.getLogger(__name__)

_INSTALL_HINT = "pip install 'sr-runtime[openvino]' (or pip install openvino)"
SUFFIXES = (".onnx", ".xml")
"""Files this backend loads: ONNX, and OpenVINO IR (the ``.xml``, with its ``.bin`` beside it)."""
OV_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
"""``precision`` -> OpenVINO ``INFERENCE_PRECISION_HINT``."""
_DEVICES = {"cpu": "CPU"}
"""Devices (torch-style names) -> OpenVINO device names. Inputs and outputs are CPU tensors."""
IR_SPEC_PATH = ("sr_runtime", "io_spec")
"""Where an IR written by this project keeps the IOSpec in its ``rt_info``."""
_SPEC_PATHS = (("framework", "io_spec"), ("framework", "sr_runtime.io_spec"), IR_SPEC_PATH)


def import_openvino():
    """The ``openvino`` module; raises BackendUnavailableError with the install command otherwise."""
    try:
        import openvino as ov
    except ImportError as e:
        raise BackendUnavailableError(f"OpenVINO is not installed: {_INSTALL_HINT}") from e
    return ov


@functools.lru_cache(maxsize=1)
def _core():
    return import_openvino().Core()


def available_devices() -> list[str]:
    """The devices this backend can run on here (``["cpu"]`` when OpenVINO imports and has its CPU
    plugin), or ``[]``."""
    try:
        present = _core().available_devices
    except BackendUnavailableError:
        return []
    return [short for short, name in _DEVICES.items() if name in present]


def cpu_capabilities() -> list[str]:
    """The CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (``BF16`` among them where the CPU has
    AVX512-BF16 or AMX)."""
    return list(_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def read_ov_spec(model) -> IOSpec | None:
    """The IOSpec stored in an OpenVINO model's rt_info (ONNX metadata or an IR's), or None."""
    for key_path in _SPEC_PATHS:
        if model.has_rt_info(list(key_path)):
            text = model.get_rt_info(list(key_path)).astype(str)
            try:
                return IOSpec.from_dict(json.loads(text))
            except (ValueError, TypeError) as e:
                raise InputError(f"model rt_info {'/'.join(key_path)!r} is not a valid IOSpec ({e})") from e
    return None


def read_ov_model(path: Path):
    """``path`` (``.onnx``, or ``.xml`` with its ``.bin``) as an OpenVINO model; raises InputError."""
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path}: the OpenVINO backend loads {' or '.join(SUFFIXES)} files, not {path.suffix!r}")
    if path.suffix.lower() == ".xml" and not path.with_suffix(".bin").is_file():
        raise InputError(f"{path}: OpenVINO IR weights {path.with_suffix('.bin').name} not found beside the .xml")
    try:
        return _core().read_model(str(path))
    except RuntimeError as e:
        raise InputError(f"{path}: OpenVINO cannot read this file ({e})") from e


class OpenVINOBackend(Backend):
    """Run an ONNX file or OpenVINO IR with OpenVINO on the CPU.

    ``device``: ``cpu``. ``precision``: None or ``fp32`` (FP32 inference), or ``bf16`` (where the
    CPU supports it). ``spec``: the model's IOSpec when the file carries none; a ``scale`` alone then
    gives ``IOSpec(scale)``. ``threads``: ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default, all
    cores). Inputs and outputs are float32 CPU tensors (N, 3, h, w) whatever the file's own I/O type.
    Raises BackendUnavailableError for a device or precision not available here, InputError for a
    missing or unreadable file or one that is not a single-input single-output SR model,
    UnsupportedScaleError when ``scale`` disagrees with the file.
    """

    name = "openvino"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        device: str = "cpu",
        precision: str | None = None,
        spec: IOSpec | None = None,
        scale: int | None = None,
        threads: int | None = None,
    ) -> None:
        path = Path(path)
        ov = import_openvino()
        core = _core()
        if str(device) not in _DEVICES:
            raise BackendUnavailableError(
                f"the OpenVINO backend runs on {', '.join(_DEVICES)}, not {device!r} "
                f"(OpenVINO devices here: {', '.join(core.available_devices)})"
            )
        precision = precision or "fp32"
        if precision not in OV_PRECISIONS:
            raise BackendUnavailableError(
                f"the OpenVINO backend runs {' or '.join(OV_PRECISIONS)}, not {precision!r}; "
                "for fp16 use the onnxruntime or tensorrt backend on a GPU"
            )
        if precision == "bf16":
            caps = cpu_capabilities()
            if "BF16" not in caps:
                raise BackendUnavailableError(
                    f"bf16 needs a CPU with AVX512-BF16 or AMX; OpenVINO's CPU capabilities here: {', '.join(caps)}. "
                    "Use --fp32 (precision='fp32')"
                )
        if threads is not None and threads < 1:
            raise InputError(f"threads must be >= 1, got {threads}")

        model = read_ov_model(path)
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise InputError(
                f"{path}: expected one input and one output (lr -> sr), got {len(model.inputs)} inputs "
                f"and {len(model.outputs)} outputs"
            )
        spec = resolve_file_spec(path, read_ov_spec(model), spec, scale)

        limits = self._input_limits(model, path)
        # The caller always hands float32 NCHW; the file may have FP16 I/O (sr-export --fp16-io).
        ppp = ov.preprocess.PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.f32)
        ppp.output().tensor().set_element_type(ov.Type.f32)
        model = ppp.build()

        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OV_PRECISIONS[precision]}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            compiled = core.compile_model(model, _DEVICES[device], config)
        except RuntimeError as e:
            raise BackendUnavailableError(f"{path}: OpenVINO cannot compile this model for {device} ({e})") from e
        got = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        want = {"fp32": "f32", "bf16": "bf16"}[precision]
        if _ov_type_name(got) != want:
            raise BackendUnavailableError(
                f"OpenVINO compiled {path.name} at {got}, {precision} was asked for; not running at another precision"
            )

        super().__init__(
            spec=spec,
            device="cpu",
            precision=precision,
            input_dtype=torch.float32,
            limits=limits,
            source=f"{path.name} via OpenVINO {ov.__version__.split('-')[0]} CPU",
        )
        self.path = path
        self.threads = threads
        self._compiled = compiled
        self._request = compiled.create_infer_request()

    @staticmethod
    def _input_limits(model, path: Path) -> ShapeLimits:
        """The batch and sizes ``model``'s input takes: any, for sr-export's (?, 3, ?, ?); a model
        traced at a fixed size keeps it, since its constants (reshapes) are baked for that size and
        ``model.reshape`` to dynamic would compile, then fail at run time."""
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4:
            raise InputError(f"{path}: input shape {shape} is not (N, 3, h, w)")
        n, _, h, w = (None if d.is_dynamic else d.get_length() for d in shape)
        if n is h is w is None:
            return ShapeLimits()
        log.warning("%s: input shape %s is not fully dynamic; running it at that shape only", path.name, shape)
        hw = (h, w) if h is not None and w is not None else None
        if (h is None) != (w is None):
            raise InputError(f"{path}: input shape {shape} fixes height or width but not both; export both dynamic")
        return ShapeLimits(min_hw=hw or (1, 1), max_hw=hw, min_batch=n or 1, max_batch=n)

    def _run(self, lr: torch.Tensor) -> torch.Tensor:
        x = lr.contiguous().numpy()
        # share_inputs: no copy of the input; share_outputs=False: the request reuses its output
        # buffer on the next call, so the result must be a copy.
        out = self._request.infer({0: x}, share_inputs=True, share_outputs=False)
        return torch.from_numpy(np.asarray(out[0]))

    def _release(self) -> None:
        self._request = None
        self._compiled = None


def _ov_type_name(value: str) -> str:
    """OpenVINO's element type as its short name (``<Type: 'float32'>`` and ``f32`` -> ``f32``)."""
    value = value.lower()
    for long, short in (("bfloat16", "bf16"), ("float32", "f32"), ("float16", "f16")):
        if long in value:
            return short
    return value
