"""Tiled inference as pure functions: plan tiles, run a callable on batches of them, stitch.

Every tile of a plan has one shape, so a static engine (or one compiled graph) serves them all:
tiles step by ``tile - 2 * overlap`` and the last row/column is shifted back inside the image.
Neighbouring tiles share at least ``2 * overlap`` pixels and each keeps only its centre, cut at
the middle of the shared band, so every kept pixel lies at least ``overlap`` input pixels from
any tile border. With ``overlap`` at least the model's receptive radius the stitched output equals
the whole-image output (up to floating-point reassociation).

Nothing here knows about backends: the network is any callable ``fn(lr) -> sr`` on
``(B, C, th, tw)`` float tensors. Tensors stay on the device of the input from upload to the
``write`` callback, which receives each kept crop (typically to quantize it in place on the device).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from sr_runtime.errors import BackendUnavailableError, InputError
from sr_runtime.spec import IOSpec

__all__ = [
    "TilePlan",
    "plan_tiles",
    "default_overlap",
    "choose_tile_size",
    "tile_pixel_budget",
    "balanced_tile",
    "run_tiled",
    "run_tiled_adaptive",
    "upscale_tiled",
    "ProgressFn",
    "WriteFn",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``: tiles done so far out of the plan's total."""
WriteFn = Callable[[int, tuple[int, int, int, int], torch.Tensor], None]
"""``write(index, (y0, y1, x0, x1), sr_crop)``: store ``sr_crop`` (C, y1-y0, x1-x0) of image ``index``
at those output (HR) coordinates."""

_BYTES_PER_HR_PIXEL = 1024
"""Working memory per output pixel at FP32 assumed when choosing a tile from free memory: room for
about four live 64-channel feature maps at output resolution (pre-upsampling networks), more than
sub-pixel networks need. A wrong guess costs speed, not results: out-of-memory halves the tile."""


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _round_down(value: int, multiple: int) -> int:
    return value // multiple * multiple


def default_overlap(spec: IOSpec) -> int:
    """Overlap (LR pixels) that makes tiled output equal whole-image output for ``spec``.

    The receptive radius of the network, plus the 2-pixel support of the bicubic kernel when the
    model upsamples bicubically (pre-upsampling, or chroma of Y-only networks); at least 4.
    """
    bicubic = 2 if (spec.pre_upsample or spec.color == "y") else 0
    return max(4, spec.receptive_radius + bicubic)


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one image go, in LR (input) pixels.

    ``ys``/``xs`` are the tile origins along each axis; ``y_keep``/``x_keep`` the half-open
    ranges of the image each tile row/column contributes (they partition ``[0, height)`` and
    ``[0, width)``). A tile may reach past the image (small images, ``multiple_of`` padding):
    the missing pixels are filled by replicating the border and their output is discarded.
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    y_keep: tuple[tuple[int, int], ...]
    x_keep: tuple[tuple[int, int], ...]

    @property
    def tiles_per_image(self) -> int:
        return len(self.ys) * len(self.xs)


