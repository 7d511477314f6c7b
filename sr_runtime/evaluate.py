"""The SR literature's evaluation protocol, for a folder of HR images.

For each HR image: crop it to a multiple of ``scale`` (top-left anchored), make the LR with
MATLAB bicubic ``imresize(hr, 1/scale)`` rounded to uint8, super-resolve it (bicubic
``imresize(lr, scale)``, or a model), round the SR to uint8, and score PSNR/SSIM on the Y channel
with a ``scale``-pixel border crop (:mod:`sr_runtime.metrics`). With this protocol bicubic
reproduces the published rows (see README), so model numbers are comparable with the papers'.

The protocol is 8-bit: a 16-bit HR image is read as such, but its LR and SR are rounded to 8 bits.
Alpha is ignored.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from sr_runtime.color import image_to_tensor, rgb_to_y
from sr_runtime.errors import BackendUnavailableError, InputError
from sr_runtime.images import list_images, read_image
from sr_runtime.metrics import psnr, ssim
from sr_runtime.resize import imresize, make_lr, modcrop, quantize_u8

__all__ = ["ImageScore", "EvalResult", "evaluate_folder", "score_image", "super_resolve", "load_model", "min_hr_size",
           "dataset_fingerprint"]

log = logging.getLogger(__name__)

SRModel = Callable[[torch.Tensor], torch.Tensor]
"""RGB (1, 3, h, w) float32 in [0, 1] -> RGB (1, 3, scale*h, scale*w) in [0, 1], e.g. a DeployModel."""

_SSIM_WINDOW = 11


@dataclass
class ImageScore:
    name: str
    psnr: float
    ssim: float


@dataclass
class EvalResult:
    """Scores of one method on one folder; ``psnr``/``ssim`` are means over ``per_image``."""

    data_dir: str
    scale: int
    method: str
    """``"bicubic"`` or the model's description."""
    psnr: float
    ssim: float
    per_image: list[ImageScore] = field(default_factory=list)
    checkpoint: str | None = None

    @property
    def images(self) -> int:
        return len(self.per_image)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: data_dir, scale, method, bicubic, checkpoint, crop, images, psnr, ssim, per_image."""
        return {
            "data_dir": self.data_dir,
            "scale": self.scale,
            "method": self.method,
            "bicubic": self.method == "bicubic",
            "checkpoint": self.checkpoint,
            "crop": self.scale,
            "images": self.images,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "per_image": [asdict(s) for s in self.per_image],
        }


def min_hr_size(scale: int) -> int:
    """Smallest HR height/width (after the mod-crop) the protocol can score: SSIM's 11x11 window after the crop."""
    return 2 * scale + _SSIM_WINDOW


