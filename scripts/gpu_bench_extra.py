#!/usr/bin/env python3
"""The two GPU benchmark rows ``sr-bench`` has no form for, measured with sr-bench's own primitives:

* ``torch-compile fp16``: :class:`sr_runtime.backends.torch.TorchBackend` with ``compile=True``
  (FP16, channels-last on CUDA), timed and parity-checked by :func:`benchmarks.bench_backends.measure_latency`
  and :func:`~benchmarks.bench_backends.measure_parity` exactly like sr-bench's rows;
* ``default``: what ``Upscaler(checkpoint, scale=4)`` picks with no backend, device or precision given
  (the runtime's default path): its backend timed the same way, plus ``Upscaler.upscale`` on a uint8
  HWC image (tiling, conversions and the copy back included) as an end-to-end row.

    python scripts/gpu_bench_extra.py --model runs/.../best.safetensors --sizes 270x480 --batch 1,8 \
        --device cuda --out gpu_out/bench/extra.json

A row that cannot run here (FP16 on a CPU, a compile failure) is listed under ``skipped`` with the
reason; the JSON is written whatever happens. On a CPU (the dry run) the compiled row runs in FP32.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_backends import Form, measure_latency, measure_parity, parity_inputs, prepare_model
from benchmarks.common import device_sync, time_calls
from sr_runtime.errors import SRError

log = logging.getLogger("gpu_bench_extra")


def _hw(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def _rows_for(mut, form, backend, args, reference, inputs, build_s, label) -> tuple[list[dict], list[dict]]:
    rows, skipped = [], []
    try:
        prow = measure_parity(mut, form, backend, inputs, reference)
    except Exception as e:  # noqa: BLE001 -- reported, not fatal
        prow = None
        skipped.append({"row": f"{label} parity", "reason": f"{type(e).__name__}: {e}"})
    for size in args.sizes:
        for batch in args.batch:
            try:
                row = measure_latency(mut, form, backend, size=size, batch=batch, warmup=args.warmup, runs=args.runs,
                                      max_row_s=args.max_row_seconds)
            except Exception as e:  # noqa: BLE001 -- OOM, a compile failure: a result to report
                skipped.append({"row": f"{label} {size[0]}x{size[1]} b{batch}", "reason": f"{type(e).__name__}: {e}"})
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            row.update(backend=label, build_s=build_s, parity_psnr_db=prow and prow["psnr_db"],
                       parity_max_abs_u8=prow and prow["max_abs_u8"], parity_nonfinite=prow and prow["nonfinite"])
            rows.append(row)
            log.info("%s %s b%d: p50 %.2f ms, %.1f fps", label, size, batch, row["p50_ms"], row["fps"])
    return rows, skipped


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint path or registry name (random weights if untrained)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--sizes", type=lambda s: [_hw(v) for v in s.split(",")], default=[(270, 480)])
    p.add_argument("--batch", type=lambda s: [int(v) for v in s.split(",")], default=[1, 8])
    p.add_argument("--device", default="cuda")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--max-row-seconds", type=float, default=15.0)
    p.add_argument("--parity-size", type=_hw, default=(64, 96), help="LR crop of the parity photos (sr-bench's default)")
    p.add_argument("--parity-images", type=int, default=3)
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (default inductor, torch's own default); the CPU dry run uses eager")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result: dict = {"latency": [], "skipped": [], "device": args.device}
    cuda = args.device.startswith("cuda")
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-extra-") as work:
            mut = prepare_model(args.model, args.scale, workdir=Path(work))
            result["weights"] = mut.weights
            inputs = parity_inputs(mut.spec, args.parity_size, args.parity_images)
            ref = mut.deploy()
            with torch.inference_mode():
                reference = {name: ref(torch.from_numpy(lr)).numpy() for name, lr in inputs}
            del ref

            # torch.compile, FP16 (FP32 on a CPU: the dry run proves the code path, not the speed)
            from sr_runtime.backends.torch import TorchBackend

            precision = "fp16" if cuda else "fp32"
            label = "torch-compile" if args.compile_backend == "inductor" else f"torch-compile[{args.compile_backend}]"
            if args.compile_backend != "inductor":  # TorchBackend calls torch.compile(model, dynamic=False)
                import functools

                torch.compile = functools.partial(torch.compile, backend=args.compile_backend)
            form = Form(label, precision, args.device)
            start = time.perf_counter()
            try:
                import copy

                backend = TorchBackend(copy.deepcopy(mut.net), spec=mut.spec, device=args.device, precision=precision,
                                       compile=True, source=mut.source)
            except SRError as e:
                result["skipped"].append({"row": f"{label} {precision}", "reason": f"{type(e).__name__}: {e}"})
            else:
                with backend:
                    rows, skips = _rows_for(mut, form, backend, args, reference, inputs, time.perf_counter() - start,
                                            label)
                result["latency"] += rows
                result["skipped"] += skips

            # the runtime's default path: Upscaler(checkpoint, scale) with nothing else given
            from sr_runtime.upscaler import Upscaler

            start = time.perf_counter()
            with Upscaler(str(mut.checkpoint), scale=mut.scale) as up:
                build_s = time.perf_counter() - start
                b = up.backend
                result["default_path"] = {"describe": b.describe(), "device": str(b.device), "precision": b.precision,
                                          "batch": up.batch, "tile": up.tile}
                form = Form("default", b.precision, str(b.device))
                rows, skips = _rows_for(mut, form, b, args, reference, inputs, build_s, f"default ({b.name})")
                result["latency"] += rows
                result["skipped"] += skips
                # end to end: uint8 HWC in, uint8 HWC out (what an embedding application calls)
                sync = device_sync(str(b.device))
                for h, w in args.sizes:
                    img = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
                    t = time_calls(lambda: up.upscale(img), warmup=args.warmup, runs=args.runs, sync=sync).summary()
                    result["latency"].append({
                        "backend": f"default ({b.name}) Upscaler.upscale uint8", "precision": b.precision,
                        "device": str(b.device), "input_h": h, "input_w": w, "output_h": h * mut.scale,
                        "output_w": w * mut.scale, "batch": 1, "runs": args.runs, "p50_ms": t["p50"],
                        "p95_ms": t["p95"], "fps": 1e3 / t["p50"], "peak_mem_mib": None, "parity_psnr_db": None,
                        "parity_max_abs_u8": None,
                    })
    except Exception as e:  # noqa: BLE001 -- written to the JSON, and the exit code says so
        result["error"] = f"{type(e).__name__}: {e}"
        traceback.print_exc()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"gpu_bench_extra: {len(result['latency'])} rows, {len(result['skipped'])} skipped -> {args.out}")
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
