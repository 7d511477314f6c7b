"""The export pipeline behind ``sr-export``: checkpoint -> ONNX (FP32, FP16) -> TensorRT engine,
verifying after every step.

Every artifact is run on real images at an odd and a large size and compared with PyTorch FP32
(see :mod:`sr_runtime.export.verify`); below the tolerance the export fails. The ONNX artifacts and the
manifest are built in a temporary directory beside the target and renamed into place at the end,
so nothing half-written is left under ``exports/``; the engine follows in a second phase, so a
machine without TensorRT still gets its ONNX files before ``--format engine`` fails.

:func:`run_export` is the library entry point; ``sr_export.cli`` parses arguments and calls it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from sr_export.manifest import Manifest, read_manifest, write_manifest
from sr_runtime.atomic import current_umask, sha256_file
from sr_runtime.backends.tensorrt_sidecar import import_tensorrt, sidecar_path, tensorrt_available
from sr_runtime.checkpoint import Checkpoint, load_checkpoint
from sr_runtime.deploy import DeployModel
from sr_runtime.errors import ConfigError
from sr_runtime.export import tensorrt_build
from sr_runtime.export.fp16 import convert_fp16
from sr_runtime.export.onnx import DEFAULT_OPSET, check_onnx, io_description, set_metadata, slim_onnx
from sr_runtime.export.profile import ShapeProfile, default_profile
from sr_runtime.export.shapes import export_dynamic
from sr_runtime.export.verify import (
    OnnxRunner,
    ParityCase,
    ParityRow,
    align_size,
    check_parity,
    parity_cases,
    parity_sizes,
)
from sr_runtime.failures import check_writable_dir
from sr_runtime.spec import IOSpec, format_hw
from sr_runtime.zoo import resolve_checkpoint

__all__ = ["ExportRequest", "ExportResult", "run_export", "FORMATS", "DEFAULT_SCALE"]

log = logging.getLogger("sr_export")

FORMATS = ("onnx", "engine")
DEFAULT_SCALE = 4
"""Scale used with a model *name* when --scale is not given (a checkpoint path knows its own)."""


def _default_parity_dir() -> Path | None:
    """Set5 in the shared data folder beside the checkout, when it is there."""
    candidate = Path(__file__).resolve().parents[2] / "shared" / "data" / "Set5"
    return candidate if candidate.is_dir() else None


@dataclass(frozen=True)
class ExportRequest:
    """Everything one export needs; :func:`build_parser`'s options map one to one onto it."""

    model: str
    """Registry name (resolved via runs/ then shipped weights) or a checkpoint path."""
    scale: int | None = None
    formats: tuple[str, ...] | None = None
    """Subset of FORMATS; None: onnx, plus engine when TensorRT is importable. ONNX is always written."""
    fp16: bool = False
    fp16_io: bool = False
    out: Path | None = None
    """Export directory; default exports/<name>_x<scale>."""
    opset: int = DEFAULT_OPSET
    batch: int = 1
    min_shape: tuple[int, int] | None = None
    opt_shape: tuple[int, int] | None = None
    max_shape: tuple[int, int] | None = None
    workspace_gib: float = 4.0
    runs_dir: Path = Path("runs")
    cache_dir: Path | None = None
    """TensorRT timing cache and engine cache; default ``tensorrt/`` under the runtime's cache root
    (:func:`sr_runtime.options.cache_root`)."""
    slim: bool = True
    parity_dir: Path | None = field(default_factory=_default_parity_dir)
    """Extra parity images (PNG folder, e.g. Set5); scikit-image samples are always used."""
    trace_size: tuple[int, int] = (32, 32)
    odd_size: tuple[int, int] = (37, 53)
    large_size: tuple[int, int] = (64, 96)
    fp16_calibration_size: tuple[int, int] = (32, 48)
    triton: Path | None = None
    """A Triton model repository to write the checked forms into (:mod:`sr_export.triton`); implies
    ``fp16`` so that both precisions are served."""

    def command(
        self, *, model_path: Path, scale: int, formats: Sequence[str], profile: ShapeProfile | None, out: Path
    ) -> str:
        """The sr-export command line that repeats this export exactly (explicit path and shapes)."""
        args = ["sr-export", "--model", str(model_path.resolve()), "--scale", str(scale)]
        if self.fp16:
            args.append("--fp16")
        if self.fp16_io:
            args.append("--fp16-io")
        args += ["--format", ",".join(formats), "--out", str(out), "--opset", str(self.opset)]
        if profile is not None:
            args += [
                "--batch",
                str(profile.batch[2]),
                "--min-shape",
                format_hw(profile.min),
                "--opt-shape",
                format_hw(profile.opt),
                "--max-shape",
                format_hw(profile.max),
                "--workspace",
                f"{self.workspace_gib:g}",
            ]
        if not self.slim:
            args.append("--no-slim")
        if self.triton is not None:
            args += ["--triton", str(self.triton)]
        return shlex.join(args)


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict
    files: list[Path]


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = time.perf_counter() - start


