"""``sr-bench``: latency beside parity and quality, per model, backend and precision.

    sr-bench --quick --out bench_out                 # a few minutes on a laptop CPU
    sr-bench --models edsr,fsrcnn --scales 2,4 --backends torch,onnxruntime,tensorrt --precisions fp32,fp16
    sr-bench --sizes 270x480,1080x1920 --batch 1,4 --runs 50 --no-video --out bench_h100

Writes ``OUT/results.json`` (schema: :mod:`benchmarks.report`), ``OUT/report.md``, PNG plots, and
``OUT/report.html``: the same tables and plots with side-by-side crops and a before/after slider
(self-contained; the crops are also in ``OUT/crops``).

    sr-bench coverage --quick --size 64x96 --out coverage_quick   # community-model table (benchmarks.coverage)
    sr-bench coverage --families compact,span --runs 3            # published hyperparameters, LR 270x480

This module is the only one in ``benchmarks`` that prints or exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from benchmarks.common import REPO_ROOT, environment, json_safe, write_json
from sr_runtime.atomic import atomic_write_text
from sr_runtime.errors import ConfigError, InputError
from sr_runtime.failures import add_debug_argument, check_writable_dir, run_command

__all__ = ["PRESETS", "build_coverage_parser", "build_parser", "coverage_main", "main", "run_bench"]

log = logging.getLogger("benchmarks")

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
"""``../shared/data`` relative to the checkout."""


@dataclass(frozen=True)
class Preset:
    models: tuple[str, ...]
    scales: tuple[int, ...]
    sizes: tuple[str, ...]
    backends: tuple[str, ...]
    precisions: tuple[str, ...]
    batch: tuple[int, ...]
    runs: int
    warmup: int
    datasets: tuple[str, ...]
    limits: tuple[str, ...]
    video_frames: int
    video_forms: str
    parity_images: int
    max_row_seconds: float
    tiling_size: str


PRESETS: dict[str, Preset] = {
    # Small models, two sizes, CPU-friendly: a few minutes on 2 cores.
    "quick": Preset(
        models=("fsrcnn", "espcn", "edsr"),
        scales=(4,),
        sizes=("128x128", "270x480"),
        backends=("torch", "onnxruntime"),
        precisions=("fp32", "fp16"),
        batch=(1,),
        runs=5,
        warmup=1,
        datasets=("Set5",),
        limits=("edsr=128x128",),
        video_frames=10,
        video_forms="first",
        parity_images=2,
        max_row_seconds=20.0,
        tiling_size="270x480",
    ),
    # Everything, for a GPU machine: every model, the standard sizes up to 1080p input.
    "full": Preset(
        models=("srcnn", "fsrcnn", "espcn", "vdsr", "edsr", "edsr-large", "red10", "red30", "drrn", "srresnet"),
        scales=(2, 3, 4),
        sizes=("128x128", "270x480", "540x960", "1080x1920"),
        backends=("torch", "onnxruntime", "tensorrt"),
        precisions=("fp32", "fp16"),
        batch=(1, 4),
        runs=50,
        warmup=10,
        datasets=("Set5", "Set14", "BSD100"),
        limits=(),
        video_frames=100,
        video_forms="all",
        parity_images=3,
        max_row_seconds=120.0,
        tiling_size="720x1280",
    ),
}


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parse_hw(text: str) -> tuple[int, int]:
    """``"HxW"`` for argparse: :func:`sr_runtime.spec.parse_hw`, its error as argparse's."""
    from sr_runtime.errors import ConfigError
    from sr_runtime.spec import parse_hw

    try:
        return parse_hw(text, flag="size")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-bench",
        description="Benchmark super-resolution models: latency (p50/p95/p99, fps, peak memory) per model x scale x "
        "input size x backend x precision x batch, parity against PyTorch FP32, PSNR/SSIM on Set5/Set14/BSD100 "
        "beside the published numbers, and end-to-end video fps. Writes OUT/results.json, OUT/report.md, OUT/*.png "
        "and OUT/report.html (the tables and plots with side-by-side crops; self-contained).",
        epilog="Options left out take the preset's value (--quick, else the full preset); list values are "
        "comma-separated. Models without trained or shipped weights run with random weights, marked as such, "
        "and get no quality figures.",
    )
    p.add_argument("--quick", action="store_true", help="small models, two sizes, CPU backends, few runs, Set5 only")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder (default: bench_out)")
    p.add_argument("--models", type=_csv, help="registry names or checkpoint paths, e.g. fsrcnn,edsr")
    p.add_argument("--scales", type=lambda s: [int(v) for v in _csv(s)], help="e.g. 2,4")
    p.add_argument("--sizes", type=lambda s: [_parse_hw(v) for v in _csv(s)], help="LR input sizes HxW, e.g. 128x128,270x480")
    p.add_argument("--limit", action="append", metavar="MODEL=HxW",
                   help="largest input size for one model (repeatable), e.g. edsr=270x480")
    p.add_argument("--backends", type=_csv, help="torch,onnxruntime,tensorrt,default (default: the runtime's "
                   "automatic fast path, side by side with the others)")
    p.add_argument("--precisions", type=_csv, help="fp32,fp16")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when available, else cpu)")
    p.add_argument("--batch", type=lambda s: [int(v) for v in _csv(s)], help="batch sizes, e.g. 1,4")
    p.add_argument("--runs", type=int, help="timed calls per row")
    p.add_argument("--warmup", type=int, help="untimed calls after the first (cold) one")
    p.add_argument("--max-row-seconds", type=float,
                   help="cap on one row's timed calls: fewer runs when the first call says they would take longer")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and ONNX Runtime (default: torch's default, which ONNX Runtime is given too)")
    p.add_argument("--parity-size", type=_parse_hw, default=(64, 96), help="LR crop size of the parity photos (default 64x96)")
    p.add_argument("--parity-images", type=int, help="how many scikit-image photos for parity (1-3)")
    p.add_argument("--data", type=Path, default=None,
                   help=f"folder holding Set5/Set14/BSD100 (default: {DEFAULT_DATA} when present)")
    p.add_argument("--datasets", type=_csv, help="Set5,Set14,BSD100")
    p.add_argument("--no-quality", action="store_true", help="skip PSNR/SSIM on the datasets")
    p.add_argument("--crop-images", type=int, default=3, metavar="N",
                   help="images per dataset in report.html's side-by-side crops (default 3; 0: none)")
    p.add_argument("--video", default=None,
                   help="clip for the end-to-end figure: a video file, or 'synthetic' "
                   "(default: DATA/video/chaplin.mp4 when present, else synthetic)")
    p.add_argument("--video-frames", type=int, help="frames of the clip to use")
    p.add_argument("--video-size", type=_parse_hw, default=None, help="resize the clip's frames to HxW first")
    p.add_argument("--video-model", default=None, help="model for the video figure (default: the first of --models)")
    p.add_argument("--video-forms", choices=("first", "all"), help="video on the first form only (torch) or every form")
    p.add_argument("--no-video", action="store_true", help="skip the end-to-end video figure")
    p.add_argument("--tiling-size", type=_parse_hw,
                   help="LR frame HxW for the tiling rows: whole vs automatic vs fixed tiles (default: the largest of "
                        "--sizes when given, else the preset's: full 720x1280)")
    p.add_argument("--tiling-model", default=None, help="model for the tiling rows (default: the first of --models)")
    p.add_argument("--no-tiling", action="store_true", help="skip the tiling rows")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where trained checkpoints are looked up")
    p.add_argument("--random-weights", action="store_true",
                   help="benchmark randomly initialised models even where weights exist (latency and parity only)")
    p.add_argument("--keep-artifacts", action="store_true", help="keep exported ONNX/engine files under OUT/artifacts")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_debug_argument(p)
    return p


def _resolve(args: argparse.Namespace) -> argparse.Namespace:
    preset_name = "quick" if args.quick else "full"
    preset = PRESETS[preset_name]
    args.preset = preset_name
    for key in ("models", "scales", "backends", "precisions", "batch", "runs", "warmup", "datasets",
                "video_frames", "video_forms", "parity_images", "max_row_seconds"):
        if getattr(args, key) is None:
            value = getattr(preset, key)
            setattr(args, key, list(value) if isinstance(value, tuple) else value)
    sizes_given = args.sizes is not None
    if args.sizes is None:
        args.sizes = [_parse_hw(s) for s in preset.sizes]
    if args.tiling_size is None:  # explicit --sizes bound the tiling rows too (a 16x24 run must not tile 720p)
        args.tiling_size = (max(args.sizes, key=lambda hw: hw[0] * hw[1]) if sizes_given
                            else _parse_hw(preset.tiling_size))
    limits = list(preset.limits) if args.limit is None else args.limit
    args.limits = {}
    for item in limits:
        name, sep, hw = item.partition("=")
        if not sep:
            raise ConfigError(f"--limit {item!r} is not MODEL=HxW")
        args.limits[name.strip()] = _parse_hw(hw)
    if args.data is None and DEFAULT_DATA.is_dir():
        args.data = DEFAULT_DATA
    elif args.data is not None and not args.data.is_dir():
        raise InputError(f"--data {args.data}: folder not found; give the folder holding Set5/Set14/BSD100")
    if args.video not in (None, "synthetic") and not Path(args.video).is_file():
        raise InputError(f"--video {args.video}: file not found; give a video file, or 'synthetic'")
    for model in args.models:
        if (Path(model).suffix or os.sep in model) and not Path(model).is_file():  # a path, not a registry name
            raise InputError(f"--models {model}: checkpoint not found")
    if args.runs < 1 or args.warmup < 0 or any(b < 1 for b in args.batch):
        raise ConfigError("--runs >= 1, --warmup >= 0 and --batch >= 1 are required")
    for prec in args.precisions:
        if prec not in ("fp32", "fp16"):
            raise ConfigError(f"precision {prec!r}; valid: fp32, fp16")
    for backend in args.backends:
        if backend not in ("torch", "onnxruntime", "tensorrt", "default"):
            raise ConfigError(f"backend {backend!r}; valid: torch, onnxruntime, tensorrt, default")
    return args


def _device(requested: str | None) -> str:
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def _forms(args, device: str):
    from benchmarks.bench_backends import Form

    forms = [Form(b, p, device) for b in args.backends if b != "default" for p in args.precisions]
    if "default" in args.backends:  # one form: the default path picks its own precision
        forms.append(Form("default", "auto", device))
    return forms


def _unavailable(form, device: str) -> str | None:
    """Why ``form`` cannot run on this machine at all (checked before exporting anything), or None."""
    from sr_runtime.backends import available_backends

    have = available_backends()
    if form.backend == "tensorrt":
        if not have["tensorrt"]:
            return "TensorRT needs the tensorrt package and a CUDA GPU; not available here"
        if device == "cpu":
            return "TensorRT runs on CUDA devices only"
    if form.backend == "onnxruntime":
        need = "cpu" if device == "cpu" else "cuda"
        if need not in have["onnxruntime"]:
            return f"ONNX Runtime provider {need!r} is not available (have: {', '.join(have['onnxruntime']) or 'none'})"
    if form.backend == "torch" and form.precision == "fp16" and device == "cpu":
        return "the torch backend runs FP16 on CUDA only"
    return None


def _sizes_for(model: str, sizes, limits) -> list[tuple[int, int]]:
    cap = limits.get(model)
    if cap is None:
        return list(sizes)
    kept = [s for s in sizes if s[0] * s[1] <= cap[0] * cap[1] and s[0] <= cap[0] and s[1] <= cap[1]]
    return kept or [cap]


def _profile(sizes: list[tuple[int, int]], batches: list[int], spec) -> dict:
    """TensorRT profile covering every benchmarked size and the quality sets' LR images."""
    from benchmarks.bench_backends import align_hw

    aligned = [align_hw(h, w, spec) for h, w in sizes]
    max_h = max(max(h for h, _ in aligned), 360)
    max_w = max(max(w for _, w in aligned), 360)
    min_h = min(min(h for h, _ in aligned), 32)
    min_w = min(min(w for _, w in aligned), 32)
    return {
        "min_shape": align_hw(min_h, min_w, spec),
        "opt_shape": aligned[0],
        "max_shape": align_hw(max_h, max_w, spec),
        "batch": max(batches),
    }


def run_bench(args: argparse.Namespace, command: str) -> dict:
    """Run everything ``args`` asks for; returns the results dict (schema: benchmarks.report). The crops
    of report.html are written into ``args.out`` as they are cut."""
    import torch

    from benchmarks.gallery import Gallery

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = args.threads or torch.get_num_threads()
    device = _device(args.device)
    start = time.perf_counter()
    results = _new_results(args, command, device, threads)
    forms = _usable_forms(args, device, results["skipped"])
    quality_dirs = _quality_datasets(args, results["skipped"])
    gallery = Gallery(args.crop_images) if quality_dirs and args.crop_images > 0 else None
    with tempfile.TemporaryDirectory(prefix="sr-bench-") as tmp:
        plan = _Plan(forms, quality_dirs, Path(tmp), gallery, threads)
        _bicubic_rows(results, quality_dirs, args, gallery)
        for name in args.models:
            for scale in args.scales:
                _bench_one(results, name, scale, plan, args)
    if gallery is not None:
        results["gallery"] = gallery.write(Path(args.out))
    results["wall_s"] = time.perf_counter() - start
    return results


@dataclass
class _Plan:
    """What every model of one run shares."""

    forms: list
    quality_dirs: list[str]
    workdir: Path
    gallery: Any
    threads: int
    once: set[str] = field(default_factory=set)
    """The stages that run for one model only (video, tiling), once done."""


def _new_results(args: argparse.Namespace, command: str, device: str, threads: int) -> dict:
    """The results record before anything is measured: what was asked for, and where."""
    from benchmarks.report import SCHEMA_VERSION

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "sr-bench",
        "command": command,
        "preset": args.preset,
        "config": {
            "models": args.models, "scales": args.scales, "sizes": [f"{h}x{w}" for h, w in args.sizes],
            "limits": {k: f"{h}x{w}" for k, (h, w) in args.limits.items()}, "backends": args.backends,
            "precisions": args.precisions, "device": device, "batch": args.batch, "runs": args.runs,
            "warmup": args.warmup, "max_row_seconds": args.max_row_seconds, "threads": threads,
            "parity_size": f"{args.parity_size[0]}x{args.parity_size[1]}", "parity_images": args.parity_images,
            "data": str(args.data) if args.data else None, "datasets": args.datasets,
            "quality": not args.no_quality, "video": None if args.no_video else (args.video or "default"),
            "video_frames": args.video_frames, "random_weights": args.random_weights,
            "tiling": None if args.no_tiling else f"{args.tiling_size[0]}x{args.tiling_size[1]}",
            "crop_images": args.crop_images,
        },
        "environment": environment(),
        "models": [],
        "latency": [],
        "parity": [],
        "quality": [],
        "video": [],
        "tiling": [],
        "skipped": [],
    }


