"""``sr-export``: checkpoint -> ONNX (FP32, FP16) -> TensorRT engine, verifying after every step.

    sr-export --model fsrcnn --scale 4
    sr-export --model edsr --fp16 --format onnx,engine --max-shape 544x960
    sr-export --model runs/edsr_x4_20240101-120000/best.safetensors --out exports/edsr_x4

This module parses arguments and prints; the pipeline is :func:`sr_export.pipeline.run_export`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from sr_export.pipeline import DEFAULT_SCALE, FORMATS, ExportRequest, ExportResult, run_export
from sr_runtime.export.onnx import DEFAULT_OPSET
from sr_runtime.failures import add_debug_argument, run_command
from sr_runtime.spec import parse_hw

__all__ = ["ExportRequest", "ExportResult", "run_export", "build_parser", "main", "FORMATS", "DEFAULT_SCALE"]

log = logging.getLogger("sr_export")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-export",
        description="Export a super-resolution checkpoint to ONNX (FP32/FP16) and TensorRT, "
        "verifying every artifact against PyTorch FP32 on real images.",
    )
    p.add_argument("--model", required=True, help="model name (e.g. edsr, fsrcnn: its best checkpoint by recorded validation "
                   "score, shipped or trained) or a checkpoint .safetensors path")
    p.add_argument(
        "--scale", type=int, help=f"upscaling factor (default for a name: {DEFAULT_SCALE}; a path knows its own)"
    )
    p.add_argument(
        "--fp16", action="store_true", help="also write an FP16 ONNX (FP32 I/O); the engine is built from it"
    )
    p.add_argument("--fp16-io", action="store_true", help="with --fp16: FP16 input/output instead of FP32")
    p.add_argument(
        "--format", help="comma-separated: onnx,engine (default: onnx, plus engine if TensorRT is installed)"
    )
    p.add_argument("--out", type=Path, help="export directory (default: exports/<name>_x<scale>)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--batch", type=int, default=1, help="TensorRT profile: opt and max batch (default 1)")
    p.add_argument("--min-shape", help="TensorRT profile: smallest LR input HxW (default 32x32)")
    p.add_argument("--opt-shape", help="TensorRT profile: LR input HxW to tune for (default 270x480)")
    p.add_argument("--max-shape", help="TensorRT profile: largest LR input HxW (default 1088x1920, lowered to fit)")
    p.add_argument("--workspace", type=float, default=4.0, help="TensorRT workspace limit in GiB (default 4)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="training runs searched for a model name")
    p.add_argument("--cache-dir", type=Path, help="TensorRT timing and engine cache "
                   "(default: tensorrt/ in $SR_RUNTIME_CACHE or ~/.cache/sr_runtime)")
    p.add_argument("--parity-dir", type=Path, help="extra PNG images for the parity check (default: Set5 if found)")
    p.add_argument("--no-slim", action="store_true", help="skip onnxslim")
    p.add_argument("--triton", type=Path, metavar="DIR",
                   help="also write a Triton model repository into DIR (FP32 and FP16 ONNX, the engine where one "
                   "was built), configs checked with Triton's schema; implies --fp16")
    p.add_argument("-v", "--verbose", action="store_true", help="log every parity image")
    add_debug_argument(p)
    return p


_AS_GIVEN = ("model", "scale", "fp16", "fp16_io", "out", "opset", "batch", "runs_dir", "cache_dir", "triton")
"""ExportRequest fields that the option of the same name fills as it is."""
_SHAPES = ("min_shape", "opt_shape", "max_shape")
"""ExportRequest fields filled from an ``HxW`` option of the same name."""


def _request_from_args(args: argparse.Namespace) -> ExportRequest:
    fields = {name: getattr(args, name) for name in _AS_GIVEN}
    for name in _SHAPES:
        text = getattr(args, name)
        fields[name] = parse_hw(text, flag="--" + name.replace("_", "-")) if text else None
    if args.format is not None:
        fields["formats"] = tuple(f.strip() for f in args.format.split(",") if f.strip())
    if args.parity_dir is not None:
        fields["parity_dir"] = args.parity_dir
    return ExportRequest(workspace_gib=args.workspace, slim=not args.no_slim, **fields)


def _print_summary(result: ExportResult) -> None:
    manifest = result.manifest
    print(f"exported {manifest['name']} x{manifest['scale']} to {result.out_dir}")
    for entry in manifest["files"]:
        print(f"  {entry['name']:<40} {entry['bytes'] / 2**20:8.2f} MiB  sha256 {entry['sha256'][:16]}")
    by_artifact: dict[str, list[dict]] = {}
    for row in manifest["parity"]:
        by_artifact.setdefault(row["artifact"], []).append(row)
    print("parity against PyTorch FP32 (worst image):")
    for artifact, rows in by_artifact.items():
        worst = min(rows, key=lambda r: float(r["psnr_db"]))
        print(
            f"  {artifact:<48} {worst['psnr_db']!s:>8} dB  max |diff| {max(r['max_abs_levels'] for r in rows)}"
            f" levels  ({len(rows)} images)"
        )
    if manifest.get("triton"):
        print(f"triton repository {manifest['triton']['repository']}: {', '.join(manifest['triton']['models'])}"
              " (configs checked with Triton's schema; no Triton server was run)")
    print(f"total {manifest['timings_s'].get('total', 0):.1f} s; manifest {result.out_dir / 'export.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="sr-export: %(message)s", stream=sys.stderr)
    if args.verbose:
        logging.getLogger("sr_export").setLevel(logging.DEBUG)
    return run_command("sr-export", lambda: _main(args), debug=args.debug,
                       interrupted="interrupted; nothing was left half-written")


def _main(args: argparse.Namespace) -> int:
    _print_summary(run_export(_request_from_args(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
