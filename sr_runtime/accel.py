"""Fast by default: turn a checkpoint into the fastest form that runs it on this machine, once.

The first time a checkpoint runs with ``backend="auto"``, :func:`accelerated_backend` builds the
candidate forms for the device, checks each with the same parity gate as ``sr-export`` (against
PyTorch FP32 on real photos), times each in a short probe and keeps the fastest that passed. The
result (the ONNX file and the choice) goes to the cache (:mod:`sr_runtime.cache`), so later runs
load it without any export or probe.

Candidates, in the order tried:

- CPU: ONNX Runtime FP32; OpenVINO FP32 and BF16 (where the ``openvino`` extra is installed and,
  for BF16, the CPU has BF16 units); torch FP32 eager, the reference and the last resort.
- CUDA: torch FP16 channels-last; ONNX Runtime CUDA FP32 (with onnxruntime-gpu); torch FP32.
  (A TensorRT engine is built by ``sr-export --format engine``; the runtime does not build one.)

Reduced precision (FP16, BF16) is kept only with parity of at least 45 dB and no NaN/Inf, and a PSNR
against the ground truth (bicubic-degraded sample photos) within 0.02 dB of FP32's;
``precision="fp32"`` forces full precision. A candidate that fails to build or fails the gate is
skipped with one log line saying why. Explicit choices (``backend=``, ``provider=``) bypass this
module entirely: they are honoured or raise.
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

from sr_runtime.backends.base import Backend, parse_device
from sr_runtime.cache import cache_key, get_or_build, machine_record, sha256_file
from sr_runtime.checkpoint import Checkpoint
from sr_runtime.errors import SRError

__all__ = ["QUALITY_TOLERANCE_DB", "Candidate", "accelerated_backend", "candidates_for", "key_inputs"]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
QUALITY_TOLERANCE_DB = 0.02
"""Reduced precision must score within this many dB of FP32 against the ground truth."""
PROBE_SIDE = 128
"""LR side of the timing probe: big enough to time the convolutions, small enough for seconds."""
BUILD_OPTIONS = {"opset": 17, "trace": 32, "slim": True, "probe": PROBE_SIDE}


@dataclass(frozen=True)
class Candidate:
    """One form of a model: which backend runs it, where, at what precision."""

    name: str
    backend: str  # torch | onnxruntime | openvino
    precision: str  # fp32 | fp16 | bf16
    provider: str | None = None
    channels_last: bool | None = None

    @property
    def needs_onnx(self) -> bool:
        return self.backend in ("onnxruntime", "openvino")


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


def candidates_for(device: torch.device, precision: str | None) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """(candidates to try, [(name, why skipped)]) for ``device``; ``precision="fp32"`` keeps FP32 only."""
    skipped: list[tuple[str, str]] = []
    found: list[Candidate] = []
    reduced_ok = precision in (None, "auto")
    if device.type == "cpu":
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
    if reduced_ok:
        found.append(Candidate("torch-cuda-fp16-channels-last", "torch", "fp16", channels_last=True))
    from sr_runtime.backends.onnxruntime import available_providers

    if _have("onnx") and "cuda" in available_providers():
        found.append(Candidate("onnxruntime-cuda-fp32", "onnxruntime", "fp32", provider="cuda"))
    else:
        skipped.append(("onnxruntime-cuda-fp32", "needs onnx and onnxruntime-gpu with the CUDA provider"))
    found.append(Candidate("torch-cuda-fp32", "torch", "fp32", channels_last=True))
    return found, skipped


def _open(candidate: Candidate, ckpt: Checkpoint, device: torch.device, onnx_path: Path | None, source: str) -> Backend:
    if candidate.backend == "torch":
        from sr_runtime.backends.torch import TorchBackend

        return TorchBackend(ckpt.model, spec=ckpt.spec, device=device, precision=candidate.precision,
                            channels_last=candidate.channels_last, source=source)
    if candidate.backend == "onnxruntime":
        from sr_runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(onnx_path, provider=candidate.provider, device=device, spec=ckpt.spec)
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


def _psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _run(backend: Backend, lr: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        out = backend.run(lr.to(backend.device, backend.input_dtype))
    return out.float().cpu()


def _gate(backend: Backend, candidate: Candidate, refs, photos, ckpt: Checkpoint, reference: Backend) -> tuple[float, str]:
    """(worst parity dB, "") when ``backend`` passes the gate, else (worst, why it failed)."""
    from sr_runtime.metrics import psnr
    from sr_runtime.resize import make_lr, modcrop

    from sr_runtime.export.verify import TOLERANCES  # the gate sr-export uses

    need = TOLERANCES[candidate.precision].min_psnr_db
    worst = math.inf
    for (what, lr), ref in refs:
        out = _run(backend, lr)
        if not torch.isfinite(out).all():
            return worst, f"NaN/Inf in its output on {what}"
        worst = min(worst, _psnr_db(out, ref))
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
    if abs(delta) > QUALITY_TOLERANCE_DB:
        return worst, f"PSNR vs ground truth {delta:+.3f} dB from FP32 (allowed +-{QUALITY_TOLERANCE_DB} dB)"
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


def _build(ckpt: Checkpoint, device: torch.device, precision: str | None, source: str) -> Callable[[Path], dict]:
    def build(tmp: Path) -> dict[str, Any]:
        started = time.perf_counter()
        candidates, skipped = candidates_for(device, precision)
        report: list[dict[str, Any]] = [{"name": n, "status": "skipped", "reason": why} for n, why in skipped]
        for name, why in skipped:
            log.info("fast path: skipping %s: %s", name, why)
        onnx_path: Path | None = None
        onnx_error = ""
        if any(c.needs_onnx for c in candidates):
            onnx_path, onnx_error = _export(ckpt, tmp / ONNX_FILE)
        if onnx_path is None and onnx_error:
            names = ", ".join(c.name for c in candidates if c.needs_onnx)
            log.info("fast path: no ONNX form of %s (%s): %s; skipping %s", source, ckpt.arch, onnx_error, names)
        photos = _photos()
        inputs = _parity_inputs(ckpt, photos)
        probe = _crop(photos[0][1], _aligned(PROBE_SIDE, ckpt), _aligned(PROBE_SIDE, ckpt))
        from sr_runtime.backends.torch import TorchBackend

        with TorchBackend(ckpt.model, spec=ckpt.spec, device="cpu", precision="fp32", channels_last=False) as ref:
            refs = [((what, lr), _run(ref, lr)) for what, lr in inputs]
            torch_cpu_ms = None
            best: tuple[float, Candidate, float] | None = None
            for candidate in candidates:
                row: dict[str, Any] = {"name": candidate.name, "backend": candidate.backend,
                                       "precision": candidate.precision}
                if candidate.needs_onnx and onnx_path is None:
                    row.update(status="skipped", reason=f"no ONNX form: {onnx_error}")
                    report.append(row)
                    continue
                try:
                    backend = _open(candidate, ckpt, device, onnx_path, source)
                except (SRError, RuntimeError, OSError) as e:
                    row.update(status="skipped", reason=f"cannot load: {e}")
                    log.info("fast path: skipping %s: cannot load it (%s)", candidate.name, e)
                    report.append(row)
                    continue
                with backend:
                    try:
                        worst, why = _gate(backend, candidate, refs, photos, ckpt, ref)
                        ms = None if why else _probe_ms(backend, probe)
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
        if best is None:  # cannot happen: torch FP32 is always a candidate and is the reference
            raise SRError("no form of the model passed the parity gate")
        ms, choice, worst = best
        torch_ms = torch_cpu_ms if torch_cpu_ms is not None else next(
            (r["probe_ms"] for r in report if r.get("backend") == "torch" and r.get("precision") == "fp32"
             and r.get("status") == "passed"), ms)
        if not choice.needs_onnx and onnx_path is not None:
            onnx_path.unlink(missing_ok=True)  # not needed by the chosen form
        return {
            "model": source,
            "scale": ckpt.spec.scale,
            "choice": {"name": choice.name, "backend": choice.backend, "precision": choice.precision,
                       "provider": choice.provider, "channels_last": choice.channels_last,
                       "file": ONNX_FILE if choice.needs_onnx else None},
            "speedup_vs_torch_fp32": round(torch_ms / ms, 2),
            "parity_db": None if math.isinf(worst) else round(worst, 2),
            "probe": f"{_aligned(PROBE_SIDE, ckpt)}x{_aligned(PROBE_SIDE, ckpt)}",
            "candidates": report,
            "build_s": round(time.perf_counter() - started, 2),
        }

    return build


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


def key_inputs(ckpt_path: str | Path, ckpt: Checkpoint, device: torch.device, precision: str | None) -> dict:
    """Everything a cache entry depends on: the checkpoint's bytes, the request, the build options,
    the library versions and the device (see :func:`sr_runtime.cache.machine_record`)."""
    return {
        "checkpoint_sha256": sha256_file(ckpt_path),
        "scale": ckpt.spec.scale,
        "precision": precision or "auto",
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
) -> Backend:
    """The fastest parity-checked form of ``ckpt`` (loaded from ``ckpt_path``) on ``device``
    (None: the first GPU, else the CPU), built and cached on first use; logs the choice in one line."""
    dev = parse_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.perf_counter()
    key = cache_key(key_inputs(ckpt_path, ckpt, dev, precision))
    entry = get_or_build(key, _build(ckpt, dev, precision, source), cache_dir=cache_dir,
                         use_cache=use_cache)
    record = entry.record
    choice = record["choice"]
    candidate = Candidate(choice["name"], choice["backend"], choice["precision"], choice.get("provider"),
                          choice.get("channels_last"))
    backend = _open(candidate, ckpt, dev, entry.file(choice["file"]) if choice.get("file") else None, source)
    how = "cache hit" if entry.hit else f"built in {time.perf_counter() - started:.1f} s"
    where = entry.path if use_cache else "not cached (--no-cache)"
    log.info(
        "fast path: %s (%s, %.1fx torch FP32 in a %s probe, parity %s dB; %s): %s",
        choice["name"], choice["precision"], record["speedup_vs_torch_fp32"], record["probe"],
        record["parity_db"] if record["parity_db"] is not None else "exact", how, where,
    )
    return backend
