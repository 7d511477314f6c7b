"""``sr-run``: upscale images, folders, globs and videos; ``sr-run --demo`` shows it working.

The only module of sr_runtime that prints or exits. Exit codes: 0 all done; 1 some inputs failed
(each reported on one line, the others done); 2 nothing could be done (bad arguments, model,
backend, or every input failed); 130 interrupted.

Examples::

    sr-run photo.jpg --scale 4                      # photo_x4.jpg beside it, best shipped model
    sr-run shots/ --recursive -o out/ --format png  # a folder tree into out/
    sr-run "raw/*.tif" --model runs/edsr_x2_*/best.safetensors --tile 256
    sr-run clip.mp4 --scale 2 --codec libx265 --crf 20 --pix-fmt yuv420p10le
    sr-run film.mkv --scale 2 --workers 2           # segments in 2 processes; rerun to resume
    sr-run film.mkv --scale 2 --ray auto            # segments on the Ray cluster of this machine
    sr-run img.png --model edsr_x4.engine           # TensorRT engine (backend implied)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from sr_runtime.errors import InputError, SRError
from sr_runtime.failures import add_debug_argument, check_writable_dir, run_command
from sr_runtime.options import RuntimeOptions

__all__ = ["main", "build_parser"]

log = logging.getLogger("sr_runtime.cli")

PROG = "sr-run"
FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp", "tif": ".tif", "tiff": ".tiff", "bmp": ".bmp"}
_DEMO_CROP = (slice(24, 216), slice(156, 348))
"""192 x 192 pixels of the astronaut's face: divisible by 2, 3 and 4, quick on a CPU."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Upscale images, folders, globs and videos with a super-resolution model.",
        epilog="Exit codes: 0 done, 1 some inputs failed (or a fault), 2 nothing done (error), 130 interrupted.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image/video files, folders or glob patterns")
    p.add_argument("--scale", type=int, help="upscaling factor (needed with a model name; read from model files)")
    p.add_argument(
        "--model",
        help="model name (edsr, fsrcnn, ...), checkpoint .safetensors, .onnx, .engine or OpenVINO .xml. "
        "Default: the best model for --scale by recorded Set5 PSNR. A name means its best checkpoint: the "
        "shipped weights, or a training run under --runs-dir whose score on the same validation set beats "
        "them (else one line names the run and how to use it: pass its path)",
    )
    p.add_argument("-o", "--output", help="output file (one input) or folder (default: beside each input)")
    g = p.add_argument_group("backend")
    g.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt", "openvino"))
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: the fastest available)")
    g.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), help="ONNX Runtime provider for .onnx models")
    prec = g.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="half precision (CUDA)")
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="single precision")
    prec.add_argument(
        "--bf16", dest="precision", action="store_const", const="bf16", help="bfloat16 (openvino backend, BF16 CPUs)"
    )
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model (torch backend; on a GPU the fast path then picks among the "
                   "compiled torch forms, FP16 channels-last and FP32)")
    g.add_argument("--cuda-graphs", action="store_true", help="replay CUDA graphs (torch backend, CUDA)")
    g.add_argument("--tile", type=int, help="tile side in input pixels; 0 turns tiling off (default: from free memory)")
    g.add_argument("--tile-overlap", type=int, help="overlap in input pixels (default: the model's receptive radius)")
    g.add_argument("--batch", type=int, help="tiles or frames per model call (default: 4 on CUDA, 1 on CPU)")
    g.add_argument("--list-backends", action="store_true", help="print the backends and devices available, then exit")
    g.add_argument("--cache-dir", help="where the fast form of a model is cached "
                   "(default: $SR_RUNTIME_CACHE or ~/.cache/sr_runtime; list or clear it with sr-cache)")
    g.add_argument("--no-cache", action="store_true", help="build the fast form for this run only; write no cache")
    f = p.add_argument_group("files")
    f.add_argument("--recursive", action="store_true", help="search folders (and ** globs) recursively")
    f.add_argument("--skip-existing", action="store_true", help="skip inputs whose output already exists")
    f.add_argument("--format", choices=sorted(FORMATS), help="image output format (default: the input's)")
    f.add_argument("--quality", type=int, help="JPEG/WebP quality 1-100 (default 95)")
    v = p.add_argument_group("video")
    v.add_argument("--codec", default="libx264", help="libx264 (default), libx265, h264_nvenc, hevc_nvenc, ...")
    v.add_argument("--crf", type=int, default=18, help="constant rate factor (NVENC: cq) (default 18)")
    v.add_argument("--preset", help="encoder preset (x264/x265: ultrafast..veryslow; NVENC: p1..p7)")
    v.add_argument("--pix-fmt", help="output pixel format, e.g. yuv420p, yuv420p10le (default: the input's)")
    v.add_argument(
        "--segment-seconds", type=float, default=6.0, metavar="S",
        help="video is done in segments of about S seconds, kept in .NAME.srjob/ until joined, so a crash "
        "costs one segment and the same command resumes (default 6; 0: one pass, no resume)",
    )
    v.add_argument("--restart", action="store_true", help="discard an unfinished video job and start afresh")
    w = p.add_argument_group("parallel")
    w.add_argument(
        "--workers", type=int, metavar="N",
        help="video segments (or the files of a folder) in N processes (default: one per GPU on multi-GPU machines, else 1)",
    )
    w.add_argument(
        "--ray", nargs="?", const="", metavar="ADDRESS",
        help="run segments/files as Ray tasks: a local Ray on this machine, or the cluster at ADDRESS "
        "('auto', 'ray://host:10001'); needs pip install 'sr-runtime[ray]' and storage all nodes share",
    )
    d = p.add_argument_group("demo")
    d.add_argument("--demo", action="store_true", help="upscale a sample photo and write a side-by-side comparison")
    d.add_argument("--compare", action="store_true",
                   help="also write OUTPUT_compare.png: where the input, bicubic-enlarged, and the output differ "
                   "most, side by side, enlarged so the pixels show (images only)")
    o = p.add_argument_group("output")
    o.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    o.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_debug_argument(o)
    return p


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format=f"{PROG}: %(message)s", stream=sys.stderr)


