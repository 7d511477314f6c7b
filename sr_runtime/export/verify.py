"""Parity between an exported artifact and PyTorch FP32, on real images: the one parity gate.

Every export step is followed by :func:`check_parity`: the artifact and the PyTorch model run on
the same crops of real photos (scikit-image's samples always, Set5 when a folder is given) and
:func:`compare` reports what was achieved -- PSNR between the two outputs, the largest difference
in 8-bit levels and the count of NaN/Inf -- not just pass/fail. Below the tolerance of the
artifact's precision the step fails with :class:`~sr_runtime.errors.ParityError` naming the
artifact, the image and the figures reached. ``sr-export`` and the runtime's fast path
(:mod:`sr_runtime.fastpath`, through :func:`parity_rows`) gate on the same photos, sizes and
tolerances.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from sr_runtime.errors import ExportError, InputError, ParityError
from sr_runtime.metrics import psnr_db
from sr_runtime.spec import IOSpec

__all__ = [
    "TOLERANCES",
    "CompareResult",
    "OnnxRunner",
    "ParityCase",
    "ParityRow",
    "Tolerance",
    "align_size",
    "check_parity",
    "compare",
    "crop_lr",
    "parity_cases",
    "parity_rows",
    "parity_sizes",
    "sample_images",
]

log = logging.getLogger(__name__)

_LEVELS = 255.0


@dataclass(frozen=True)
class Tolerance:
    """What an artifact of one precision must reach against PyTorch FP32."""

    min_psnr_db: float
    """PSNR between the artifact's output and PyTorch's, both in [0, 1]."""
    max_nonfinite: int = 0
    """NaN/Inf values allowed in the artifact's output."""


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(min_psnr_db=60.0),
    "fp16": Tolerance(min_psnr_db=45.0),
    "bf16": Tolerance(min_psnr_db=45.0),
}
"""Per-precision parity gate. FP32 differs from PyTorch only by summation order (> 100 dB in
practice); FP16 keeps ~3 significant digits, so 45 dB (RMS error ~1.4 8-bit levels) is the bar."""


@dataclass(frozen=True)
class CompareResult:
    """How far ``out`` is from ``ref``. Differences are in 8-bit levels (1.0 = 1/255)."""

    max_abs_levels: float
    """Largest absolute difference over the finite values, in 8-bit levels."""
    mean_abs: float
    """Mean absolute difference over the finite values, in 8-bit levels."""
    psnr_db: float
    """PSNR of ``out`` against ``ref`` with peak 1 (inf when identical), over the finite values."""
    nonfinite: int
    """Number of NaN/Inf values in ``out``."""
    passed: bool
    """Whether the tolerance of the precision compared for was met."""

    def describe(self) -> str:
        return _describe(self.psnr_db, self.max_abs_levels, self.mean_abs, self.nonfinite)


def _describe(psnr_db: float, max_abs_levels: float, mean_abs_levels: float, nonfinite: int) -> str:
    return (
        f"PSNR {_fmt_db(psnr_db)} dB, max |diff| {max_abs_levels:.3f} levels, "
        f"mean |diff| {mean_abs_levels:.4f} levels, {nonfinite} NaN/Inf"
    )


def _fmt_db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}"


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def compare(ref, out, *, precision: str = "fp32") -> CompareResult:
    """Compare an artifact's output ``out`` with the PyTorch FP32 output ``ref``.

    Both are arrays or tensors of the same shape with values in [0, 1] (any float dtype).
    ``precision`` ("fp32" or "fp16") selects the tolerance in :data:`TOLERANCES`.
    Raises ExportError for mismatched shapes or an unknown precision.
    """
    if precision not in TOLERANCES:
        raise ExportError(f"unknown precision {precision!r}; valid: {', '.join(TOLERANCES)}")
    ref_a, out_a = _to_numpy(ref), _to_numpy(out)
    if ref_a.shape != out_a.shape:
        raise ExportError(f"artifact output shape {out_a.shape} differs from PyTorch's {ref_a.shape}")
    finite = np.isfinite(out_a)
    nonfinite = int(finite.size - np.count_nonzero(finite))
    if nonfinite == finite.size:
        max_abs = mean_abs = float("inf")
        psnr = float("-inf")
    else:
        diff = np.abs(out_a[finite] - ref_a[finite])
        max_abs = float(diff.max()) * _LEVELS
        mean_abs = float(diff.mean()) * _LEVELS
        psnr = psnr_db(out_a[finite], ref_a[finite])
    tol = TOLERANCES[precision]
    passed = nonfinite <= tol.max_nonfinite and psnr >= tol.min_psnr_db
    return CompareResult(max_abs, mean_abs, psnr, nonfinite, passed)