def _usable_forms(args: argparse.Namespace, device: str, skipped: list[dict]) -> list:
    """The forms asked for that can run here; the others go to ``skipped`` with the reason."""
    forms = []
    for form in _forms(args, device):
        why = _unavailable(form, device)
        if why:
            skipped.append({"stage": "all", "backend": form.backend, "precision": form.precision, "reason": why})
            log.warning("skip %s: %s", form, why)
        else:
            forms.append(form)
    return forms


def _quality_datasets(args: argparse.Namespace, skipped: list[dict]) -> list[str]:
    """The datasets asked for that exist under ``args.data``; the others go to ``skipped``."""
    if args.no_quality:
        return []
    if args.data is None:
        skipped.append({"stage": "quality", "reason": f"no data folder (--data; {DEFAULT_DATA} not found)"})
        return []
    found = []
    for ds in args.datasets:
        if (Path(args.data) / ds).is_dir():
            found.append(ds)
        else:
            skipped.append({"stage": "quality", "dataset": ds, "reason": f"{Path(args.data) / ds} not found"})
    return found


def _bicubic_rows(results: dict, datasets: list[str], args: argparse.Namespace, gallery) -> None:
    """Bicubic on each dataset and scale, before any model: the gallery's crop windows come from it."""
    from benchmarks import bench_quality
    from sr_runtime.errors import SRError

    for ds in datasets:
        for scale in args.scales:
            try:
                results["quality"].append(bench_quality.bicubic_row(scale, args.data, ds, gallery))
            except SRError as e:
                results["skipped"].append({"stage": "quality", "model": "bicubic", "scale": scale, "dataset": ds,
                                           "reason": str(e)})


