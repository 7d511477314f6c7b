"""The community-model coverage table: each family of :mod:`benchmarks.community_models` (random weights in
the published file layout) taken through the user's path, one row per family.

Per family, in this order (a step that raises ends the row there: the row says ``fails at STEP: reason``,
the steps after it stay empty, and the next family goes on):

1. ``build``: write the file as the published model is laid out (:func:`~benchmarks.community_models.save_family`).
2. ``load``: load it as ``sr-run --model FILE`` does (:func:`~sr_runtime.zoo.resolve_checkpoint`, then
   :func:`~sr_runtime.checkpoint.load_checkpoint`); the architecture detected must be the family's.
3. ``tiling``: a photo crop (scikit-image's astronaut) upscaled by :class:`~sr_runtime.upscaler.Upscaler` on
   torch FP32 with a forced tile and the default overlap (the model's receptive radius), against the
   whole crop at once: the largest difference in 8-bit levels. The tile is ``tile`` px, raised to leave
   a 32 px stride inside the overlap; the crop is cut into 2 x 2 tiles (see :func:`_tiled_vs_whole`).
4. ``torch``: median ms of ``Upscaler(FILE, backend="torch", device="cpu", tile=0).upscale`` at the LR size.
5. ``export``: :func:`sr_export.pipeline.run_export` as ``sr-export --model FILE --fp16 --format onnx``
   runs it; the ONNX shapes it settled on and its parity figures (the worst photo of the final FP32 and
   FP16 files, ONNX Runtime CPU against PyTorch FP32) come from its manifest. Parity uses the
   scikit-image photos only (not ``../shared/data``), so the table does not depend on what is there.
6. ``onnxruntime``: median ms of the exported FP32 ONNX on ONNX Runtime CPU (threads: its default).
7. ``fast path`` (optional): ``Upscaler(FILE, backend="auto", device="cpu")``, the form it chose and its
   median ms (its build, export and probe are not timed; they go to a scratch cache).

Times are of the whole ``upscale`` call on an HxWx3 uint8 array (conversion included), after one
warm-up call. The table never installs, downloads or prints; :mod:`benchmarks.cli` (``sr-bench
coverage``) parses arguments and prints.
"""

from __future__ import annotations

import itertools
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import percentiles, time_calls, write_json
from benchmarks.community_models import FAMILIES, Family, save_family
from sr_runtime.atomic import atomic_write_text
from sr_runtime.errors import CheckpointError, ConfigError, ExportError

__all__ = [
    "DEFAULT_SIZE",
    "SCHEMA",
    "STEPS",
    "CoverageRow",
    "hardware_line",
    "measure_family",
    "run_coverage",
    "select_families",
    "to_markdown",
    "write_coverage",
]

log = logging.getLogger("benchmarks.coverage")

SCHEMA = "sr-bench-coverage/1"
DEFAULT_SIZE = (270, 480)
"""LR input (height, width) of the timings: a quarter of 1080p, upscaled x4 to 1080x1920."""
STEPS = ("build", "load", "tiling", "torch", "export", "onnxruntime", "fast path")


@dataclass
class CoverageRow:
    """One family's row. None: not measured (the row failed before that step, or it was turned off)."""

    key: str
    family: str
    published: str
    expected_arch: str
    quick: bool
    arch: str | None = None
    """What loading detected."""
    params: int | None = None
    loads: bool | None = None
    tiled_max_levels: int | None = None
    """Largest |tiled - whole| over the output, in 8-bit levels."""
    tiling: str | None = None
    """What the tiled run was: tile, overlap, tile count, crop size."""
    torch_ms: float | None = None
    onnx: str | None = None
    """``dynamic``, or ``multiple of N`` (height and width), with ``batch 1`` where the graph fixes it."""
    onnx_multiple_of: int | None = None
    model_multiple_of: int | None = None
    onnx_batch: int | None = None
    """None: dynamic batch."""
    fp32_db: float | None = None
    fp16_db: float | None = None
    ort_ms: float | None = None
    fast_path: str | None = None
    """The form ``backend="auto"`` chose (``onnxruntime-cpu-fp32``, ``torch-cpu-fp32``, ...)."""
    fast_ms: float | None = None
    status: str = "ok"
    """``ok``, or ``fails at STEP: reason``."""
    failed_step: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each step reached."""

    @property
    def ok(self) -> bool:
        return self.failed_step is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: identical outputs give an infinite parity, written ``"inf"`` as the export manifest does."""
        row = asdict(self)
        for key in ("fp32_db", "fp16_db"):
            if row[key] is not None and math.isinf(row[key]):
                row[key] = "inf"
        return row


