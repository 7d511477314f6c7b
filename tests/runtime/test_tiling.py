"""Tiling: plans of one tile shape, stitching equal to whole-image inference, OOM halving."""

from __future__ import annotations

import pytest
import torch

from sr_runtime.archs import ARCHS, build
from sr_runtime.deploy import DeployModel
from sr_runtime.errors import BackendUnavailableError, InputError
from sr_runtime.spec import IOSpec
from sr_runtime.tiling import (
    balanced_tile,
    choose_tile_size,
    default_overlap,
    plan_tiles,
    run_tiled,
    run_tiled_adaptive,
    tile_pixel_budget,
    upscale_tiled,
)


@pytest.mark.parametrize("length", [1, 7, 16, 17, 45, 100, 257])
@pytest.mark.parametrize("tile,overlap,multiple", [(16, 4, 1), (24, 6, 1), (20, 3, 4), (32, 8, 8)])
def test_plan_partitions_the_image_with_one_tile_shape_and_enough_context(length, tile, overlap, multiple):
    plan = plan_tiles(length, length + 3, tile=tile, overlap=overlap, multiple_of=multiple)
    for origins, keep, size, tile_len in (
        (plan.ys, plan.y_keep, plan.height, plan.tile_h),
        (plan.xs, plan.x_keep, plan.width, plan.tile_w),
    ):
        assert tile_len % multiple == 0
        assert keep[0][0] == 0 and keep[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(keep, keep[1:])), "kept ranges must tile the axis exactly"
        for origin, (a, b) in zip(origins, keep):
            assert origin % multiple == 0
            assert origin <= a <= b <= origin + tile_len
            if a > 0:
                assert a - origin >= overlap, "a kept pixel must see `overlap` pixels of context"
            if b < size:
                assert origin + tile_len - b >= overlap
        assert origins[-1] + tile_len >= size


def test_last_tile_is_shifted_back_inside_the_image():
    plan = plan_tiles(50, 50, tile=20, overlap=4)
    assert plan.tile_h == plan.tile_w == 20
    assert plan.ys[-1] == 30 and plan.xs[-1] == 30


def test_small_image_is_padded_to_a_static_tile_and_min_size():
    plan = plan_tiles(5, 9, tile=32, overlap=4, exact=True)
    assert (plan.tile_h, plan.tile_w) == (32, 32) and plan.ys == (0,) and plan.y_keep == ((0, 5),)
    plan = plan_tiles(3, 3, tile=None, overlap=4, min_size=8, multiple_of=4)
    assert (plan.tile_h, plan.tile_w) == (8, 8)


def test_tile_without_room_inside_its_overlap_is_an_error():
    with pytest.raises(InputError, match="overlap"):
        plan_tiles(100, 100, tile=16, overlap=8)
    with pytest.raises(InputError, match="smallest input"):
        plan_tiles(100, 100, tile=8, overlap=2, min_size=16)


def test_padded_tiles_run_and_crop_back():
    lr = torch.rand(2, 3, 5, 7)
    out = upscale_tiled(lr, lambda t: t.repeat_interleave(2, -1).repeat_interleave(2, -2), scale=2, tile=None,
                        overlap=0, multiple_of=4, min_size=8)
    torch.testing.assert_close(out, lr.repeat_interleave(2, -1).repeat_interleave(2, -2))


SMALL_HPARAMS = {
    "vdsr": {"depth": 8, "n_feats": 16},
    "edsr": {"n_resblocks": 3, "n_feats": 16},
    "edsr-large": {"n_resblocks": 3, "n_feats": 32},
    "red30": {"n_layers": 5, "n_feats": 16},
    "drrn": {"n_units": 3, "n_feats": 16},
    "srresnet": {"n_blocks": 3, "n_feats": 16},
    "srgan": {"n_blocks": 3, "n_feats": 16},
}
"""Fewer blocks for the deep networks, to keep CI fast: the receptive radius is a formula of these
hyperparameters, and that formula is what the tests below check."""


def _signal_model(name: str, signal) -> tuple[torch.nn.Module, IOSpec]:
    """A float64 DeployModel with weights that carry a signal (shipped, else calibrated): a fresh
    FSRCNN outputs ~0 and hides any seam."""
    scale = ARCHS[name].scales[0]
    hparams = SMALL_HPARAMS.get(name)
    net = signal.calibrate(build(name, scale=scale, **hparams).eval()) if hparams else signal.net(name, scale)
    return DeployModel(net).eval().double(), net.io_spec


