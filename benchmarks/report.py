"""The results schema, its validation, and JSON -> Markdown tables.

``results.json`` (``schema_version`` 1) holds, beside ``environment`` and ``config``, four lists of
flat rows: ``latency``, ``parity``, ``quality`` and ``video``, and ``skipped`` (what was not measured and
why); optionally ``tiling`` rows and ``gallery`` (the crops of report.html). The fields of each row
are listed below with their meaning; a field that could not be measured is ``null`` (JSON has no
NaN/Inf: an output identical to the reference has PSNR ``null`` and ``max_abs_u8`` 0).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from benchmarks.tables import environment_lines, report_tables, skipped_lines

__all__ = [
    "SCHEMA_VERSION",
    "LATENCY_FIELDS",
    "PARITY_FIELDS",
    "QUALITY_FIELDS",
    "VIDEO_FIELDS",
    "TILING_FIELDS",
    "GALLERY_FIELDS",
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

_TILE = {
    "label": "what the caption names: HR, bicubic, or model backend precision",
    "model": "hr | bicubic | registry name",
    "backend": "the form's backend (null for HR and bicubic)",
    "precision": "fp32 | fp16 | bf16 (null for HR and bicubic)",
    "weights": "as in the other rows (null for HR and bicubic)",
    "psnr": "PSNR of the whole image under the quality protocol (Y, border cropped); null for HR",
    "ssim": "SSIM of the whole image, same protocol; null for HR",
    "file": "the crop, PNG, relative to the results folder",
}

GALLERY_FIELDS: dict[str, str] = {
    "dataset": "Set5 | Set14 | BSD100",
    "image": "file name (stem) of the HR image",
    "scale": "integer upscaling factor",
    "box": "[y, x, h, w] of the window, HR pixels of the image cropped to a multiple of scale",
    "zoom": "nearest-neighbour enlargement in report.html",
    "tiles": "one crop per method: HR, bicubic, then each measured form: {" + ", ".join(_TILE) + ", crop_psnr "
    "(PSNR of the crop against HR's crop, Y; null for HR)}",
}
"""``gallery.panels``: the crops report.html shows side by side, one panel per image (benchmarks.gallery).
``gallery.slider`` (or null) holds dataset, image, scale, box, zoom and ``before`` (bicubic) and ``after``
(the best model on that image), each a tile without crop_psnr."""

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
    if data.get("gallery") is not None:
        _validate_gallery(data["gallery"])


def _validate_gallery(gallery: Any) -> None:
    def check(where: str, item: Any, fields) -> None:
        keys = set(item) if isinstance(item, dict) else set()
        if keys != set(fields):
            raise ValueError(f"{where}: missing fields {sorted(set(fields) - keys)}, "
                             f"unexpected fields {sorted(keys - set(fields))}")

    if not isinstance(gallery, dict) or not isinstance(gallery.get("panels"), list):
        raise ValueError("gallery must be an object with a list of panels")  # noqa: TRY004 (schema faults are ValueError)
    for i, panel in enumerate(gallery["panels"]):
        check(f"gallery.panels[{i}]", panel, GALLERY_FIELDS)
        for j, tile in enumerate(panel["tiles"]):
            check(f"gallery.panels[{i}].tiles[{j}]", tile, [*_TILE, "crop_psnr"])
    slider = gallery.get("slider")
    if slider is not None:
        check("gallery.slider", slider, ["dataset", "image", "scale", "box", "zoom", "before", "after"])
        for side in ("before", "after"):
            check(f"gallery.slider.{side}", slider[side], _TILE)


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    validate_results(data)
    return data


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(data: dict[str, Any]) -> str:
    """The report: environment, then one table per section (:func:`benchmarks.tables.report_tables`),
    then what was skipped and the plots."""
    out = ["# sr-bench report", ""]
    if data.get("command"):
        out += [f"Command: `{data['command']}`" + (f" (wall time {data['wall_s']:.0f} s)" if data.get("wall_s") else ""), ""]
    out += ["## Environment", "", "\n".join(f"- {line}" for line in environment_lines(data["environment"])), ""]
    for table in report_tables(data):
        out += [f"## {table.title}", ""] + ([table.intro, ""] if table.intro else [])
        out += [_table(table.header, table.rows), ""]
    if data["skipped"]:
        out += ["## Not measured", ""] + [f"- {line}" for line in skipped_lines(data["skipped"])] + [""]
    plots = data.get("plots") or []
    if plots:
        out += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(out)
