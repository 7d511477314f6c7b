"""Fast by default: turn a checkpoint into the fastest form that runs it on this machine, once.

The first time a checkpoint runs with ``backend="auto"``, :func:`accelerated_backend` builds the
candidate forms for the device, checks each with the same parity gate as ``sr-export`` (against
PyTorch FP32 on real photos), times each in a short probe and keeps the fastest that passed. The
result (the ONNX file and the choice) goes to the cache (:mod:`sr_runtime.cache`), so later runs
load it without any export or probe.

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
writes; they live in :mod:`sr_runtime.export` so this module never imports ``sr_export``.

Reduced precision (FP16, BF16) is kept only with parity of at least 45 dB and no NaN/Inf, and a PSNR
against the ground truth (bicubic-degraded sample photos) within 0.01 dB of FP32's (half the 0.02 dB
target on Set5, as a margin: see :data:`GATE_QUALITY_DB`);
``precision="fp32"`` forces full precision. A candidate that fails to build or fails the gate is
skipped with one log line saying why. Explicit choices (``backend="torch"``, ``provider=``,
``precision="fp16"``) bypass this module: they are honoured or raise.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_runtime.atomic import sha256_file
from sr_runtime.backends.base import Backend, parse_device
from sr_runtime.backends.tensorrt_sidecar import tensorrt_status
from sr_runtime.cache import cache_key, get_or_build, machine_record
from sr_runtime.checkpoint import Checkpoint
from sr_runtime.errors import BackendUnavailableError, SRError

__all__ = ["GATE_QUALITY_DB", "QUALITY_TOLERANCE_DB", "Candidate", "accelerated_backend", "candidates_for", "key_inputs"]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ONNX_FP16_FILE = "model_fp16.onnx"
QUALITY_TOLERANCE_DB = 0.02
"""Reduced precision must score within this many dB of FP32 against the ground truth (Set5 through
``sr-eval``: the issue's target)."""
GATE_QUALITY_DB = QUALITY_TOLERANCE_DB / 2
"""What the gate allows on its own photos: half the target, because the photos stand in for the
user's images. Measured on an AMD EPYC (AVX-512 BF16): shipped FSRCNN x4 in OpenVINO BF16 was -0.014
dB from FP32 on the gate photos and -0.0204 dB on Set5; ESPCN x4 -0.006 and -0.009. A gate at the full
0.02 dB let FSRCNN's BF16 form through and missed the target on Set5."""
PROBE_SIDE = 128
"""LR side of the timing probe: big enough to time the convolutions, small enough for seconds."""
BUILD_OPTIONS = {
    "opset": 17, "trace": 32, "slim": True, "probe": PROBE_SIDE,
    # The graph the exporter writes (DeployModel.export_form): part of the key, so entries built from
    # an earlier arrangement are rebuilt instead of reused.
    "graph": "sub-pixel-y-1",
    "fp16_calibration": "32x48",
    # TensorRT profile of the fast path's engines (LR input): tiles from 32 px to a whole 1080p frame
    # (lowered where a tensor would pass TensorRT's element limit), up to the CUDA default batch of 4.
    "engine": {"min": "32x32", "opt": "270x480", "max": "1088x1920", "batch": 4, "workspace_gib": 4.0},
}
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

    @property
    def file(self) -> str | None:
        """The artifact this form runs, in the cache entry (None: the checkpoint itself)."""
        if self.backend == "torch":
            return None
        if self.backend == "tensorrt":
            return f"model_{self.precision}.engine"
        return ONNX_FP16_FILE if self.needs_fp16_onnx else ONNX_FILE


def _have(module: str) -> bool:
    import importlib.util

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


def candidates_for(
    device: torch.device, precision: str | None, *, compile: bool = False, backend: str = "auto"
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """(candidates to try, [(name, why skipped)]) for ``device``, fastest expected first.

    ``precision``: None/"auto" lets reduced precision compete, "fp32" keeps FP32 only, "fp16" FP16
    only (with an explicit backend). ``compile``: torch.compile asked for (torch forms only, all
    compiled). ``backend``: "auto", or "tensorrt" for the TensorRT engines only; raises
    BackendUnavailableError when that backend cannot run here. Only cheap availability checks
    run (``tensorrt`` is imported, nothing is built).
    """
    if backend not in ("auto", "tensorrt"):
        raise BackendUnavailableError(f"the fast path builds backend 'auto' or 'tensorrt', not {backend!r}")
    skipped: list[tuple[str, str]] = []
    found: list[Candidate] = []
    reduced_ok = precision in (None, "auto", "fp16")
    fp32_ok = precision != "fp16"
    if backend == "tensorrt":
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
    if precision == "fp16":
        raise BackendUnavailableError("precision fp16 is run as asked on torch, not by the fast path")
    if device.type == "cpu":
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


def _open(candidate: Candidate, ckpt: Checkpoint, device: torch.device, onnx_path: Path | None, source: str) -> Backend:
    """The backend running ``candidate``; ``onnx_path``: its artifact (an ONNX file, or the engine)."""
    if candidate.backend == "torch":
        from sr_runtime.backends.torch import TorchBackend

        return TorchBackend(ckpt.model, spec=ckpt.spec, device=device, precision=candidate.precision,
                            channels_last=candidate.channels_last, compile=candidate.compile, source=source)
    if candidate.backend == "onnxruntime":
        from sr_runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_path, provider=candidate.provider, device=device, spec=ckpt.spec)
    if candidate.backend == "tensorrt":
        from sr_runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(onnx_path, device=device, precision=candidate.precision, spec=ckpt.spec)
    from sr_runtime.backends.openvino import OpenVINOBackend

    return OpenVINOBackend(onnx_path, device="cpu", precision=candidate.precision, spec=ckpt.spec)


# --- the images the gate and the probe use -------------------------------------------------------


def _photos() -> list[tuple[str, np.ndarray]]:
    """Real photos (scikit-image's samples) when scikit-image is installed, else a synthetic one."""
    try:
        from skimage import data

        return [(name, getattr(data, name)()) for name in ("astronaut", "chelsea", "coffee")]
    except ImportError:
        log.info("scikit-image is not installed: the parity gate uses a synthetic image, not photos")
        rng = np.random.default_rng(0)
        coarse = torch.from_numpy(rng.random((1, 3, 12, 16), dtype=np.float32))
        fine = torch.from_numpy(rng.random((1, 3, 96, 128), dtype=np.float32))
        img = 0.7 * torch.nn.functional.interpolate(coarse, size=(384, 512), mode="bicubic", align_corners=False)
        img = img + 0.3 * torch.nn.functional.interpolate(fine, size=(384, 512), mode="bilinear", align_corners=False)
        img[:, :, 100:110, :] = 1.0  # hard edges
        img[:, :, :, 300:304] = 0.0
        arr = (img.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return [("synthetic", arr)]


def _crop(img: np.ndarray, h: int, w: int) -> torch.Tensor:
    top, left = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    patch = img[top : top + h, left : left + w]
    return torch.from_numpy(np.ascontiguousarray(patch)).permute(2, 0, 1)[None].float() / 255.0


def _aligned(size: int, ckpt: Checkpoint) -> int:
    m = ckpt.spec.multiple_of
    return -(-max(size, ckpt.spec.min_size) // m) * m


def _parity_inputs(ckpt: Checkpoint, photos) -> list[tuple[str, torch.Tensor]]:
    """Odd-sized and larger-than-traced crops of each photo, and a batch of two."""
    odd = (_aligned(37, ckpt), _aligned(53, ckpt))
    large = (_aligned(64, ckpt), _aligned(96, ckpt))
    cases = [(f"{name} {h}x{w}", _crop(img, h, w)) for name, img in photos for h, w in (odd, large)]
    if len(photos) > 1:
        cases.append((f"batch of 2 {odd[0]}x{odd[1]}", torch.cat([_crop(photos[0][1], *odd), _crop(photos[1][1], *odd)])))
    return cases


def _run(backend: Backend, lr: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = backend.run(lr.to(backend.device, backend.input_dtype))
    return out.float().cpu()


def _gate(backend: Backend, candidate: Candidate, refs, photos, ckpt: Checkpoint, reference: Backend) -> tuple[float, str]:
    """(worst parity dB, "") when ``backend`` passes the gate, else (worst, why it failed)."""
    from sr_runtime.export.verify import TOLERANCES  # the gate sr-export uses
    from sr_runtime.metrics import psnr, psnr_db
    from sr_runtime.resize import make_lr, modcrop

    need = TOLERANCES[candidate.precision].min_psnr_db
    worst = math.inf
    for (what, lr), ref in refs:
        out = _run(backend, lr)
        if not torch.isfinite(out).all():
            return worst, f"NaN/Inf in its output on {what}"
        worst = min(worst, psnr_db(out, ref))
        if worst < need:
            return worst, f"parity {worst:.1f} dB on {what}, below the {need:g} dB a {candidate.precision} form needs"
    if candidate.precision == "fp32":
        return worst, ""
    # Reduced precision: its quality against the ground truth must match FP32's.
    s = ckpt.spec.scale
    side = _aligned(48, ckpt) * s
    deltas = []
    for _, img in photos:
        hr = modcrop(_crop(img, side, side), s)
        lr = make_lr(hr, s)
        deltas.append(float(psnr(_run(backend, lr), hr, crop=s) - psnr(_run(reference, lr), hr, crop=s)))
    delta = sum(deltas) / len(deltas)
    if abs(delta) > GATE_QUALITY_DB:
        return worst, (f"PSNR vs ground truth {delta:+.4f} dB from FP32 on the gate photos (allowed +-{GATE_QUALITY_DB:g} "
                       f"dB, half the {QUALITY_TOLERANCE_DB:g} dB target, as a margin for other images)")
    return worst, ""


def _probe_ms(backend: Backend, lr: torch.Tensor, runs: int = 3) -> float:
    x = lr.to(backend.device, backend.input_dtype)
    sync = torch.cuda.synchronize if backend.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        backend.run(x)  # warm-up: allocations, kernel selection
        sync()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            backend.run(x)
            sync()
            times.append((time.perf_counter() - start) * 1000)
    return min(times)


def _build(
    ckpt: Checkpoint, device: torch.device, precision: str | None, source: str, *, compile: bool = False,
    backend: str = "auto",
) -> Callable[[Path], dict]:
    def build(tmp: Path) -> dict[str, Any]:
        started = time.perf_counter()
        candidates, skipped = candidates_for(device, precision, compile=compile, backend=backend)
        report: list[dict[str, Any]] = [{"name": n, "status": "skipped", "reason": why} for n, why in skipped]
        for name, why in skipped:
            log.info("fast path: skipping %s: %s", name, why)
        photos = _photos()
        # The ONNX forms, each written once: {file: (path or None, why not)}.
        sources: dict[str, tuple[Path | None, str]] = {}
        if any(c.needs_onnx for c in candidates):
            sources[ONNX_FILE] = _export(ckpt, tmp / ONNX_FILE)
            onnx_path, onnx_error = sources[ONNX_FILE]
            if onnx_path is None:
                names = ", ".join(c.name for c in candidates if c.needs_onnx)
                log.info("fast path: no ONNX form of %s (%s): %s; skipping %s", source, ckpt.arch, onnx_error, names)
            elif any(c.needs_fp16_onnx for c in candidates):
                sources[ONNX_FP16_FILE] = _export_fp16(ckpt, onnx_path, tmp / ONNX_FP16_FILE, photos)
        inputs = _parity_inputs(ckpt, photos)
        probe = _crop(photos[0][1], _aligned(PROBE_SIDE, ckpt), _aligned(PROBE_SIDE, ckpt))
        from sr_runtime.backends.torch import TorchBackend

        made: list[Path] = [p for p, _ in sources.values() if p is not None]
        with TorchBackend(ckpt.model, spec=ckpt.spec, device="cpu", precision="fp32", channels_last=False) as ref:
            refs = [((what, lr), _run(ref, lr)) for what, lr in inputs]
            torch_cpu_ms = None
            best: tuple[float, Candidate, float] | None = None
            for candidate in candidates:
                row: dict[str, Any] = {"name": candidate.name, "backend": candidate.backend,
                                       "precision": candidate.precision}
                artifact: Path | None = None
                if candidate.needs_onnx:
                    wanted = ONNX_FP16_FILE if candidate.needs_fp16_onnx else ONNX_FILE
                    artifact, why_not = sources.get(wanted, (None, "not written"))
                    if artifact is None:
                        what = "FP16 ONNX" if wanted == ONNX_FP16_FILE else "ONNX"
                        row.update(status="skipped", reason=f"no {what} form: {why_not}")
                        if wanted == ONNX_FP16_FILE:
                            log.info("fast path: skipping %s: no FP16 ONNX form (%s)", candidate.name, why_not)
                        report.append(row)
                        continue
                if candidate.backend == "tensorrt":
                    started_engine = time.perf_counter()
                    try:
                        artifact = _engine(ckpt, artifact, tmp / candidate.file, source)
                    except Exception as e:  # noqa: BLE001 - TensorRT's builder raises anything; skip with why
                        row.update(status="skipped", reason=f"cannot build the engine: {e}")
                        log.info("fast path: skipping %s: cannot build the engine (%s)", candidate.name, e)
                        report.append(row)
                        continue
                    made += [artifact, artifact.with_name(artifact.name + ".json")]
                    row.update(engine_build_s=round(time.perf_counter() - started_engine, 2))
                try:
                    form = _open(candidate, ckpt, device, artifact, source)
                except (SRError, RuntimeError, OSError) as e:
                    row.update(status="skipped", reason=f"cannot load: {e}")
                    log.info("fast path: skipping %s: cannot load it (%s)", candidate.name, e)
                    report.append(row)
                    continue
                with form:
                    try:
                        worst, why = _gate(form, candidate, refs, photos, ckpt, ref)
                        ms = None if why else _probe_ms(form, probe)
                    except (SRError, RuntimeError) as e:
                        worst, why, ms = math.nan, f"failed to run: {e}", None
                row.update(parity_db=None if math.isinf(worst) else worst)
                if why:
                    row.update(status="failed", reason=why)
                    log.info("fast path: skipping %s: %s", candidate.name, why)
                    report.append(row)
                    continue
                row.update(status="passed", probe_ms=round(ms, 2))
                report.append(row)
                if candidate.name == "torch-cpu-fp32":
                    torch_cpu_ms = ms
                if best is None or ms < best[0]:
                    best = (ms, candidate, worst)
        if best is None:
            reasons = "; ".join(f"{r['name']}: {r.get('reason')}" for r in report)
            if backend != "auto" or compile:  # an explicit choice that cannot be honoured
                asked = f"--backend {backend}" if backend != "auto" else "--compile"
                raise BackendUnavailableError(f"{asked}: no form of {source} could be built and passed the "
                                              f"parity gate ({reasons})")
            # Cannot happen otherwise: torch FP32 is always a candidate and the reference.
            raise SRError(f"no form of the model passed the parity gate ({reasons})")
        ms, choice, worst = best
        torch_ms = torch_cpu_ms if torch_cpu_ms is not None else next(
            (r["probe_ms"] for r in report if r.get("backend") == "torch" and r.get("precision") == "fp32"
             and r.get("status") == "passed"), ms)
        keep = {choice.file, f"{choice.file}.json"} if choice.file else set()
        for path in made:  # only the chosen form's artifact stays in the entry
            if path.name not in keep:
                path.unlink(missing_ok=True)
        return {
            "model": source,
            "scale": ckpt.spec.scale,
            "choice": {"name": choice.name, "backend": choice.backend, "precision": choice.precision,
                       "provider": choice.provider, "channels_last": choice.channels_last,
                       "compile": choice.compile, "file": choice.file},
            "speedup_vs_torch_fp32": round(torch_ms / ms, 2),
            "parity_db": None if math.isinf(worst) else round(worst, 2),
            "probe": f"{_aligned(PROBE_SIDE, ckpt)}x{_aligned(PROBE_SIDE, ckpt)}",
            "candidates": report,
            "build_s": round(time.perf_counter() - started, 2),
        }

    return build


def _export_fp16(ckpt: Checkpoint, onnx_path: Path, path: Path, photos) -> tuple[Path | None, str]:
    """The FP16 ONNX of ``onnx_path`` (FP32 I/O, overflowing layers kept FP32), as ``sr-export --fp16``
    writes it, with ``precision: fp16`` in its metadata; (path, "") or (None, why)."""
    from sr_runtime.export.fp16 import convert_fp16
    from sr_runtime.export.onnx import set_metadata

    h, w = (_aligned(int(v), ckpt) for v in BUILD_OPTIONS["fp16_calibration"].split("x"))
    calibration = [_crop(img, h, w).numpy() for _, img in photos[:2]]
    try:
        result = convert_fp16(onnx_path, path, calibration=calibration, keep_io_fp32=True)
        set_metadata(path, {"precision": "fp16", "io_dtype": "float32", "fp16": result.to_dict()})
    except SRError as e:
        path.unlink(missing_ok=True)
        log.info("fast path: no FP16 ONNX form: %s", e)
        return None, str(e)
    kept = len(result.kept_fp32)
    log.info("fast path: FP16 ONNX written%s", f" ({kept} layers kept FP32)" if kept else "")
    return path, ""


def _engine_profile(ckpt: Checkpoint):
    """The TensorRT profile of the fast path (``BUILD_OPTIONS["engine"]``) aligned to the model."""
    from sr_runtime.export.profile import ShapeProfile, parse_hw

    opts = BUILD_OPTIONS["engine"]

    def fit(text: str) -> tuple[int, int]:
        h, w = parse_hw(text)
        return _aligned(h, ckpt), _aligned(w, ckpt)

    return ShapeProfile(min=fit(opts["min"]), opt=fit(opts["opt"]), max=fit(opts["max"]),
                        batch=(1, 1, int(opts["batch"])))


def _engine(ckpt: Checkpoint, onnx_path: Path, engine_path: Path, source: str) -> Path:
    """Build the TensorRT engine of ``onnx_path`` at ``engine_path`` (with its sidecar), strongly typed
    (its precision is the ONNX file's), for the fast path's profile; the max shape is lowered where a
    tensor would pass TensorRT's element limit. The timing cache lives beside it only while it builds."""
    import shutil

    from sr_runtime.export.tensorrt_build import build_engine, fit_profile

    profile = fit_profile(ckpt.spec, _engine_profile(ckpt), onnx_path=onnx_path)
    scratch = engine_path.parent / ".tensorrt"
    try:
        build_engine(onnx_path, engine_path, spec=ckpt.spec, profile=profile,
                     command=f"sr-cache clear (the fast path then rebuilds the engine of {source})",
                     workspace_gib=float(BUILD_OPTIONS["engine"]["workspace_gib"]), cache_dir=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return engine_path


def _export(ckpt: Checkpoint, path: Path) -> tuple[Path | None, str]:
    """Write the FP32 ONNX of the checkpoint (slimmed when onnxslim is installed); (path, "") or (None, why).

    The graph must run every size and batch the checkpoint's IOSpec allows: a graph that needs a
    larger size multiple or a fixed batch (window-attention nets such as SwinIR and HAT, whose
    padding and batch tracing bakes in) is not used here -- the fast path keeps torch for it, and
    ``sr-export`` writes that ONNX with the IOSpec it needs."""
    from sr_runtime.deploy import DeployModel
    from sr_runtime.export.onnx import slim_onnx
    from sr_runtime.export.shapes import export_dynamic

    trace = _aligned(BUILD_OPTIONS["trace"], ckpt)
    raw = path.with_suffix(".raw.onnx")
    try:
        shapes = export_dynamic(DeployModel(ckpt.model).eval(), ckpt.spec, raw, trace_size=(trace, trace),
                                opset=BUILD_OPTIONS["opset"])
        if shapes.spec != ckpt.spec or shapes.batch is not None:
            need = []
            if shapes.spec.multiple_of != ckpt.spec.multiple_of:
                need.append(f"height/width multiples of {shapes.spec.multiple_of}")
            if shapes.batch is not None:
                need.append("a batch of 1")
            raw.unlink(missing_ok=True)
            return None, (f"its ONNX graph needs {' and '.join(need)} (sizes the traced graph bakes in); "
                          f"sr-export writes that ONNX")
        if _have("onnxslim"):
            slim_onnx(raw, path)
            raw.unlink()
        else:
            raw.rename(path)
    except SRError as e:
        return None, str(e)
    return path, ""


def key_inputs(ckpt_path: str | Path, ckpt: Checkpoint, device: torch.device, precision: str | None, *,
               compile: bool = False, backend: str = "auto") -> dict:
    """Everything a cache entry depends on: the checkpoint's bytes, the request (precision,
    torch.compile, an explicit backend), the build options, the library versions (TensorRT's among
    them) and the device (GPU name and compute capability; see :func:`sr_runtime.cache.machine_record`)."""
    return {
        "checkpoint_sha256": sha256_file(ckpt_path),
        "scale": ckpt.spec.scale,
        "precision": precision or "auto",
        "compile": compile,
        "backend": backend,
        "options": BUILD_OPTIONS,
        "machine": machine_record(device),
    }


def accelerated_backend(
    ckpt_path: str | Path,
    ckpt: Checkpoint,
    *,
    device: str | None,
    precision: str | None,
    source: str,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    compile: bool = False,
    backend: str = "auto",
) -> Backend:
    """The fastest parity-checked form of ``ckpt`` (loaded from ``ckpt_path``) on ``device``
    (None: the first GPU, else the CPU), built and cached on first use; logs the choice in one line.

    ``compile``: the torch forms, compiled (only those compete). ``backend="tensorrt"``: the
    TensorRT engines only; BackendUnavailableError when none can be built or passes the gate."""
    dev = parse_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.perf_counter()
    if backend != "auto":
        candidates_for(dev, precision, compile=compile, backend=backend)  # raises before any lookup or build
    key = cache_key(key_inputs(ckpt_path, ckpt, dev, precision, compile=compile, backend=backend))
    entry = get_or_build(key, _build(ckpt, dev, precision, source, compile=compile, backend=backend),
                         cache_dir=cache_dir, use_cache=use_cache)
    record = entry.record
    choice = record["choice"]
    candidate = Candidate(choice["name"], choice["backend"], choice["precision"], choice.get("provider"),
                          choice.get("channels_last"), bool(choice.get("compile", False)))
    form = _open(candidate, ckpt, dev, entry.file(choice["file"]) if choice.get("file") else None, source)
    how = "cache hit" if entry.hit else f"built in {time.perf_counter() - started:.1f} s"
    where = entry.path if use_cache else "not cached (--no-cache)"
    log.info(
        "fast path: %s (%s, %.1fx torch FP32 in a %s probe, parity %s dB; %s): %s",
        choice["name"], choice["precision"], record["speedup_vs_torch_fp32"], record["probe"],
        record["parity_db"] if record["parity_db"] is not None else "exact", how, where,
    )
    return form