@dataclass(frozen=True)
class ParityCase:
    """One parity input: a named crop of a real image, (N, 3, h, w) float32 in [0, 1]."""

    image: str
    lr: np.ndarray

    @property
    def size(self) -> str:
        n, _, h, w = self.lr.shape
        return f"{h}x{w}" if n == 1 else f"{n}x{h}x{w}"


@dataclass(frozen=True)
class ParityRow:
    """One line of the parity table in the manifest."""

    artifact: str
    image: str
    size: str
    precision: str
    psnr_db: float
    max_abs_levels: float
    mean_abs_levels: float
    nonfinite: int
    passed: bool

    def describe(self) -> str:
        return _describe(self.psnr_db, self.max_abs_levels, self.mean_abs_levels, self.nonfinite)

    def to_dict(self) -> dict:
        row = asdict(self)
        # JSON has no Infinity or NaN: identical outputs get the string "inf".
        for key, digits in (("psnr_db", 3), ("max_abs_levels", 4), ("mean_abs_levels", 5)):
            value = row[key]
            row[key] = round(value, digits) if math.isfinite(value) else str(value)
        return row


def align_size(size: int, spec: IOSpec) -> int:
    """``size`` raised to at least ``spec.min_size`` and to a multiple of ``spec.multiple_of``."""
    size = max(int(size), spec.min_size)
    m = spec.multiple_of
    return -(-size // m) * m


def parity_sizes(
    spec: IOSpec, *, odd: tuple[int, int] = (37, 53), large: tuple[int, int] = (64, 96)
) -> list[tuple[int, int]]:
    """LR sizes for the parity gate: an odd one (odd as far as ``multiple_of`` allows) and a large one.

    The large size must exceed the size the export was traced at, so that shapes baked in by
    tracing show up as a failure.
    """
    sizes = []
    for h, w in (odd, large):
        size = (align_size(h, spec), align_size(w, spec))
        if size not in sizes:
            sizes.append(size)
    return sizes


def sample_images(*, synthetic_ok: bool = False) -> list[tuple[str, np.ndarray]]:
    """scikit-image's astronaut, chelsea and coffee, ``[(name, HWC uint8)]``.

    Without scikit-image: with ``synthetic_ok``, one synthetic image (smooth areas, fine texture,
    hard edges) and a log line saying so; else the ImportError.
    """
    try:
        from skimage import data
    except ImportError:
        if not synthetic_ok:
            raise
        log.info("scikit-image is not installed: the parity gate uses a synthetic image, not photos")
        return [("synthetic", _synthetic_image())]
    return [(name, getattr(data, name)()) for name in ("astronaut", "chelsea", "coffee")]


def _synthetic_image() -> np.ndarray:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    coarse = torch.from_numpy(rng.random((1, 3, 12, 16), dtype=np.float32))
    fine = torch.from_numpy(rng.random((1, 3, 96, 128), dtype=np.float32))
    img = 0.7 * F.interpolate(coarse, size=(384, 512), mode="bicubic", align_corners=False)
    img = img + 0.3 * F.interpolate(fine, size=(384, 512), mode="bilinear", align_corners=False)
    img[:, :, 100:110, :] = 1.0  # hard edges
    img[:, :, :, 300:304] = 0.0
    return (img.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _folder_images(folder: Path) -> list[tuple[str, np.ndarray]]:
    from PIL import Image

    images = []
    for path in sorted(folder.glob("*.png")):
        try:
            with Image.open(path) as im:
                images.append((path.stem, np.asarray(im.convert("RGB"))))
        except OSError as e:
            raise InputError(f"{path}: cannot read parity image ({e})") from e
    return images


def _center_crop(img_hwc: np.ndarray, h: int, w: int) -> np.ndarray | None:
    H, W = img_hwc.shape[:2]
    if H < h or W < w:
        return None
    top, left = (H - h) // 2, (W - w) // 2
    return img_hwc[top : top + h, left : left + w]


def _to_lr(img_hwc_u8: np.ndarray) -> np.ndarray:
    # HWC uint8 -> (1, 3, h, w) float32 in [0, 1]
    return np.ascontiguousarray(img_hwc_u8.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)


def crop_lr(img_hwc_u8: np.ndarray, h: int, w: int) -> np.ndarray:
    """The centre ``h`` x ``w`` crop of an HWC uint8 image as (1, 3, h, w) float32 in [0, 1];
    raises ExportError when the image is smaller."""
    crop = _center_crop(img_hwc_u8, h, w)
    if crop is None:
        raise ExportError(f"crop {h}x{w} is larger than the image {img_hwc_u8.shape[:2]}")
    return _to_lr(crop)


def parity_cases(
    sizes: Sequence[tuple[int, int]],
    *,
    images: Sequence[tuple[str, np.ndarray]] | None = None,
    folder: str | Path | None = None,
    folder_sizes: Sequence[tuple[int, int]] | None = None,
    batch: int = 2,
) -> list[ParityCase]:
    """Centre crops of real images at every LR size in ``sizes``.

    ``images`` (default :func:`sample_images`: scikit-image's astronaut, chelsea and coffee) are
    always used, at every size; the PNGs of ``folder`` (e.g. Set5), when given, at ``folder_sizes``
    (default: the first size). When ``batch`` > 1 one more case stacks ``batch`` images at the
    first size (different ones where there are enough), to check the dynamic batch axis.
    """
    if not sizes:
        raise ExportError("parity needs at least one image size")
    samples = list(images) if images is not None else sample_images()
    cases: list[ParityCase] = []
    for h, w in sizes:
        for name, img in samples:
            crop = _center_crop(img, h, w)
            if crop is None:
                raise ExportError(f"parity size {h}x{w} is larger than the sample image {name} {img.shape[:2]}")
            cases.append(ParityCase(name, _to_lr(crop)))
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"{folder}: parity image folder not found")
        for h, w in folder_sizes or sizes[:1]:
            for name, img in _folder_images(folder):
                crop = _center_crop(img, h, w)
                if crop is not None:
                    cases.append(ParityCase(f"{folder.name}/{name}", _to_lr(crop)))
    if batch > 1:
        h, w = sizes[0]
        picked = [samples[i % len(samples)] for i in range(batch)]
        stacked = np.concatenate([_to_lr(_center_crop(img, h, w)) for _, img in picked], axis=0)
        cases.append(ParityCase("+".join(name for name, _ in picked), stacked))
    return cases


class OnnxRunner:
    """An ONNX file on ONNX Runtime's CPU provider: ``runner(lr) -> sr`` on float32 arrays.

    The model's input dtype (float32, or float16 for FP16-I/O artifacts) is honoured: the input is
    cast to it and the output returned as float32.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ExportError(
                "onnxruntime is needed to verify ONNX artifacts: pip install onnxruntime (or the .[onnx] extra)"
            ) from e
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: lr.astype(self.input_dtype)})[0]
        return out.astype(np.float32)


def parity_rows(
    artifact: str,
    run: Callable[[np.ndarray], np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray] | dict[int, np.ndarray],
    cases: Iterable[ParityCase],
    *,
    precision: str,
) -> Iterator[ParityRow]:
    """Run ``run`` and the PyTorch ``reference`` on each case in turn and compare: one
    :class:`ParityRow` per case, yielded as soon as it is measured, so a caller can stop at the
    first that did not pass (``row.passed``).

    ``reference`` is a callable, or a dict from ``id(case)`` to a precomputed reference output
    (so several artifacts share one PyTorch pass). Raises ParityError when ``run`` fails.
    """
    for case in cases:
        ref = reference[id(case)] if isinstance(reference, dict) else reference(case.lr)
        try:
            out = run(case.lr)
        except Exception as e:  # the runtime's own error types: add which artifact and image
            raise ParityError(f"{artifact}: running it on {case.image} ({case.size}) failed: {e}") from e
        result = compare(ref, out, precision=precision)
        log.debug("parity %s %s %s: %s", artifact, case.image, case.size, result.describe())
        yield ParityRow(artifact=artifact, image=case.image, size=case.size, precision=precision,
                        psnr_db=result.psnr_db, max_abs_levels=result.max_abs_levels, mean_abs_levels=result.mean_abs,
                        nonfinite=result.nonfinite, passed=result.passed)


def check_parity(
    artifact: str,
    run: Callable[[np.ndarray], np.ndarray],
    reference: Callable[[np.ndarray], np.ndarray] | dict[int, np.ndarray],
    cases: Iterable[ParityCase],
    *,
    precision: str,
) -> list[ParityRow]:
    """:func:`parity_rows` on every case; raise on the first failure.

    Returns one :class:`ParityRow` per case. Raises ParityError naming the artifact, the image,
    its size and what was reached.
    """
    cases = list(cases)
    if not cases:
        raise ExportError(f"{artifact}: no parity image to compare on")
    rows = []
    for row in parity_rows(artifact, run, reference, cases, precision=precision):
        rows.append(row)
        if not row.passed:
            tol = TOLERANCES[precision]
            raise ParityError(
                f"{artifact} does not match PyTorch FP32 on {row.image} ({row.size}): {row.describe()}; "
                f"{precision} needs PSNR >= {tol.min_psnr_db:g} dB and at most {tol.max_nonfinite} NaN/Inf"
            )
    worst = min(rows, key=lambda r: r.psnr_db)
    log.info(
        "parity %s: %d images, worst %s dB (%s %s), max |diff| %.3f levels",
        artifact,
        len(rows),
        _fmt_db(worst.psnr_db),
        worst.image,
        worst.size,
        max(r.max_abs_levels for r in rows),
    )
    return rows