@contextmanager
def _staging_dir(target: Path, tag: str) -> Iterator[Path]:
    """A fresh directory ``.<target>.<tag>-XXXX`` beside ``target``, removed on exit whatever happens."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{tag}-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private; the export is an ordinary directory
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _commit_dir(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``; an existing ``target`` is swapped out first, then removed."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(target, old)
        log.info("replacing the previous export in %s", target)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _export_name(meta: dict, arch: str, scale: int) -> str:
    base = str(meta.get("name") or arch)
    suffix = f"_x{scale}"
    if base.endswith(suffix):
        base = base[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.") or arch


def _resolve_formats(formats: tuple[str, ...] | None) -> tuple[str, ...]:
    if formats is None:
        if tensorrt_available():
            return FORMATS
        log.warning("engine: skipped, TensorRT is not installed (pip install tensorrt, or the .[trt] extra)")
        return ("onnx",)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(
            f"--format: unknown format {unknown or formats}; valid: {','.join(FORMATS)} (comma-separated)"
        )
    return tuple(f for f in FORMATS if f in formats or f == "onnx")


def _fit_profile(req: ExportRequest, spec, profile: ShapeProfile, onnx_path: Path | None) -> ShapeProfile:
    """Check the element limit; a *default* max shape too large for the model is lowered (and logged)."""
    return tensorrt_build.fit_profile(spec, profile, onnx_path=onnx_path, keep_max=req.max_shape is not None)


def _parity_summary(rows: list[ParityRow]) -> dict:
    worst = min(rows, key=lambda r: r.psnr_db)
    return {
        "images": len(rows),
        "min_psnr_db": worst.to_dict()["psnr_db"],
        "max_abs_levels": round(max(r.max_abs_levels for r in rows), 4),
        "nonfinite": sum(r.nonfinite for r in rows),
        "sizes": sorted({r.size for r in rows}),
    }


def run_export(req: ExportRequest) -> ExportResult:
    """Export ``req.model`` to ONNX (and FP16 ONNX, and a TensorRT engine), verifying every artifact.

    Raises the typed errors of :mod:`sr_runtime.errors`: InputError/CheckpointError for the model,
    ConfigError for options, OutputError for an export folder that cannot be written (checked before
    the slow work), ParityError when an artifact misses its tolerance, ExportError when a step fails,
    BackendUnavailableError when TensorRT (or another tool) is missing -- the engine check comes
    after the ONNX artifacts are in place.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    formats, scale = _check_request(req)
    if req.triton is not None:  # before the slow work: the schema the configs are checked with
        from sr_export.triton import triton_schema

        triton_schema()
        if not req.fp16:
            req = dataclasses.replace(req, fp16=True)
            log.info("fp16: on (--triton serves the FP32 and FP16 forms)")
    with _timed(timings, "load"):
        src = _load_source(req.model, scale, runs_dir=req.runs_dir)
    out_dir = Path(req.out) if req.out is not None else Path("exports") / src.stem
    # Before the slow work: a read-only or unusable target fails now, not after every parity check.
    check_writable_dir(out_dir, what="export folder", replaced=True)
    if req.triton is not None:
        check_writable_dir(Path(req.triton), what="Triton model repository")
    trace, sizes = _trace_and_parity_sizes(req, src.ckpt.spec)
    if not any(h > trace[0] and w > trace[1] for h, w in sizes):
        raise ConfigError(f"a parity size must exceed the trace size {format_hw(trace)}; got {sizes}")

    # Phase 1: the ONNX artifacts, staged beside the target and renamed into place at the end.
    with _staging_dir(out_dir, "tmp") as tmp:
        onnx = _write_onnx(req, src, formats, tmp, out_dir=out_dir, trace=trace, sizes=sizes, timings=timings)
        timings["total"] = time.perf_counter() - t_start
        onnx.manifest.timings_s = dict(timings)
        write_manifest(tmp, onnx.manifest)
        _commit_dir(tmp, out_dir)
    files = [out_dir / p.name for p in onnx.artifacts.values()]
    log.info("onnx: wrote %s", ", ".join(str(f) for f in files))

    # Phase 2: the engine. ONNX files are already in place, so a missing TensorRT costs nothing.
    if "engine" in formats:
        files += _write_engine(req, src, formats, onnx, out_dir=out_dir, timings=timings)
        timings["total"] = time.perf_counter() - t_start
        onnx.manifest.timings_s = dict(timings)
        write_manifest(out_dir, onnx.manifest)

    # Phase 3: the Triton repository, from the files that passed their parity checks.
    if req.triton is not None:
        with _timed(timings, "triton"):
            files += _write_triton(req, src, onnx, out_dir=out_dir)
        timings["total"] = time.perf_counter() - t_start
        onnx.manifest.timings_s = dict(timings)
        write_manifest(out_dir, onnx.manifest)
    return ExportResult(out_dir=out_dir, manifest=read_manifest(out_dir), files=files)


