"""ONNX Runtime backend: an ``.onnx`` file (input ``lr`` N x 3 x h x w in [0, 1] -> output ``sr``)
on an explicitly chosen execution provider. Files made by other tools (no ``io_spec`` metadata;
Y or RGB, [0, 1] or [0, 255], static or dynamic shapes) are probed by :mod:`.onnx_probe`.

Providers: ``cpu`` (CPUExecutionProvider), ``cuda`` (CUDAExecutionProvider, inputs and outputs
bound to torch CUDA tensors with IOBinding: no host round trip per tile), ``tensorrt``
(TensorrtExecutionProvider, engines cached on disk under the cache root,
:func:`sr_runtime.options.cache_root`). After the session is created the requested
provider must be the active one, else BackendUnavailableError: ONNX Runtime would otherwise fall
back to CPU silently when CUDA libraries are missing. The CPU provider stays listed after a GPU
provider only to run the few nodes a GPU provider does not implement (shape arithmetic), as ONNX
Runtime recommends.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from sr_runtime.backends.base import Backend, ShapeLimits, parse_device, resolve_file_spec
from sr_runtime.backends.onnx_probe import adapter, check_io, graph_limits, probe_onnx
from sr_runtime.errors import BackendUnavailableError, InputError, UnsupportedModelError
from sr_runtime.options import ORT_TENSORRT_DIR, cache_root
from sr_runtime.spec import IOSpec

__all__ = ["PROVIDERS", "OnnxRuntimeBackend", "available_providers", "read_onnx_spec"]

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
"""Short provider names (``--provider``) -> ONNX Runtime execution providers."""

_INSTALL_HINT = "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA, TensorRT); or pip install -e '.[onnx]'"
_NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
_TORCH_DTYPES = {np.float32: torch.float32, np.float16: torch.float16}
_META_KEYS = ("io_spec", "sr_runtime.io_spec")


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailableError(f"ONNX Runtime is not installed: {_INSTALL_HINT}") from e
    return ort


def available_providers() -> list[str]:
    """Short names of the providers this ONNX Runtime build offers and that can be used here
    (``cuda`` and ``tensorrt`` also need a CUDA build of torch, for the I/O buffers)."""
    try:
        ort = _import_ort()
    except BackendUnavailableError:
        return []
    offered = set(ort.get_available_providers())
    names = [short for short, full in PROVIDERS.items() if full in offered]
    if not torch.cuda.is_available():
        names = [n for n in names if n == "cpu"]
    return names


def read_onnx_spec(metadata: dict[str, str]) -> IOSpec | None:
    """The IOSpec stored in an ONNX file's metadata (``io_spec`` JSON), or None."""
    for key in _META_KEYS:
        if key in metadata:
            try:
                return IOSpec.from_dict(json.loads(metadata[key]))
            except (ValueError, TypeError) as e:
                raise InputError(f"ONNX metadata {key!r} is not a valid IOSpec ({e})") from e
    return None


TRT_PROFILE = ((16, 16), (512, 512), (1024, 1024), 4)
"""TensorRT provider profile: (min, opt, max) input height x width and the largest batch. Given to
the provider explicitly, so it builds one engine for every tile shape in range instead of a new
engine per shape; the backend's ShapeLimits say the same, so the Upscaler tiles within it."""


def _default_trt_cache() -> Path:
    return cache_root() / ORT_TENSORRT_DIR


