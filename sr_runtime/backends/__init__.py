"""Inference backends behind one interface (:class:`~sr_runtime.backends.base.Backend`), and the
one place that decides which backend runs a given model file.

What runs where (decided by what the user passes, never by silently switching):

- a checkpoint (``.safetensors`` path or a registry name such as ``fsrcnn``) runs on **torch**;
- an ``.onnx`` file runs on **onnxruntime** (provider ``cuda`` when this onnxruntime build has it
  and torch sees a GPU, else ``cpu``; the ``tensorrt`` provider only when asked for, since it
  builds an engine on first use);
- an ``.engine`` (``.plan``, ``.trt``) file runs on **tensorrt**;
- an OpenVINO IR (``.xml`` + ``.bin``) runs on **openvino**, and so does an ``.onnx`` file with
  ``backend="openvino"`` (CPU, FP32 or BF16 where the CPU has it).

``backend="auto"`` picks the backend implied by the file and the fastest device available for it
(TensorRT engine > ONNX Runtime CUDA > torch CUDA > ONNX Runtime CPU > torch CPU, among those
that can run what was given) and logs the choice; a checkpoint with ``backend="auto"`` runs in
its fastest parity-checked form, built once and cached (:mod:`sr_runtime.accel`), and with
``backend="tensorrt"`` as a TensorRT engine that path builds. An explicit backend, device,
provider or precision that cannot be honoured raises BackendUnavailableError listing what is
available; the runtime never falls back to CPU, FP32 or another backend on its own.

``onnxruntime``, ``tensorrt`` and ``openvino`` are imported only inside their backend modules.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

# No `import torch` here: importing the submodule sr_runtime.backends.torch binds the name `torch`
# in this package's namespace, which would shadow the library. base.py does the torch queries.
from sr_runtime.backends.base import PRECISIONS, Backend, ShapeLimits, parse_device, torch_devices
from sr_runtime.errors import BackendUnavailableError, UnsupportedScaleError

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendChoice",
    "ShapeLimits",
    "available_backends",
    "create_backend",
    "model_kind",
    "select_backend",
]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "openvino")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def _ort_providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    from sr_runtime.backends.onnxruntime import available_providers

    return available_providers()


def _ov_devices() -> list[str]:
    if importlib.util.find_spec("openvino") is None:
        return []
    from sr_runtime.backends.openvino import available_devices

    return available_devices()


def available_backends() -> dict[str, list[str]]:
    """What can run here: ``{"torch": devices, "onnxruntime": providers, "tensorrt": devices,
    "openvino": devices}``.

    An empty list means the backend is not usable (library missing, or no CUDA GPU for TensorRT).
    Does not import TensorRT.
    """
    devices = torch_devices()
    gpus = [d for d in devices if d != "cpu"]
    has_trt = importlib.util.find_spec("tensorrt") is not None
    return {
        "torch": devices,
        "onnxruntime": _ort_providers(),
        "tensorrt": gpus if has_trt else [],
        "openvino": _ov_devices(),
    }


def _describe_available() -> str:
    return "; ".join(f"{name}: {', '.join(v) if v else 'not available'}" for name, v in available_backends().items())


def model_kind(model: str | os.PathLike) -> str:
    """``"engine"``, ``"onnx"``, ``"ir"`` (OpenVINO ``.xml``) or ``"checkpoint"`` (a ``.safetensors``
    path or a model name), by suffix."""
    suffix = Path(str(model)).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return "engine"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".xml":
        return "ir"
    return "checkpoint"


@dataclass(frozen=True)
class BackendChoice:
    """The backend, device and (for onnxruntime) provider that will run a model, and why."""

    backend: str
    device: str
    provider: str | None
    reason: str


def select_backend(
    kind: str, *, backend: str = "auto", device: str | None = None, provider: str | None = None
) -> BackendChoice:
    """Decide what runs a model of ``kind`` (see :func:`model_kind`) given the user's explicit choices.

    Raises BackendUnavailableError when the choices cannot be honoured, listing what is available.
    """
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    runs_on = {"engine": "tensorrt", "onnx": "onnxruntime", "ir": "openvino", "checkpoint": "torch"}[kind]
    if backend == "openvino" and kind == "onnx":
        runs_on = "openvino"
    if backend not in ("auto", runs_on):
        hints = {
            "onnxruntime": "export an ONNX file with `sr-export` and pass it as --model model.onnx",
            "tensorrt": "build an engine with `sr-export --format engine` and pass it as --model model.engine",
            "torch": "pass a checkpoint (.safetensors) or a model name as --model",
            "openvino": "export an ONNX file with `sr-export` and pass it (or an OpenVINO IR .xml) as --model",
        }
        what = {
            "engine": "a TensorRT engine",
            "onnx": "an ONNX file",
            "ir": "an OpenVINO IR",
            "checkpoint": "a checkpoint or model name",
        }[kind]
        raise BackendUnavailableError(
            f"the {backend} backend cannot run {what} (that runs on the {runs_on} backend); {hints[backend]}"
        )
    if provider is not None and runs_on != "onnxruntime":
        raise BackendUnavailableError(f"--provider applies to onnxruntime (.onnx models) only, not to {runs_on}")
    have = available_backends()
    if runs_on == "onnxruntime" and not have["onnxruntime"]:
        raise BackendUnavailableError(f"onnxruntime is not installed (pip install onnxruntime); available: {_describe_available()}")
    if runs_on == "tensorrt" and not have["tensorrt"]:
        raise BackendUnavailableError(
            f"a TensorRT engine needs TensorRT and a CUDA GPU; available here: {_describe_available()}"
        )
    if runs_on == "openvino":
        from sr_runtime.backends.openvino import available_devices

        ov_devices = available_devices()
        if not ov_devices:
            raise BackendUnavailableError(
                "the openvino backend needs OpenVINO: pip install 'sr-runtime[openvino]'; "
                f"available: {_describe_available()}"
            )
        if device is None:
            return BackendChoice("openvino", "cpu", None, "OpenVINO runs on the CPU")
        if device not in ov_devices:
            raise BackendUnavailableError(f"the openvino backend runs on {', '.join(ov_devices)}, not {device!r}")
        return BackendChoice("openvino", device, None, "OpenVINO; device as asked")

    if device is not None:
        dev = str(parse_device(device))  # raises for a device that is not here
    if runs_on == "torch":
        if device is None:
            gpus = [d for d in torch_devices() if d != "cpu"]
            dev = gpus[0] if gpus else "cpu"
            return BackendChoice("torch", dev, None, f"a checkpoint runs on torch; fastest device here: {dev}")
        return BackendChoice("torch", dev, None, "a checkpoint runs on torch; device as asked")
    if runs_on == "tensorrt":
        if device is None:
            dev = "cuda:0"
        elif not dev.startswith("cuda"):
            raise BackendUnavailableError(f"a TensorRT engine runs on a CUDA device, not {device!r}")
        return BackendChoice("tensorrt", dev, None, "an .engine file runs on TensorRT")
    # onnxruntime
    providers = have["onnxruntime"]
    if provider is None:
        if device is None:
            provider = "cuda" if "cuda" in providers else "cpu"
            why = "fastest provider here" if provider == "cuda" else "no CUDA provider here (onnxruntime-gpu + GPU)"
        else:
            provider = "cpu" if dev == "cpu" else "cuda"
            why = f"provider for device {dev}"
    else:
        why = "provider as asked"
    if provider not in providers:
        raise BackendUnavailableError(
            f"ONNX Runtime provider {provider!r} is not available; available providers: {', '.join(providers)} "
            f"(CUDA/TensorRT need onnxruntime-gpu and a CUDA build of torch)"
        )
    if device is None:
        dev = "cpu" if provider == "cpu" else "cuda:0"
    elif (provider == "cpu") != (dev == "cpu"):
        raise BackendUnavailableError(f"provider {provider!r} does not run on device {dev!r}")
    return BackendChoice("onnxruntime", dev, provider, f"an .onnx file runs on ONNX Runtime; {why}")


def _accelerate(backend: str, precision: str | None, compile: bool, cuda_graphs: bool, channels_last,
                device: str = "cpu") -> bool:
    """True when a checkpoint should run in its automatically built fast form. ``compile`` on a GPU
    does (the compiled torch forms compete: FP16 channels-last, FP32); on the CPU it runs as asked."""
    if backend != "auto" or cuda_graphs or channels_last is not None:
        return False
    if compile and not device.startswith("cuda"):
        return False
    if precision not in (None, "fp32"):
        return False  # an explicit fp16 runs as asked, on torch
    return os.environ.get("SR_RUNTIME_ACCEL", "1").lower() not in ("0", "off", "false", "no")


def create_backend(
    model: str | os.PathLike,
    *,
    scale: int | None = None,
    backend: str = "auto",
    device: str | None = None,
    precision: str | None = None,
    provider: str | None = None,
    compile: bool = False,
    cuda_graphs: bool = False,
    channels_last: bool | None = None,
    runs_dir: str | os.PathLike = "runs",
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Backend:
    """Load ``model`` (a model name, a checkpoint, an ``.onnx`` file or an ``.engine``) on the
    backend :func:`select_backend` decides; logs the choice.

    A checkpoint with ``backend="auto"`` (and no torch-only option) runs in its fastest
    parity-checked form for this machine, built once and cached (:mod:`sr_runtime.accel`;
    ``cache_dir``, ``use_cache``); ``backend="torch"`` runs it eagerly in PyTorch. Setting the
    environment variable ``SR_RUNTIME_ACCEL=0`` turns the automatic forms off (as ``backend="torch"``).

    ``precision``: None for the artifact's own (FP32 for checkpoints), or ``fp32``/``fp16``; ``bf16``
    on the openvino backend only (the automatic path picks BF16 itself where it passes the gate).
    ``compile``, ``cuda_graphs``, ``channels_last``: torch backend options (an error elsewhere).
    ``scale``: required with a model name; checked against the file otherwise.
    Raises BackendUnavailableError, EngineMismatchError, CheckpointError, InputError.
    """
    if precision is not None and precision not in PRECISIONS:
        raise BackendUnavailableError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    kind = model_kind(model)
    if kind == "checkpoint" and backend == "tensorrt":
        return _tensorrt_from_checkpoint(model, scale=scale, device=device, precision=precision, provider=provider,
                                         torch_options=compile or cuda_graphs or channels_last is not None,
                                         runs_dir=runs_dir, cache_dir=cache_dir, use_cache=use_cache)
    choice = select_backend(kind, backend=backend, device=device, provider=provider)
    if choice.backend != "torch" and (compile or cuda_graphs):
        raise BackendUnavailableError("--compile and --cuda-graphs are torch backend options")
    if precision == "bf16" and choice.backend != "openvino":
        raise BackendUnavailableError(
            f"bf16 runs on the openvino backend only (a CPU with BF16), not on {choice.backend}; "
            f"pass an .onnx file with --backend openvino, or use --fp32"
        )
    accelerate = choice.backend == "torch" and _accelerate(backend, precision, compile, cuda_graphs, channels_last,
                                                           choice.device)
    if not accelerate:
        log.info(
            "backend: %s on %s%s (%s)",
            choice.backend,
            choice.device,
            f", provider {choice.provider}" if choice.provider else "",
            choice.reason,
        )
    if choice.backend == "torch":
        from sr_runtime.backends.torch import TorchBackend
        from sr_runtime.checkpoint import load_checkpoint
        from sr_runtime.zoo import resolve_checkpoint

        path, how = resolve_checkpoint(str(model), scale, runs_dir=runs_dir)
        ckpt = load_checkpoint(path, scale=scale)
        log.info("model: %s x%d from %s", ckpt.arch, ckpt.scale, how)
        if accelerate:
            from sr_runtime.accel import accelerated_backend

            return accelerated_backend(path, ckpt, device=device, precision=precision,
                                       source=f"{ckpt.name} from {how}", cache_dir=cache_dir, use_cache=use_cache,
                                       compile=compile)
        return TorchBackend(
            ckpt.model,
            spec=ckpt.spec,
            device=choice.device,
            precision=precision or "fp32",
            channels_last=channels_last,
            compile=compile,
            cuda_graphs=cuda_graphs,
            source=f"{ckpt.name} from {how}",
        )
    if choice.backend == "onnxruntime":
        from sr_runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, provider=choice.provider, device=choice.device, precision=precision, scale=scale)
    if choice.backend == "openvino":
        from sr_runtime.backends.openvino import OpenVINOBackend

        return OpenVINOBackend(model, device=choice.device, precision=precision, scale=scale)
    from sr_runtime.backends.tensorrt import TensorRTBackend

    trt_backend = TensorRTBackend(model, device=choice.device, precision=precision)
    if scale is not None and trt_backend.spec.scale != scale:
        trt_backend.close()
        raise UnsupportedScaleError(f"{model}: the engine upscales x{trt_backend.spec.scale}, scale {scale} was asked for")
    return trt_backend


def _tensorrt_from_checkpoint(
    model, *, scale, device, precision, provider, torch_options, runs_dir, cache_dir, use_cache
) -> Backend:
    """``backend="tensorrt"`` with a checkpoint: its TensorRT engine, built by the fast path
    (:mod:`sr_runtime.accel`: FP16, else FP32; parity-checked, cached). Never falls back to another
    backend: TensorRT or a GPU missing, or no engine passing the gate, is BackendUnavailableError."""
    if provider is not None:
        raise BackendUnavailableError("--provider applies to onnxruntime (.onnx models) only, not to tensorrt")
    if torch_options:
        raise BackendUnavailableError("--compile, --cuda-graphs and channels_last are torch backend options")
    if precision == "bf16":
        raise BackendUnavailableError("TensorRT engines here are fp16 or fp32, not bf16")
    if importlib.util.find_spec("tensorrt") is None:
        from sr_runtime.backends.tensorrt_sidecar import INSTALL_HINT

        raise BackendUnavailableError(f"--backend tensorrt builds a TensorRT engine of the checkpoint: {INSTALL_HINT}; "
                                      f"available here: {_describe_available()}")
    gpus = [d for d in torch_devices() if d != "cpu"]
    if device is None:
        if not gpus:
            raise BackendUnavailableError(f"TensorRT needs a CUDA GPU; available here: {_describe_available()}")
        device = gpus[0]
    elif not str(parse_device(device)).startswith("cuda"):
        raise BackendUnavailableError(f"a TensorRT engine runs on a CUDA device, not {device!r}")
    from sr_runtime.accel import accelerated_backend
    from sr_runtime.checkpoint import load_checkpoint
    from sr_runtime.zoo import resolve_checkpoint

    path, how = resolve_checkpoint(str(model), scale, runs_dir=runs_dir)
    ckpt = load_checkpoint(path, scale=scale)
    log.info("model: %s x%d from %s", ckpt.arch, ckpt.scale, how)
    return accelerated_backend(path, ckpt, device=device, precision=precision, source=f"{ckpt.name} from {how}",
                               cache_dir=cache_dir, use_cache=use_cache, backend="tensorrt")