def _bench_one(results: dict, name: str, scale: int, plan: _Plan, args: argparse.Namespace) -> None:
    """One model at one scale through every stage: latency and parity, quality, video and tiling
    (for the first model only), and its artifacts kept when asked."""
    from benchmarks.bench_backends import bench_model, prepare_model
    from sr_runtime.errors import SRError

    skipped = results["skipped"]
    try:
        mut = prepare_model(name, scale, workdir=plan.workdir, runs_dir=args.runs_dir,
                            random_weights=args.random_weights)
    except SRError as e:
        skipped.append({"stage": "model", "model": name, "scale": scale, "reason": f"{type(e).__name__}: {e}"})
        log.warning("skip %s x%d: %s", name, scale, e)
        return
    results["models"].append(mut.record())
    sizes = _sizes_for(name, args.sizes, args.limits)
    forms = plan.forms
    latency, parity, skips, arts = bench_model(
        mut, forms, sizes=sizes, batches=args.batch, warmup=args.warmup, runs=args.runs, workdir=plan.workdir,
        parity_size=args.parity_size, parity_images=args.parity_images, max_row_s=args.max_row_seconds,
        threads=plan.threads,
        profile=_profile(sizes, args.batch, mut.spec) if any(f.backend == "tensorrt" for f in forms) else None,
    )
    results["latency"] += latency
    results["parity"] += parity
    skipped += skips
    measured = [f for f in forms if any(r["backend"] == f.backend and r["precision"] == f.precision
                                        or f.backend == "default" and r["backend"].startswith("default:")
                                        for r in parity)]
    if plan.quality_dirs:
        _quality(results, mut, measured, arts, plan.quality_dirs, args, plan.gallery)
    if not args.no_video and "video" not in plan.once and (args.video_model or args.models[0]) == name:
        _video(results, mut, measured, arts, plan.workdir, args)
        plan.once.add("video")
    if not args.no_tiling and "tiling" not in plan.once and (args.tiling_model or args.models[0]) == name:
        _tiling(results, mut, measured, args)
        plan.once.add("tiling")
    if args.keep_artifacts:
        dest = Path(args.out) / "artifacts"
        dest.mkdir(parents=True, exist_ok=True)
        for path in arts.files.values():
            shutil.copy2(path, dest / path.name)


