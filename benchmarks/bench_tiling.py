"""What tiling costs: the same frame through :class:`sr_runtime.upscaler.Upscaler` whole and tiled.

One model, one form (the runtime's default path unless asked otherwise), one LR frame (a real
photo from scikit-image, resized to the size asked), each tiling mode in turn:

* ``whole``: ``tile=0``, no tiling (the reference for time and pixels);
* ``auto``: what ``sr-run`` does, the tile chosen from this machine's free memory (the whole frame
  when it fits the budget, else equal tiles as large as the budget allows);
* ``auto, 1/4 budget``: the same choice with a quarter of that memory budget, as on a machine with
  less free RAM (or a bigger frame): more, smaller tiles;
* ``tile 256``: a fixed 256 px tile, the common default of other upscalers, for contrast.

Each row gives the plan (tile, count), the pixels the model computes beyond the frame's own
(recomputed overlap), the median wall time of ``Upscaler.upscale`` on a float tensor (the model and
the stitching, not the 8-bit quantize, which is the same work in every mode), its overhead over
``whole``, and the largest difference from the whole-frame output in 8-bit levels (seamless
tiling: at most one level of rounding). Rows follow :data:`benchmarks.report.TILING_FIELDS`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from benchmarks.bench_backends import Form, ModelUnderTest
from benchmarks.common import time_calls
from sr_runtime.errors import SRError

__all__ = ["TILING_MODES", "bench_tiling", "frame"]

log = logging.getLogger(__name__)

TILING_MODES = ("whole", "auto", "auto, 1/4 budget", "tile 256")


def frame(height: int, width: int) -> torch.Tensor:
    """A (1, 3, H, W) float photo in [0, 1]: scikit-image's astronaut, resized (bicubic)."""
    from PIL import Image
    from skimage import data

    img = Image.fromarray(data.astronaut()).resize((width, height), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy()).float().div_(255)[None]


def _upscaler_kwargs(mut: ModelUnderTest, form: Form) -> dict[str, Any]:
    if form.backend.startswith("default"):
        return {"backend": "auto", "device": form.device}
    if form.backend == "torch":
        return {"backend": "torch", "device": form.device, "precision": form.precision}
    raise SRError(f"the tiling rows run the default path or torch, not {form.backend}")


def _plan(up, h: int, w: int) -> tuple[str, int, float]:
    """(tile "HxW" or "whole", tile count, computed pixels beyond the frame's, %) of ``up``'s plan."""
    from sr_runtime.tiling import plan_tiles

    tile, exact = up._tile_for(h, w)
    if tile is None:
        return "whole", 1, 0.0
    plan = plan_tiles(h, w, tile=tile, overlap=up.overlap, multiple_of=up.spec.multiple_of,
                      min_size=up._min_size(), exact=exact)
    computed = plan.tiles_per_image * plan.tile_h * plan.tile_w
    return f"{plan.tile_h}x{plan.tile_w}", plan.tiles_per_image, 100.0 * (computed / (h * w) - 1.0)


def bench_tiling(
    mut: ModelUnderTest, form: Form, size: tuple[int, int], *, warmup: int, runs: int,
    memory_budget: int | None = None,
) -> list[dict[str, Any]]:
    """One row per :data:`TILING_MODES` entry for ``mut`` in ``form`` at LR ``size`` (h, w).
    ``memory_budget`` (bytes) stands in for this machine's default budget in the ``auto`` modes."""
    from sr_runtime.upscaler import Upscaler

    h, w = size
    lr = frame(h, w)
    rows: list[dict[str, Any]] = []
    with Upscaler(str(mut.checkpoint), scale=mut.scale, tile=0, **_upscaler_kwargs(mut, form)) as up:
        backend = up.backend
        shown = Form(f"default:{backend.name}", backend.precision, form.device) if form.backend == "default" else form
        whole_ms = None
        reference = None
        for mode in TILING_MODES:
            # One backend for every mode: only the plan changes (the Upscaler reads these per call).
            up.tile, up.memory_budget = {"whole": (0, None), "tile 256": (256, None)}.get(mode, (None, memory_budget))
            if mode == "auto, 1/4 budget":
                up.memory_budget = (memory_budget or up.default_memory_budget()) // 4
            tile, count, extra_px = _plan(up, h, w)
            out = up.upscale(lr)
            timing = time_calls(lambda: up.upscale(lr), warmup=warmup, runs=runs)
            p50 = float(np.median(timing.samples_ms))
            if mode == "whole":
                whole_ms, reference = p50, out
            diff = (out.clamp(0, 1) * 255).round().sub_((reference.clamp(0, 1) * 255).round()).abs_().max().item()
            rows.append({
                "model": mut.model, "scale": mut.scale, "weights": mut.weights, "backend": shown.backend,
                "precision": shown.precision, "device": shown.device, "input_h": h, "input_w": w,
                "mode": mode, "tile": tile, "tiles": count, "overlap": up.overlap,
                "memory_budget_mib": None if up.memory_budget is None else round(up.memory_budget / 2**20),
                "computed_px_overhead_pct": round(extra_px, 2), "runs": runs, "p50_ms": p50,
                "overhead_pct": 100.0 * (p50 / whole_ms - 1.0), "max_abs_u8": diff,
            })
            log.info("tiling %s x%d %s %dx%d %s: %s x%d, %.1f ms (%+.1f%%), max diff %g levels", mut.model, mut.scale,
                     shown, h, w, mode, tile, count, p50, rows[-1]["overhead_pct"], diff)
    return rows

