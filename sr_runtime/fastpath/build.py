"""Build a model's candidate forms into a cache entry, gate and time each, keep the fastest.

:func:`build_entry` writes what the candidates run (the FP32 ONNX, the FP16 ONNX, TensorRT
engines: with :mod:`sr_runtime.export`, as ``sr-export`` writes them), opens each form on its
backend (:func:`sr_runtime.backends.open_artifact`), measures it (:mod:`.probe`) and returns the
record of the entry: the choice, its speed-up over torch FP32, and a row per candidate saying what
happened to it. Only the chosen form's artifact stays in the entry.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sr_runtime.backends import open_artifact
from sr_runtime.backends.base import Backend
from sr_runtime.checkpoint import Checkpoint
from sr_runtime.errors import BackendUnavailableError, SRError
from sr_runtime.export.verify import align_size, crop_lr, sample_images
from sr_runtime.fastpath.candidates import ONNX_FILE, ONNX_FP16_FILE, Candidate, candidates_for
from sr_runtime.fastpath.probe import PROBE_SIDE, GateInputs, check_gate, gate_inputs, probe_ms
from sr_runtime.options import RuntimeOptions

__all__ = ["BUILD_OPTIONS", "build_entry", "open_candidate"]

log = logging.getLogger(__name__)

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
"""How the forms are built; part of the cache key, so a change here rebuilds every entry."""

Sources = dict[str, tuple[Path | None, str]]
"""The ONNX forms written into the entry: ``{file name: (path, "") or (None, why not)}``."""


def open_candidate(candidate: Candidate, ckpt: Checkpoint, device: torch.device, artifact: Path | None,
                   source: str) -> Backend:
    """The backend running ``candidate``; ``artifact``: its file (an ONNX file or the engine; None for torch)."""
    if candidate.backend == "torch":
        return open_artifact(ckpt.model, candidate.options(device), spec=ckpt.spec, source=source)
    return open_artifact(artifact, candidate.options(device), spec=ckpt.spec)


def build_entry(
    ckpt: Checkpoint, device: torch.device, precision: str | None, source: str, *, compile: bool = False,
    backend: str = "auto",
) -> Callable[[Path], dict[str, Any]]:
    """The cache's ``build(tmp_dir) -> record`` for ``ckpt`` on ``device`` (see the module doc).

    Raises BackendUnavailableError when an explicit choice (``backend="tensorrt"``, ``compile``)
    has no form that builds and passes the gate.
    """

    def build(tmp: Path) -> dict[str, Any]:
        started = time.perf_counter()
        candidates, skipped = candidates_for(device, precision, compile=compile, backend=backend)
        report: list[dict[str, Any]] = [{"name": n, "status": "skipped", "reason": why} for n, why in skipped]
        for name, why in skipped:
            log.info("fast path: skipping %s: %s", name, why)
        images = sample_images(synthetic_ok=True)
        sources = _write_onnx(ckpt, candidates, tmp, images, source)
        made: list[Path] = [p for p, _ in sources.values() if p is not None]
        passed: list[tuple[float, Candidate, float]] = []  # (probe ms, form, worst parity dB)
        fp32_cpu = RuntimeOptions(backend="torch", device="cpu", precision="fp32", channels_last=False)
        with open_artifact(ckpt.model, fp32_cpu, spec=ckpt.spec) as reference:
            inputs = gate_inputs(ckpt.spec, images, reference)
            for candidate in candidates:
                row, result = _try(candidate, ckpt, device, source, tmp, sources, made, inputs)
                report.append(row)
                if result is not None:
                    passed.append((result[0], candidate, result[1]))
        if not passed:
            _no_form(report, source, backend=backend, compile=compile)
        return _record(ckpt, source, passed, report, made, started)

    return build


def _try(candidate: Candidate, ckpt: Checkpoint, device: torch.device, source: str, tmp: Path, sources: Sources,
         made: list[Path], inputs: GateInputs) -> tuple[dict[str, Any], tuple[float, float] | None]:
    """Build (an engine), open, gate and time one candidate: (its report row, (probe ms, worst
    parity dB) when it passed, else None). Engines it writes are added to ``made``."""
    row: dict[str, Any] = {"name": candidate.name, "backend": candidate.backend, "precision": candidate.precision}
    artifact: Path | None = None
    if candidate.needs_onnx:
        wanted = ONNX_FP16_FILE if candidate.needs_fp16_onnx else ONNX_FILE
        artifact, why_not = sources.get(wanted, (None, "not written"))
        if artifact is None:
            what = "FP16 ONNX" if wanted == ONNX_FP16_FILE else "ONNX"
            row.update(status="skipped", reason=f"no {what} form: {why_not}")
            if wanted == ONNX_FP16_FILE:
                log.info("fast path: skipping %s: no FP16 ONNX form (%s)", candidate.name, why_not)
            return row, None
    if candidate.backend == "tensorrt":
        started = time.perf_counter()
        try:
            artifact = _engine(ckpt, artifact, tmp / candidate.file, source)
        except Exception as e:  # noqa: BLE001 - TensorRT's builder raises anything; skip with why
            row.update(status="skipped", reason=f"cannot build the engine: {e}")
            log.info("fast path: skipping %s: cannot build the engine (%s)", candidate.name, e)
            return row, None
        made += [artifact, artifact.with_name(artifact.name + ".json")]
        row.update(engine_build_s=round(time.perf_counter() - started, 2))
    try:
        form = open_candidate(candidate, ckpt, device, artifact, source)
    except (SRError, RuntimeError, OSError) as e:
        row.update(status="skipped", reason=f"cannot load: {e}")
        log.info("fast path: skipping %s: cannot load it (%s)", candidate.name, e)
        return row, None
    with form:
        try:
            worst, why = check_gate(form, candidate.name, candidate.precision, inputs)
            ms = None if why else probe_ms(form, inputs.probe)
        except (SRError, RuntimeError) as e:
            worst, why, ms = math.nan, f"failed to run: {e}", None
    row.update(parity_db=None if math.isinf(worst) else worst)
    if why:
        row.update(status="failed", reason=why)
        log.info("fast path: skipping %s: %s", candidate.name, why)
        return row, None
    row.update(status="passed", probe_ms=round(ms, 2))
    return row, (ms, worst)


def _no_form(report: list[dict[str, Any]], source: str, *, backend: str, compile: bool) -> None:
    reasons = "; ".join(f"{r['name']}: {r.get('reason')}" for r in report)
    if backend != "auto" or compile:  # an explicit choice that cannot be honoured
        asked = f"--backend {backend}" if backend != "auto" else "--compile"
        raise BackendUnavailableError(f"{asked}: no form of {source} could be built and passed the "
                                      f"parity gate ({reasons})")
    # Cannot happen otherwise: torch FP32 is always a candidate and the reference.
    raise SRError(f"no form of the model passed the parity gate ({reasons})")


def _record(ckpt: Checkpoint, source: str, passed: list[tuple[float, Candidate, float]], report: list[dict[str, Any]],
            made: list[Path], started: float) -> dict[str, Any]:
    """The entry's record: the fastest of the forms that ``passed`` ((probe ms, form, worst parity
    dB) each) is the choice; the artifacts of the others are removed."""
    ms, choice, worst = min(passed, key=lambda p: p[0])
    torch_ms = next((m for m, c, _ in passed if c.name == "torch-cpu-fp32"), None)
    if torch_ms is None:
        torch_ms = next((r["probe_ms"] for r in report if r.get("backend") == "torch" and r.get("precision") == "fp32"
                         and r.get("status") == "passed"), ms)
    keep = {choice.file, f"{choice.file}.json"} if choice.file else set()
    for path in made:  # only the chosen form's artifact stays in the entry
        if path.name not in keep:
            path.unlink(missing_ok=True)
    side = align_size(PROBE_SIDE, ckpt.spec)
    return {
        "model": source,
        "scale": ckpt.spec.scale,
        "choice": {"name": choice.name, "backend": choice.backend, "precision": choice.precision,
                   "provider": choice.provider, "channels_last": choice.channels_last,
                   "compile": choice.compile, "file": choice.file},
        "speedup_vs_torch_fp32": round(torch_ms / ms, 2),
        "parity_db": None if math.isinf(worst) else round(worst, 2),
        "probe": f"{side}x{side}",
        "candidates": report,
        "build_s": round(time.perf_counter() - started, 2),
    }


# --- the artifacts ---------------------------------------------------------------------------------


def _write_onnx(ckpt: Checkpoint, candidates: list[Candidate], tmp: Path, images, source: str) -> Sources:
    """The ONNX forms the candidates need, each written once."""
    sources: Sources = {}
    if not any(c.needs_onnx for c in candidates):
        return sources
    sources[ONNX_FILE] = _export(ckpt, tmp / ONNX_FILE)
    onnx_path, onnx_error = sources[ONNX_FILE]
    if onnx_path is None:
        names = ", ".join(c.name for c in candidates if c.needs_onnx)
        log.info("fast path: no ONNX form of %s (%s): %s; skipping %s", source, ckpt.arch, onnx_error, names)
    elif any(c.needs_fp16_onnx for c in candidates):
        sources[ONNX_FP16_FILE] = _export_fp16(ckpt, onnx_path, tmp / ONNX_FP16_FILE, images)
    return sources


def _export(ckpt: Checkpoint, path: Path) -> tuple[Path | None, str]:
    """Write the FP32 ONNX of the checkpoint (slimmed when onnxslim is installed); (path, "") or (None, why).

    The graph must run every size and batch the checkpoint's IOSpec allows: a graph that needs a
    larger size multiple or a fixed batch (window-attention nets such as SwinIR and HAT, whose
    padding and batch tracing bakes in) is not used here -- the fast path keeps torch for it, and
    ``sr-export`` writes that ONNX with the IOSpec it needs."""
    import importlib.util

    from sr_runtime.deploy import DeployModel
    from sr_runtime.export.onnx import slim_onnx
    from sr_runtime.export.shapes import export_dynamic

    trace = align_size(BUILD_OPTIONS["trace"], ckpt.spec)
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
        if importlib.util.find_spec("onnxslim") is not None:
            slim_onnx(raw, path)
            raw.unlink()
        else:
            raw.rename(path)
    except SRError as e:
        return None, str(e)
    return path, ""


def _export_fp16(ckpt: Checkpoint, onnx_path: Path, path: Path, images: list[tuple[str, np.ndarray]]
                 ) -> tuple[Path | None, str]:
    """The FP16 ONNX of ``onnx_path`` (FP32 I/O, overflowing layers kept FP32), as ``sr-export --fp16``
    writes it, with ``precision: fp16`` in its metadata; (path, "") or (None, why)."""
    from sr_runtime.export.fp16 import convert_fp16
    from sr_runtime.export.onnx import set_metadata
    from sr_runtime.spec import parse_hw

    h, w = (align_size(v, ckpt.spec) for v in parse_hw(BUILD_OPTIONS["fp16_calibration"]))
    calibration = [crop_lr(img, h, w) for _, img in images[:2]]
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
    from sr_runtime.export.profile import ShapeProfile
    from sr_runtime.spec import parse_hw

    opts = BUILD_OPTIONS["engine"]

    def fit(text: str) -> tuple[int, int]:
        h, w = parse_hw(text)
        return align_size(h, ckpt.spec), align_size(w, ckpt.spec)

    return ShapeProfile(min=fit(opts["min"]), opt=fit(opts["opt"]), max=fit(opts["max"]),
                        batch=(1, 1, int(opts["batch"])))


def _engine(ckpt: Checkpoint, onnx_path: Path, engine_path: Path, source: str) -> Path:
    """Build the TensorRT engine of ``onnx_path`` at ``engine_path`` (with its sidecar), strongly typed
    (its precision is the ONNX file's), for the fast path's profile; the max shape is lowered where a
    tensor would pass TensorRT's element limit. The timing cache lives beside it only while it builds."""
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
