"""Side-by-side crops of the quality datasets, for ``report.html``: HR, bicubic and every measured form
on one window of a few images, and one before/after pair (bicubic, best model) for the slider.

The quality benchmark hands each image it scores to a :class:`Gallery` (``evaluate_folder``'s
``on_image``). The bicubic pass comes first: on the first ``images`` images of each dataset and scale
it picks a few candidate windows where bicubic is furthest from HR (the detail a model has to
restore), and keeps HR and bicubic crops of each. Every model form then adds its crops of the same
windows, so memory stays a few crops per image and form. :meth:`Gallery.write` keeps, per image, the
candidate where the models differ most (with bicubic, where they agree), writes the crops as PNG files and returns what
``results.json`` records under ``gallery`` (see :data:`benchmarks.report.GALLERY_FIELDS`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CROP", "SLIDER", "Gallery"]

CROP = 64
"""Side of a crop, HR pixels."""
CROP_ZOOM = 3
"""Nearest-neighbour enlargement of the crops in the report."""
SLIDER = 192
"""Side of the slider's window, HR pixels (less on a smaller image)."""
SLIDER_ZOOM = 2
_CANDIDATES = 4
_TIE_DB = 0.005
"""PSNRs this close are a tie for the slider's best model (FP16 forms often differ by 0.0001 dB)."""

OnImage = Callable[[Any, torch.Tensor, torch.Tensor], None]
"""``evaluate_folder``'s ``on_image(score, hr, sr)``."""


@dataclass
class _Tile:
    label: str
    model: str
    backend: str | None
    precision: str | None
    weights: str | None
    psnr: float | None
    ssim: float | None
    crops: list[np.ndarray]
    """One per candidate window of the image."""
    slider: np.ndarray | None = None


