"""The results schema, its validation, and JSON -> Markdown tables.

``results.json`` (``schema_version`` 1) holds, beside ``environment`` and ``config``, four lists of
flat rows: ``latency``, ``parity``, ``quality`` and ``video``, and ``skipped`` (what was not measured and
why). The fields of each row are listed below with their meaning; a field that could not be measured
is ``null`` (JSON has no NaN/Inf: an output identical to the reference has PSNR ``null`` and
``max_abs_u8`` 0).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "LATENCY_FIELDS",
    "PARITY_FIELDS",
    "QUALITY_FIELDS",
    "VIDEO_FIELDS",
    "TILING_FIELDS",
    "validate_results",
    "load_results",
    "render_markdown",
]

SCHEMA_VERSION = 1

_ID = {
    "model": "registry name (fsrcnn, edsr...)",
    "scale": "integer upscaling factor",
    "weights": "where the weights came from: shipped, run (newest training run), checkpoint (a path), random",
}
_FORM = {
    "backend": "torch | onnxruntime | tensorrt",
    "precision": "fp32 | fp16",
    "device": "cpu | cuda",
}

LATENCY_FIELDS: dict[str, str] = {
    **_ID,
    **_FORM,
    "input_h": "LR input height (pixels)",
    "input_w": "LR input width (pixels)",
    "output_h": "SR output height",
    "output_w": "SR output width",
    "batch": "images per call",
    "runs": "timed calls",
    "warmup": "untimed calls after the first one",
    "p50_ms": "median latency of one call (the whole batch), ms",
    "p95_ms": "95th percentile, ms (close to the maximum when runs is small)",
    "p99_ms": "99th percentile, ms",
    "mean_ms": "mean latency, ms",
    "min_ms": "fastest call, ms",
    "fps": "images per second at the median: batch * 1000 / p50_ms",
    "out_mpix_s": "output megapixels per second at the median",
    "peak_mem_mib": "peak memory while running, MiB (how: mem_kind)",
    "mem_kind": "cuda_max_memory_allocated | cuda_device_used_delta | cpu_peak_rss_delta | cpu_ru_maxrss_delta_lower_bound",
    "export_s": "time sr_export took to make the artifact (ONNX export + slim, FP16 conversion, engine build), s; null for torch",
    "build_s": "time to create the backend: ONNX Runtime session, engine deserialisation, torch model to device; s",
    "first_ms": "first (cold) call, ms; not in the latencies",
    "parity_psnr_db": "PSNR of this form's output against PyTorch FP32 on real photos (worst image); null = identical",
    "parity_max_abs_u8": "largest absolute difference against PyTorch FP32, in 8-bit levels",
    "parity_nonfinite": "NaN/Inf values in this form's outputs on the parity photos",
}

PARITY_FIELDS: dict[str, str] = {
    **_ID,
    **_FORM,
    "images": "names of the real photos compared (scikit-image samples)",
    "input_h": "LR crop height fed to both",
    "input_w": "LR crop width",
    "psnr_db": "PSNR against PyTorch FP32 on [0, 1] RGB, lowest over the images; null = identical",
    "max_abs_u8": "largest absolute difference, 8-bit levels (x255)",
    "mean_abs_u8": "mean absolute difference, 8-bit levels",
    "nonfinite": "count of NaN/Inf output values",
    "per_image": "[{image, psnr_db, max_abs_u8, nonfinite}]",
}

QUALITY_FIELDS: dict[str, str] = {
    **_ID,
    **_FORM,
    "dataset": "Set5 | Set14 | BSD100",
    "images": "images evaluated",
    "psnr": "mean PSNR (dB) on Y, border of `scale` pixels cropped",
    "ssim": "mean SSIM on Y, same crop",
    "published_method": "the paper row compared with, or null",
    "published_psnr": "published PSNR for that row, or null",
    "published_ssim": "published SSIM, or null",
    "delta_psnr": "psnr - published_psnr",
    "seconds": "wall time of the evaluation",
}

VIDEO_FIELDS: dict[str, str] = {
    **_ID,
    **_FORM,
    "clip": "source clip (path, or 'synthetic')",
    "frames": "frames processed",
    "input_h": "frame height in",
    "input_w": "frame width in",
    "output_h": "frame height out",
    "output_w": "frame width out",
    "pipeline_fps": "frames per second of the sr-run pipeline: decode, infer, encode (libx264)",
    "inference_fps": "frames per second of the model alone, same backend and frame size, batch 1",
    "encode_fps": "frames per second of PyAV libx264 encoding alone, at the output size",
    "decode_fps": "frames per second of decoding alone, at the input size",
    "pipeline_s": "wall time of the pipeline run, s",
    "serial_bound_fps": "fps if inference and encoding ran one after the other: 1 / (1/inference_fps + 1/encode_fps)",
    "pipeline_vs_min": "pipeline_fps / min(inference_fps, encode_fps): 1.0 = the slower stage fully hidden the other",
    "pipeline_vs_serial": "pipeline_fps / serial_bound_fps: above 1.0 = the stages overlap",
}

TILING_FIELDS: dict[str, str] = {
    **_ID,
    "backend": "the form every mode ran in (default:<form> = the runtime's automatic fast path)",
    "precision": "fp32 | fp16 | bf16",
    "device": "cpu | cuda",
    "input_h": "LR frame height",
    "input_w": "LR frame width",
    "mode": "whole (no tiling) | auto (sr-run's choice) | auto, 1/4 budget | tile 256",
    "tile": "tile size HxW the plan ran, or 'whole'",
    "tiles": "tiles per frame",
    "overlap": "overlap between tiles, LR pixels",
    "memory_budget_mib": "memory budget the automatic plan was given, MiB (null: this machine's default)",
    "computed_px_overhead_pct": "pixels the model computed beyond the frame's own (recomputed overlap), %",
    "runs": "timed calls",
    "p50_ms": "median wall time of Upscaler.upscale on the frame, ms",
    "overhead_pct": "p50_ms over the whole-frame row's, %",
    "max_abs_u8": "largest difference from the whole-frame output, 8-bit levels",
}

_SECTIONS = {"latency": LATENCY_FIELDS, "parity": PARITY_FIELDS, "quality": QUALITY_FIELDS, "video": VIDEO_FIELDS}
_OPTIONAL_SECTIONS = {"tiling": TILING_FIELDS}  # absent in results written before they existed
_TOP = ("schema_version", "environment", "config", "models", "latency", "parity", "quality", "video", "skipped")
_ENV_KEYS = ("cpu_model", "cpu_count", "gpu", "driver", "torch", "torch_cuda", "onnxruntime", "tensorrt", "commit")


def validate_results(data: dict[str, Any]) -> None:
    """Raise ValueError naming the first missing/unexpected key or wrong type in a results dict."""
    if not isinstance(data, dict):
        raise ValueError(f"results must be a JSON object, got {type(data).__name__}")
    for key in _TOP:
        if key not in data:
            raise ValueError(f"results lack the top-level key {key!r}; expected {', '.join(_TOP)}")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"schema_version {data['schema_version']!r}; this reader knows {SCHEMA_VERSION}")
    for key in _ENV_KEYS:
        if key not in data["environment"]:
            raise ValueError(f"environment lacks {key!r}")
    for section, fields in {**_SECTIONS, **_OPTIONAL_SECTIONS}.items():
        rows = data.get(section, [])
        if not isinstance(rows, list):
            raise ValueError(f"{section} must be a list of rows")
        for i, row in enumerate(rows):
            missing = [f for f in fields if f not in row]
            extra = [f for f in row if f not in fields]
            if missing or extra:
                raise ValueError(f"{section}[{i}]: missing fields {missing}, unexpected fields {extra}")
            if not isinstance(row["scale"], int) or row["precision"] not in ("fp32", "fp16", "bf16"):
                raise ValueError(f"{section}[{i}]: bad scale/precision {row['scale']!r}/{row['precision']!r}")
    for i, row in enumerate(data["latency"]):
        for key in ("p50_ms", "p95_ms", "p99_ms", "fps"):
            if not isinstance(row[key], (int, float)) or row[key] <= 0:
                raise ValueError(f"latency[{i}].{key} must be a positive number, got {row[key]!r}")
        if not row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]:
            raise ValueError(f"latency[{i}]: percentiles out of order {row['p50_ms']}, {row['p95_ms']}, {row['p99_ms']}")
    for i, row in enumerate(data["skipped"]):
        if "reason" not in row:
            raise ValueError(f"skipped[{i}] has no reason")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    validate_results(data)
    return data


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _weights_note(row: dict[str, Any]) -> str:
    return " (random weights)" if row.get("weights") == "random" else ""


def _parity_cell(psnr: float | None, max_abs: float | None) -> str:
    if max_abs is None:
        return "–"
    if psnr is None and max_abs == 0:
        return "identical"
    return f"{_fmt(psnr)} dB / {_fmt(max_abs)}"


def _environment_md(env: dict[str, Any]) -> str:
    gpu = env.get("gpu")
    lines = [
        f"- CPU: {env.get('cpu_model')} ({env.get('cpu_count')} logical cores, "
        f"{env.get('cpu_affinity')} usable, torch threads {env.get('torch_threads')}); RAM {env.get('memory_gib')} GiB",
        f"- GPU: {gpu} ({env.get('gpu_memory_gib')} GiB, capability {env.get('gpu_capability')}), driver {env.get('driver')}"
        if gpu
        else "- GPU: none",
        f"- torch {env.get('torch')} (CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}), "
        f"ONNX Runtime {env.get('onnxruntime')} {env.get('onnxruntime_providers')}, ONNX {env.get('onnx')}, "
        f"TensorRT {env.get('tensorrt')}, PyAV {env.get('av')}, Python {env.get('python')}",
        f"- commit {env.get('commit')}{' (dirty tree)' if env.get('dirty') else ''}; {env.get('platform')}; "
        f"{env.get('timestamp_utc')}",
    ]
    return "\n".join(lines)


def _default_path_rows(lat: list[dict[str, Any]]) -> list[list[Any]]:
    def key(r):
        return (r["model"], r["scale"], r["input_h"], r["input_w"], r["batch"], r["device"])

    torch_rows = {key(r): r for r in lat if r["backend"] == "torch" and r["precision"] == "fp32"}
    rows = []
    for r in lat:
        ref = torch_rows.get(key(r))
        if not r["backend"].startswith("default") or ref is None:
            continue
        rows.append([r["model"] + _weights_note(r), f"x{r['scale']}", f"{r['input_h']}x{r['input_w']}", r["batch"],
                     r["device"], f"{r['backend'].split(':', 1)[-1]} {r['precision']}", _fmt(ref["p50_ms"], 1),
                     _fmt(r["p50_ms"], 1), f"{ref['p50_ms'] / r['p50_ms']:.2f}x", _fmt(r["build_s"], 1)])
    return rows


def render_markdown(data: dict[str, Any]) -> str:
    """The report: environment, then one table per section, then what was skipped."""
    out = ["# sr-bench report", ""]
    if data.get("command"):
        out += [f"Command: `{data['command']}`" + (f" (wall time {data['wall_s']:.0f} s)" if data.get("wall_s") else ""), ""]
    out += ["## Environment", "", _environment_md(data["environment"]), ""]

    if data["models"]:
        out += ["## Models", ""]
        out.append(
            _table(
                ["model", "scale", "weights", "parameters", "source"],
                [
                    [m["model"], f"x{m['scale']}", m["weights"], f"{m.get('params', 0) / 1e3:.1f} k", m.get("source", "")]
                    for m in data["models"]
                ],
            )
        )
        out.append("")

    lat = data["latency"]
    if lat:
        mem_kinds = sorted({r["mem_kind"] for r in lat if r.get("mem_kind")})
        out += [
            "## Latency",
            "",
            "Milliseconds per call (one call = one batch) after one cold call and the warm-up calls (`warmup` in "
            "the JSON); fps = batch x 1000 / p50. Export s: making the artifact with sr_export (ONNX export and "
            "slim, FP16 conversion, engine build); build s: creating the backend (session, engine load); first ms: "
            "the cold first call. Neither is in the percentiles. Parity: PSNR / max abs difference (8-bit levels) "
            f"against PyTorch FP32 on real photos. Peak memory: {', '.join(mem_kinds)} (defined in "
            "benchmarks/common.py `PeakMemory`).",
            "",
        ]
        rows = []
        for r in lat:
            rows.append(
                [
                    r["model"] + _weights_note(r),
                    f"x{r['scale']}",
                    f"{r['input_h']}x{r['input_w']}",
                    r["backend"],
                    r["precision"],
                    r["device"],
                    r["batch"],
                    r["runs"],
                    _fmt(r["p50_ms"], 1),
                    _fmt(r["p95_ms"], 1),
                    _fmt(r["p99_ms"], 1),
                    _fmt(r["fps"], 2),
                    _fmt(r["peak_mem_mib"], 0),
                    _fmt(r["export_s"], 1),
                    _fmt(r["build_s"], 2),
                    _fmt(r["first_ms"], 1),
                    _parity_cell(r["parity_psnr_db"], r["parity_max_abs_u8"]),
                    _fmt(r["parity_nonfinite"]),
                ]
            )
        out.append(
            _table(
                [
                    "model", "scale", "input HxW", "backend", "precision", "device", "batch", "runs",
                    "p50 ms", "p95 ms", "p99 ms", "fps", "peak MiB", "export s", "build s", "first ms", "parity PSNR / max abs",
                    "NaN/Inf",
                ],
                rows,
            )
        )
        out.append("")

    default_rows = _default_path_rows(lat)
    if default_rows:
        out += [
            "## Default path",
            "",
            "The runtime's default (`sr-run`, `Upscaler` with backend auto: the fastest parity-checked form, built "
            "once and cached) against PyTorch FP32 eager on the same inputs, in this run. Build s: the default "
            "path's first start (export, parity gate and probe on a cold cache; a cache hit is well under a second).",
            "",
            _table(["model", "scale", "input HxW", "batch", "device", "default form", "torch FP32 p50 ms",
                    "default p50 ms", "speed-up", "build s"], default_rows),
            "",
        ]

    par = data["parity"]
    if par:
        out += [
            "## Parity against PyTorch FP32",
            "",
            "Same LR crops of real photos through each form; PSNR on [0, 1] RGB (worst image), differences in 8-bit levels.",
            "",
        ]
        out.append(
            _table(
                ["model", "scale", "backend", "precision", "device", "images", "crop", "PSNR dB", "max abs", "mean abs", "NaN/Inf"],
                [
                    [
                        r["model"] + _weights_note(r), f"x{r['scale']}", r["backend"], r["precision"], r["device"],
                        len(r["images"]), f"{r['input_h']}x{r['input_w']}",
                        "identical" if r["psnr_db"] is None and r["max_abs_u8"] == 0 else _fmt(r["psnr_db"]),
                        _fmt(r["max_abs_u8"], 3), _fmt(r["mean_abs_u8"], 4), r["nonfinite"],
                    ]
                    for r in par
                ],
            )
        )
        out.append("")

    qual = data["quality"]
    if qual:
        out += [
            "## Quality",
            "",
            "PSNR/SSIM on the Y channel with a border of `scale` pixels cropped (MATLAB bicubic degradation), "
            "beside the published figure for the paper row named.",
            "",
        ]
        out.append(
            _table(
                ["model", "scale", "form", "dataset", "images", "PSNR", "SSIM", "published (row)", "Δ PSNR"],
                [
                    [
                        r["model"], f"x{r['scale']}", f"{r['backend']} {r['precision']} {r['device']}", r["dataset"],
                        r["images"], _fmt(r["psnr"]), _fmt(r["ssim"], 4),
                        f"{_fmt(r['published_psnr'])}/{_fmt(r['published_ssim'], 4)} ({r['published_method']})"
                        if r["published_method"]
                        else "–",
                        _fmt(r["delta_psnr"]),
                    ]
                    for r in qual
                ],
            )
        )
        out.append("")

    vid = data["video"]
    if vid:
        out += [
            "## Video, end to end",
            "",
            "Pipeline = the sr-run video path (decode, upscale, libx264 encode); inference = the model alone on the "
            "same frames; encode = libx264 alone at the output size; decode = decoding alone.",
            "",
        ]
        out.append(
            _table(
                ["model", "scale", "backend", "precision", "clip", "frames", "in", "out",
                 "pipeline fps", "inference fps", "encode fps", "decode fps", "serial bound fps",
                 "pipeline / min", "pipeline / serial"],
                [
                    [
                        r["model"] + _weights_note(r), f"x{r['scale']}", r["backend"], r["precision"],
                        Path(str(r["clip"])).name, r["frames"], f"{r['input_w']}x{r['input_h']}",
                        f"{r['output_w']}x{r['output_h']}", _fmt(r["pipeline_fps"]), _fmt(r["inference_fps"]),
                        _fmt(r["encode_fps"]), _fmt(r["decode_fps"]), _fmt(r.get("serial_bound_fps")),
                        _fmt(r.get("pipeline_vs_min")), _fmt(r.get("pipeline_vs_serial")),
                    ]
                    for r in vid
                ],
            )
        )
        out.append("")

    tiling = data.get("tiling") or []
    if tiling:
        out += [
            "## Tiling",
            "",
            "The same frame through the Upscaler whole and tiled, one backend for every mode: auto = what sr-run "
            "plans from this machine's free memory (the whole frame when it fits); 1/4 budget = the plan on a "
            "quarter of that memory; overhead = wall time over the whole frame's; diff = largest difference "
            "from the whole-frame output.",
            "",
            _table(
                ["model", "scale", "backend", "precision", "in", "mode", "tile", "tiles", "recomputed px",
                 "p50 ms", "overhead", "max diff (levels)"],
                [
                    [
                        r["model"] + _weights_note(r), f"x{r['scale']}", r["backend"], r["precision"],
                        f"{r['input_w']}x{r['input_h']}", r["mode"], r["tile"], r["tiles"],
                        f"{_fmt(r['computed_px_overhead_pct'], 1)}%", _fmt(r["p50_ms"], 1),
                        f"{r['overhead_pct']:+.1f}%" if r["overhead_pct"] is not None else "–",
                        _fmt(r["max_abs_u8"], 0),
                    ]
                    for r in tiling
                ],
            ),
            "",
        ]

    if data["skipped"]:
        out += ["## Not measured", ""]
        for s in data["skipped"]:
            what = " ".join(str(s[k]) for k in ("stage", "model", "scale", "backend", "precision", "dataset") if s.get(k))
            out.append(f"- {what}: {s['reason']}")
        out.append("")

    plots = data.get("plots") or []
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(out)