def _runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    return RuntimeOptions(backend=args.backend, device=args.device, precision=args.precision, provider=args.provider,
                          compile=args.compile, cuda_graphs=args.cuda_graphs, cache_dir=args.cache_dir,
                          use_cache=not args.no_cache)


def _upscaler_kwargs(args: argparse.Namespace) -> dict:
    """Upscaler's arguments for this run: the model, the tiling, and the runtime options as keywords
    (the process and Ray runners build one Upscaler per worker from them, each with its device)."""
    if args.model is None and args.scale is None:
        raise InputError("give --scale (the best shipped model for it is used) or --model")
    tiling = {"tile": args.tile, "tile_overlap": args.tile_overlap, "batch": args.batch}
    return {"model": args.model, "scale": args.scale, **tiling, **dataclasses.asdict(_runtime_options(args))}


def _make_upscaler(args: argparse.Namespace):
    from sr_runtime.upscaler import Upscaler

    kwargs = _upscaler_kwargs(args)
    return Upscaler(kwargs.pop("model"), **kwargs)


def _make_runner(args: argparse.Namespace, up):
    """Where video segments and folder files run: here, in worker processes, or on Ray."""
    from sr_runtime.video.runners import LocalRunner

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    # The workers load the file this process resolved the model to: a name resolved again could
    # find a newer training run, and the segments of one video would mix two models.
    kwargs = {**_upscaler_kwargs(args), "scale": up.scale, "model": str(up.model_file or args.model)}
    if args.ray is not None:
        from sr_runtime.video.runners import RayRunner

        return RayRunner(kwargs, address=args.ray or None, workers=args.workers)
    from sr_runtime.video.runners import ProcessRunner, default_workers

    workers = args.workers or default_workers(args.device)
    return ProcessRunner(kwargs, workers) if workers > 1 else LocalRunner(up)


def _video_options(args: argparse.Namespace, up, runner) -> dict:
    """Keyword arguments of sr_runtime.video.job.run_video for every video of this run."""
    from sr_runtime.atomic import sha256_file

    sha = sha256_file(up.model_file) if args.segment_seconds and up.model_file else None
    options = {k: getattr(args, k) for k in ("backend", "device", "precision", "provider", "tile", "tile_overlap")}
    return {
        "runner": runner,
        "model_sha256": sha,
        "options": options,
        "segment_seconds": args.segment_seconds,
        "restart": args.restart,
        "codec": args.codec,
        "crf": args.crf,
        "preset": args.preset,
        "pix_fmt": args.pix_fmt,
        "quiet": args.quiet,
    }


def _expand(inputs: list[str], recursive: bool) -> tuple[list[tuple[Path, Path]], list[str]]:
    """[(file, root)] in order, and one error message per input that yields nothing."""
    from sr_runtime.images import list_images
    from sr_runtime.video import is_video

    jobs: list[tuple[Path, Path]] = []
    errors: list[str] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        try:
            if path.is_file() and is_video(path):
                files = [path]
            else:
                files = list_images([item], recursive=recursive)
        except SRError as e:
            errors.append(str(e))
            continue
        root = path if path.is_dir() else None
        for file in files:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                jobs.append((file, root or file.parent))
    return jobs, errors


def _output_for(src: Path, root: Path, *, args: argparse.Namespace, scale: int, single: bool) -> Path:
    from sr_runtime.video import is_video

    video = is_video(src)
    suffix = src.suffix if video or not args.format else FORMATS[args.format]
    name = f"{src.stem}_x{scale}{suffix}"
    if args.output is None:
        return src.with_name(name)
    out = Path(args.output)
    if single and out.suffix and not out.is_dir():
        return out
    try:
        rel = src.parent.relative_to(root)
    except ValueError:
        rel = Path()
    return out / rel / name


