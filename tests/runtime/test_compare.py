"""Side-by-side crops: where images differ most, nearest-neighbour enlargement, and sr-run --compare."""

from __future__ import annotations

import numpy as np
import pytest

from sr_runtime.cli import main
from sr_runtime.compare import busiest_windows, compare_output, enlarge_nearest, side_by_side
from sr_runtime.errors import InputError
from sr_runtime.images import read_image, write_image


def _with_patch(base: np.ndarray, y: int, x: int, side: int, seed: int) -> np.ndarray:
    out = base.copy()
    out[y: y + side, x: x + side] = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return out


def test_the_window_covers_where_the_images_differ():
    flat = np.full((96, 128, 3), 120, np.uint8)
    changed = _with_patch(flat, 40, 72, 16, seed=1)
    (y, x), = busiest_windows([flat, changed, flat], (32, 32))
    assert y <= 40 and y + 32 >= 56 and x <= 72 and x + 32 >= 88


def test_several_windows_do_not_overlap_and_come_best_first():
    flat = np.full((96, 128, 3), 120, np.uint8)
    changed = _with_patch(_with_patch(flat, 8, 8, 16, seed=1), 60, 96, 8, seed=2)
    first, second = busiest_windows([flat, changed], (24, 24), count=2)
    assert first[0] <= 8 and first[1] <= 8  # the larger patch first
    assert abs(first[0] - second[0]) >= 24 or abs(first[1] - second[1]) >= 24
    assert second[0] <= 60 <= second[0] + 24 - 8 and second[1] <= 96 <= second[1] + 24 - 8


def test_a_window_larger_than_the_image_is_the_whole_image():
    a = np.zeros((10, 14), np.uint8)
    assert busiest_windows([a, a + 1], (64, 64)) == [(0, 0)]


def test_fewer_than_two_images_or_two_sizes_are_refused():
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="at least two"):
        busiest_windows([a], (4, 4))
    with pytest.raises(InputError, match="differ in size"):
        busiest_windows([a, np.zeros((8, 9, 3), np.uint8)], (4, 4))


def test_nearest_enlargement_repeats_each_pixel():
    img = np.arange(6, dtype=np.uint8).reshape(2, 3)
    big = enlarge_nearest(img, 3)
    assert big.shape == (6, 9)
    assert (big[::3, ::3] == img).all() and (big[:3, :3] == img[0, 0]).all()


def test_side_by_side_labels_each_panel():
    panels = [np.zeros((20, 30, 3), np.uint8), np.zeros((20, 40), np.uint8)]
    picture = side_by_side(panels, ["left", "right"], gap=5)
    assert picture.shape == (16 + 20, 30 + 5 + 40, 3) and picture.dtype == np.uint8
    assert (picture[:16, :30] < 128).any()  # the caption's text


def test_sr_run_compare_writes_the_crop_beside_the_output(tmp_path, photo_rgb_u8):
    src = write_image(tmp_path / "img.png", np.ascontiguousarray(photo_rgb_u8[120:168, 180:244]))  # 48x64
    assert main([str(src), "--scale", "4", "--backend", "torch", "--compare", "-q"]) == 0
    sr = read_image(tmp_path / "img_x4.png").pixels
    picture = read_image(tmp_path / "img_x4_compare.png").pixels
    side = 128  # COMPARE_WINDOW, within the 192x256 output
    zoom = 3
    assert picture.shape == (16 + side * zoom, 2 * side * zoom + 6, 3)
    right = picture[16:, side * zoom + 6:]
    shown = right[::zoom, ::zoom]
    assert (enlarge_nearest(shown, zoom) == right).all()  # nearest-neighbour: the pixels stay visible
    corners = [(y, x) for y in range(192 - side + 1) for x in range(256 - side + 1)
               if (sr[y: y + side, x: x + side] == shown).all()]
    assert corners, "the right panel is not a window of the output"
    left = picture[16:, : side * zoom][::zoom, ::zoom]
    assert not (left == shown).all()  # bicubic, not the output again


def test_compare_leaves_videos_alone(tmp_path):
    assert "no comparison" in compare_output(tmp_path / "clip.mp4", tmp_path / "clip_x2.mp4", 2)
    assert not list(tmp_path.iterdir())


def test_compare_refuses_an_output_of_the_wrong_size(tmp_path):
    src = write_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    out = write_image(tmp_path / "a_x2.png", np.zeros((15, 16, 3), np.uint8))
    with pytest.raises(InputError, match="expected x2"):
        compare_output(src, out, 2)