def _write_triton(req: ExportRequest, src: _Source, onnx: _OnnxStage, *, out_dir: Path) -> list[Path]:
    """The export's checked forms as Triton models in ``req.triton``; the manifest records them."""
    from sr_export.triton import write_repository

    assert req.triton is not None
    engines = {}
    if onnx.manifest.engine:
        engines[str(onnx.manifest.engine["compute_capability"])] = out_dir / onnx.manifest.engine["file"]
    fp16 = onnx.artifacts.get("fp16")
    models = write_repository(
        req.triton,
        name=src.stem,
        onnx_fp32=out_dir / onnx.artifacts["fp32"].name,
        onnx_fp16=out_dir / fp16.name if fp16 is not None else None,
        engines=engines,
        scale=src.ckpt.scale,
        value_range=onnx.spec.value_range,
        max_batch=max(req.batch, 8),
    )
    onnx.manifest.triton = {
        "repository": str(Path(req.triton).resolve()),
        "models": {m.name: {"kind": m.kind, "files": [str(p) for p in m.files.values()]} for m in models},
        "validated": "configs parsed with Triton's ModelConfig schema (tritonclient); I/O checked against "
                     "each ONNX graph; no Triton server was run",
    }
    log.info("triton: wrote %s (%s)", req.triton, ", ".join(m.name for m in models))
    return [p for m in models for p in m.files.values()]


@dataclass(frozen=True)
class _Source:
    """The checkpoint being exported, loaded, and the name its files take."""

    path: Path
    how: str
    """How the model argument was resolved, for the log and the manifest."""
    ckpt: Checkpoint
    deploy: DeployModel
    sha256: str
    name: str

    @property
    def stem(self) -> str:
        return f"{self.name}_x{self.ckpt.scale}"