def _run_files(args: argparse.Namespace) -> int:
    from sr_runtime.batch import FileTask, process_file
    from sr_runtime.progress import Progress
    from sr_runtime.video.runners import LocalRunner

    jobs, errors = _expand(args.inputs, args.recursive)
    for message in errors:
        _error(message)
    if not jobs:
        return 2
    if args.segment_seconds < 0:
        raise InputError(f"--segment-seconds must be >= 0, got {args.segment_seconds}")
    single = len(jobs) == 1 and len(args.inputs) == 1 and Path(args.inputs[0]).is_file()
    if args.output is not None:  # before the model loads: a read-only -o fails in a second, not after the work
        out = Path(args.output)
        check_writable_dir(out.parent if single and out.suffix and not out.is_dir() else out)
    done = skipped = 0
    failed = len(errors)
    with _make_upscaler(args) as up:
        runner = _make_runner(args, up)
        try:
            tasks = []
            for src, root in jobs:
                dst = _output_for(src, root, args=args, scale=up.scale, single=single)
                if args.skip_existing and dst.exists():
                    log.info("%s exists; skipped", dst)
                    skipped += 1
                    continue
                tasks.append((src, dst))
            video = _video_options(args, up, runner)
            if len(tasks) > 1 and not isinstance(runner, LocalRunner):
                # files side by side, one per worker; a video is a segmented job on its worker
                here = {**video, "runner": None, "quiet": True}
                items = [FileTask(str(s), str(d), args.quality, here) for s, d in tasks]
                runs = runner.map(process_file, items)
            else:
                items = [FileTask(str(s), str(d), args.quality, video) for s, d in tasks]
                runs = LocalRunner(up).map(process_file, items)
            with Progress("files", len(items), unit="file", disable=args.quiet or len(items) < 2) as bar:
                for _item, ok, value in runs:
                    if ok:
                        log.info("%s", value)
                        done += 1
                        if args.compare:
                            from sr_runtime.compare import compare_output

                            log.info("%s", compare_output(_item.src, _item.dst, up.scale))
                    else:
                        _error(str(value))
                        failed += 1
                    bar.update()
        finally:
            runner.close()
    if failed:
        log.warning("%d done, %d failed, %d skipped", done, failed, skipped)
        return 1 if done or skipped else 2
    if len(jobs) > 1:
        log.info("%d done, %d skipped", done, skipped)
    return 0


def _demo(args: argparse.Namespace) -> int:
    import numpy as np

    from sr_runtime.color import image_to_tensor, tensor_to_image
    from sr_runtime.images import write_image
    from sr_runtime.metrics import psnr
    from sr_runtime.resize import imresize, make_lr

    try:
        from skimage import data
    except ImportError as e:
        raise InputError("the demo photo comes from scikit-image: pip install scikit-image (or -e '.[dev]')") from e
    scale = args.scale or 4
    if args.model is None:
        from sr_runtime.zoo import default_model

        args.model = default_model(scale)  # InputError naming what ships when nothing does
    args.scale = scale
    out = check_writable_dir(Path(args.output or "demo_out"))
    hr_u8 = np.ascontiguousarray(data.astronaut()[_DEMO_CROP])
    hr = image_to_tensor(hr_u8)
    lr_u8 = tensor_to_image(make_lr(hr, scale))
    with _make_upscaler(args) as up:
        sr_u8 = up.upscale(lr_u8)
        described = up.backend.describe()
    bicubic_u8 = tensor_to_image(imresize(image_to_tensor(lr_u8), scale=scale).clamp(0, 1))
    db_model = float(psnr(image_to_tensor(sr_u8), hr, crop=scale)[0])
    db_bicubic = float(psnr(image_to_tensor(bicubic_u8), hr, crop=scale)[0])
    gap = np.full((hr_u8.shape[0], 4, 3), 255, np.uint8)
    side = np.concatenate([bicubic_u8, gap, sr_u8, gap, hr_u8], axis=1)
    paths = [
        write_image(out / "astronaut_lr.png", lr_u8),
        write_image(out / f"astronaut_x{scale}.png", sr_u8),
        write_image(out / f"astronaut_x{scale}_compare.png", side),
    ]
    print(f"model:    {described}")
    print(f"input:    {lr_u8.shape[1]}x{lr_u8.shape[0]} (the {hr_u8.shape[1]}x{hr_u8.shape[0]} crop shrunk x{scale})")
    print(f"PSNR (Y): bicubic {db_bicubic:.2f} dB, model {db_model:.2f} dB ({db_model - db_bicubic:+.2f} dB)")
    print(f"compare:  {paths[2]}  (left to right: bicubic | model | original)")
    print(f"wrote:    {', '.join(str(p) for p in paths[:2])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args)
    return run_command(PROG, lambda: _main(parser, args), debug=args.debug,
                       interrupted="error: interrupted; no partial output was kept")


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.list_backends:
        from sr_runtime.backends import available_backends

        for name, options in available_backends().items():
            print(f"{name:12s} {', '.join(options) if options else 'not available'}")
        return 0
    if args.demo:
        return _demo(args)
    if not args.inputs:
        parser.error("give at least one INPUT (or --demo)")
    if args.format and args.output and Path(args.output).suffix and len(args.inputs) == 1:
        raise InputError("give either --format or an output file name with an extension, not both")
    return _run_files(args)


if __name__ == "__main__":
    sys.exit(main())
