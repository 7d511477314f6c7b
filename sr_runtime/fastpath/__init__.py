"""Fast by default: turn a checkpoint into the fastest form that runs it on this machine, once.

The fast path chooses and builds; the backends (:mod:`sr_runtime.backends`) open what it built.
The first time a checkpoint runs with ``backend="auto"``, :func:`accelerated_backend` builds the
candidate forms for the device (:mod:`.candidates`, :mod:`.build`), checks each with the parity
gate of ``sr-export`` (:mod:`sr_runtime.export.verify`, against PyTorch FP32 on real photos), times
each in a short probe (:mod:`.probe`) and keeps the fastest that passed. The result (the artifact
and the choice) goes to the cache (:mod:`.cache`), so later runs load it without any export or probe.

Candidates, in the order tried:

- CPU: ONNX Runtime FP32; OpenVINO FP32 and BF16 (where the ``openvino`` extra is installed and,
  for BF16, the CPU has BF16 units); torch FP32 eager, the reference and the last resort.
- CUDA: a TensorRT FP16 engine (where ``tensorrt`` imports; built from the FP16 ONNX, strongly
  typed); ONNX Runtime CUDA FP16 (with onnxruntime-gpu; I/O bound to device buffers with
  IOBinding); torch FP16 channels-last; then the FP32 forms: ONNX Runtime CUDA FP32, torch FP32.
  With ``precision="fp32"`` a TensorRT FP32 engine takes the TensorRT FP16 engine's place.
  ``compile=True`` asks for torch.compile: the candidates are then the compiled torch forms only
  (FP16 channels-last, FP32), since an explicit torch option is honoured, never dropped.
  ``backend="tensorrt"`` (an explicit choice) tries the TensorRT engines only (FP16, then FP32)
  and is an error where TensorRT or a GPU is missing or no engine passes.

The FP16 ONNX (:func:`sr_runtime.export.fp16.convert_fp16`, layers that overflow kept FP32) and
the engine (:func:`sr_runtime.export.tensorrt_build.build_engine`) are the ones ``sr-export``
writes; they live in :mod:`sr_runtime.export` so the runtime never imports ``sr_export``.

Reduced precision (FP16, BF16) is kept only with parity of at least 45 dB and no NaN/Inf, and a PSNR
against the ground truth (bicubic-degraded sample photos) within 0.01 dB of FP32's (half the 0.02 dB
target on Set5, as a margin: see :data:`GATE_QUALITY_DB`);
``precision="fp32"`` forces full precision. A candidate that fails to build or fails the gate is
skipped with one log line saying why. Explicit choices (``backend="torch"``, ``provider=``,
``precision="fp16"``) bypass the fast path (:func:`load_backend` hands them to the backend
factory): they are honoured or raise. ``SR_RUNTIME_ACCEL=0`` turns the fast path off.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from sr_runtime.atomic import sha256_file
from sr_runtime.backends import create_backend, describe_available, model_kind, open_checkpoint, select_backend
from sr_runtime.backends.base import Backend, parse_device, torch_devices
from sr_runtime.backends.tensorrt_sidecar import INSTALL_HINT, tensorrt_available
from sr_runtime.checkpoint import Checkpoint
from sr_runtime.errors import BackendUnavailableError
from sr_runtime.fastpath import build
from sr_runtime.fastpath.build import BUILD_OPTIONS
from sr_runtime.fastpath.cache import cache_key, get_or_build, machine_record
from sr_runtime.fastpath.candidates import Candidate, candidates_for
from sr_runtime.fastpath.probe import GATE_QUALITY_DB, QUALITY_TOLERANCE_DB
from sr_runtime.options import RuntimeOptions

__all__ = [
    "BUILD_OPTIONS",
    "GATE_QUALITY_DB",
    "QUALITY_TOLERANCE_DB",
    "Candidate",
    "accelerated_backend",
    "candidates_for",
    "key_inputs",
    "load_backend",
    "wants_fast_path",
]

log = logging.getLogger(__name__)


def load_backend(model: str | os.PathLike, options: RuntimeOptions | None = None, *, scale: int | None = None
                 ) -> Backend:
    """The backend that runs ``model`` as ``options`` ask (the Upscaler's and ``sr-eval``'s way in).

    A checkpoint (a ``.safetensors`` path or a model name) with ``backend="auto"`` and no
    torch-only option runs in its fastest parity-checked form (:func:`accelerated_backend`); with
    ``backend="tensorrt"`` as a TensorRT engine the fast path builds (FP16, else FP32), never
    falling back to another backend. Everything else goes straight to
    :func:`sr_runtime.backends.create_backend`. Raises BackendUnavailableError,
    EngineMismatchError, CheckpointError, InputError.
    """
    options = options or RuntimeOptions()
    if model_kind(model) == "checkpoint":
        if options.backend == "tensorrt":
            return _tensorrt_engine(model, options, scale)
        choice = select_backend("checkpoint", backend=options.backend, device=options.device, provider=options.provider)
        if wants_fast_path(options, choice.device):
            path, ckpt, source = open_checkpoint(model, scale=scale, runs_dir=options.runs_dir)
            backend = accelerated_backend(path, ckpt, options, source=source)
            backend.model_file = path
            return backend
    return create_backend(model, options, scale=scale)


def wants_fast_path(options: RuntimeOptions, device: str) -> bool:
    """True when a checkpoint that runs on ``device`` should run in its automatically built fast
    form. ``compile`` on a GPU does (the compiled torch forms compete: FP16 channels-last, FP32);
    on the CPU it runs as asked, as does any other torch-only option or an explicit precision but FP32."""
    if options.backend != "auto" or options.cuda_graphs or options.channels_last is not None:
        return False
    if options.compile and not device.startswith("cuda"):
        return False
    if options.precision not in (None, "fp32"):
        return False  # an explicit fp16 runs as asked, on torch
    return os.environ.get("SR_RUNTIME_ACCEL", "1").lower() not in ("0", "off", "false", "no")


def _tensorrt_engine(model: str | os.PathLike, options: RuntimeOptions, scale: int | None) -> Backend:
    """``backend="tensorrt"`` with a checkpoint: its TensorRT engine, built by the fast path (FP16,
    else FP32; parity-checked, cached). TensorRT or a GPU missing, or no engine passing the gate, is
    BackendUnavailableError."""
    if options.provider is not None:
        raise BackendUnavailableError("--provider applies to onnxruntime (.onnx models) only, not to tensorrt")
    if options.torch_only:
        raise BackendUnavailableError("--compile, --cuda-graphs and channels_last are torch backend options")
    if options.precision == "bf16":
        raise BackendUnavailableError("TensorRT engines here are fp16 or fp32, not bf16")
    if not tensorrt_available():
        raise BackendUnavailableError(f"--backend tensorrt builds a TensorRT engine of the checkpoint: {INSTALL_HINT}; "
                                      f"available here: {describe_available()}")
    gpus = [d for d in torch_devices() if d != "cpu"]
    device = options.device
    if device is None:
        if not gpus:
            raise BackendUnavailableError(f"TensorRT needs a CUDA GPU; available here: {describe_available()}")
        device = gpus[0]
    elif not str(parse_device(device)).startswith("cuda"):
        raise BackendUnavailableError(f"a TensorRT engine runs on a CUDA device, not {device!r}")
    path, ckpt, source = open_checkpoint(model, scale=scale, runs_dir=options.runs_dir)
    backend = accelerated_backend(path, ckpt, options.replace(device=device), source=source)
    backend.model_file = path
    return backend


def key_inputs(ckpt_path: str | Path, ckpt: Checkpoint, device: torch.device, precision: str | None, *,
               compile: bool = False, backend: str = "auto") -> dict:
    """Everything a cache entry depends on: the checkpoint's bytes, the request (precision,
    torch.compile, an explicit backend), the build options, the library versions (TensorRT's among
    them) and the device (GPU name and compute capability; see :func:`.cache.machine_record`)."""
    return {
        "checkpoint_sha256": sha256_file(ckpt_path),
        "scale": ckpt.spec.scale,
        "precision": precision or "auto",
        "compile": compile,
        "backend": backend,
        "options": BUILD_OPTIONS,
        "machine": machine_record(device),
    }


def accelerated_backend(ckpt_path: str | Path, ckpt: Checkpoint, options: RuntimeOptions, *, source: str) -> Backend:
    """The fastest parity-checked form of ``ckpt`` (loaded from ``ckpt_path``) on ``options.device``
    (None: the first GPU, else the CPU), built and cached on first use; logs the choice in one line.

    ``options.compile``: the torch forms, compiled (only those compete). ``options.backend="tensorrt"``:
    the TensorRT engines only; BackendUnavailableError when none can be built or passes the gate.
    ``options.cache_dir``, ``options.use_cache``: where the entry lives, or built for this process only.
    """
    dev = parse_device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.perf_counter()
    precision, compile, backend = options.precision, options.compile, options.backend
    if backend != "auto":
        candidates_for(dev, precision, compile=compile, backend=backend)  # raises before any lookup or build
    key = cache_key(key_inputs(ckpt_path, ckpt, dev, precision, compile=compile, backend=backend))
    entry = get_or_build(key, build.build_entry(ckpt, dev, precision, source, compile=compile, backend=backend),
                         cache_dir=options.cache_dir, use_cache=options.use_cache)
    record = entry.record
    choice = record["choice"]
    candidate = Candidate(choice["name"], choice["backend"], choice["precision"], choice.get("provider"),
                          choice.get("channels_last"), bool(choice.get("compile", False)))
    artifact = entry.file(choice["file"]) if choice.get("file") else None
    form = build.open_candidate(candidate, ckpt, dev, artifact, source)
    how = "cache hit" if entry.hit else f"built in {time.perf_counter() - started:.1f} s"
    where = entry.path if options.use_cache else "not cached (--no-cache)"
    log.info(
        "fast path: %s (%s, %.1fx torch FP32 in a %s probe, parity %s dB; %s): %s",
        choice["name"], choice["precision"], record["speedup_vs_torch_fp32"], record["probe"],
        record["parity_db"] if record["parity_db"] is not None else "exact", how, where,
    )
    form.fast_path = {"form": choice["name"], "parity_db": record["parity_db"],
                      "speedup_vs_torch_fp32": record["speedup_vs_torch_fp32"], "probe": record["probe"]}
    return form