class OnnxRuntimeBackend(Backend):
    """Run an ONNX file with ONNX Runtime on one explicit provider.

    ``provider``: ``cpu``, ``cuda`` or ``tensorrt`` (see :data:`PROVIDERS`); ``device``: the CUDA
    device for GPU providers (``cuda:N``), ``cpu`` otherwise. ``precision``: None for the file's own
    (its ``precision`` metadata, else FP16 when its input is float16), ``fp32``, or ``fp16`` (an FP16 file, or FP32 file on the TensorRT
    provider with its FP16 mode). ``spec``: the model's IOSpec when the file's metadata lacks it
    (the graph then must take RGB in [0, 1]); without either, the file is a foreign one and its
    scale, channels, value range and static shape are read from the graph and one probe run
    (:mod:`sr_runtime.backends.onnx_probe`), with ``scale`` checked against them. ``threads``:
    intra-op threads on CPU (None: ONNX Runtime's default). Raises BackendUnavailableError for a
    provider, device or precision that is not available, UnsupportedScaleError for a ``scale`` the
    file does not have, UnsupportedModelError (an InputError) for a file that is not a
    single-input single-output image-to-image model.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        provider: str = "cpu",
        device: torch.device | str | None = None,
        precision: str | None = None,
        spec: IOSpec | None = None,
        scale: int | None = None,
        threads: int | None = None,
        trt_cache_dir: str | os.PathLike | None = None,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: ONNX file not found")
        ort = _import_ort()
        if provider not in PROVIDERS:
            raise BackendUnavailableError(f"unknown provider {provider!r}; valid: {', '.join(PROVIDERS)}")
        offered = ort.get_available_providers()
        if PROVIDERS[provider] not in offered:
            raise BackendUnavailableError(
                f"ONNX Runtime provider {provider!r} ({PROVIDERS[provider]}) is not in this build of onnxruntime "
                f"{ort.__version__}; available: {', '.join(offered)}. For CUDA/TensorRT install onnxruntime-gpu"
            )
        dev = parse_device(device or ("cpu" if provider == "cpu" else "cuda"))
        if (provider == "cpu") != (dev.type == "cpu"):
            raise BackendUnavailableError(
                f"provider {provider!r} runs on {'the CPU' if provider == 'cpu' else 'a CUDA device'}, "
                f"device {dev} was asked for"
            )

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        self._stream = None
        if provider != "cpu":

            with torch.cuda.device(dev):
                self._stream = torch.cuda.Stream(dev)
        input_name = _graph_input_name(path) if provider == "tensorrt" else "lr"
        providers = self._providers(
            provider, dev, precision, trt_cache_dir,
            stream=self._stream.cuda_stream if self._stream is not None else None, input_name=input_name,
        )
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
            raise InputError(f"{path}: ONNX Runtime cannot load this file ({e})") from e
        active = session.get_providers()
        if PROVIDERS[provider] not in active:
            raise BackendUnavailableError(
                f"ONNX Runtime did not activate {PROVIDERS[provider]} for {path.name} (active: {', '.join(active)}); "
                f"its libraries (CUDA, cuDNN, TensorRT) may be missing or mismatched. Not falling back to CPU"
            )

        inputs, outputs = session.get_inputs(), session.get_outputs()
        check_io(path, inputs, outputs)
        np_in = _NP_DTYPES.get(inputs[0].type)
        np_out = _NP_DTYPES.get(outputs[0].type)
        if np_in is None or np_out is None:
            raise UnsupportedModelError(
                f"{path}: input/output types {inputs[0].type}/{outputs[0].type} are not float32/float16"
            )
        metadata = session.get_modelmeta().custom_metadata_map
        # sr-export's FP16 files keep FP32 I/O by default and say "precision": "fp16" in metadata.
        file_precision = metadata.get("precision") or ("fp16" if np_in == np.float16 else "fp32")
        if precision is None:
            precision = file_precision
        elif precision != file_precision and not (provider == "tensorrt" and precision == "fp16"):
            raise BackendUnavailableError(
                f"{path.name} is an {file_precision.upper()} model and {precision} was asked for; export an "
                f"{precision.upper()} ONNX (sr-export) or ask for {file_precision}"
            )

        file_spec = read_onnx_spec(metadata)
        limits = graph_limits(inputs[0].shape)  # static H/W: tiled at exactly that shape
        foreign = file_spec is None and spec is None
        if foreign:  # not an sr-export file: its contract from the graph and one probe run
            quiet = ort.RunOptions()
            quiet.log_severity_level = 4  # a refused probe size is expected; ONNX Runtime would log it as an error

            def probe_run(x):
                return session.run([outputs[0].name], {inputs[0].name: x}, quiet)[0]

            file_spec = probe_onnx(path, probe_run, inputs[0].shape, np_in).spec
        spec = resolve_file_spec(path, file_spec, spec, scale)

        if provider == "tensorrt" and limits is None:
            (min_hw, _, max_hw, max_batch) = TRT_PROFILE
            limits = ShapeLimits(min_hw=min_hw, max_hw=max_hw, max_batch=max_batch)
        super().__init__(
            spec=spec,
            device=dev,
            precision=precision,
            input_dtype=_TORCH_DTYPES[np_in],
            limits=limits,
            source=f"{path.name} via {PROVIDERS[provider]}",
        )
        self.path = path
        self.provider = provider
        self._session = session
        self._input_name, self._output_name = inputs[0].name, outputs[0].name
        self._np_in, self._np_out = np_in, np_out
        # sr-export's graphs take RGB in [0, 1] whatever their network sees; a foreign Y or [0, 255]
        # graph gets the conversion around the session.
        self._adapter = adapter(spec, self._run_raw, _TORCH_DTYPES[np_in], dev) if foreign else None

    @staticmethod
    def _providers(
        provider: str,
        dev: torch.device,
        precision: str | None,
        trt_cache_dir,
        *,
        stream: int | None = None,
        input_name: str = "lr",
    ) -> list:
        """Provider list with options. CUDA: a heuristic cuDNN algorithm choice (the default,
        EXHAUSTIVE, benchmarks every convolution again for each new tile shape) and the backend's
        own stream (``stream``, a cudaStream_t address) instead of the legacy default stream."""
        cuda_options = {"device_id": dev.index or 0, "cudnn_conv_algo_search": "HEURISTIC"}
        if stream is not None:
            cuda_options["user_compute_stream"] = str(stream)
        cuda = ("CUDAExecutionProvider", cuda_options)
        if provider == "cpu":
            return ["CPUExecutionProvider"]
        if provider == "cuda":
            return [cuda, "CPUExecutionProvider"]
        cache = Path(trt_cache_dir) if trt_cache_dir else _default_trt_cache()
        cache.mkdir(parents=True, exist_ok=True)
        (min_h, min_w), (opt_h, opt_w), (max_h, max_w), max_batch = TRT_PROFILE
        trt_options = {
            "device_id": dev.index or 0,
            "trt_fp16_enable": precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            "trt_profile_min_shapes": f"{input_name}:1x3x{min_h}x{min_w}",
            "trt_profile_opt_shapes": f"{input_name}:1x3x{opt_h}x{opt_w}",
            "trt_profile_max_shapes": f"{input_name}:{max_batch}x3x{max_h}x{max_w}",
        }
        if stream is not None:
            trt_options["user_compute_stream"] = str(stream)
        return [("TensorrtExecutionProvider", trt_options), cuda, "CPUExecutionProvider"]

    def _run(self, lr: torch.Tensor) -> torch.Tensor:
        return self._run_raw(lr) if self._adapter is None else self._adapter(lr)

    def _run_raw(self, lr: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            out = self._session.run([self._output_name], {self._input_name: lr.contiguous().numpy()})[0]
            return torch.from_numpy(out)
        return self._run_bound(lr)

    def _run_bound(self, lr: torch.Tensor) -> torch.Tensor:
        x = lr.contiguous()
        n, c, h, w = x.shape
        s = self.spec.scale
        out = torch.empty((n, c, h * s, w * s), dtype=_TORCH_DTYPES[self._np_out], device=self.device)
        binding = self._session.io_binding()
        index = self.device.index or 0
        binding.bind_input(self._input_name, "cuda", index, self._np_in, tuple(x.shape), x.data_ptr())
        binding.bind_output(self._output_name, "cuda", index, self._np_out, tuple(out.shape), out.data_ptr())
        # ONNX Runtime runs on the backend's stream: order it after the caller's work on the input
        # (a device-side wait, no host synchronisation); run_with_iobinding returns once it is done.
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.device(self.device):
                self._session.run_with_iobinding(binding)
        except Exception as e:
            message = str(e)
            if "out of memory" in message.lower() or "failed to allocate memory" in message.lower():
                raise torch.cuda.OutOfMemoryError(f"ONNX Runtime: {message}") from e
            raise
        return out

    def _release(self) -> None:
        self._session = None
        self._stream = None
        self._adapter = None


def _graph_input_name(path: Path) -> str:
    """The graph's input name (for the TensorRT provider's profile), read without the weights."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        names = [i.name for i in graph.input if i.name not in initializers]
        return names[0] if names else "lr"
    except Exception:  # noqa: BLE001 - the session creation below reports unreadable files properly
        return "lr"
