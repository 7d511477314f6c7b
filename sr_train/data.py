"""Paired LR/HR training patches made on the fly from a folder of HR images.

Each HR image is decoded once, cropped to a multiple of ``scale`` and degraded once with the
MATLAB-compatible bicubic (the LR rounded to 8 bits, as the literature's LR images are), all kept
in memory on ``device``; ``scales`` first adds copies of each image shrunk by those factors (DRRN's
augmentation of the 291 images), each one more pair to draw from, and ``shifts`` adds every copy
shifted by 1 to scale-1 HR pixels before the crop, which samples its LR on another grid. Pairs whose
values are all 8-bit levels (RGB networks fed the LR itself) are kept as uint8, a quarter of the
memory, and turned back into the same float32 values when a patch is cut. A batch is cut from those tensors
on that device, so a GPU is never starved by the data-loader cores. What batch ``step`` holds is a
pure function of ``(seed, step, rank)``: resuming at any step sees exactly the data an uninterrupted
run would.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sr_runtime.color import image_to_tensor, rgb_to_y
from sr_runtime.errors import InputError
from sr_runtime.images import list_images, read_image
from sr_runtime.resize import imresize, make_lr, modcrop, quantize_u8, upscale_bicubic
from sr_runtime.spec import IOSpec

__all__ = ["PairedPatches", "load_hr_folder", "load_default_photos", "DEFAULT_TRAIN_PHOTOS", "DEFAULT_VAL_PHOTOS"]

log = logging.getLogger(__name__)

DEFAULT_TRAIN_PHOTOS = (
    "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "camera", "coins", "moon", "retina", "brick", "grass", "gravel",
)
"""scikit-image sample photos used when no ``--data`` is given (they ship with the install)."""
DEFAULT_VAL_PHOTOS = ("astronaut",)


@dataclass
class HRImage:
    name: str
    rgb: torch.Tensor
    """(3, H, W) float32 in [0, 1]; a grayscale image is repeated to three channels."""


def _to_rgb_tensor(pixels: np.ndarray) -> torch.Tensor:
    t = image_to_tensor(pixels)[0]  # (C, H, W) float32 in [0, 1]
    return t.expand(3, -1, -1).contiguous() if t.shape[0] == 1 else t[:3].contiguous()


def load_hr_folder(folder: str | os.PathLike) -> list[HRImage]:
    """Every image in ``folder`` (recursively). Raises InputError for a missing/empty folder or an unreadable file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: training data folder not found" if not folder.exists() else f"{folder}: not a folder")
    paths = list_images([folder], recursive=True)
    if not paths:
        raise InputError(f"{folder}: no images (PNG, JPEG, BMP, ...) in this folder")
    images = []
    for path in paths:
        try:
            img = read_image(path)
        except InputError as e:
            raise InputError(f"{path}: cannot read training image ({e})") from e
        images.append(HRImage(path.stem, _to_rgb_tensor(img.pixels)))
    return images


def load_default_photos(names: tuple[str, ...]) -> list[HRImage]:
    """scikit-image's sample photos by name (offline: they ship inside scikit-image)."""
    try:
        from skimage import data as skdata
    except ImportError as e:
        raise InputError("no --data given and scikit-image is not installed: pip install scikit-image, or pass --data DIR") from e
    images = []
    for name in names:
        arr = np.asarray(getattr(skdata, name)())
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        images.append(HRImage(name, _to_rgb_tensor(np.ascontiguousarray(arr))))
    return images