def _quality(results, mut, forms, arts, datasets, args, gallery) -> None:
    from benchmarks import bench_quality
    from benchmarks.bench_backends import open_backend
    from sr_runtime.errors import SRError

    if mut.weights == "random":
        results["skipped"].append({"stage": "quality", "model": mut.model, "scale": mut.scale,
                                   "reason": "random weights: PSNR/SSIM would be meaningless"})
        return
    for form in forms:
        try:
            with open_backend(mut, form, arts, threads=args.threads) as backend:
                for ds in datasets:
                    results["quality"].append(bench_quality.quality_row(mut, form, backend, args.data, ds, gallery))
        except SRError as e:
            results["skipped"].append({"stage": "quality", "model": mut.model, "scale": mut.scale,
                                       "backend": form.backend, "precision": form.precision,
                                       "reason": f"{type(e).__name__}: {e}"})


def _video(results, mut, forms, arts, workdir, args) -> None:
    from benchmarks.bench_video import bench_video, make_clip
    from sr_runtime.errors import SRError

    source = args.video
    if source is None:
        default = Path(args.data) / "video" / "chaplin.mp4" if args.data else None
        source = str(default) if default is not None and default.is_file() else "synthetic"
    try:
        clip, label = make_clip(None if source == "synthetic" else source, args.video_frames, workdir,
                                size=args.video_size)
    except ImportError as e:  # PyAV missing (machines that bring their own torch): no video rows, not no rows
        results["skipped"].append({"stage": "video", "reason": f"PyAV is not importable ({e}); pip install av"})
        return
    except (SRError, OSError) as e:
        results["skipped"].append({"stage": "video", "reason": f"cannot make the clip from {source}: {e}"})
        return
    for form in forms if args.video_forms == "all" else forms[:1]:
        try:
            results["video"].append(bench_video(mut, form, arts, clip, label, workdir))
        except (SRError, OSError) as e:
            results["skipped"].append({"stage": "video", "model": mut.model, "scale": mut.scale,
                                       "backend": form.backend, "precision": form.precision,
                                       "reason": f"{type(e).__name__}: {e}"})


