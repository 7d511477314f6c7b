"""PSNR/SSIM on the standard sets for each model and each of its deployed forms, beside the
published numbers.

Scoring is :func:`sr_runtime.evaluate.evaluate_folder` (the literature's protocol: MATLAB bicubic
LR rounded to 8 bits, Y channel, ``scale``-pixel border crop); a deployed form is scored by
wrapping its runtime backend as the model callable, so ONNX Runtime FP16 is scored exactly as the
PyTorch model is. Rows follow :data:`benchmarks.report.QUALITY_FIELDS`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.bench_backends import Form, ModelUnderTest
from benchmarks.gallery import Gallery

__all__ = ["PUBLISHED", "PAPER_ROW", "DATASETS", "published", "BackendModel", "quality_row", "bicubic_row"]

log = logging.getLogger(__name__)

DATASETS = ("Set5", "Set14", "BSD100")

# Published PSNR/SSIM (Y, crop = scale) from /work/shared/reference/paper_tables.md (public paper
# figures). (psnr, ssim or None, verified?) per method, scale and dataset; "unverified" cells of
# that file carry False. SRResNet's SSIM (SRGAN's own convention) is left out: not comparable.
PUBLISHED: dict[str, dict[int, dict[str, tuple[float, float | None, bool]]]] = {
    "Bicubic": {
        2: {"Set5": (33.66, 0.9299, True), "Set14": (30.24, 0.8688, True), "BSD100": (29.56, 0.8431, True)},
        3: {"Set5": (30.39, 0.8682, True), "Set14": (27.55, 0.7742, True), "BSD100": (27.21, 0.7385, True)},
        4: {"Set5": (28.42, 0.8104, True), "Set14": (26.00, 0.7027, True), "BSD100": (25.96, 0.6675, True)},
    },
    "SRCNN": {
        2: {"Set5": (36.66, 0.9542, True), "Set14": (32.42, 0.9063, True), "BSD100": (31.36, 0.8879, True)},
        3: {"Set5": (32.75, 0.9090, True), "Set14": (29.28, 0.8209, True), "BSD100": (28.41, 0.7863, True)},
        4: {"Set5": (30.48, 0.8628, True), "Set14": (27.49, 0.7503, True), "BSD100": (26.90, 0.7101, True)},
    },
    "FSRCNN": {
        2: {"Set5": (37.00, 0.9558, True), "Set14": (32.63, 0.9088, True), "BSD100": (31.53, 0.8920, True)},
        3: {"Set5": (33.18, 0.9140, False), "Set14": (29.37, 0.8240, False), "BSD100": (28.53, 0.7910, False)},
        4: {"Set5": (30.72, 0.8660, True), "Set14": (27.61, 0.7550, True), "BSD100": (26.98, 0.7150, True)},
    },
    "ESPCN": {
        3: {"Set5": (33.13, None, True), "Set14": (29.49, None, True)},
        4: {"Set5": (30.90, None, True), "Set14": (27.73, None, True)},
    },
    "VDSR": {
        2: {"Set5": (37.53, 0.9587, True), "Set14": (33.03, 0.9124, True), "BSD100": (31.90, 0.8960, True)},
        3: {"Set5": (33.66, 0.9213, True), "Set14": (29.77, 0.8314, True), "BSD100": (28.82, 0.7976, True)},
        4: {"Set5": (31.35, 0.8838, True), "Set14": (28.01, 0.7674, True), "BSD100": (27.29, 0.7251, True)},
    },
    "RED30": {
        2: {"Set5": (37.66, 0.9599, False), "Set14": (32.94, 0.9144, False), "BSD100": (31.99, 0.8974, False)},
        3: {"Set5": (33.82, 0.9230, False), "Set14": (29.61, 0.8341, False), "BSD100": (28.93, 0.7994, False)},
        4: {"Set5": (31.51, 0.8869, False), "Set14": (27.86, 0.7718, False), "BSD100": (27.40, 0.7290, False)},
    },
    "DRRN (B1U25)": {
        2: {"Set5": (37.74, 0.9591, True), "Set14": (33.23, 0.9136, True), "BSD100": (32.05, 0.8973, True)},
        3: {"Set5": (34.03, 0.9244, True), "Set14": (29.96, 0.8349, True), "BSD100": (28.95, 0.8004, True)},
        4: {"Set5": (31.68, 0.8888, True), "Set14": (28.21, 0.7721, True), "BSD100": (27.38, 0.7284, True)},
    },
    "EDSR-baseline": {
        2: {"Set5": (37.99, 0.9604, True), "Set14": (33.57, 0.9175, True), "BSD100": (32.16, 0.8994, True)},
        3: {"Set5": (34.37, 0.9270, True), "Set14": (30.28, 0.8414, True), "BSD100": (29.08, 0.8051, True)},
        4: {"Set5": (32.09, 0.8938, True), "Set14": (28.58, 0.7813, True), "BSD100": (27.57, 0.7357, True)},
    },
    "EDSR": {
        2: {"Set5": (38.11, 0.9601, True), "Set14": (33.92, 0.9195, True), "BSD100": (32.32, 0.9013, True)},
        3: {"Set5": (34.65, 0.9282, True), "Set14": (30.52, 0.8462, True), "BSD100": (29.25, 0.8093, True)},
        4: {"Set5": (32.46, 0.8968, True), "Set14": (28.80, 0.7876, True), "BSD100": (27.71, 0.7420, True)},
    },
    "SRResNet (MSE)": {
        4: {"Set5": (32.05, None, True), "Set14": (28.49, None, True), "BSD100": (27.58, None, True)},
    },
}

PAPER_ROW: dict[str, str] = {
    "srcnn": "SRCNN",
    "fsrcnn": "FSRCNN",
    "espcn": "ESPCN",
    "vdsr": "VDSR",
    "edsr": "EDSR-baseline",
    "edsr-large": "EDSR",
    "red30": "RED30",
    "drrn": "DRRN (B1U25)",
    "srresnet": "SRResNet (MSE)",
}
"""Registry name -> the paper row it is compared with. red10 and srgan have no comparable row;
the registry's drrn is B1U9, so the B1U25 row is an upper reference, not a target."""