class PairedPatches:
    """Random aligned (LR, HR) patch batches in the network's own planes (RGB or Y, see ``spec``).

    ``sample(step)`` returns ``(net_in, target)``: ``net_in`` is (N, C, p, p), or (N, C, s*p, s*p)
    bicubic-upscaled for pre-upsampling networks; ``target`` is (N, C, s*p, s*p). Values in [0, 1].
    """

    def __init__(
        self,
        images: list[HRImage],
        *,
        spec: IOSpec,
        patch_size: int,
        batch_size: int,
        augment: bool = True,
        scales: tuple[float, ...] | list[float] = (1.0,),
        shifts: bool = False,
        seed: int = 0,
        rank: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        scale = spec.scale
        self.spec, self.patch, self.batch_size = spec, patch_size, batch_size
        self.augment, self.seed, self.rank = augment, seed, rank
        self.device = torch.device(device)
        if patch_size < spec.min_size:
            raise InputError(f"patch size {patch_size} is below the model's minimum input size {spec.min_size}")
        hr_side = patch_size * scale
        self.inputs: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        skipped = []
        offsets = [(dy, dx) for dy in range(scale) for dx in range(scale)] if shifts else [(0, 0)]
        for img, factor, (dy, dx) in ((img, f, o) for img in images for f in scales for o in offsets):
            name = img.name if factor == 1 else f"{img.name}@{factor:g}"
            name = name if (dy, dx) == (0, 0) else f"{name}+{dy},{dx}"
            hr = img.rgb.to(self.device)[None]
            if factor != 1:
                # A smaller copy of the photo, as if saved at that size: shrunk, then 8-bit, then degraded.
                hr = quantize_u8(imresize(hr.double(), scale=factor)).float()  # quantize_u8 saturates
            # The same photo with its LR sampled on another grid: drop dy rows and dx columns first.
            hr = modcrop(hr[..., dy:, dx:], scale)
            if min(hr.shape[-2:]) < hr_side:
                skipped.append(f"{name} ({hr.shape[-1]}x{hr.shape[-2]})")
                continue
            # Degradation, colour conversion and upscaling in float64, rounded to float32 once: these are
            # convolutions/matmuls, which CUDA would run in TF32 (10-bit mantissa) on float32 tensors.
            hr = hr.double()
            lr = make_lr(hr, scale, quantize=True)
            if spec.color == "y":
                hr, lr = rgb_to_y(hr), rgb_to_y(lr)
            net_in = upscale_bicubic(lr, scale) if spec.pre_upsample else lr
            self.inputs.append(_compact(net_in[0].float()))
            self.targets.append(_compact(hr[0].float()))
        if skipped:
            log.warning("skipping %d image(s) smaller than one %dx%d HR patch: %s", len(skipped), hr_side, hr_side,
                        ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
        if not self.inputs:
            raise InputError(
                f"every training image is smaller than one HR patch of {hr_side}x{hr_side} "
                f"(patch_size {patch_size} x scale {scale}); use larger images or a smaller data.patch_size"
            )

    def __len__(self) -> int:
        return len(self.inputs)

    def pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair ``i`` as float32 ``(net_in, target)``, whichever way it is stored."""
        return _expand(self.inputs[i]), _expand(self.targets[i])

    def sample(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 8191 + self.rank)
        scale, p = self.spec.scale, self.patch
        k_in = scale if self.spec.pre_upsample else 1
        idx = torch.randint(len(self.inputs), (self.batch_size,), generator=gen).tolist()
        aug = torch.randint(2, (self.batch_size, 3), generator=gen).tolist()
        ins, tgts = [], []
        for i, (hflip, vflip, rot) in zip(idx, aug):
            target = self.targets[i]
            h, w = target.shape[-2] // scale, target.shape[-1] // scale
            y = int(torch.randint(h - p + 1, (1,), generator=gen))
            x = int(torch.randint(w - p + 1, (1,), generator=gen))
            a = _expand(self.inputs[i][:, y * k_in : (y + p) * k_in, x * k_in : (x + p) * k_in])
            b = _expand(target[:, y * scale : (y + p) * scale, x * scale : (x + p) * scale])
            if self.augment:
                if hflip:
                    a, b = a.flip(-1), b.flip(-1)
                if vflip:
                    a, b = a.flip(-2), b.flip(-2)
                if rot:
                    a, b = a.transpose(-1, -2), b.transpose(-1, -2)
            ins.append(a)
            tgts.append(b)
        return torch.stack(ins).contiguous(), torch.stack(tgts).contiguous()


def _compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` as uint8 when every value is an 8-bit level k/255 (float32 k/255 is recovered exactly), else ``t``."""
    q = t.mul(255).round_()
    return q.to(torch.uint8) if torch.equal(q.div(255), t) else t


def _expand(t: torch.Tensor) -> torch.Tensor:
    return t.float().div_(255) if t.dtype == torch.uint8 else t