def _tiling(results, mut, forms, args) -> None:
    """Tiling rows in the default path's form when it was measured, else the first form."""
    from benchmarks.bench_tiling import bench_tiling
    from sr_runtime.errors import SRError

    usable = [f for f in forms if f.backend in ("default", "torch")]
    if not usable:
        results["skipped"].append({"stage": "tiling", "model": mut.model, "scale": mut.scale,
                                   "reason": "the tiling rows run the default path or torch; neither was measured"})
        return
    form = next((f for f in usable if f.backend == "default"), usable[0])
    try:
        results["tiling"] += bench_tiling(mut, form, args.tiling_size, warmup=min(args.warmup, 1),
                                          runs=max(1, min(args.runs, 5)))
    except (SRError, MemoryError, RuntimeError) as e:
        results["skipped"].append({"stage": "tiling", "model": mut.model, "scale": mut.scale,
                                   "backend": form.backend, "precision": form.precision,
                                   "reason": f"{type(e).__name__}: {e}"})


def write_outputs(results: dict, out: Path, *, plots: bool = True) -> list[Path]:
    """results.json, report.md, report.html and the plots into ``out`` (each written atomically; the
    crops report.html embeds are already there)."""
    from benchmarks.plots import write_plots
    from benchmarks.report import render_markdown, validate_results
    from benchmarks.report_html import render_html
    from sr_runtime.errors import SRError

    out.mkdir(parents=True, exist_ok=True)
    results = json_safe(results)  # what the JSON holds is what the report and plots show
    results["plots"] = [p.name for p in write_plots(results, out)] if plots else []
    try:
        validate_results(results)
    except ValueError as e:  # keep what was measured: a long run is not lost to a schema slip
        kept = write_json(out / "results.invalid.json", results)
        raise SRError(f"the results do not follow the schema ({e}); what was measured is in {kept}") from e
    paths = [write_json(out / "results.json", results)]
    paths.append(atomic_write_text(out / "report.md", render_markdown(results)))
    paths.append(atomic_write_text(out / "report.html", render_html(results, out)))
    return paths + [out / p for p in results["plots"]]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["coverage"]:
        return coverage_main(argv[1:])
    if argv[:1] == ["serve"]:
        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    return run_command("sr-bench", lambda: _main(args, argv), debug=args.debug,
                       interrupted="interrupted; nothing written")


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    args = _resolve(args)
    check_writable_dir(args.out)  # before the benchmark: a read-only --out fails now, not after an hour
    results = run_bench(args, shlex.join(["sr-bench", *argv]))
    paths = write_outputs(results, Path(args.out), plots=not args.no_plots)
    print(f"sr-bench: {len(results['latency'])} latency rows, {len(results['parity'])} parity rows, "
          f"{len(results['quality'])} quality rows, {len(results['video'])} video rows, {len(results['tiling'])} tiling rows, "
          f"{len(results['skipped'])} skipped, in {results['wall_s']:.0f} s")
    for path in paths:
        print(f"  {path}")
    return 0


