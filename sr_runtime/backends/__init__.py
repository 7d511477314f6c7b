"""Inference backends behind one interface (:class:`~sr_runtime.backends.base.Backend`): the one
place that decides which backend runs a given model file, and the one that opens it.

The backends open artifacts they are given and run them; they build nothing, and import nothing
that does. Which form of a checkpoint is fastest, and building it (ONNX, FP16, TensorRT engines),
is the fast path's job; it hands what it built to :func:`open_artifact`.

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
that can run what was given) and logs the choice. An explicit backend, device, provider or
precision that cannot be honoured raises BackendUnavailableError listing what is available; the
runtime never falls back to CPU, FP32 or another backend on its own.

``onnxruntime``, ``tensorrt`` and ``openvino`` are imported only inside their backend modules.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# No `import torch` here: importing the submodule sr_runtime.backends.torch binds the name `torch`
# in this package's namespace, which would shadow the library. base.py does the torch queries.
from sr_runtime.backends.base import Backend, ShapeLimits, parse_device, torch_devices
from sr_runtime.backends.tensorrt_sidecar import tensorrt_available
from sr_runtime.errors import BackendUnavailableError, UnsupportedScaleError
from sr_runtime.options import BACKENDS, ORT_TENSORRT_DIR, RuntimeOptions, cache_root
from sr_runtime.spec import IOSpec

if TYPE_CHECKING:
    from sr_runtime.checkpoint import Checkpoint

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendChoice",
    "ShapeLimits",
    "available_backends",
    "create_backend",
    "describe_available",
    "model_kind",
    "open_artifact",
    "open_checkpoint",
    "select_backend",
]

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
_RUNS_ON = {"engine": "tensorrt", "onnx": "onnxruntime", "ir": "openvino", "checkpoint": "torch"}
_WHAT = {"engine": "a TensorRT engine", "onnx": "an ONNX file", "ir": "an OpenVINO IR", "checkpoint": "a checkpoint or model name"}
_HOW = {
    "onnxruntime": "export an ONNX file with `sr-export` and pass it as --model model.onnx",
    "tensorrt": "build an engine with `sr-export --format engine` and pass it as --model model.engine",
    "torch": "pass a checkpoint (.safetensors) or a model name as --model",
    "openvino": "export an ONNX file with `sr-export` and pass it (or an OpenVINO IR .xml) as --model",
}


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
    return {
        "torch": devices,
        "onnxruntime": _ort_providers(),
        "tensorrt": gpus if tensorrt_available() else [],
        "openvino": _ov_devices(),
    }


def describe_available() -> str:
    """:func:`available_backends` in one line, for error messages."""
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
    runs_on = _runs_on(kind, backend)
    if provider is not None and runs_on != "onnxruntime":
        raise BackendUnavailableError(f"--provider applies to onnxruntime (.onnx models) only, not to {runs_on}")
    if runs_on == "onnxruntime" and not _ort_providers():
        raise BackendUnavailableError(f"onnxruntime is not installed (pip install onnxruntime); available: {describe_available()}")
    if runs_on == "tensorrt" and not available_backends()["tensorrt"]:
        raise BackendUnavailableError(
            f"a TensorRT engine needs TensorRT and a CUDA GPU; available here: {describe_available()}"
        )
    if runs_on == "openvino":
        return _openvino_choice(device)
    dev = str(parse_device(device)) if device is not None else None  # raises for a device that is not here
    if runs_on == "torch":
        return _torch_choice(dev)
    if runs_on == "tensorrt":
        return _tensorrt_choice(dev, device)
    return _onnxruntime_choice(dev, provider)


def _runs_on(kind: str, backend: str) -> str:
    """The backend that runs a model of ``kind``; raises when ``backend`` names another."""
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    runs_on = "openvino" if backend == "openvino" and kind == "onnx" else _RUNS_ON[kind]
    if backend not in ("auto", runs_on):
        raise BackendUnavailableError(
            f"the {backend} backend cannot run {_WHAT[kind]} (that runs on the {runs_on} backend); {_HOW[backend]}"
        )
    return runs_on


def _openvino_choice(device: str | None) -> BackendChoice:
    from sr_runtime.backends.openvino import available_devices

    ov_devices = available_devices()
    if not ov_devices:
        raise BackendUnavailableError(
            f"the openvino backend needs OpenVINO: pip install 'sr-runtime[openvino]'; available: {describe_available()}"
        )
    if device is None:
        return BackendChoice("openvino", "cpu", None, "OpenVINO runs on the CPU")
    if device not in ov_devices:
        raise BackendUnavailableError(f"the openvino backend runs on {', '.join(ov_devices)}, not {device!r}")
    return BackendChoice("openvino", device, None, "OpenVINO; device as asked")


def _torch_choice(dev: str | None) -> BackendChoice:
    if dev is None:
        gpus = [d for d in torch_devices() if d != "cpu"]
        dev = gpus[0] if gpus else "cpu"
        return BackendChoice("torch", dev, None, f"a checkpoint runs on torch; fastest device here: {dev}")
    return BackendChoice("torch", dev, None, "a checkpoint runs on torch; device as asked")


def _tensorrt_choice(dev: str | None, asked: str | None) -> BackendChoice:
    if dev is None:
        dev = "cuda:0"
    elif not dev.startswith("cuda"):
        raise BackendUnavailableError(f"a TensorRT engine runs on a CUDA device, not {asked!r}")
    return BackendChoice("tensorrt", dev, None, "an .engine file runs on TensorRT")


def _onnxruntime_choice(dev: str | None, provider: str | None) -> BackendChoice:
    providers = _ort_providers()
    if provider is None:
        if dev is None:
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
    if dev is None:
        dev = "cpu" if provider == "cpu" else "cuda:0"
    elif (provider == "cpu") != (dev == "cpu"):
        raise BackendUnavailableError(f"provider {provider!r} does not run on device {dev!r}")
    return BackendChoice("onnxruntime", dev, provider, f"an .onnx file runs on ONNX Runtime; {why}")


def open_checkpoint(model: str | os.PathLike, *, scale: int | None, runs_dir: str | os.PathLike = "runs"
               ) -> tuple[Path, Checkpoint, str]:
    """Resolve a checkpoint path or model name (:func:`sr_runtime.zoo.resolve_checkpoint`) and load it:
    ``(path, checkpoint, "<name> from <where>")``; logs what was loaded."""
    from sr_runtime.checkpoint import load_checkpoint
    from sr_runtime.zoo import resolve_checkpoint

    path, how = resolve_checkpoint(str(model), scale, runs_dir=runs_dir)
    ckpt = load_checkpoint(path, scale=scale)
    log.info("model: %s x%d from %s", ckpt.arch, ckpt.scale, how)
    return path, ckpt, f"{ckpt.name} from {how}"


def create_backend(
    model: str | os.PathLike, options: RuntimeOptions | None = None, *, scale: int | None = None
) -> Backend:
    """Load ``model`` (a model name, a checkpoint, an ``.onnx`` file, an OpenVINO IR or an
    ``.engine``) on the backend :func:`select_backend` decides from ``options``; logs the choice.

    A checkpoint runs eagerly in PyTorch (running it in its fastest form is the fast path's job,
    which the Upscaler asks first). ``options.precision``: None for the artifact's own (FP32 for checkpoints), or
    ``fp32``/``fp16``; ``bf16`` on the openvino backend only. ``compile``, ``cuda_graphs``,
    ``channels_last``: torch backend options (an error elsewhere). ``scale``: required with a model
    name; checked against the file otherwise.
    Raises BackendUnavailableError, EngineMismatchError, CheckpointError, InputError.
    """
    options = options or RuntimeOptions()
    choice = select_backend(model_kind(model), backend=options.backend, device=options.device,
                            provider=options.provider)
    if choice.backend != "torch" and (options.compile or options.cuda_graphs):
        raise BackendUnavailableError("--compile and --cuda-graphs are torch backend options")
    if options.precision == "bf16" and choice.backend != "openvino":
        raise BackendUnavailableError(
            f"bf16 runs on the openvino backend only (a CPU with BF16), not on {choice.backend}; "
            f"pass an .onnx file with --backend openvino, or use --fp32"
        )
    log.info("backend: %s on %s%s (%s)", choice.backend, choice.device,
             f", provider {choice.provider}" if choice.provider else "", choice.reason)
    chosen = options.replace(backend=choice.backend, device=choice.device, provider=choice.provider)
    if choice.backend == "torch":
        path, ckpt, source = open_checkpoint(model, scale=scale, runs_dir=options.runs_dir)
        backend = open_artifact(ckpt.model, chosen, spec=ckpt.spec, source=source)
    else:
        path, backend = Path(model), open_artifact(model, chosen, scale=scale)
    backend.model_file = path
    return backend


def open_artifact(
    artifact: Any,
    options: RuntimeOptions,
    *,
    spec: IOSpec | None = None,
    scale: int | None = None,
    threads: int | None = None,
    source: str = "",
) -> Backend:
    """Open ``artifact`` on ``options.backend`` (not ``auto``) at ``options.device`` and
    ``options.precision``: the one place that maps a backend name to its class.

    ``artifact``: for ``torch`` the network (an ``nn.Module``, with its ``spec``); for
    ``onnxruntime`` an ``.onnx`` file (on ``options.provider``); for ``openvino`` an ``.onnx`` or IR
    ``.xml``; for ``tensorrt`` an ``.engine`` with its sidecar. ``spec``: the IOSpec when the file
    carries none; ``scale``: checked against the file. ``threads``: intra-op threads of the CPU
    backends (onnxruntime, openvino; None: the library's default). ``source``: what was loaded, for
    logs. Raises what the backend raises (BackendUnavailableError, EngineMismatchError,
    InputError, UnsupportedScaleError).
    """
    name = options.backend
    if name == "torch":
        from sr_runtime.backends.torch import TorchBackend

        return TorchBackend(artifact, spec=spec, device=options.device or "cpu", precision=options.precision or "fp32",
                            channels_last=options.channels_last, compile=options.compile,
                            cuda_graphs=options.cuda_graphs, source=source)
    if name == "onnxruntime":
        from sr_runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(artifact, provider=options.provider or "cpu", device=options.device,
                                  precision=options.precision, spec=spec, scale=scale, threads=threads,
                                  trt_cache_dir=cache_root(options.cache_dir) / ORT_TENSORRT_DIR)
    if name == "openvino":
        from sr_runtime.backends.openvino import OpenVINOBackend

        return OpenVINOBackend(artifact, device=options.device or "cpu", precision=options.precision, spec=spec,
                               scale=scale, threads=threads)
    if name == "tensorrt":
        from sr_runtime.backends.tensorrt import TensorRTBackend

        engine = TensorRTBackend(artifact, device=options.device or "cuda", precision=options.precision, spec=spec)
        if scale is not None and engine.spec.scale != scale:
            engine.close()
            raise UnsupportedScaleError(f"{artifact}: the engine upscales x{engine.spec.scale}, scale {scale} was asked for")
        return engine
    raise BackendUnavailableError(f"open_artifact needs a backend of {', '.join(BACKENDS[1:])}, not {name!r}")