@dataclass
class _Image:
    dataset: str
    name: str
    scale: int
    windows: list[tuple[int, int]]
    side: tuple[int, int]
    slider_box: tuple[int, int, int, int] | None
    tiles: list[_Tile] = field(default_factory=list)

    def cut(self, img: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
        h, w = self.side
        crops = [img[y: y + h, x: x + w].copy() for y, x in self.windows]
        if self.slider_box is None:
            return crops, None
        y, x, sh, sw = self.slider_box
        return crops, img[y: y + sh, x: x + sw].copy()


def _u8(t: torch.Tensor) -> np.ndarray:
    from sr_runtime.color import tensor_to_image

    return tensor_to_image(t)


def _slider_box(shape: tuple[int, ...], around: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = min(SLIDER, shape[0]), min(SLIDER, shape[1])
    cy, cx = around[0] + crop[0] // 2, around[1] + crop[1] // 2
    y = min(max(0, cy - h // 2), shape[0] - h)
    x = min(max(0, cx - w // 2), shape[1] - w)
    return y, x, h, w


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _crop_psnr(sr: np.ndarray, hr: np.ndarray) -> float | None:
    from sr_runtime.color import image_to_tensor
    from sr_runtime.metrics import psnr

    value = float(psnr(image_to_tensor(sr), image_to_tensor(hr), crop=0)[0])
    return value if np.isfinite(value) else None


class Gallery:
    """Crops of the first ``images`` images of each dataset and scale, for every method scored."""

    def __init__(self, images: int = 3) -> None:
        self.images = images
        self._by_key: dict[tuple[str, int, str], _Image] = {}

    def reference(self, dataset: str, scale: int) -> OnImage:
        """``on_image`` for the bicubic pass over ``dataset``: chooses the windows, keeps HR and bicubic."""
        from sr_runtime.compare import busiest_windows

        def keep(score, hr: torch.Tensor, sr: torch.Tensor) -> None:
            if sum(k[:2] == (dataset, scale) for k in self._by_key) >= self.images:
                return
            hr_u8, sr_u8 = _u8(hr), _u8(sr)
            side = (min(CROP, hr_u8.shape[0]), min(CROP, hr_u8.shape[1]))
            windows = busiest_windows([hr_u8, sr_u8], side, count=_CANDIDATES)
            slider = _slider_box(hr_u8.shape, windows[0], side) if not self._by_key else None
            image = _Image(dataset, score.name, scale, windows, side, slider)
            for label, model, img, psnr, ssim in (("HR", "hr", hr_u8, None, None),
                                                  ("bicubic", "bicubic", sr_u8, score.psnr, score.ssim)):
                image.tiles.append(_Tile(label, model, None, None, None, psnr, ssim, *image.cut(img)))
            self._by_key[(dataset, scale, score.name)] = image

        return keep

    def collector(self, dataset: str, scale: int, model: str, backend: str, precision: str,
                  weights: str) -> OnImage:
        """``on_image`` for one model form over ``dataset``: its crops of the images the bicubic pass kept."""

        def keep(score, hr: torch.Tensor, sr: torch.Tensor) -> None:
            image = self._by_key.get((dataset, scale, score.name))
            if image is not None:
                image.tiles.append(_Tile(f"{model} {backend} {precision}", model, backend, precision, weights,
                                         score.psnr, score.ssim, *image.cut(_u8(sr))))

        return keep

    def write(self, out: Path, folder: str = "crops") -> dict[str, Any]:
        """Write each image's crops (the candidate where the methods differ most) and the slider pair
        as PNG under ``out/folder``; returns ``{"panels": [...], "slider": {...} or None}`` with paths
        relative to ``out``."""
        from sr_runtime.images import write_image

        def save(name: str, img: np.ndarray) -> str:
            write_image(out / folder / f"{name}.png", img)
            return f"{folder}/{name}.png"

        panels = []
        for image in self._by_key.values():
            best = _most_different(image)
            stem = f"{_slug(image.dataset)}_x{image.scale}_{_slug(image.name)}"
            hr_crop = image.tiles[0].crops[best]
            tiles = []
            for i, tile in enumerate(image.tiles):
                crop = tile.crops[best]
                tiles.append({**_describe(tile), "crop_psnr": None if i == 0 else _crop_psnr(crop, hr_crop),
                              "file": save(f"{stem}_{i:02d}_{_slug(tile.label)}", crop)})
            y, x = image.windows[best]
            panels.append({"dataset": image.dataset, "image": image.name, "scale": image.scale,
                           "box": [y, x, *image.side], "zoom": CROP_ZOOM, "tiles": tiles})
        return {"panels": panels, "slider": self._write_slider(save)}

    def _write_slider(self, save: Callable[[str, np.ndarray], str]) -> dict[str, Any] | None:
        image = next((i for i in self._by_key.values() if i.slider_box is not None), None)
        models = [t for t in image.tiles[2:] if t.psnr is not None] if image else []
        if not models:
            return None
        top = max(t.psnr for t in models)
        best = next(t for t in models if t.psnr >= top - _TIE_DB)  # the first measured form among equals
        stem = f"slider_{_slug(image.dataset)}_x{image.scale}_{_slug(image.name)}"
        before, after = image.tiles[1], best
        return {"dataset": image.dataset, "image": image.name, "scale": image.scale, "box": list(image.slider_box),
                "zoom": SLIDER_ZOOM,
                "before": {**_describe(before), "file": save(f"{stem}_before", before.slider)},
                "after": {**_describe(after), "file": save(f"{stem}_after", after.slider)}}


def _describe(tile: _Tile) -> dict[str, Any]:
    return {"label": tile.label, "model": tile.model, "backend": tile.backend, "precision": tile.precision,
            "weights": tile.weights, "psnr": tile.psnr, "ssim": tile.ssim}


def _most_different(image: _Image) -> int:
    """The candidate window where the model forms differ most; where they agree (one model, or forms
    within half a level of each other), where they and bicubic differ most; else the first."""
    for methods in (image.tiles[2:], image.tiles[1:]):
        if len(methods) < 2:
            continue
        spread = [float(np.stack([t.crops[i].astype(np.float32) for t in methods]).std(axis=0).mean())
                  for i in range(len(image.windows))]
        if max(spread) >= 0.5:
            return int(np.argmax(spread))
    return 0