@dataclass(frozen=True)
class _Parity:
    """The parity inputs and PyTorch FP32's outputs for them, computed once for every artifact."""

    cases: list[ParityCase]
    reference: dict[int, np.ndarray]


@dataclass
class _OnnxStage:
    """What phase 1 wrote and the engine phase builds on."""

    manifest: Manifest
    artifacts: dict[str, Path]
    """Precision -> ONNX file."""
    spec: IOSpec
    """The IOSpec the graph was exported with (its multiple_of may exceed the checkpoint's)."""
    profile: ShapeProfile | None
    parity: _Parity


def _check_request(req: ExportRequest) -> tuple[tuple[str, ...], int | None]:
    """The formats to write and the scale to load (the default one for a bare model name)."""
    if req.fp16_io and not req.fp16:
        raise ConfigError("--fp16-io selects FP16 input/output of the FP16 model; add --fp16")
    formats = _resolve_formats(req.formats)
    scale = req.scale
    if scale is None and not Path(req.model).suffix and not Path(req.model).exists():
        scale = DEFAULT_SCALE
        log.info("scale: %d (default; pass --scale for another)", scale)
    return formats, scale


def _load_source(model: str, scale: int | None, *, runs_dir: Path) -> _Source:
    path, how = resolve_checkpoint(model, scale, runs_dir=runs_dir)
    log.info("model: %s", how)
    ckpt = load_checkpoint(path, scale=scale)
    deploy = DeployModel(ckpt.model, ckpt.spec).eval()
    return _Source(path, how, ckpt, deploy, sha256_file(path), _export_name(ckpt.meta, ckpt.arch, ckpt.scale))


def _trace_and_parity_sizes(req: ExportRequest, spec: IOSpec) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    trace = (align_size(req.trace_size[0], spec), align_size(req.trace_size[1], spec))
    return trace, parity_sizes(spec, odd=req.odd_size, large=req.large_size)


def _write_onnx(
    req: ExportRequest,
    src: _Source,
    formats: tuple[str, ...],
    tmp: Path,
    *,
    out_dir: Path,
    trace: tuple[int, int],
    sizes: list[tuple[int, int]],
    timings: dict[str, float],
) -> _OnnxStage:
    """The FP32 ONNX file (and the FP16 one) in ``tmp``, each checked against PyTorch, and their manifest."""
    spec = src.ckpt.spec
    raw = tmp / f"{src.stem}.raw.onnx"
    with _timed(timings, "export_onnx"):
        # Dynamic height/width; the size multiple the graph needs may exceed the model's own
        # (architectures that pad to a window multiple in Python): then the exported IOSpec says so.
        shapes = export_dynamic(src.deploy, spec, raw, trace_size=trace, opset=req.opset)
    if shapes.spec != spec:
        log.info("onnx: exported with multiple_of=%d (the checkpoint's own is %d): %s",
                 shapes.spec.multiple_of, spec.multiple_of, shapes.tried[-1])
        spec = shapes.spec
        trace, sizes = _trace_and_parity_sizes(req, spec)

    profile = None
    if "engine" in formats:
        profile = default_profile(
            spec, min_hw=req.min_shape, opt_hw=req.opt_shape, max_hw=req.max_shape, batch=req.batch
        )
        profile = _fit_profile(req, spec, profile, None)
    command = req.command(model_path=src.path, scale=src.ckpt.scale, formats=formats, profile=profile, out=out_dir)

    cases = parity_cases(sizes, folder=req.parity_dir, batch=shapes.batch or 2)
    with _timed(timings, "reference_torch"), torch.no_grad():
        parity = _Parity(cases, {id(c): src.deploy(torch.from_numpy(c.lr)).numpy() for c in cases})

    shape_info = {"shapes": shapes.shapes, "multiple_of": spec.multiple_of, "batch": shapes.batch or "dynamic"}
    if shapes.raised:
        shape_info["why"] = (
            f"the graph fails at the checkpoint's multiple_of {src.ckpt.spec.multiple_of}: {shapes.tried[0]}"
        )
    if shapes.batch_why:
        shape_info["batch_why"] = shapes.batch_why
    manifest = _new_manifest(src, command, io={
        **io_description(), "io_spec": spec.to_dict(), "trace_size": format_hw(trace), **shape_info
    })
    meta = {
        "name": src.name,
        "scale": str(src.ckpt.scale),
        "arch": src.ckpt.arch,
        "contract": {**io_description(), "io_spec": spec.to_dict(), **shape_info},
        "io_spec": spec.to_dict(),
        "shapes": shapes.shapes,
        "batch": str(shapes.batch or "dynamic"),
        "source_checkpoint": src.path.name,
        "source_sha256": src.sha256,
    }

    final32 = tmp / f"{src.stem}.onnx"
    manifest.parity += _onnx_fp32(req, raw, final32, meta, parity, timings)
    manifest.add_file(final32, kind="onnx", precision="fp32")
    artifacts = {"fp32": final32}
    if req.fp16:
        final16 = tmp / f"{src.stem}_fp16.onnx"
        rows, manifest.fp16 = _onnx_fp16(req, final32, final16, spec, meta, parity, timings)
        manifest.parity += rows
        manifest.add_file(final16, kind="onnx", precision="fp16")
        artifacts["fp16"] = final16
    manifest.profile = profile.to_dict() if profile is not None else None
    return _OnnxStage(manifest, artifacts, spec, profile, parity)