def _grid_3x3(spec: IOSpec, overlap: int) -> tuple[int, int, int]:
    """(tile, height, width): a 3x3 grid (3x4 across) whose neighbours share exactly ``2 * overlap``
    pixels, the least the plan allows, so every kept pixel has exactly ``overlap`` of context."""
    m = spec.multiple_of
    tile = -(-max(2 * overlap + 8, spec.min_size) // m) * m
    step = (tile - 2 * overlap) // m * m
    return tile, tile + 2 * step, tile + 3 * step


def _tiled_vs_whole(model, spec, overlap: int) -> float:
    tile, h, w = _grid_3x3(spec, overlap)
    plan = plan_tiles(h, w, tile=tile, overlap=overlap, multiple_of=spec.multiple_of, min_size=spec.min_size)
    assert (len(plan.ys), len(plan.xs)) == (3, 4)
    lr = torch.rand(1, 3, h, w, dtype=torch.float64)
    with torch.inference_mode():
        whole = model(lr)
        tiled = upscale_tiled(lr, model, scale=spec.scale, tile=tile, overlap=overlap, multiple_of=spec.multiple_of,
                              min_size=spec.min_size, batch=3)
    assert whole.std() > 0.05, "the reference output carries no signal"
    return (whole - tiled).abs().max().item()


@pytest.mark.parametrize("name", list(ARCHS))
def test_tiled_output_equals_whole_image_output(name, signal):
    """Float64, a 3x3 grid at minimal overlap: with the default overlap (the declared receptive
    radius) tiled and whole-image output are equal to float rounding."""
    model, spec = _signal_model(name, signal)
    diff = _tiled_vs_whole(model, spec, default_overlap(spec))
    assert diff < 1e-10, f"{name}: tiled differs from whole-image output by {diff:.3g}"


@pytest.mark.parametrize("name", [n for n in ARCHS])
def test_tiling_with_less_than_the_receptive_radius_shows_seams(name, signal):
    """The mutation of the test above: with half the declared radius as overlap, tiles lack context
    and the output differs, so an understated radius (or an overlap ignored by the plan) fails."""
    model, spec = _signal_model(name, signal)
    if spec.receptive_radius <= 1:
        pytest.skip(f"{name}: receptive radius {spec.receptive_radius}, nothing to halve")
    diff = _tiled_vs_whole(model, spec, spec.receptive_radius // 2)
    assert diff > 1e-9, f"{name}: tiles with overlap {spec.receptive_radius // 2} still match ({diff:.3g})"


def test_fixed_batch_repeats_the_last_tile():
    shapes = []

    def fn(t):
        shapes.append(tuple(t.shape))
        return t.repeat_interleave(2, -1).repeat_interleave(2, -2)

    lr = torch.rand(1, 3, 40, 40)
    out = []
    plan = plan_tiles(40, 40, tile=16, overlap=2)
    run_tiled(lr, fn, plan, scale=2, write=lambda i, b, c: out.append(c), batch=4, fixed_batch=True)
    assert {s[0] for s in shapes} == {4}
    assert len(out) == plan.tiles_per_image


def _fake_oom_fn(limit_pixels: int, calls: list):
    def fn(t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(t.shape))
        if t.shape[0] * t.shape[-2] * t.shape[-1] > limit_pixels:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")
        return t.repeat_interleave(2, -1).repeat_interleave(2, -2) * 0.5

    return fn


def test_out_of_memory_halves_batch_then_tile_and_drops_no_work():
    lr = torch.rand(1, 3, 70, 90)
    calls: list = []
    out = torch.full((1, 3, 140, 180), -1.0)

    def write(index, box, crop):
        y0, y1, x0, x1 = box
        out[index, :, y0:y1, x0:x1] = crop

    plan = run_tiled_adaptive(lr, _fake_oom_fn(30 * 30, calls), scale=2, write=write, tile=64, overlap=4, batch=4)
    assert (plan.tile_h, plan.tile_w) == (16, 16)
    assert [c[0] for c in calls[:3]] == [4, 2, 1] and (1, 3, 32, 32) in calls
    torch.testing.assert_close(out, lr.repeat_interleave(2, -1).repeat_interleave(2, -2) * 0.5)


def test_out_of_memory_on_a_static_shape_is_an_error_not_a_drop():
    calls: list = []
    with pytest.raises(BackendUnavailableError, match="out of device memory"):
        run_tiled_adaptive(torch.rand(1, 3, 40, 40), _fake_oom_fn(10, calls), scale=2, write=lambda *a: None,
                           tile=32, overlap=4, exact=True)


def test_other_errors_are_not_retried():
    def fn(t):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_tiled_adaptive(torch.rand(1, 3, 20, 20), fn, scale=2, write=lambda *a: None, tile=16, overlap=2)


def test_tile_size_from_memory_grows_with_memory_and_respects_bounds():
    small = choose_tile_size(64 << 20, scale=4, multiple_of=8, overlap=10)
    large = choose_tile_size(16 << 30, scale=4, multiple_of=8, overlap=10)
    assert small < large <= 1024
    assert small >= 2 * 10 + 16 and small % 8 == 0 and large % 8 == 0
    assert choose_tile_size(16 << 30, scale=4, element_size=2) >= choose_tile_size(16 << 30, scale=4, element_size=4)


def test_default_overlap_covers_receptive_radius_and_bicubic():
    assert default_overlap(IOSpec(scale=2)) == 4
    assert default_overlap(IOSpec(scale=2, receptive_radius=20)) == 20
    assert default_overlap(IOSpec(scale=2, in_channels=1, color="y", receptive_radius=20)) == 22


# --- the automatic tile: balanced, bounded overlap work, within the memory budget ----------------

BALANCED_CASES = [
    # (height, width, max_pixels, overlap, multiple_of)
    (720, 1280, 345_000, 9, 1),
    (720, 1280, 131_000, 9, 1),
    (720, 1280, 65_000, 9, 1),
    (1080, 1920, 500_000, 22, 4),
    (257, 1003, 20_000, 7, 8),
    (100, 3000, 40_000, 10, 1),
]


def _computed(plan) -> int:
    return plan.tiles_per_image * plan.tile_h * plan.tile_w


@pytest.mark.parametrize("h,w,max_pixels,overlap,m", BALANCED_CASES)
def test_automatic_tiles_are_equal_and_cover_the_image_without_a_thin_remainder(h, w, max_pixels, overlap, m):
    tile = balanced_tile(h, w, max_pixels=max_pixels, overlap=overlap, multiple_of=m)
    assert tile is not None
    plan = plan_tiles(h, w, tile=tile, overlap=overlap, multiple_of=m)
    assert (plan.tile_h, plan.tile_w) == tile and plan.tiles_per_image > 1
    for origins, size, padded in ((plan.ys, plan.tile_h, -(-h // m) * m), (plan.xs, plan.tile_w, -(-w // m) * m)):
        if len(origins) == 1:
            continue
        # The tiles reach just past the image: the last one is pulled back by less than one
        # multiple_of per tile (a big tile plus a thin remainder would pull it back by most of a tile).
        n, step = len(origins), size - 2 * overlap
        assert (n - 1) * step + size - padded < (n + 1) * m, (origins, size)
        steps = [b - a for a, b in zip(origins, origins[1:])]
        assert max(steps) - min(steps) < (n + 1) * m, steps


@pytest.mark.parametrize("h,w,max_pixels,overlap,m", BALANCED_CASES)
def test_automatic_tiles_bound_the_recomputed_overlap(h, w, max_pixels, overlap, m):
    """n tiles along an axis of L pixels compute at most L + 2 * overlap * (n - 1) (+ rounding) pixels of
    it, and no square tile within the budget computes fewer pixels in all."""
    tile = balanced_tile(h, w, max_pixels=max_pixels, overlap=overlap, multiple_of=m)
    plan = plan_tiles(h, w, tile=tile, overlap=overlap, multiple_of=m)
    ny, nx = len(plan.ys), len(plan.xs)
    hp, wp = -(-h // m) * m, -(-w // m) * m
    bound = (hp + 2 * overlap * (ny - 1) + ny * m) * (wp + 2 * overlap * (nx - 1) + nx * m)
    assert _computed(plan) <= bound
    lower = -(-(2 * overlap + 16) // m) * m
    for side in range(lower, int(max_pixels**0.5) + 1, m):
        square = plan_tiles(h, w, tile=side, overlap=overlap, multiple_of=m)
        assert _computed(plan) <= _computed(square), f"square tile {side} computes fewer pixels"


def test_a_720p_frame_tiled_within_a_2_gib_budget_recomputes_under_ten_percent():
    max_pixels = tile_pixel_budget(2 << 30, scale=4)
    tile = balanced_tile(720, 1280, max_pixels=max_pixels, overlap=9)
    plan = plan_tiles(720, 1280, tile=tile, overlap=9)
    assert plan.tiles_per_image > 1
    assert _computed(plan) / (720 * 1280) - 1 <= 0.10
    # The square tile of the same budget (the former automatic choice) recomputes far more.
    square = plan_tiles(720, 1280, tile=int(max_pixels**0.5), overlap=9)
    assert _computed(square) / (720 * 1280) - 1 > 0.5


@pytest.mark.parametrize("h,w,max_pixels,overlap,m", BALANCED_CASES)
def test_automatic_tiles_respect_the_memory_budget_and_the_shape_limits(h, w, max_pixels, overlap, m):
    tile = balanced_tile(h, w, max_pixels=max_pixels, overlap=overlap, multiple_of=m)
    assert tile[0] * tile[1] <= max_pixels
    assert tile[0] % m == 0 and tile[1] % m == 0 and min(tile) >= 2 * overlap + 16
    capped = balanced_tile(h, w, max_pixels=max_pixels, overlap=overlap, multiple_of=m, max_hw=(96, 128))
    assert capped[0] <= 96 and capped[1] <= 128 and capped[0] * capped[1] <= max_pixels


def test_whole_image_when_it_fits_and_the_budget_formula():
    assert balanced_tile(360, 640, max_pixels=360 * 640, overlap=9) is None
    assert balanced_tile(360, 640, max_pixels=360 * 640 - 1, overlap=9) is not None
    assert balanced_tile(360, 640, max_pixels=10**9, overlap=9, max_hw=(512, 512)) is not None
    # bytes per LR pixel = 1024 * (element / 4) * scale^2 * batch
    assert tile_pixel_budget(1 << 30, scale=4) == (1 << 30) // (1024 * 16)
    assert tile_pixel_budget(1 << 30, scale=4, element_size=2, batch=2) == (1 << 30) // (1024 * 16)
    # A budget below the smallest legal tile still yields that tile, not an error.
    assert balanced_tile(200, 200, max_pixels=10, overlap=4, multiple_of=8) == (24, 24)