def select_families(keys: Sequence[str] | None) -> list[Family]:
    """The families named by ``keys`` (their :attr:`Family.key`), in the given order; all when None or empty.
    Raises ConfigError naming the unknown keys and the valid ones."""
    if not keys:
        return list(FAMILIES)
    by_key = {f.key: f for f in FAMILIES}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        raise ConfigError(f"--families: unknown {', '.join(unknown)}; valid: {', '.join(by_key)}")
    return [by_key[k] for k in dict.fromkeys(keys)]


def _photo(height: int, width: int) -> np.ndarray:
    """An HxWx3 uint8 crop of scikit-image's astronaut (512x512), reflected beyond that size."""
    from skimage import data

    img = data.astronaut()
    pad_h, pad_w = max(0, height - img.shape[0]), max(0, width - img.shape[1])
    if pad_h or pad_w:
        img = np.pad(img, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    y0, x0 = (img.shape[0] - height) // 2, (img.shape[1] - width) // 2
    return np.ascontiguousarray(img[y0 : y0 + height, x0 : x0 + width])


def _median_ms(upscaler, img: np.ndarray, runs: int) -> float:
    timing = time_calls(lambda: upscaler.upscale(img), warmup=1, runs=runs)
    return round(percentiles(timing.samples_ms, (50,))["p50"], 2)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _tiled_vs_whole(path: Path, whole, tile: int) -> tuple[int, str]:
    """(max |tiled - whole| in 8-bit levels, what was tiled) for the checkpoint at ``path``; ``whole`` is
    an untiled torch Upscaler of it.

    The tile side is ``tile``, raised to leave a stride of at least 32 px inside the default overlap on
    both sides; the photo crop is one tile plus one stride each way, so that it is cut into 2 x 2 tiles
    with a seam through the middle in both directions."""
    from sr_runtime.tiling import default_overlap, plan_tiles
    from sr_runtime.upscaler import Upscaler

    spec = whole.spec
    overlap = default_overlap(spec)
    m = spec.multiple_of
    side = max(_round_up(tile, m), _round_up(2 * overlap + 32, m), _round_up(spec.min_size, m))
    stride = (side - 2 * overlap) // m * m
    crop = side + stride
    img = _photo(crop, crop)
    plan = plan_tiles(crop, crop, tile=side, overlap=overlap, multiple_of=m, min_size=spec.min_size)
    with Upscaler(str(path), backend="torch", device="cpu", tile=side) as tiled:
        out_tiled = tiled.upscale(img)
    out_whole = whole.upscale(img)
    diff = int(np.abs(out_tiled.astype(np.int16) - out_whole.astype(np.int16)).max())
    return diff, f"tile {side}, overlap {overlap}, {plan.tiles_per_image} tiles on {crop}x{crop}"


def _parity_db(manifest: dict, precision: str) -> float:
    """The worst parity PSNR (dB) of the final ONNX file of ``precision`` in an export manifest."""
    names = [f["name"] for f in manifest["files"] if f.get("kind") == "onnx" and f.get("precision") == precision]
    if not names:
        raise ExportError(f"the export wrote no {precision} ONNX file (files: {[f['name'] for f in manifest['files']]})")
    rows = [r for r in manifest["parity"] if r["artifact"].split(" ")[0] == names[0]]
    if not rows:
        raise ExportError(f"the export manifest has no parity rows for {names[0]}")
    return min(float(r["psnr_db"]) for r in rows)


def _onnx_shapes(io: dict) -> str:
    multiple = int(io.get("multiple_of", 1))
    text = "dynamic" if multiple == 1 else f"multiple of {multiple}"
    if io.get("batch") == 1:
        text += ", batch 1"
    return text


def _one_line(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    if len(first) > 240:
        first = first[:237] + "..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def measure_family(
    fam: Family,
    workdir: str | Path,
    *,
    quick: bool,
    size: tuple[int, int] = DEFAULT_SIZE,
    runs: int = 5,
    tile: int = 64,
    seed: int = 0,
    fast_path: bool = True,
) -> CoverageRow:
    """One family through the user's path (see the module doc), its files written under ``workdir``.

    ``size``: LR (height, width) of the timings; ``runs``: timed calls per median; ``tile``: the forced
    tile side of the tiling step (raised where the overlap needs it). Never raises for a failing step:
    the row records ``fails at STEP: reason`` and stops there. Raises ConfigError for bad arguments.
    """
    if runs < 1:
        raise ConfigError(f"runs must be >= 1, got {runs}")
    if min(size) < 1 or tile < 1:
        raise ConfigError(f"size and tile must be positive, got size {size[0]}x{size[1]} and tile {tile}")
    from sr_export.pipeline import ExportRequest, run_export
    from sr_runtime.checkpoint import load_checkpoint
    from sr_runtime.upscaler import Upscaler
    from sr_runtime.zoo import resolve_checkpoint

    workdir = Path(workdir) / fam.key
    row = CoverageRow(key=fam.key, family=fam.family, published=fam.published, expected_arch=fam.arch, quick=quick)
    marks = [(STEPS[0], time.perf_counter())]  # (step, when it started)

    def mark(step: str) -> None:
        marks.append((step, time.perf_counter()))

    try:
        path, info = save_family(fam, workdir, quick=quick, seed=seed)
        row.params = int(info["params"])

        mark("load")
        ckpt_path, _ = resolve_checkpoint(str(path), None)
        ckpt = load_checkpoint(ckpt_path)
        row.arch = ckpt.arch
        if ckpt.arch != fam.arch:
            raise CheckpointError(f"{path.name}: loading detected {ckpt.arch}, expected {fam.arch}")
        row.loads = True
        row.model_multiple_of = ckpt.spec.multiple_of
        del ckpt

        lr = _photo(*size)
        with Upscaler(str(path), backend="torch", device="cpu", tile=0) as whole:
            mark("tiling")
            row.tiled_max_levels, row.tiling = _tiled_vs_whole(path, whole, tile)
            mark("torch")
            row.torch_ms = _median_ms(whole, lr, runs)

        mark("export")
        result = run_export(
            ExportRequest(model=str(path), fp16=True, formats=("onnx",), out=workdir / "export", parity_dir=None)
        )
        io = result.manifest["io"]
        row.onnx = _onnx_shapes(io)
        row.onnx_multiple_of = int(io.get("multiple_of", 1))
        row.onnx_batch = io["batch"] if isinstance(io.get("batch"), int) else None
        row.fp32_db = _parity_db(result.manifest, "fp32")
        row.fp16_db = _parity_db(result.manifest, "fp16")

        mark("onnxruntime")
        onnx32 = next(f["name"] for f in result.manifest["files"] if f["kind"] == "onnx" and f["precision"] == "fp32")
        with Upscaler(str(result.out_dir / onnx32), backend="onnxruntime", provider="cpu", tile=0) as ort:
            row.ort_ms = _median_ms(ort, lr, runs)

        if fast_path:
            mark("fast path")
            with Upscaler(str(path), backend="auto", device="cpu", cache_dir=workdir / "cache") as auto:
                b = auto.backend
                row.fast_path = f"{b.name}-{b.device.type}-{b.precision}"
                row.fast_ms = _median_ms(auto, lr, runs)
    except Exception as e:  # any failure is what the row reports; the next family goes on
        step = marks[-1][0]
        row.failed_step, row.reason = step, _one_line(e)
        row.status = f"fails at {step}: {row.reason}"
        log.debug("coverage: %s failed at %s", fam.key, step, exc_info=True)
    marks.append(("end", time.perf_counter()))
    row.step_seconds = {a: round(t1 - t0, 2) for (a, t0), (_, t1) in itertools.pairwise(marks)}
    row.seconds = round(marks[-1][1] - marks[0][1], 2)
    log.info("coverage: %s: %s (%.1f s)", fam.key, row.status, row.seconds)
    return row


def run_coverage(
    families: Sequence[Family] | None = None,
    *,
    quick: bool = False,
    size: tuple[int, int] = DEFAULT_SIZE,
    runs: int = 5,
    tile: int = 64,
    seed: int = 0,
    fast_path: bool = True,
    workdir: str | Path | None = None,
) -> list[CoverageRow]:
    """:func:`measure_family` for each of ``families`` (default: all of :data:`FAMILIES`), in order.

    ``workdir`` holds the checkpoints and exports (default: a temporary folder, removed afterwards).
    ``quick``: the families' reduced builds (fewer blocks, the same tensor names); else the published
    hyperparameters."""
    families = list(FAMILIES if families is None else families)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="sr-coverage-") as tmp:
            return run_coverage(families, quick=quick, size=size, runs=runs, tile=tile, seed=seed,
                                fast_path=fast_path, workdir=tmp)
    return [
        measure_family(f, workdir, quick=quick, size=size, runs=runs, tile=tile, seed=seed, fast_path=fast_path)
        for f in families
    ]