def _new_manifest(src: _Source, command: str, *, io: dict) -> Manifest:
    return Manifest(
        name=src.name,
        scale=src.ckpt.scale,
        command=command,
        source={
            "path": str(src.path),
            "resolved_as": src.how,
            "sha256": src.sha256,
            "arch": src.ckpt.arch,
            "hparams": src.ckpt.hparams,
            "checkpoint_name": src.ckpt.meta.get("name"),
            "metrics": src.ckpt.meta.get("metrics") or {},
            "code_revision": src.ckpt.meta.get("code_revision"),
        },
        io=io,
    )


def _onnx_fp32(
    req: ExportRequest, raw: Path, final: Path, meta: dict, parity: _Parity, timings: dict[str, float]
) -> list[ParityRow]:
    """``raw`` checked, slimmed into ``final`` (unless ``req.slim`` is off) and checked again, with its
    metadata; returns every parity row."""
    with _timed(timings, "parity_onnx_raw"):
        rows = check_parity(
            f"{raw.name} (ONNX Runtime CPU)", OnnxRunner(raw), parity.reference, parity.cases, precision="fp32"
        )
    every = list(rows)
    if req.slim:
        with _timed(timings, "slim"):
            slim_onnx(raw, final)
        with _timed(timings, "parity_onnx"):
            rows = check_parity(
                f"{final.name} (ONNX Runtime CPU)", OnnxRunner(final), parity.reference, parity.cases, precision="fp32"
            )
        every += rows
        raw.unlink()
    else:
        os.replace(raw, final)
    set_metadata(final, {**meta, "precision": "fp32", "parity": _parity_summary(rows)})
    check_onnx(final)
    return every


def _onnx_fp16(
    req: ExportRequest,
    fp32: Path,
    final: Path,
    spec: IOSpec,
    meta: dict,
    parity: _Parity,
    timings: dict[str, float],
) -> tuple[list[ParityRow], dict]:
    """``fp32`` converted to FP16 into ``final`` and checked, with its metadata; returns the parity rows
    and the conversion's record."""
    cal_h, cal_w = (align_size(v, spec) for v in req.fp16_calibration_size)
    calibration = [c.lr for c in parity_cases([(cal_h, cal_w)], batch=1)]
    with _timed(timings, "fp16_convert"):
        result = convert_fp16(fp32, final, calibration=calibration, keep_io_fp32=not req.fp16_io)
        check_onnx(final)
    with _timed(timings, "parity_onnx_fp16"):
        rows = check_parity(
            f"{final.name} (ONNX Runtime CPU)", OnnxRunner(final), parity.reference, parity.cases, precision="fp16"
        )
    set_metadata(
        final,
        {
            **meta,
            "precision": "fp16",
            "io_dtype": "float16" if req.fp16_io else "float32",
            "parity": _parity_summary(rows),
        },
    )
    return rows, result.to_dict()