def build_coverage_parser() -> argparse.ArgumentParser:
    from benchmarks.community_models import FAMILIES
    from benchmarks.coverage import DEFAULT_SIZE

    p = argparse.ArgumentParser(
        prog="sr-bench coverage",
        description="Community-model coverage: each family (random weights in the published file layout) "
        "loaded, tiled, exported to ONNX FP32/FP16 with parity, and timed on the CPU. "
        "Writes OUT/coverage.json and OUT/coverage.md.",
    )
    p.add_argument("--families", type=_csv, default=None,
                   help=f"comma-separated keys (default: all): {','.join(f.key for f in FAMILIES)}")
    p.add_argument("--quick", action="store_true",
                   help="reduced builds (fewer blocks, the published tensor names) instead of the published sizes")
    p.add_argument("--size", type=_parse_hw, default=DEFAULT_SIZE,
                   help=f"LR input HxW of the timings (default {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]})")
    p.add_argument("--runs", type=int, default=5, help="timed calls per median (default 5, after one warm-up)")
    p.add_argument("--tile", type=int, default=64,
                   help="forced tile side of the tiled-vs-whole check (default 64; raised where the overlap needs it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--no-fast-path", action="store_true",
                   help="skip the backend='auto' fast path (its export and probe cost another export per family)")
    p.add_argument("--out", type=Path, default=Path("coverage_out"), help="output folder (default: coverage_out)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (tracebacks of failing steps)")
    add_debug_argument(p)
    return p


