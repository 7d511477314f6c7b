"""What the report says, apart from how it is written: the environment lines, one :class:`Table` per
measured section, and the lines of what was skipped. ``report.md`` (:func:`benchmarks.report.render_markdown`)
and ``report.html`` (:mod:`benchmarks.report_html`) both render these, so the two show the same figures.

Cells are plain text or numbers; an intro may quote names in backticks (Markdown's code spans).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Table", "environment_lines", "fmt", "report_tables", "skipped_lines", "weights_note"]


@dataclass(frozen=True)
class Table:
    title: str
    intro: str
    """One paragraph above the table, or empty."""
    header: list[str]
    rows: list[list[Any]]
    """Cells: text or numbers, already formatted."""


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def weights_note(row: dict[str, Any]) -> str:
    return " (random weights)" if row.get("weights") == "random" else ""


def _parity_cell(psnr: float | None, max_abs: float | None) -> str:
    if max_abs is None:
        return "–"
    if psnr is None and max_abs == 0:
        return "identical"
    return f"{fmt(psnr)} dB / {fmt(max_abs)}"


def environment_lines(env: dict[str, Any]) -> list[str]:
    """The machine, its CPU's BF16/AVX-512 units, the versions and the commit, one item per line."""
    gpu = env.get("gpu")
    flags = env.get("cpu_flags")
    return [
        f"CPU: {env.get('cpu_model')} ({env.get('cpu_count')} logical cores, "
        f"{env.get('cpu_affinity')} usable, torch threads {env.get('torch_threads')}); RAM {env.get('memory_gib')} GiB"
        + ("" if flags is None else f"; units: {', '.join(flags) or 'no AVX2/AVX-512/AMX'}"),
        f"GPU: {gpu} ({env.get('gpu_memory_gib')} GiB, capability {env.get('gpu_capability')}), driver {env.get('driver')}"
        if gpu
        else "GPU: none",
        (f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}), "
         f"ONNX Runtime {env.get('onnxruntime')} {env.get('onnxruntime_providers')}, ONNX {env.get('onnx')}, "
         f"TensorRT {env.get('tensorrt')}, PyAV {env.get('av')}, Python {env.get('python')}"),
        (f"commit {env.get('commit')}{' (dirty tree)' if env.get('dirty') else ''}; {env.get('platform')}; "
         f"{env.get('timestamp_utc')}"),
    ]


def skipped_lines(skipped: list[dict[str, Any]]) -> list[str]:
    lines = []
    for s in skipped:
        what = " ".join(str(s[k]) for k in ("stage", "model", "scale", "backend", "precision", "dataset") if s.get(k))
        lines.append(f"{what}: {s['reason']}")
    return lines


def _models(data: dict[str, Any]) -> Table | None:
    if not data["models"]:
        return None
    return Table("Models", "", ["model", "scale", "weights", "parameters", "source"], [
        [m["model"], f"x{m['scale']}", m["weights"], f"{m.get('params', 0) / 1e3:.1f} k", m.get("source", "")]
        for m in data["models"]
    ])


def _latency(data: dict[str, Any]) -> Table | None:
    lat = data["latency"]
    if not lat:
        return None
    mem_kinds = sorted({r["mem_kind"] for r in lat if r.get("mem_kind")})
    intro = (
        "Milliseconds per call (one call = one batch) after one cold call and the warm-up calls (`warmup` in "
        "the JSON); fps = batch x 1000 / p50. Export s: making the artifact with sr_export (ONNX export and "
        "slim, FP16 conversion, engine build); build s: creating the backend (session, engine load); first ms: "
        "the cold first call. Neither is in the percentiles. Parity: PSNR / max abs difference (8-bit levels) "
        f"against PyTorch FP32 on real photos. Peak memory: {', '.join(mem_kinds)} (defined in "
        "benchmarks/common.py `PeakMemory`)."
    )
    header = ["model", "scale", "input HxW", "backend", "precision", "device", "batch", "runs",
              "p50 ms", "p95 ms", "p99 ms", "fps", "peak MiB", "export s", "build s", "first ms", "parity PSNR / max abs",
              "NaN/Inf"]
    rows = [
        [r["model"] + weights_note(r), f"x{r['scale']}", f"{r['input_h']}x{r['input_w']}", r["backend"],
         r["precision"], r["device"], r["batch"], r["runs"], fmt(r["p50_ms"], 1), fmt(r["p95_ms"], 1),
         fmt(r["p99_ms"], 1), fmt(r["fps"], 2), fmt(r["peak_mem_mib"], 0), fmt(r["export_s"], 1),
         fmt(r["build_s"], 2), fmt(r["first_ms"], 1), _parity_cell(r["parity_psnr_db"], r["parity_max_abs_u8"]),
         fmt(r["parity_nonfinite"])]
        for r in lat
    ]
    return Table("Latency", intro, header, rows)