def _write_engine(
    req: ExportRequest,
    src: _Source,
    formats: tuple[str, ...],
    onnx: _OnnxStage,
    *,
    out_dir: Path,
    timings: dict[str, float],
) -> list[Path]:
    """The TensorRT engine and its sidecar, built from the ONNX file in ``out_dir``, checked and moved in
    beside it; the manifest gains their entries. Returns their paths."""
    assert onnx.profile is not None
    precision = "fp16" if req.fp16 else "fp32"
    onnx_path = out_dir / onnx.artifacts[precision].name
    import_tensorrt()
    profile = _fit_profile(req, onnx.spec, onnx.profile, onnx_path)
    command = req.command(model_path=src.path, scale=src.ckpt.scale, formats=formats, profile=profile, out=out_dir)
    engine_name = f"{src.stem}_fp16.engine" if req.fp16 else f"{src.stem}.engine"
    with _staging_dir(out_dir, "engine-tmp") as tmp:
        with _timed(timings, "engine_build"):
            engine_path, record = tensorrt_build.build_engine(
                onnx_path,
                tmp / engine_name,
                spec=onnx.spec,
                profile=profile,
                command=command,
                workspace_gib=req.workspace_gib,
                cache_dir=req.cache_dir,
            )
        with _timed(timings, "parity_engine"):
            engine_cases, reference = _engine_cases(profile, onnx.parity.cases, onnx.parity.reference, src.deploy)
            rows = check_parity(
                f"{engine_name} (TensorRT)",
                tensorrt_build.TrtRunner(engine_path),
                reference,
                engine_cases,
                precision=precision,
            )
        sidecar = sidecar_path(engine_path)
        os.replace(engine_path, out_dir / engine_name)
        os.replace(sidecar, out_dir / sidecar.name)
    manifest = onnx.manifest
    manifest.parity += rows
    manifest.profile = profile.to_dict()
    manifest.command = command
    manifest.engine = {**record.to_dict(), "file": engine_name}
    manifest.add_file(out_dir / engine_name, kind="engine", precision=precision)
    manifest.add_file(out_dir / sidecar.name, kind="engine-sidecar")
    log.info("engine: wrote %s", out_dir / engine_name)
    return [out_dir / engine_name, out_dir / sidecar.name]


def _engine_cases(profile: ShapeProfile, cases: list, reference: dict, deploy: DeployModel) -> tuple[list, dict]:
    """The parity cases inside the engine's profile; when none is, crops at the profile's min and opt sizes."""
    fitting = [c for c in cases if _fits(profile, c.lr.shape)]
    if fitting:
        return fitting, reference
    # Crops must fit in the sample photos (the smallest is 300x451).
    opt = (min(profile.opt[0], 256), min(profile.opt[1], 384))
    sizes = [profile.min] + ([opt] if opt != profile.min and _fits(profile, (1, 3, *opt)) else [])
    extra = parity_cases(sizes, batch=min(2, profile.batch[2]))
    extra = [c for c in extra if _fits(profile, c.lr.shape)]
    with torch.no_grad():
        reference = {**reference, **{id(c): deploy(torch.from_numpy(c.lr)).numpy() for c in extra}}
    return extra, reference


def _fits(profile: ShapeProfile, shape: tuple[int, ...]) -> bool:
    n, _, h, w = shape
    return (
        profile.batch[0] <= n <= profile.batch[2]
        and profile.min[0] <= h <= profile.max[0]
        and profile.min[1] <= w <= profile.max[1]
    )
