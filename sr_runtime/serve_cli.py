"""``sr-serve``: serve a model over HTTP (uvicorn, or Ray Serve with ``--ray``). Parses arguments only.

    sr-serve --model fsrcnn --scale 4 --port 8000
    curl --data-binary @photo.png http://127.0.0.1:8000/v1/upscale -o photo_x4.png
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from sr_runtime.failures import add_debug_argument, run_command

__all__ = ["main", "build_parser"]

TOKEN_ENV = "SR_SERVE_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sr-serve",
        description="Serve a super-resolution model over HTTP: POST an image to /v1/upscale, get it upscaled.",
        epilog="Routes: POST /v1/upscale[?format=png|jpeg|webp], GET /v1/models, /healthz, /readyz, /metrics. "
               "Exit codes: 0 stopped, 2 bad input, 1 fault, 130 interrupted.",
    )
    p.add_argument("--model", help="model name, checkpoint, .onnx or .engine (default: the best model for --scale)")
    p.add_argument("--scale", type=int, help="upscaling factor (needed with a model name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"require 'Authorization: Bearer TOKEN' on /v1 and /metrics (default: ${TOKEN_ENV})")
    g = p.add_argument_group("model")
    g.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt", "openvino"))
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: the fastest here)")
    g.add_argument("--precision", choices=("fp32", "fp16", "bf16"))
    g.add_argument("--tile", type=int, help="tile side in input pixels (default: from free memory; 0: off)")
    g.add_argument("--runs-dir", default="runs", help="where model names look for training runs")
    g.add_argument("--cache-dir", help="fast-path cache (default $SR_RUNTIME_CACHE or ~/.cache/sr_runtime)")
    g.add_argument("--no-cache", action="store_true", help="build the fast form for this process only")
    q = p.add_argument_group("limits and batching")
    q.add_argument("--workers", type=int, default=4, help="requests processed at once (default 4)")
    q.add_argument("--queue", type=int, default=16, help="requests waiting beyond them; then 503 (default 16)")
    q.add_argument("--timeout", type=float, default=120.0, help="per-request limit in seconds; then 504")
    q.add_argument("--max-body-mb", type=float, default=50.0, help="largest body; then 413 (default 50)")
    q.add_argument("--max-megapixels", type=float, default=40.0, help="largest decoded image; then 413 (default 40)")
    q.add_argument("--batch-window-ms", type=float, default=None,
                   help="how long a tile waits for equal-shape tiles of other requests (default: 5 on a GPU, "
                        "0 on a CPU, where waiting only adds latency: BENCHMARKS.md, Serving)")
    q.add_argument("--max-batch", type=int, default=4, help="most tiles per backend call (default 4)")
    r = p.add_argument_group("Ray Serve")
    r.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="deploy on Ray Serve: a local Ray, or ADDRESS (auto, ray://head:10001)")
    r.add_argument("--replicas", type=int, default=1, help="replicas (the minimum with --max-replicas)")
    r.add_argument("--max-replicas", type=int, help="autoscale between --replicas and this")
    add_debug_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="sr-serve: %(message)s", stream=sys.stderr)
    return run_command("sr-serve", lambda: _main(args), debug=args.debug, interrupted="stopped")


def _main(args: argparse.Namespace) -> int:
    from sr_runtime.serve import ServeConfig, UpscaleService, serve
    from sr_runtime.upscaler import Upscaler

    config = ServeConfig(
        max_body_bytes=int(args.max_body_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6),
        workers=args.workers, queue_size=args.queue, timeout_s=args.timeout,
        batch_window_ms=batch_window_ms(args.batch_window_ms, args.device), max_batch=args.max_batch,
    )
    _check_model(args.model, args.scale, args.runs_dir)
    kwargs = {"model": args.model, "scale": args.scale, "backend": args.backend, "device": args.device,
              "precision": args.precision, "tile": args.tile, "runs_dir": args.runs_dir,
              "cache_dir": args.cache_dir, "use_cache": not args.no_cache}
    if args.ray:
        from sr_runtime.serve.ray_app import deploy

        deploy(kwargs, config, address=None if args.ray == "local" else args.ray, host=args.host, port=args.port,
               token=args.token, replicas=args.replicas, max_replicas=args.max_replicas)
        return 0
    service = UpscaleService(lambda: Upscaler(**kwargs), config)
    serve(service, host=args.host, port=args.port, token=args.token)
    return 0


def batch_window_ms(given: float | None, device: str | None) -> float:
    """The batching window: as given, else 5 ms where the model runs on a GPU (a batch of tiles costs
    about what one does there) and 0 on a CPU (a batch saves nothing, the wait adds latency)."""
    if given is not None:
        return given
    if device is not None:
        return 5.0 if device.startswith("cuda") else 0.0
    import torch

    return 5.0 if torch.cuda.is_available() else 0.0


def _check_model(model: str | None, scale: int | None, runs_dir: str) -> None:
    """Fail at once, with one line, for a model that cannot be found; building its fast form (seconds to
    minutes) happens after the server answers /healthz."""
    from pathlib import Path

    from sr_runtime.backends import model_kind
    from sr_runtime.errors import InputError
    from sr_runtime.zoo import resolve_checkpoint

    if model is not None and model_kind(model) != "checkpoint":
        if not Path(model).is_file():
            raise InputError(f"{model}: model file not found")
        return
    resolve_checkpoint(model, scale, runs_dir=runs_dir)


if __name__ == "__main__":
    sys.exit(main())
