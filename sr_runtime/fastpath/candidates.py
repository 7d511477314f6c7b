"""The forms a model can take on a device, fastest expected first, and why others are left out.

Only cheap availability checks run here (``tensorrt`` is imported, nothing is built): which
libraries are installed, whether the CPU has BF16 units, whether ONNX Runtime has its CUDA
provider. See :mod:`sr_runtime.fastpath` for the order and the rules.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from sr_runtime.backends.tensorrt_sidecar import tensorrt_status
from sr_runtime.errors import BackendUnavailableError
from sr_runtime.options import RuntimeOptions

__all__ = ["ONNX_FILE", "ONNX_FP16_FILE", "Candidate", "candidates_for"]

ONNX_FILE = "model.onnx"
ONNX_FP16_FILE = "model_fp16.onnx"
ORT_CUDA_HINT = "needs onnx and onnxruntime-gpu with the CUDA provider (pip install 'sr-runtime[gpu]')"


@dataclass(frozen=True)
class Candidate:
    """One form of a model: which backend runs it, where, at what precision."""

    name: str
    backend: str  # torch | onnxruntime | openvino | tensorrt
    precision: str  # fp32 | fp16 | bf16
    provider: str | None = None
    channels_last: bool | None = None
    compile: bool = False

    @property
    def needs_onnx(self) -> bool:
        return self.backend in ("onnxruntime", "openvino", "tensorrt")

    @property
    def needs_fp16_onnx(self) -> bool:
        """ONNX Runtime FP16 runs the FP16 ONNX; a (strongly typed) TensorRT FP16 engine is built from it."""
        return self.precision == "fp16" and self.backend in ("onnxruntime", "tensorrt")

    def options(self, device: torch.device) -> RuntimeOptions:
        """The runtime options that open this form on ``device``."""
        return RuntimeOptions(backend=self.backend, device=str(device), precision=self.precision, provider=self.provider,
                              channels_last=self.channels_last, compile=self.compile)

    @property
    def file(self) -> str | None:
        """The artifact this form runs, in the cache entry (None: the checkpoint itself)."""
        if self.backend == "torch":
            return None
        if self.backend == "tensorrt":
            return f"model_{self.precision}.engine"
        return ONNX_FP16_FILE if self.needs_fp16_onnx else ONNX_FILE


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _openvino_bf16() -> tuple[bool, str]:
    try:
        import openvino as ov

        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as e:  # noqa: BLE001 - any failure means "not available here"
        return False, f"OpenVINO cannot query the CPU ({e})"
    return ("BF16" in caps), f"CPU capabilities: {', '.join(caps)}"


def _fp16_onnx_status() -> tuple[bool, str]:
    """(possible, why not): the FP16 ONNX conversion needs onnxconverter-common, and ONNX Runtime
    (CPU) to calibrate which layers stay FP32."""
    missing = [m for m in ("onnx", "onnxconverter_common", "onnxruntime") if not _have(m)]
    if missing:
        return False, f"the FP16 ONNX needs {', '.join(missing)} (pip install 'sr-runtime[onnx]')"
    return True, ""


def _ort_cuda() -> bool:
    from sr_runtime.backends.onnxruntime import available_providers

    return _have("onnx") and "cuda" in available_providers()


Found = tuple[list[Candidate], list[tuple[str, str]]]
"""(candidates to try, fastest expected first; [(name, why skipped)])."""


def candidates_for(
    device: torch.device, precision: str | None, *, compile: bool = False, backend: str = "auto"
) -> Found:
    """(candidates to try, [(name, why skipped)]) for ``device``, fastest expected first.

    ``precision``: None/"auto" lets reduced precision compete, "fp32" keeps FP32 only, "fp16" FP16
    only (with an explicit backend). ``compile``: torch.compile asked for (torch forms only, all
    compiled). ``backend``: "auto", or "tensorrt" for the TensorRT engines only; raises
    BackendUnavailableError when that backend cannot run here. Only cheap availability checks
    run (``tensorrt`` is imported, nothing is built).
    """
    if backend not in ("auto", "tensorrt"):
        raise BackendUnavailableError(f"the fast path builds backend 'auto' or 'tensorrt', not {backend!r}")
    reduced_ok = precision in (None, "auto", "fp16")
    fp32_ok = precision != "fp16"
    if backend == "tensorrt":
        return _tensorrt_candidates(device, reduced_ok=reduced_ok, fp32_ok=fp32_ok)
    if precision == "fp16":
        raise BackendUnavailableError("precision fp16 is run as asked on torch, not by the fast path")
    if device.type == "cpu":
        return _cpu_candidates(reduced_ok=reduced_ok, compile=compile)
    return _cuda_candidates(reduced_ok=reduced_ok, compile=compile)


def _tensorrt_candidates(device: torch.device, *, reduced_ok: bool, fp32_ok: bool) -> Found:
    """``backend="tensorrt"``: the engines only (FP16 first); BackendUnavailableError when none can be built."""
    skipped: list[tuple[str, str]] = []
    found: list[Candidate] = []
    if device.type != "cuda":
        raise BackendUnavailableError(f"TensorRT runs on CUDA GPUs, not on {device}; use --device cuda")
    ok, why = tensorrt_status()
    if not ok:
        raise BackendUnavailableError(f"--backend tensorrt builds a TensorRT engine of the checkpoint: {why}")
    if not _have("onnx"):
        raise BackendUnavailableError("--backend tensorrt needs onnx to export the graph TensorRT parses "
                                      "(pip install 'sr-runtime[onnx]')")
    if reduced_ok:
        fp16_ok, fp16_why = _fp16_onnx_status()
        if fp16_ok:
            found.append(Candidate("tensorrt-fp16", "tensorrt", "fp16"))
        elif not fp32_ok:
            raise BackendUnavailableError(f"a TensorRT FP16 engine is built from the FP16 ONNX: {fp16_why}")
        else:
            skipped.append(("tensorrt-fp16", fp16_why))
    if fp32_ok:
        found.append(Candidate("tensorrt-fp32", "tensorrt", "fp32"))
    return found, skipped


def _cpu_candidates(*, reduced_ok: bool, compile: bool) -> Found:
    """ONNX Runtime FP32, OpenVINO FP32 and BF16 (on CPUs with BF16 units), torch FP32 last."""
    skipped: list[tuple[str, str]] = []
    found: list[Candidate] = []
    if compile:  # torch.compile asked for: torch is the form, compiled
        skipped.append(("onnxruntime/openvino", "--compile asks for torch.compile: torch forms only"))
        found.append(Candidate("torch-cpu-fp32-compiled", "torch", "fp32", channels_last=False, compile=True))
        return found, skipped
    if _have("onnxruntime") and _have("onnx"):
        found.append(Candidate("onnxruntime-cpu-fp32", "onnxruntime", "fp32", provider="cpu"))
    else:
        skipped.append(("onnxruntime-cpu-fp32", "onnx/onnxruntime not installed (pip install 'sr-runtime[onnx]')"))
    if _have("openvino") and _have("onnx") and _have("sr_runtime.backends.openvino"):
        found.append(Candidate("openvino-cpu-fp32", "openvino", "fp32"))
        if reduced_ok:
            ok, why = _openvino_bf16()
            if ok:
                found.append(Candidate("openvino-cpu-bf16", "openvino", "bf16"))
            else:
                skipped.append(("openvino-cpu-bf16", f"no BF16 on this CPU ({why})"))
    else:
        skipped.append(("openvino-cpu", "openvino not installed (pip install 'sr-runtime[openvino]')"))
    found.append(Candidate("torch-cpu-fp32", "torch", "fp32", channels_last=False))
    return found, skipped


def _cuda_candidates(*, reduced_ok: bool, compile: bool) -> Found:
    """TensorRT, ONNX Runtime CUDA FP16, torch FP16 channels-last, then the FP32 forms."""
    skipped: list[tuple[str, str]] = []
    found: list[Candidate] = []
    if compile:  # torch.compile asked for: the torch forms, compiled; nothing else competes
        why = "--compile asks for torch.compile: torch forms only"
        skipped += [("tensorrt", why), ("onnxruntime-cuda", why)]
        if reduced_ok:
            found.append(Candidate("torch-cuda-fp16-channels-last-compiled", "torch", "fp16", channels_last=True,
                                   compile=True))
        found.append(Candidate("torch-cuda-fp32-compiled", "torch", "fp32", channels_last=True, compile=True))
        return found, skipped
    trt_precision = "fp16" if reduced_ok else "fp32"
    trt_name = f"tensorrt-{trt_precision}"
    trt_ok, trt_why = tensorrt_status()
    fp16_ok, fp16_why = _fp16_onnx_status()
    ort_cuda = _ort_cuda()
    if not trt_ok:
        skipped.append((trt_name, trt_why))
    elif not _have("onnx"):
        skipped.append((trt_name, "needs onnx to export the graph TensorRT parses (pip install 'sr-runtime[onnx]')"))
    elif trt_precision == "fp16" and not fp16_ok:
        skipped.append((trt_name, fp16_why))
    else:
        found.append(Candidate(trt_name, "tensorrt", trt_precision))
    if reduced_ok:
        if not ort_cuda:
            skipped.append(("onnxruntime-cuda-fp16", ORT_CUDA_HINT))
        elif not fp16_ok:
            skipped.append(("onnxruntime-cuda-fp16", fp16_why))
        else:
            found.append(Candidate("onnxruntime-cuda-fp16", "onnxruntime", "fp16", provider="cuda"))
        found.append(Candidate("torch-cuda-fp16-channels-last", "torch", "fp16", channels_last=True))
    if ort_cuda:
        found.append(Candidate("onnxruntime-cuda-fp32", "onnxruntime", "fp32", provider="cuda"))
    else:
        skipped.append(("onnxruntime-cuda-fp32", ORT_CUDA_HINT))
    found.append(Candidate("torch-cuda-fp32", "torch", "fp32", channels_last=True))
    return found, skipped
