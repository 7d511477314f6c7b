"""Side-by-side crops, to judge an upscale by eye: where to look, and the picture.

Super-resolution is judged by eye first: these pick the window where several versions of one image
(bicubic, models, precisions) differ most, and enlarge crops with nearest-neighbour so the pixels
stay visible. ``sr-run --compare`` (:func:`write_comparison`) puts the input, bicubic-enlarged,
beside the output; sr-bench's report cuts the same kind of crops for every model it measured.

Images here are HWC (or HW) uint8 arrays of one size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sr_runtime.errors import InputError

__all__ = ["COMPARE_WINDOW", "busiest_windows", "compare_output", "enlarge_nearest", "side_by_side", "write_comparison"]

COMPARE_WINDOW = 128
"""Side of the output window ``sr-run --compare`` shows, in output pixels (less on a smaller image)."""

_COMPARE_SIDE = 384
"""About how wide each enlarged panel of ``sr-run --compare`` is, in pixels."""


def _luma(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    return arr.reshape(arr.shape[0], arr.shape[1])


def _window_sums(spread: np.ndarray, wh: int, ww: int) -> np.ndarray:
    """Sum of ``spread`` over every wh x ww window; entry (y, x) is the window with top-left (y, x)."""
    integral = np.pad(spread.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return integral[wh:, ww:] - integral[:-wh, ww:] - integral[wh:, :-ww] + integral[:-wh, :-ww]


def busiest_windows(images: Sequence[np.ndarray], size: tuple[int, int], *, count: int = 1,
                    stride: int = 4) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of up to ``count`` non-overlapping windows of ``size`` (h, w) where
    ``images`` differ most, best first.

    The spread at a pixel is the standard deviation of its luma across ``images`` (two images: half
    their difference); a window scores the sum of it. The search runs on a map averaged over
    ``stride`` x ``stride`` blocks, so corners are multiples of ``stride`` (or the far edge). A window
    larger than the images is clipped to them. Raises InputError for fewer than two images or
    images of different sizes.
    """
    if len(images) < 2:
        raise InputError(f"need at least two images to find where they differ, got {len(images)}")
    shapes = {np.asarray(img).shape[:2] for img in images}
    if len(shapes) != 1:
        raise InputError(f"images to compare differ in size: {sorted(shapes)}")
    (height, width), = shapes
    wh, ww = min(size[0], height), min(size[1], width)
    spread = np.stack([_luma(img) for img in images]).std(axis=0)
    bh, bw = height // stride, width // stride
    blocks = spread[: bh * stride, : bw * stride].reshape(bh, stride, bw, stride).mean(axis=(1, 3))
    kh, kw = max(1, wh // stride), max(1, ww // stride)
    scores = _window_sums(blocks, min(kh, bh), min(kw, bw)) if bh and bw else np.zeros((1, 1))
    corners: list[tuple[int, int]] = []
    while len(corners) < count and np.isfinite(scores).any():
        by, bx = np.unravel_index(int(np.argmax(scores)), scores.shape)
        corners.append((min(int(by) * stride, height - wh), min(int(bx) * stride, width - ww)))
        scores[max(0, by - kh + 1): by + kh, max(0, bx - kw + 1): bx + kw] = -np.inf  # no overlap with it
    return corners


def enlarge_nearest(img: np.ndarray, zoom: int) -> np.ndarray:
    """Each pixel repeated ``zoom`` x ``zoom`` times: the pixels stay visible (no smoothing)."""
    if zoom < 1:
        raise InputError(f"zoom must be >= 1, got {zoom}")
    return np.repeat(np.repeat(np.asarray(img), zoom, axis=0), zoom, axis=1)


def _rgb(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[:, :, :3]


def _caption(text: str, width: int, height: int = 16) -> np.ndarray:
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(strip).text((4, 2), text, fill=(0, 0, 0))
    return np.asarray(strip)


def side_by_side(panels: Sequence[np.ndarray], labels: Sequence[str], *, gap: int = 6) -> np.ndarray:
    """The panels (uint8, one height) left to right on white, each with its label above it; RGB uint8."""
    if len(panels) != len(labels):
        raise InputError(f"{len(panels)} panels but {len(labels)} labels")
    columns = []
    for i, (panel, label) in enumerate(zip(panels, labels)):
        rgb = _rgb(panel)
        columns.append(np.concatenate([_caption(label, rgb.shape[1]), rgb], axis=0))
        if i < len(panels) - 1:
            columns.append(np.full((columns[-1].shape[0], gap, 3), 255, np.uint8))
    return np.concatenate(columns, axis=1)


def write_comparison(src: str | os.PathLike, output: str | os.PathLike, scale: int,
                     dst: str | os.PathLike | None = None) -> Path:
    """Write the window of ``output`` (the upscale of ``src`` by ``scale``) where it differs most from
    ``src`` bicubic-enlarged, both enlarged with nearest-neighbour, bicubic on the left; PNG.

    ``dst`` defaults to ``OUTPUT_compare.png`` beside the output (``img_x4.png`` ->
    ``img_x4_compare.png``). Returns the path written. Raises InputError when the output is not
    ``scale`` times the input (or either cannot be read).
    """
    from sr_runtime.color import image_to_tensor, tensor_to_image
    from sr_runtime.images import read_image, write_image
    from sr_runtime.resize import imresize

    output = Path(output)
    lr, sr = read_image(src), read_image(output)
    if (sr.height, sr.width) != (lr.height * scale, lr.width * scale):
        raise InputError(f"{output} is {sr.width}x{sr.height}; expected x{scale} of {src} "
                         f"({lr.width * scale}x{lr.height * scale})")
    bicubic_u8 = tensor_to_image(imresize(image_to_tensor(lr.pixels), scale=scale).clamp(0, 1))
    sr_u8 = tensor_to_image(image_to_tensor(sr.pixels))
    side = min(COMPARE_WINDOW, sr.height, sr.width)
    (y, x), = busiest_windows([_rgb(bicubic_u8), _rgb(sr_u8)], (side, side))
    zoom = max(1, _COMPARE_SIDE // side)
    crops = [enlarge_nearest(img[y: y + side, x: x + side], zoom) for img in (bicubic_u8, sr_u8)]
    where = f"at ({x}, {y}), {side}x{side} px, x{zoom} nearest"
    picture = side_by_side(crops, [f"input, bicubic x{scale} {where}", "output"])
    return write_image(Path(dst) if dst is not None else output.with_name(f"{output.stem}_compare.png"), picture)


def compare_output(src: str | os.PathLike, output: str | os.PathLike, scale: int) -> str:
    """``sr-run --compare`` for one finished file: :func:`write_comparison` for an image output; a
    video gets none. Returns a one-line summary of what was done."""
    from sr_runtime.images import IMAGE_EXTENSIONS

    if Path(output).suffix.lower() not in IMAGE_EXTENSIONS:
        return f"{output}: no comparison (--compare applies to images)"
    return f"{src}: comparison in {write_comparison(src, output, scale)}"
