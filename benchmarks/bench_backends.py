"""Latency and parity of every deployed form of a model: backend x precision x device.

For each model x scale: resolve its weights (a training run, the shipped file, or random init
marked ``"random"``), export the ONNX (FP32, FP16) and TensorRT artifacts with ``sr_export``
(the same code and gates as ``sr-export``) into a work folder, then for each form open the
runtime backend (timed: session / engine load), measure parity against PyTorch FP32 on real
photos, and time each input size x batch.

The rows follow :data:`benchmarks.report.LATENCY_FIELDS` and :data:`~benchmarks.report.PARITY_FIELDS`.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from benchmarks.common import PeakMemory, device_sync, time_calls
from sr_runtime.errors import BackendUnavailableError, InputError, SRError
from sr_runtime.spec import IOSpec

__all__ = [
    "Form",
    "ModelUnderTest",
    "Artifacts",
    "prepare_model",
    "export_artifacts",
    "open_backend",
    "parity_inputs",
    "measure_parity",
    "measure_latency",
    "bench_model",
    "align_hw",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Form:
    """One deployed form of a model."""

    backend: str
    """torch | onnxruntime | tensorrt | default (the runtime's automatic fast path; rows then say
    ``default:<backend it chose>``)"""
    precision: str
    """fp32 | fp16 | bf16 (auto for the default path until it has chosen)"""
    device: str
    """cpu | cuda"""

    def __str__(self) -> str:
        return f"{self.backend} {self.precision} {self.device}"


@dataclass
class ModelUnderTest:
    """A model loaded at one scale, and where its weights came from."""

    model: str
    scale: int
    weights: str
    """shipped | run | checkpoint | random"""
    checkpoint: Path
    """A checkpoint file (random weights are saved into the work folder so every form runs the same net)."""
    source: str
    net: nn.Module
    spec: IOSpec

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def deploy(self):
        """A fresh FP32 CPU DeployModel (the PyTorch FP32 reference)."""
        from sr_runtime.deploy import DeployModel

        return DeployModel(copy.deepcopy(self.net).float().cpu().eval(), self.spec).eval()

    def record(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "scale": self.scale,
            "weights": self.weights,
            "checkpoint": str(self.checkpoint),
            "source": self.source,
            "params": self.params,
            "io_spec": self.spec.to_dict(),
        }


def _random_model(name: str, scale: int, workdir: Path, seed: int, why: str) -> ModelUnderTest:
    from sr_runtime.archs import build, resolve_hparams
    from sr_runtime.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    net = build(name, scale=scale).eval()
    path = Path(workdir) / f"{name}_x{scale}_random.safetensors"
    save_checkpoint(path, net, arch=name, scale=scale, hparams=resolve_hparams(name, scale=scale), name=name)
    return ModelUnderTest(name, scale, "random", path, f"random init ({why})", net, net.io_spec)


def prepare_model(
    name: str,
    scale: int,
    *,
    workdir: Path,
    runs_dir: str | Path = "runs",
    seed: int = 0,
    random_weights: bool = False,
) -> ModelUnderTest:
    """Load ``name`` (a registry name or a checkpoint path) at ``scale``.

    A registry name resolves like ``sr-run`` does (newest training run, then the shipped weights);
    when neither exists, or ``random_weights`` is set, the model is built with random weights
    (seeded), saved into ``workdir`` and marked ``weights="random"``: its latency and parity are
    valid, its quality is not. Raises UnsupportedArchError/UnsupportedScaleError, CheckpointError.
    """
    from sr_runtime.checkpoint import load_checkpoint
    from sr_runtime.zoo import WEIGHTS_DIR, resolve_checkpoint

    is_path = Path(name).suffix == ".safetensors" or Path(name).exists()
    if random_weights and not is_path:
        return _random_model(name, scale, workdir, seed, "--random-weights")
    try:
        path, how = resolve_checkpoint(name, scale, runs_dir=runs_dir)
    except InputError as e:
        if is_path:
            raise
        log.warning("%s x%d: %s -- benchmarking random weights", name, scale, e)
        return _random_model(name, scale, workdir, seed, "no trained or shipped weights")
    ckpt = load_checkpoint(path, scale=None if is_path else scale)
    if Path(path).resolve().parent == WEIGHTS_DIR:
        weights = "shipped"
    elif is_path:
        weights = "checkpoint"
    else:
        weights = "run"
    label = ckpt.arch if weights != "checkpoint" else (ckpt.meta.get("name") or ckpt.arch)
    return ModelUnderTest(label, ckpt.scale, weights, Path(path), how, ckpt.model.eval(), ckpt.spec)


def align_hw(h: int, w: int, spec: IOSpec) -> tuple[int, int]:
    """(h, w) raised to the model's minimum size and rounded up to its ``multiple_of``."""
    m = spec.multiple_of

    def fit(v: int) -> int:
        v = max(int(v), spec.min_size)
        return -(-v // m) * m

    return fit(h), fit(w)


@dataclass
class Artifacts:
    """The exported files of one model, by (backend, precision), and what producing them cost."""

    files: dict[tuple[str, str], Path] = field(default_factory=dict)
    export_s: dict[tuple[str, str], float] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _export(mut: ModelUnderTest, out: Path, *, fp16: bool, engine: bool, profile: dict[str, Any] | None):
    from sr_export.pipeline import ExportRequest, run_export

    req = ExportRequest(
        model=str(mut.checkpoint),
        scale=mut.scale,
        formats=("onnx", "engine") if engine else ("onnx",),
        fp16=fp16,
        out=out,
        parity_dir=None,  # the bench measures parity itself; scikit-image samples suffice for the export gate
        **(profile or {}),
    )
    return run_export(req)


def export_artifacts(
    mut: ModelUnderTest,
    forms: Iterable[Form],
    workdir: Path,
    *,
    profile: dict[str, Any] | None = None,
) -> Artifacts:
    """Export what ``forms`` need with ``sr_export.pipeline.run_export`` (the ``sr-export`` code path,
    parity gates included) into ``workdir``.

    ``profile``: ExportRequest shape fields (``min_shape``, ``opt_shape``, ``max_shape``, ``batch``)
    for a TensorRT engine. A form whose artifact cannot be made is listed in ``skipped`` with the
    error; an FP16 failure does not cost the FP32 artifacts.
    """
    forms = list(forms)
    arts = Artifacts()
    need = {(f.backend, f.precision) for f in forms if f.backend not in ("torch", "default")}
    if not need:
        return arts
    engine_precisions = {p for b, p in need if b == "tensorrt"}
    want_fp16 = any(p == "fp16" for _, p in need)
    attempts = [(True, bool(engine_precisions))] if want_fp16 else []
    attempts.append((False, "fp32" in engine_precisions))
    for fp16, engine in attempts:
        if not fp16 and all(key in arts.files for key in need if key[1] == "fp32"):
            break
        out = Path(workdir) / f"{mut.model}_x{mut.scale}{'_fp16' if fp16 else ''}"
        start = time.perf_counter()
        try:
            result = _export(mut, out, fp16=fp16, engine=engine, profile=profile)
        except SRError as e:
            log.warning("export of %s x%d (fp16=%s, engine=%s) failed: %s", mut.model, mut.scale, fp16, engine, e)
            for b, p in sorted(need):
                if (p == "fp16") == fp16 and (b, p) not in arts.files and (b == "onnxruntime" or engine):
                    arts.skipped.append(_skip("export", mut, b, p, f"{type(e).__name__}: {e}"))
            if fp16 and engine:
                # The engine may be what failed: retry the FP16 ONNX alone before giving up on it.
                try:
                    result = _export(mut, out, fp16=True, engine=False, profile=profile)
                except SRError:
                    continue
                arts.skipped = [s for s in arts.skipped if not (s["backend"] == "onnxruntime" and s["precision"] == "fp16")]
            else:
                continue
        timings = result.manifest.get("timings_s", {})
        for f in result.files:
            name = f.name
            if name.endswith(".onnx"):
                key = ("onnxruntime", "fp16" if name.endswith("_fp16.onnx") else "fp32")
                spent = timings.get("export_onnx", 0.0) + timings.get("slim", 0.0)
                if key[1] == "fp16":
                    spent += timings.get("fp16_convert", 0.0)
            elif name.endswith(".engine"):
                key = ("tensorrt", "fp16" if "_fp16" in name else "fp32")
                spent = timings.get("engine_build", 0.0)
            else:
                continue
            if key not in arts.files:
                arts.files[key] = f
                arts.export_s[key] = spent
        log.info("exported %s x%d in %.1f s: %s", mut.model, mut.scale, time.perf_counter() - start,
                 ", ".join(p.name for p in result.files))
    return arts


def _skip(stage: str, mut: ModelUnderTest, backend: str | None, precision: str | None, reason: str, **extra) -> dict:
    return {
        "stage": stage,
        "model": mut.model,
        "scale": mut.scale,
        "backend": backend,
        "precision": precision,
        "reason": reason,
        **extra,
    }


def open_backend(mut: ModelUnderTest, form: Form, artifacts: Artifacts, *, threads: int | None = None):
    """Create the runtime backend for ``form``; raises BackendUnavailableError when it cannot run here."""
    from sr_runtime.backends import open_artifact
    from sr_runtime.options import RuntimeOptions

    if form.backend == "default":
        # The runtime's default path: the fastest parity-checked form for this machine, built and
        # cached by sr_runtime.fastpath (as sr-run and Upscaler do with backend="auto").
        from sr_runtime.checkpoint import load_checkpoint
        from sr_runtime.fastpath import accelerated_backend

        ckpt = load_checkpoint(mut.checkpoint)
        return accelerated_backend(mut.checkpoint, ckpt, RuntimeOptions(device=form.device), source=mut.source)
    if form.backend not in ("torch", "onnxruntime", "tensorrt"):
        raise BackendUnavailableError(f"unknown backend {form.backend!r}; valid: torch, onnxruntime, tensorrt")
    if form.backend == "torch":
        options = RuntimeOptions(backend="torch", device=form.device, precision=form.precision)
        return open_artifact(copy.deepcopy(mut.net), options, spec=mut.spec, source=mut.source)
    path = artifacts.files.get((form.backend, form.precision))
    if path is None:
        raise BackendUnavailableError(f"no {form.backend} {form.precision} artifact was exported (see skipped)")
    if form.backend == "onnxruntime":
        # sr-export's FP16 ONNX keeps FP32 input/output (FP16 weights and compute inside), which the
        # backend takes as an FP32-I/O model: let it read the precision from the file.
        provider = "cpu" if form.device == "cpu" else "cuda"
        options = RuntimeOptions(backend="onnxruntime", device=form.device, provider=provider)
        return open_artifact(path, options, scale=mut.scale, threads=threads)
    return open_artifact(path, RuntimeOptions(backend="tensorrt", device=form.device, precision=form.precision))


def parity_inputs(spec: IOSpec, size: tuple[int, int], images: int) -> list[tuple[str, np.ndarray]]:
    """Centre crops of real photos (scikit-image samples) at LR ``size``: [(name, (1, 3, h, w) float32)]."""
    from sr_runtime.export.verify import parity_cases

    cases = parity_cases([align_hw(*size, spec)], batch=1)
    return [(c.image, c.lr) for c in cases[: max(1, images)]]


def _run_numpy(backend, lr: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(lr).to(device=backend.device, dtype=backend.input_dtype)
    with torch.inference_mode():
        return backend.run(x).float().cpu().numpy()


def measure_parity(
    mut: ModelUnderTest, form: Form, backend, inputs: list[tuple[str, np.ndarray]], reference: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Parity row: ``backend``'s outputs against the PyTorch FP32 ``reference`` outputs (by image name)."""
    from sr_runtime.export.verify import compare

    per_image = []
    for name, lr in inputs:
        result = compare(reference[name], _run_numpy(backend, lr), precision=form.precision)
        per_image.append(
            {
                "image": name,
                "psnr_db": result.psnr_db,
                "max_abs_u8": result.max_abs_levels,
                "mean_abs_u8": result.mean_abs,
                "nonfinite": result.nonfinite,
            }
        )
    _, _, h, w = inputs[0][1].shape
    return {
        "model": mut.model,
        "scale": mut.scale,
        "weights": mut.weights,
        "backend": form.backend,
        "precision": form.precision,
        "device": form.device,
        "images": [p["image"] for p in per_image],
        "input_h": h,
        "input_w": w,
        # None marks a bit-identical image (infinite PSNR); the worst finite one wins
        "psnr_db": min((p["psnr_db"] for p in per_image if p["psnr_db"] is not None), default=None),
        "max_abs_u8": max(p["max_abs_u8"] for p in per_image),
        "mean_abs_u8": float(np.mean([p["mean_abs_u8"] for p in per_image])),
        "nonfinite": int(sum(p["nonfinite"] for p in per_image)),
        "per_image": [{k: v for k, v in p.items() if k != "mean_abs_u8"} for p in per_image],
    }


def _is_oom(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)) or "out of memory" in text or "failed to allocate" in text


def measure_latency(
    mut: ModelUnderTest,
    form: Form,
    backend,
    *,
    size: tuple[int, int],
    batch: int,
    warmup: int,
    runs: int,
    max_row_s: float | None = None,
) -> dict[str, Any]:
    """Latency row for one input size and batch (see LATENCY_FIELDS; parity and build fields left None).

    ``max_row_s``: when the first (cold) call says that warm-up plus ``runs`` would take longer,
    fewer calls are made (at least one timed), and the row's ``runs``/``warmup`` say how many.
    Raises InputError when the backend does not take this size, MemoryError-like errors on OOM.
    """
    h, w = align_hw(*size, mut.spec)
    lr = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    lr = lr.to(device=backend.device, dtype=backend.input_dtype)
    sync = device_sync(str(backend.device))

    def call():
        with torch.inference_mode():
            backend.run(lr)

    with PeakMemory(str(backend.device), torch_allocator=form.backend == "torch") as mem:
        sync()
        start = time.perf_counter()
        call()
        sync()
        first_ms = (time.perf_counter() - start) * 1e3
        if max_row_s is not None and first_ms * (warmup + runs) > max_row_s * 1e3:
            affordable = max(1, int(max_row_s * 1e3 // max(first_ms, 1e-3)))
            new_warmup = min(warmup, max(0, affordable // 4))
            new_runs = max(1, min(runs, affordable - new_warmup))
            log.info("%s %s %dx%d: %.0f ms per call, %d warm-up + %d runs instead of %d + %d (--max-row-seconds)",
                     mut.model, form, h, w, first_ms, new_warmup, new_runs, warmup, runs)
            warmup, runs = new_warmup, new_runs
        timing = time_calls(call, warmup=warmup, runs=runs, sync=sync)
    stats = timing.summary()
    s = mut.scale
    return {
        "model": mut.model,
        "scale": s,
        "weights": mut.weights,
        "backend": form.backend,
        "precision": form.precision,
        "device": form.device,
        "input_h": h,
        "input_w": w,
        "output_h": h * s,
        "output_w": w * s,
        "batch": batch,
        "runs": timing.runs,
        "warmup": warmup,
        "p50_ms": stats["p50"],
        "p95_ms": stats["p95"],
        "p99_ms": stats["p99"],
        "mean_ms": stats["mean"],
        "min_ms": stats["min"],
        "fps": batch * 1e3 / stats["p50"],
        "out_mpix_s": batch * h * s * w * s / 1e6 / (stats["p50"] / 1e3),
        "peak_mem_mib": mem.mib,
        "mem_kind": mem.kind,
        "export_s": None,
        "build_s": None,
        "first_ms": first_ms,
        "parity_psnr_db": None,
        "parity_max_abs_u8": None,
        "parity_nonfinite": None,
    }


def bench_model(
    mut: ModelUnderTest,
    forms: list[Form],
    *,
    sizes: list[tuple[int, int]],
    batches: list[int],
    warmup: int,
    runs: int,
    workdir: Path,
    parity_size: tuple[int, int] = (64, 96),
    parity_images: int = 3,
    max_row_s: float | None = None,
    threads: int | None = None,
    profile: dict[str, Any] | None = None,
) -> tuple[list[dict], list[dict], list[dict], Artifacts]:
    """Every form of one model: (latency rows, parity rows, skipped, artifacts)."""
    latency: list[dict] = []
    parity: list[dict] = []
    arts = export_artifacts(mut, forms, workdir, profile=profile)
    skipped = list(arts.skipped)
    inputs = parity_inputs(mut.spec, parity_size, parity_images)
    ref_model = mut.deploy()
    with torch.inference_mode():
        reference = {name: ref_model(torch.from_numpy(lr)).numpy() for name, lr in inputs}
    del ref_model

    for form in forms:
        if form.backend not in ("torch", "default") and (form.backend, form.precision) not in arts.files:
            if not any(s["backend"] == form.backend and s["precision"] == form.precision for s in skipped):
                skipped.append(_skip("latency", mut, form.backend, form.precision, "no artifact"))
            continue
        start = time.perf_counter()
        try:
            backend = open_backend(mut, form, arts, threads=threads)
        except SRError as e:
            skipped.append(_skip("latency", mut, form.backend, form.precision, f"{type(e).__name__}: {e}", device=form.device))
            log.warning("skip %s x%d %s: %s", mut.model, mut.scale, form, e)
            continue
        build_s = time.perf_counter() - start
        export_s = arts.export_s.get((form.backend, form.precision))
        if form.backend == "default":  # rows name the form it chose, e.g. "default:onnxruntime"
            form = Form(f"default:{backend.name}", backend.precision, form.device)
        with backend:
            log.info("%s x%d: %s (built in %.2f s)", mut.model, mut.scale, backend.describe(), build_s)
            try:
                prow = measure_parity(mut, form, backend, inputs, reference)
                parity.append(prow)
            except (SRError, RuntimeError) as e:
                prow = None
                skipped.append(_skip("parity", mut, form.backend, form.precision, f"{type(e).__name__}: {e}"))
            for size in sizes:
                for batch in batches:
                    try:
                        row = measure_latency(
                            mut, form, backend, size=size, batch=batch, warmup=warmup, runs=runs, max_row_s=max_row_s
                        )
                    except Exception as e:  # OOM and size limits are results to report, not crashes
                        if not (isinstance(e, (SRError, MemoryError)) or _is_oom(e)):
                            raise
                        reason = "out of memory" if _is_oom(e) else f"{type(e).__name__}: {e}"
                        skipped.append(
                            _skip("latency", mut, form.backend, form.precision, reason, size=f"{size[0]}x{size[1]}", batch=batch)
                        )
                        log.warning("skip %s %s %s batch %d: %s", mut.model, form, size, batch, reason)
                        if form.device.startswith("cuda"):
                            torch.cuda.empty_cache()
                        continue
                    row["build_s"] = build_s
                    row["export_s"] = export_s
                    if prow is not None:
                        row["parity_psnr_db"] = prow["psnr_db"]
                        row["parity_max_abs_u8"] = prow["max_abs_u8"]
                        row["parity_nonfinite"] = prow["nonfinite"]
                    latency.append(row)
                    log.info(
                        "%s x%d %s %dx%d b%d: p50 %.1f ms, %.2f fps, peak %.0f MiB",
                        mut.model, mut.scale, form, row["input_h"], row["input_w"], batch, row["p50_ms"], row["fps"],
                        row["peak_mem_mib"] or 0,
                    )
    return latency, parity, skipped, arts
