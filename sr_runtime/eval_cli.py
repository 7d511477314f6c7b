"""sr-eval: PSNR/SSIM of a model (or bicubic) on a folder of HR images, with the literature's protocol.

    sr-eval /path/to/Set5 --scale 4 --bicubic
    sr-eval /path/to/Set5 --scale 4 --model edsr --json
    sr-eval /path/to/Set5 --scale 4 --model runs/edsr_x4_20240101-120000/best.safetensors --device cuda
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from sr_runtime.evaluate import EvalResult, evaluate_folder, load_model
from sr_runtime.failures import add_debug_argument, run_command

__all__ = ["main", "build_parser", "format_table"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sr-eval",
        description=(
            "Evaluate super-resolution on a folder of HR images: HR cropped to a multiple of the scale, "
            "LR by MATLAB bicubic (uint8), PSNR/SSIM on Y with a scale-pixel border crop."
        ),
    )
    parser.add_argument("data_dir", help="folder of HR images (e.g. Set5)")
    parser.add_argument("--scale", type=int, required=True, choices=range(1, 17), metavar="S", help="upscaling factor")
    method = parser.add_mutually_exclusive_group(required=True)
    method.add_argument("--model", help="model name (its best checkpoint by recorded validation score: shipped "
                        "weights, or a training run that beats them on the same set) or checkpoint path")
    method.add_argument("--bicubic", action="store_true", help="evaluate MATLAB bicubic upscaling (the baseline)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to compute (default: cpu)")
    parser.add_argument("--runs-dir", default="runs", help="where to look for trained models (default: runs)")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch"),
                        help="auto: the form sr-run uses (fastest parity-checked, cached); torch: PyTorch eager "
                             "(default: auto)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), help="fp32 forces full precision on the default path")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each image to stderr")
    add_debug_argument(parser)
    return parser


def format_table(result: EvalResult) -> str:
    """Per-image PSNR/SSIM and their means, as fixed-width text."""
    width = max([len("mean")] + [len(s.name) for s in result.per_image])
    lines = [
        f"{result.method} x{result.scale} on {result.data_dir}: {result.images} images, "
        f"Y channel, {result.scale}-pixel border crop",
        f"{'image':<{width}}  {'PSNR (dB)':>9}  {'SSIM':>6}",
    ]
    lines += [f"{s.name:<{width}}  {s.psnr:9.4f}  {s.ssim:6.4f}" for s in result.per_image]
    lines.append(f"{'mean':<{width}}  {result.psnr:9.4f}  {result.ssim:6.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr, format="%(levelname)s: %(message)s"
    )
    return run_command("sr-eval", lambda: _main(args), debug=args.debug, interrupted="interrupted; nothing was written")


def _main(args: argparse.Namespace) -> int:
    model, method, checkpoint = None, "bicubic", None
    if args.model:
        model, method, checkpoint = load_model(args.model, args.scale, device=args.device, runs_dir=args.runs_dir,
                                               backend=args.backend, precision=args.precision)
    result = evaluate_folder(
        args.data_dir,
        args.scale,
        model=model,
        device=args.device,
        method=method,
        checkpoint=str(checkpoint) if checkpoint else None,
    )
    if args.json:
        out = result.to_dict()
        out["model"] = args.model
        print(json.dumps(out))
    else:
        print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