def published(model: str, scale: int, dataset: str) -> tuple[str, float, float | None, bool] | None:
    """(paper row, PSNR, SSIM or None, verified) for a registry name (or "bicubic"), or None."""
    method = "Bicubic" if model == "bicubic" else PAPER_ROW.get(model)
    if method is None:
        return None
    cell = PUBLISHED.get(method, {}).get(scale, {}).get(dataset)
    if cell is None:
        return None
    return (method, *cell)


class BackendModel:
    """A runtime backend as :func:`sr_runtime.evaluate.evaluate_folder`'s model callable:
    RGB (1, 3, h, w) float32 in [0, 1] -> (1, 3, s*h, s*w) float32, on the backend's device."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.spec = backend.spec

    def __call__(self, lr: torch.Tensor) -> torch.Tensor:
        x = lr.to(device=self.backend.device, dtype=self.backend.input_dtype)
        with torch.inference_mode():
            return self.backend.run(x).float()


def _row(model: str, scale: int, weights: str, form: Form, dataset: str, result, seconds: float) -> dict[str, Any]:
    pub = published(model, scale, dataset)
    return {
        "model": model,
        "scale": scale,
        "weights": weights,
        "backend": form.backend,
        "precision": form.precision,
        "device": form.device,
        "dataset": dataset,
        "images": result.images,
        "psnr": result.psnr,
        "ssim": result.ssim,
        "published_method": None if pub is None else pub[0] + ("" if pub[3] else ", unverified"),
        "published_psnr": None if pub is None else pub[1],
        "published_ssim": None if pub is None else pub[2],
        "delta_psnr": None if pub is None else result.psnr - pub[1],
        "seconds": seconds,
    }


def quality_row(mut: ModelUnderTest, form: Form, backend, data_dir: Path, dataset: str,
                gallery: Gallery | None = None) -> dict[str, Any]:
    """Score ``backend`` (``mut`` in ``form``) on ``data_dir/dataset``, handing the outputs to ``gallery``
    when given. Raises InputError for bad data."""
    from sr_runtime.evaluate import evaluate_folder

    start = time.perf_counter()
    if form.backend == "default":  # name the form the default path chose, as the latency rows do
        form = Form(f"default:{backend.name}", backend.precision, form.device)
    device = "cpu" if form.device == "cpu" else str(backend.device)
    keep = gallery.collector(dataset, mut.scale, mut.model, form.backend, form.precision, mut.weights) if gallery else None
    result = evaluate_folder(Path(data_dir) / dataset, mut.scale, model=BackendModel(backend), device=device,
                             method=f"{mut.model} {form}", on_image=keep)
    row = _row(mut.model, mut.scale, mut.weights, form, dataset, result, time.perf_counter() - start)
    log.info("quality %s x%d %s on %s: %.2f dB / %.4f (published %s)", mut.model, mut.scale, form, dataset,
             row["psnr"], row["ssim"], row["published_psnr"])
    return row


def bicubic_row(scale: int, data_dir: Path, dataset: str, gallery: Gallery | None = None) -> dict[str, Any]:
    """The protocol's own bicubic on ``dataset``: a check that our numbers are comparable with the papers'.
    With ``gallery``, this pass chooses the windows of its crops (run it before the models)."""
    from sr_runtime.evaluate import evaluate_folder

    start = time.perf_counter()
    result = evaluate_folder(Path(data_dir) / dataset, scale, model=None,
                             on_image=gallery.reference(dataset, scale) if gallery else None)
    return _row("bicubic", scale, "none", Form("bicubic", "fp32", "cpu"), dataset, result, time.perf_counter() - start)