def _default_path(data: dict[str, Any]) -> Table | None:
    lat = data["latency"]

    def key(r):
        return (r["model"], r["scale"], r["input_h"], r["input_w"], r["batch"], r["device"])

    torch_rows = {key(r): r for r in lat if r["backend"] == "torch" and r["precision"] == "fp32"}
    rows = []
    for r in lat:
        ref = torch_rows.get(key(r))
        if not r["backend"].startswith("default") or ref is None:
            continue
        rows.append([r["model"] + weights_note(r), f"x{r['scale']}", f"{r['input_h']}x{r['input_w']}", r["batch"],
                     r["device"], f"{r['backend'].split(':', 1)[-1]} {r['precision']}", fmt(ref["p50_ms"], 1),
                     fmt(r["p50_ms"], 1), f"{ref['p50_ms'] / r['p50_ms']:.2f}x", fmt(r["build_s"], 1)])
    if not rows:
        return None
    intro = (
        "The runtime's default (`sr-run`, `Upscaler` with backend auto: the fastest parity-checked form, built "
        "once and cached) against PyTorch FP32 eager on the same inputs, in this run. Build s: the default "
        "path's first start (export, parity gate and probe on a cold cache; a cache hit is well under a second)."
    )
    header = ["model", "scale", "input HxW", "batch", "device", "default form", "torch FP32 p50 ms",
              "default p50 ms", "speed-up", "build s"]
    return Table("Default path", intro, header, rows)


def _parity(data: dict[str, Any]) -> Table | None:
    if not data["parity"]:
        return None
    return Table(
        "Parity against PyTorch FP32",
        "Same LR crops of real photos through each form; PSNR on [0, 1] RGB (worst image), differences in 8-bit levels.",
        ["model", "scale", "backend", "precision", "device", "images", "crop", "PSNR dB", "max abs", "mean abs", "NaN/Inf"],
        [
            [r["model"] + weights_note(r), f"x{r['scale']}", r["backend"], r["precision"], r["device"],
             len(r["images"]), f"{r['input_h']}x{r['input_w']}",
             "identical" if r["psnr_db"] is None and r["max_abs_u8"] == 0 else fmt(r["psnr_db"]),
             fmt(r["max_abs_u8"], 3), fmt(r["mean_abs_u8"], 4), r["nonfinite"]]
            for r in data["parity"]
        ],
    )


def _quality(data: dict[str, Any]) -> Table | None:
    if not data["quality"]:
        return None
    return Table(
        "Quality",
        "PSNR/SSIM on the Y channel with a border of `scale` pixels cropped (MATLAB bicubic degradation), "
        "beside the published figure for the paper row named.",
        ["model", "scale", "form", "dataset", "images", "PSNR", "SSIM", "published (row)", "Δ PSNR"],
        [
            [r["model"], f"x{r['scale']}", f"{r['backend']} {r['precision']} {r['device']}", r["dataset"],
             r["images"], fmt(r["psnr"]), fmt(r["ssim"], 4),
             f"{fmt(r['published_psnr'])}/{fmt(r['published_ssim'], 4)} ({r['published_method']})"
             if r["published_method"]
             else "–",
             fmt(r["delta_psnr"])]
            for r in data["quality"]
        ],
    )


def _video(data: dict[str, Any]) -> Table | None:
    if not data["video"]:
        return None
    return Table(
        "Video, end to end",
        "Pipeline = the sr-run video path (decode, upscale, libx264 encode); inference = the model alone on the "
        "same frames; encode = libx264 alone at the output size; decode = decoding alone.",
        ["model", "scale", "backend", "precision", "clip", "frames", "in", "out", "pipeline fps", "inference fps",
         "encode fps", "decode fps", "serial bound fps", "pipeline / min", "pipeline / serial"],
        [
            [r["model"] + weights_note(r), f"x{r['scale']}", r["backend"], r["precision"],
             Path(str(r["clip"])).name, r["frames"], f"{r['input_w']}x{r['input_h']}",
             f"{r['output_w']}x{r['output_h']}", fmt(r["pipeline_fps"]), fmt(r["inference_fps"]),
             fmt(r["encode_fps"]), fmt(r["decode_fps"]), fmt(r.get("serial_bound_fps")),
             fmt(r.get("pipeline_vs_min")), fmt(r.get("pipeline_vs_serial"))]
            for r in data["video"]
        ],
    )


def _tiling(data: dict[str, Any]) -> Table | None:
    tiling = data.get("tiling") or []
    if not tiling:
        return None
    return Table(
        "Tiling",
        "The same frame through the Upscaler whole and tiled, one backend for every mode: auto = what sr-run "
        "plans from this machine's free memory (the whole frame when it fits); 1/4 budget = the plan on a "
        "quarter of that memory; overhead = wall time over the whole frame's; diff = largest difference "
        "from the whole-frame output.",
        ["model", "scale", "backend", "precision", "in", "mode", "tile", "tiles", "recomputed px",
         "p50 ms", "overhead", "max diff (levels)"],
        [
            [r["model"] + weights_note(r), f"x{r['scale']}", r["backend"], r["precision"],
             f"{r['input_w']}x{r['input_h']}", r["mode"], r["tile"], r["tiles"],
             f"{fmt(r['computed_px_overhead_pct'], 1)}%", fmt(r["p50_ms"], 1),
             f"{r['overhead_pct']:+.1f}%" if r["overhead_pct"] is not None else "–",
             fmt(r["max_abs_u8"], 0)]
            for r in tiling
        ],
    )


def report_tables(data: dict[str, Any]) -> list[Table]:
    """The measured sections of a results dict in report order, leaving out the empty ones."""
    tables = (_models(data), _latency(data), _default_path(data), _parity(data), _quality(data), _video(data),
              _tiling(data))
    return [t for t in tables if t is not None]