def _plan_axis(length: int, padded: int, tile: int, overlap: int, multiple_of: int) -> tuple[list[int], list[tuple[int, int]]]:
    if tile >= padded:
        return [0], [(0, length)]
    step = _round_down(tile - 2 * overlap, multiple_of)
    if step < 1:
        raise InputError(
            f"tile {tile} px leaves no room inside an overlap of {overlap} px on each side "
            f"(tile must be at least 2*overlap + {multiple_of}); use a larger --tile or a smaller --tile-overlap"
        )
    origins = [0]
    while origins[-1] + tile < padded:
        origins.append(min(origins[-1] + step, padded - tile))
    # Cut between neighbours at the middle of the shared band: both keep >= overlap of context.
    cuts = [0] + [min((a + tile + b) // 2, length) for a, b in zip(origins, origins[1:])] + [length]
    keep = [(cuts[i], max(cuts[i], cuts[i + 1])) for i in range(len(origins))]
    return origins, keep


def plan_tiles(
    height: int,
    width: int,
    *,
    tile: int | tuple[int, int] | None,
    overlap: int,
    multiple_of: int = 1,
    min_size: int = 1,
    exact: bool = False,
) -> TilePlan:
    """Plan tiles of one shape covering a ``height`` x ``width`` image.

    ``tile`` is the tile height and width in input pixels (an int for square tiles); ``None`` or 0
    means one tile covering the whole image. Tile sides are rounded down to ``multiple_of``. Unless
    ``exact``, a tile larger than the (padded) image shrinks to it; with ``exact`` (a static engine)
    the tile keeps its size and a smaller image is padded up to it. An image smaller than
    ``min_size`` or not a multiple of ``multiple_of`` is padded. Raises InputError when ``tile`` is
    below ``min_size`` or not larger than ``2 * overlap`` where more than one tile is needed.
    """
    if height < 1 or width < 1:
        raise InputError(f"cannot tile an empty image of {height}x{width} pixels")
    if overlap < 0:
        raise InputError(f"tile overlap must be >= 0, got {overlap}")
    floor = _round_up(max(min_size, 1), multiple_of)
    padded_h = max(_round_up(height, multiple_of), floor)
    padded_w = max(_round_up(width, multiple_of), floor)
    if not tile:
        tile_h, tile_w = padded_h, padded_w
    else:
        tile_h, tile_w = (tile, tile) if isinstance(tile, int) else tile
        for side in (tile_h, tile_w):
            if side < floor:
                raise InputError(
                    f"tile {side} px is below the model's smallest input ({floor} px: min_size {min_size}, "
                    f"multiple of {multiple_of}); use --tile {max(floor, 2 * overlap + multiple_of)} or more"
                )
        tile_h, tile_w = _round_down(tile_h, multiple_of), _round_down(tile_w, multiple_of)
        if exact:
            padded_h, padded_w = max(padded_h, tile_h), max(padded_w, tile_w)
        else:
            tile_h, tile_w = min(tile_h, padded_h), min(tile_w, padded_w)
    ys, y_keep = _plan_axis(height, padded_h, tile_h, overlap, multiple_of)
    xs, x_keep = _plan_axis(width, padded_w, tile_w, overlap, multiple_of)
    return TilePlan(height, width, tile_h, tile_w, overlap, tuple(ys), tuple(xs), tuple(y_keep), tuple(x_keep))


def choose_tile_size(
    free_bytes: int,
    *,
    scale: int,
    element_size: int = 4,
    batch: int = 1,
    multiple_of: int = 1,
    min_size: int = 1,
    overlap: int = 0,
    max_tile: int = 1024,
    budget_fraction: float = 0.5,
) -> int:
    """A square tile side (input pixels) that fits ``batch`` tiles in ``budget_fraction`` of ``free_bytes``.

    Estimates ``_BYTES_PER_HR_PIXEL`` (scaled by ``element_size`` / 4) of working memory per output
    pixel; clamps to ``[max(min_size, 2 * overlap + 16), max_tile]``, rounded to ``multiple_of``.
    """
    per_lr_pixel = _BYTES_PER_HR_PIXEL * element_size / 4 * scale * scale * max(batch, 1)
    side = int(math.sqrt(max(free_bytes, 0) * budget_fraction / per_lr_pixel))
    lower = _round_up(max(min_size, 2 * overlap + 16), multiple_of)
    side = min(max(side, lower), max(max_tile, lower))
    return max(_round_down(side, multiple_of), lower)


def tile_pixel_budget(budget_bytes: int, *, scale: int, element_size: int = 4, batch: int = 1) -> int:
    """Input pixels one tile may hold so that ``batch`` tiles fit in ``budget_bytes`` of working
    memory, at ``_BYTES_PER_HR_PIXEL`` (scaled by ``element_size`` / 4) per output pixel."""
    per_lr_pixel = _BYTES_PER_HR_PIXEL * element_size / 4 * scale * scale * max(batch, 1)
    return int(max(budget_bytes, 0) / per_lr_pixel)


def _axis_options(length: int, padded: int, overlap: int, multiple_of: int, lower: int) -> dict[int, int]:
    """{tile count: smallest tile side giving that many tiles} along one axis of ``padded`` pixels,
    for tiles of at least ``lower`` (the whole axis, one tile, included)."""
    options = {1: padded}
    if padded <= lower:
        return options
    n = 2
    while True:
        # n tiles of side s, stepping by s - 2*overlap, reach (n - 1) * (s - 2*overlap) + s >= padded.
        side = max(_round_up(-(-(padded + 2 * overlap * (n - 1)) // n), multiple_of), lower)
        if side >= padded:
            break
        while len(_plan_axis(length, padded, side, overlap, multiple_of)[0]) > n:  # step rounding
            side += multiple_of
        count = len(_plan_axis(length, padded, side, overlap, multiple_of)[0])
        options.setdefault(count, side)
        if side == lower:
            break
        n += 1
    return options


def balanced_tile(
    height: int,
    width: int,
    *,
    max_pixels: int,
    overlap: int,
    multiple_of: int = 1,
    min_size: int = 1,
    max_hw: tuple[int, int] | None = None,
) -> tuple[int, int] | None:
    """The tile (height, width) in input pixels that covers the image with the least computed area.

    None when the whole (padded) image fits: ``height * width <= max_pixels`` (and ``max_hw``). Else
    equal tiles that just cover the image (``n`` tiles along an axis of ``L`` pixels are about
    ``(L + 2 * overlap * (n - 1)) / n`` long: no big tile plus a thin remainder), of at most
    ``max_pixels`` each and at most ``max_hw`` per side, chosen among every tile count per axis to
    compute the fewest pixels (recomputed overlap is the cost of tiling). Sides are multiples of
    ``multiple_of`` and at least ``max(min_size, 2 * overlap + 16)``; when even that smallest
    tile exceeds ``max_pixels``, it is returned anyway (the budget is an estimate; out-of-memory
    still halves the tile, see :func:`run_tiled_adaptive`).
    """
    m = max(multiple_of, 1)
    floor = _round_up(max(min_size, 1), m)
    padded_h = max(_round_up(height, m), floor)
    padded_w = max(_round_up(width, m), floor)
    cap_h, cap_w = max_hw if max_hw is not None else (padded_h, padded_w)
    if padded_h * padded_w <= max_pixels and padded_h <= cap_h and padded_w <= cap_w:
        return None
    lower = _round_up(max(min_size, 2 * overlap + 16), m)
    rows = _axis_options(height, padded_h, overlap, m, lower)
    cols = _axis_options(width, padded_w, overlap, m, lower)
    best: tuple[int, int, int, int] | None = None  # (computed pixels, tiles, th, tw)
    for ny, th in rows.items():
        if th > cap_h:
            continue
        for nx, tw in cols.items():
            if tw > cap_w or th * tw > max_pixels:
                continue
            key = (ny * th * nx * tw, ny * nx, th, tw)
            if best is None or key < best:
                best = key
    if best is None:
        return min(lower, _round_down(cap_h, m) or m), min(lower, _round_down(cap_w, m) or m)
    return best[2], best[3]


def _gather(lr: torch.Tensor, plan: TilePlan, jobs, prepare) -> torch.Tensor:
    tiles = []
    for index, row, col in jobs:
        y0, x0 = plan.ys[row], plan.xs[col]
        y1, x1 = min(y0 + plan.tile_h, plan.height), min(x0 + plan.tile_w, plan.width)
        tile = prepare(lr[index : index + 1, :, y0:y1, x0:x1])
        pad_h, pad_w = plan.tile_h - (y1 - y0), plan.tile_w - (x1 - x0)
        if pad_h or pad_w:
            tile = F.pad(tile, (0, pad_w, 0, pad_h), mode="replicate")
        tiles.append(tile)
    return torch.cat(tiles) if len(tiles) > 1 else tiles[0].contiguous()


def run_tiled(
    lr: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    plan: TilePlan,
    *,
    scale: int,
    write: WriteFn,
    batch: int = 1,
    fixed_batch: bool = False,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
) -> None:
    """Run ``fn`` over the tiles of every image in ``lr`` and hand each kept crop to ``write``.

    ``lr``: (N, C, H, W) tensor of any dtype (uint8 frames, float images), H x W as planned.
    ``prepare`` turns a raw (1, C, h, w) slice into ``fn``'s input (dtype, range, channels);
    the identity by default. Tiles (of all N images) are stacked ``batch`` at a time; with
    ``fixed_batch`` the last stack is filled up to ``batch`` by repeating its last tile, for
    engines or graphs of one batch size. ``fn`` must return (B, C', s*th, s*tw).
    """
    n, _, h, w = lr.shape
    if (h, w) != (plan.height, plan.width):
        raise InputError(f"tile plan is for {plan.height}x{plan.width}, image is {h}x{w}")
    prepare = prepare or (lambda t: t)
    jobs = [(i, r, c) for i in range(n) for r in range(len(plan.ys)) for c in range(len(plan.xs))]
    batch = max(1, batch)
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        x = _gather(lr, plan, chunk, prepare)
        if fixed_batch and len(chunk) < batch:
            x = torch.cat([x, x[-1:].expand(batch - len(chunk), *x.shape[1:])])
        sr = fn(x)
        expected = (plan.tile_h * scale, plan.tile_w * scale)
        if tuple(sr.shape[-2:]) != expected or sr.shape[0] < len(chunk):
            raise InputError(
                f"model returned {tuple(sr.shape)} for tiles {tuple(x.shape)}; expected "
                f"({x.shape[0]}, C, {expected[0]}, {expected[1]}) at scale {scale}. Is the scale right?"
            )
        for k, (index, row, col) in enumerate(chunk):
            (a, b), (c, d) = plan.y_keep[row], plan.x_keep[col]
            y0, x0 = plan.ys[row], plan.xs[col]
            crop = sr[k, :, (a - y0) * scale : (b - y0) * scale, (c - x0) * scale : (d - x0) * scale]
            write(index, (a * scale, b * scale, c * scale, d * scale), crop)
        if progress is not None:
            progress(min(start + batch, len(jobs)), len(jobs))


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError)


def run_tiled_adaptive(
    lr: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    scale: int,
    write: WriteFn,
    tile: int | tuple[int, int] | None,
    overlap: int,
    multiple_of: int = 1,
    min_size: int = 1,
    exact: bool = False,
    batch: int = 1,
    fixed_batch: bool = False,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: ProgressFn | None = None,
) -> TilePlan:
    """:func:`run_tiled` that survives device out-of-memory by halving the batch, then the tile.

    On ``torch.cuda.OutOfMemoryError`` (backends report device memory exhaustion as that type)
    the whole image is redone with half the batch, or with half the tile once the batch is 1
    (never below ``2 * overlap + multiple_of`` or ``min_size``); each retry is logged. No work is
    dropped: ``write`` receives every crop of the last, successful attempt. Raises
    BackendUnavailableError when even the smallest tile does not fit, or when ``exact`` (a static
    shape) forbids a smaller tile. Returns the plan that succeeded.
    """
    while True:
        plan = plan_tiles(
            lr.shape[-2], lr.shape[-1], tile=tile, overlap=overlap, multiple_of=multiple_of, min_size=min_size, exact=exact
        )
        try:
            run_tiled(
                lr, fn, plan, scale=scale, write=write, batch=batch, fixed_batch=fixed_batch, prepare=prepare,
                progress=progress,
            )
            return plan
        except Exception as e:
            if not _is_oom(e):
                raise
            oom = e
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        current = (plan.tile_h, plan.tile_w)
        effective = min(batch, lr.shape[0] * plan.tiles_per_image)
        if effective > 1 and not fixed_batch:
            batch = effective // 2
            log.warning("out of device memory with %d tiles per batch; retrying with batch %d", effective, batch)
            continue
        smallest = _round_up(max(min_size, 2 * overlap + multiple_of), multiple_of)
        new = tuple(max(_round_down(side // 2, multiple_of), smallest) for side in current)
        if exact or new == current:
            raise BackendUnavailableError(
                f"out of device memory with {current[0]}x{current[1]} tiles, batch {batch}, and the tile cannot "
                f"shrink further{' (static engine shape)' if exact else ''}; free device memory, use a smaller "
                f"--tile-overlap, or run on another --device"
            ) from oom
        log.warning(
            "out of device memory with %dx%d tiles; retrying with %dx%d tiles", current[0], current[1], new[0], new[1]
        )
        tile = new


def upscale_tiled(
    lr: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    scale: int,
    tile: int | tuple[int, int] | None,
    overlap: int,
    multiple_of: int = 1,
    min_size: int = 1,
    batch: int = 1,
) -> torch.Tensor:
    """Tiled ``fn`` on a float (N, C, H, W) tensor -> (N, C', s*H, s*W) on the same device.

    The convenience form of :func:`run_tiled_adaptive` for tensors; the output dtype is ``fn``'s.
    """
    out: list[torch.Tensor] = []

    def write(index: int, box: tuple[int, int, int, int], crop: torch.Tensor) -> None:
        if not out:
            n, _, h, w = lr.shape
            out.append(crop.new_empty((n, crop.shape[0], h * scale, w * scale)))
        y0, y1, x0, x1 = box
        out[0][index, :, y0:y1, x0:x1] = crop

    run_tiled_adaptive(
        lr, fn, scale=scale, write=write, tile=tile, overlap=overlap, multiple_of=multiple_of, min_size=min_size,
        batch=batch,
    )
    return out[0]