def _run_model(model: SRModel, lr: torch.Tensor, scale: int) -> torch.Tensor:
    """RGB LR (1, 3, h, w) -> SR (1, 3, s*h, s*w), padding the LR (edge pixels) when the model needs it."""
    spec = getattr(model, "spec", None)
    h, w = lr.shape[-2:]
    multiple = spec.multiple_of if spec is not None else 1
    least = spec.min_size if spec is not None else 1
    target_h = max(-(-h // multiple), -(-least // multiple)) * multiple
    target_w = max(-(-w // multiple), -(-least // multiple)) * multiple
    x = lr.to(torch.float32)
    if (target_h, target_w) != (h, w):
        x = F.pad(x, (0, target_w - w, 0, target_h - h), mode="replicate")
    with torch.inference_mode():
        sr = model(x)
    if sr.shape[:2] != (1, 3) or sr.shape[-2:] != (target_h * scale, target_w * scale):
        raise InputError(
            f"model returned shape {tuple(sr.shape)} for an LR of {tuple(x.shape)}; expected x{scale} RGB output"
        )
    return sr[..., : h * scale, : w * scale].to(lr.dtype)


def super_resolve(lr: torch.Tensor, scale: int, *, model: SRModel | None = None) -> torch.Tensor:
    """SR of an 8-bit-level LR (1, C, h, w), C = 1 or 3, rounded to 8-bit levels; (1, C, s*h, s*w).

    Bicubic (``model=None``) is MATLAB ``imresize(lr, scale)``. A model always sees RGB: a
    1-channel LR is fed as three equal channels, and its RGB output is reduced back to one
    channel through BT.601 luma, ``(Y - 16/255) * 255/219``, which for a gray output (a Y-only
    network on gray input gives exactly that) is the gray value itself.
    """
    if model is None:
        return quantize_u8(imresize(lr, scale=scale))
    if lr.shape[1] == 1:
        sr = _run_model(model, lr.expand(-1, 3, -1, -1), scale)
        sr = (rgb_to_y(sr) - 16.0 / 255.0) * (255.0 / 219.0)
    else:
        sr = _run_model(model, lr, scale)
    return quantize_u8(sr)


def score_image(hr: torch.Tensor, scale: int, *, model: SRModel | None = None) -> tuple[float, float]:
    """(PSNR, SSIM) of one HR image (1, C, H, W) in [0, 1] under the protocol (mod-crop, LR, SR, Y, crop).

    Use float64 for ``hr`` to match the published bicubic numbers to the last digit.
    """
    p, s, _, _ = _score(hr, scale, model)
    return p, s


def _score(hr: torch.Tensor, scale: int, model: SRModel | None) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """(PSNR, SSIM, the mod-cropped HR, the SR) of one image under the protocol."""
    hr = modcrop(hr, scale)
    lr = make_lr(hr, scale, quantize=True)
    sr = super_resolve(lr, scale, model=model)
    return float(psnr(sr, hr, crop=scale)[0]), float(ssim(sr, hr, crop=scale)[0]), hr, sr


def _device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(
            "CUDA was requested but torch.cuda.is_available() is False; use --device cpu or install a CUDA build of torch"
        )
    return device


def _load_hr(path: Path, scale: int, device: torch.device) -> torch.Tensor:
    img = read_image(path)
    h, w = img.height - img.height % scale, img.width - img.width % scale
    least = min_hr_size(scale)
    if min(h, w) < least:
        raise InputError(
            f"{path}: image is {img.width}x{img.height}, too small to evaluate at x{scale}; it needs at least "
            f"{least}x{least} pixels after cropping to a multiple of {scale} (SSIM window after the border crop)"
        )
    return image_to_tensor(img.pixels, device=device, dtype=torch.float64)


def dataset_fingerprint(folder: str | os.PathLike) -> str:
    """``sha256:<16 hex>`` of a folder's images (names and bytes, sorted): two scores are comparable
    only when they were measured on the same fingerprint. Raises InputError for a folder without images."""
    import hashlib

    digest = hashlib.sha256()
    for path in list_images([folder]):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return "sha256:" + digest.hexdigest()[:16]


def evaluate_folder(
    data_dir: str | os.PathLike,
    scale: int,
    *,
    model: SRModel | None = None,
    device: str | torch.device = "cpu",
    method: str | None = None,
    checkpoint: str | None = None,
    on_image: Callable[[ImageScore, torch.Tensor, torch.Tensor], None] | None = None,
) -> EvalResult:
    """Score every image in ``data_dir`` (not recursive) with the protocol; bicubic when ``model`` is None.

    ``model`` maps RGB (1, 3, h, w) float32 in [0, 1] to (1, 3, s*h, s*w) on ``device`` (see
    :func:`load_model`); ``method`` and ``checkpoint`` only label the result. ``on_image(score, hr, sr)``,
    when given, sees each image as it is scored: the mod-cropped HR and the SR, (1, C, H, W) float64
    in [0, 1] on 8-bit levels (sr-bench cuts its side-by-side crops from them). All images are read
    and checked before any is scored. Raises InputError for a missing or empty folder, a file
    that is not an image, or an image too small for the scale (naming the file);
    BackendUnavailableError when CUDA is asked for and missing.
    """
    data_dir = Path(data_dir)
    if scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale}")
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: folder not found" if not data_dir.exists() else f"{data_dir}: is not a folder")
    device = _device(device)
    paths = list_images([data_dir])
    hrs = [(path, _load_hr(path, scale, device)) for path in paths]
    scores = []
    for path, hr in hrs:
        p, s, hr_cropped, sr = _score(hr, scale, model)
        log.info("%s: PSNR %.4f dB, SSIM %.4f", path.name, p, s)
        scores.append(ImageScore(path.stem, p, s))
        if on_image is not None:
            on_image(scores[-1], hr_cropped, sr)
    return EvalResult(
        data_dir=str(data_dir),
        scale=scale,
        method=method or ("bicubic" if model is None else type(model).__name__),
        psnr=sum(s.psnr for s in scores) / len(scores),
        ssim=sum(s.ssim for s in scores) / len(scores),
        per_image=scores,
        checkpoint=checkpoint,
    )


def load_model(
    model: str,
    scale: int,
    *,
    device: str | torch.device = "cpu",
    runs_dir: str | os.PathLike = "runs",
    backend: str = "torch",
    precision: str | None = None,
) -> tuple[SRModel, str, Path]:
    """Resolve ``model`` (checkpoint path or registry name, see :func:`sr_runtime.zoo.resolve_checkpoint`)
    into ``(callable RGB -> RGB on device, description, checkpoint path)``.

    ``backend="torch"``: the DeployModel in PyTorch at FP32 (the reference). ``backend="auto"``: the
    runtime's default path, the form ``sr-run`` uses (:mod:`sr_runtime.fastpath`), so its quality can
    be compared with the reference. Raises InputError / CheckpointError / UnsupportedArchError /
    UnsupportedScaleError / BackendUnavailableError.
    """
    from sr_runtime.checkpoint import load_checkpoint  # imports the architectures: only when a model is used
    from sr_runtime.deploy import DeployModel
    from sr_runtime.zoo import resolve_checkpoint

    device = _device(device)
    path, how = resolve_checkpoint(model, scale, runs_dir=runs_dir)
    if backend != "torch" or precision not in (None, "fp32"):
        from sr_runtime.fastpath import load_backend
        from sr_runtime.options import RuntimeOptions

        runner = load_backend(path, RuntimeOptions(backend=backend, device=str(device), precision=precision), scale=scale)
        log.info("evaluating %s", runner.describe())

        def run(lr: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return runner.run(lr.to(runner.device, runner.input_dtype)).to(lr.dtype)

        run.spec = runner.spec  # read by _run_model for the multiple-of padding
        return run, f"{path.stem} ({how}) on {runner.describe()}", path
    ckpt = load_checkpoint(path, scale=scale, device=device)
    log.info("evaluating %s x%d from %s", ckpt.arch, ckpt.scale, how)
    return DeployModel(ckpt.model, ckpt.spec).to(device).eval(), f"{ckpt.name} ({how})", path