def _subcommand(name: str, parser: argparse.ArgumentParser, body, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` with ``parser``, set up logging, run ``body(args, argv)`` the way every command fails."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    return run_command(name, lambda: body(args, argv), debug=args.debug, interrupted="interrupted; nothing written")


def coverage_main(argv: Sequence[str] | None = None) -> int:
    """``sr-bench coverage``: parse, run :func:`benchmarks.coverage.run_coverage`, write, print the statuses."""
    return _subcommand("sr-bench coverage", build_coverage_parser(), _coverage, argv)


def _coverage(args: argparse.Namespace, argv: list[str]) -> int:
    from benchmarks.coverage import run_coverage, select_families, write_coverage

    settings = {"command": shlex.join(["sr-bench", "coverage", *argv]), "quick": args.quick,
                "size": list(args.size), "runs": args.runs, "tile": args.tile, "seed": args.seed,
                "fast_path": not args.no_fast_path}
    families = select_families(args.families)
    check_writable_dir(args.out)
    started = time.perf_counter()
    rows = run_coverage(families, quick=args.quick, size=args.size, runs=args.runs, tile=args.tile,
                        seed=args.seed, fast_path=not args.no_fast_path)
    settings["wall_s"] = round(time.perf_counter() - started, 1)
    paths = write_coverage(rows, environment(), settings, args.out)
    ok = sum(r.ok for r in rows)
    print(f"sr-bench coverage: {ok} of {len(rows)} families ok, in {settings['wall_s']:.0f} s")
    for r in rows:
        print(f"  {r.key:<18} {r.status}")
    for path in paths:
        print(f"  {path}")
    return 0


def build_serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-bench serve",
        description="Load-test sr-serve on loopback (closed loop, mixed image sizes, with and without batching) "
        "beside the same images through Upscaler in-process and one sr-run process per image. "
        "Writes OUT/serve.json, OUT/serve.md and OUT/serve.png.",
    )
    p.add_argument("--model", default="fsrcnn", help="model name or file (default fsrcnn)")
    p.add_argument("--scale", type=int, default=4, help="upscaling factor (default 4)")
    p.add_argument("--concurrency", type=lambda s: [int(v) for v in _csv(s)], default=[1, 4, 16],
                   help="concurrent clients, e.g. 1,4,16 (default)")
    p.add_argument("--requests", type=int, default=8, help="requests per client at each concurrency (default 8)")
    p.add_argument("--sizes", type=lambda s: [_parse_hw(v) for v in _csv(s)], default=None,
                   help="LR image sizes HxW of the mixed load (default 64x64,96x128,128x192)")
    p.add_argument("--per-process", type=int, default=4, metavar="N",
                   help="images for the one-sr-run-per-image row (default 4; 0 skips it)")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder (default: bench_out)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_debug_argument(p)
    return p


def serve_main(argv: Sequence[str] | None = None) -> int:
    """``sr-bench serve``: parse, run :func:`benchmarks.bench_serve.run_serve_bench`, write, print the rows."""
    return _subcommand("sr-bench serve", build_serve_parser(), _serve, argv)


def _serve(args: argparse.Namespace, argv: list[str]) -> int:
    from benchmarks.bench_serve import DEFAULT_SIZES, run_serve_bench, write_serve

    if args.requests < 1 or not args.concurrency or min(args.concurrency) < 1:
        raise InputError("--requests and every --concurrency must be >= 1")
    check_writable_dir(args.out)
    results = run_serve_bench(args.model, args.scale, concurrency=tuple(args.concurrency), requests=args.requests,
                              sizes=tuple(args.sizes or DEFAULT_SIZES), per_process_requests=args.per_process)
    paths = write_serve(results, environment(), args.out)
    for r in results["rows"]:
        print(f"  {r['mode']:<24} c={r['concurrency']:<3} {r['images_per_s']:7.2f} images/s  p95 {r['p95_ms']} ms"
              f"  errors {r['errors']}")
    for path in paths:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