def _cell(value: Any, fmt: str = "{}") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return fmt.format(value)


def _params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 100_000 else f"{n / 1e3:.1f} k"


def hardware_line(environment: dict[str, Any]) -> str:
    """CPU model, cores, torch and ONNX Runtime versions, from :func:`benchmarks.common.environment`."""
    cores = environment.get("cpu_count")
    usable = environment.get("cpu_affinity")
    core_text = f"{cores} cores" + (f" ({usable} usable)" if usable and usable != cores else "")
    return (
        f"CPU: {environment.get('cpu_model', '?')}, {core_text}; torch {environment.get('torch', '?')} "
        f"({environment.get('torch_threads', '?')} threads), onnxruntime {environment.get('onnxruntime') or 'not installed'}"
    )


def to_markdown(rows: Sequence[CoverageRow], environment: dict[str, Any], *, settings: dict | None = None) -> str:
    """The coverage table in Markdown: a hardware line (:func:`hardware_line`), the settings, one table row
    per family, then the tiling used per family."""
    lines = ["# Community model coverage", "", hardware_line(environment) + "."]
    if environment.get("commit"):
        lines[-1] += f" Commit {environment['commit'][:12]}{' (dirty)' if environment.get('dirty') else ''}."
    if settings:
        h, w = settings["size"]
        build = "quick builds (fewer blocks, published tensor names)" if settings.get("quick") else "published hyperparameters"
        lines += ["", (f"Random weights in the published file layouts, {build}; CPU times: median of "
                       f"{settings['runs']} runs at LR {h}x{w}, whole image, uint8 in and out"
                       + ("" if settings.get("fast_path", True) else "; fast path not run (--no-fast-path)") + ".")]
    header = ("| Family | Published model | Arch | Params | Loads | Tiled = whole (levels) | Torch FP32 ms | ONNX | "
              "FP32 ONNX dB | FP16 ONNX dB | ORT FP32 ms | Fast path | Fast path ms | Status |")
    lines += ["", header, "|---|---|---|---:|---|---:|---:|---|---:|---:|---:|---|---:|---|"]
    for r in rows:
        status = r.status.replace("|", "\\|")
        loads = "-" if r.loads is None else ("yes" if r.loads else "no")
        lines.append(
            f"| {r.family} | {r.published} | {_cell(r.arch)} | {_params(r.params)} | {loads} | "
            f"{_cell(r.tiled_max_levels)} | {_cell(r.torch_ms, '{:.1f}')} | {_cell(r.onnx)} | "
            f"{_cell(r.fp32_db, '{:.1f}')} | {_cell(r.fp16_db, '{:.1f}')} | {_cell(r.ort_ms, '{:.1f}')} | "
            f"{_cell(r.fast_path)} | {_cell(r.fast_ms, '{:.1f}')} | {status} |"
        )
    tiled = [r for r in rows if r.tiling]
    if tiled:
        lines += ["", "Tiling checks (LR px): " + "; ".join(f"{r.key}: {r.tiling}" for r in tiled) + "."]
    return "\n".join(lines) + "\n"


def write_coverage(
    rows: Sequence[CoverageRow], environment: dict[str, Any], settings: dict, out: str | Path
) -> list[Path]:
    """``OUT/coverage.json`` (schema :data:`SCHEMA`) and ``OUT/coverage.md``, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "settings": settings, "environment": environment, "rows": [r.to_dict() for r in rows]}
    return [
        write_json(out / "coverage.json", doc),
        atomic_write_text(out / "coverage.md", to_markdown(rows, environment, settings=settings)),
    ]


if __name__ == "__main__":  # python -m benchmarks.coverage ...: the same as sr-bench coverage ...
    import sys

    from benchmarks.cli import coverage_main

    sys.exit(coverage_main(sys.argv[1:]))
