"""Measure one form of a model: the parity gate, the quality rule for reduced precision, the timing probe.

Parity is :mod:`sr_runtime.export.verify`'s gate, the one ``sr-export`` runs: the same photos,
sizes (an odd one, one larger than the trace size, a batch of two) and tolerances per precision,
against PyTorch FP32 on the CPU. A reduced-precision form (FP16, BF16) must also score, against the
ground truth of bicubic-degraded photos, within :data:`GATE_QUALITY_DB` of FP32. A form that passes
is timed in a short probe on one photo crop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from sr_runtime.backends.base import Backend
from sr_runtime.export.verify import (
    TOLERANCES,
    ParityCase,
    align_size,
    crop_lr,
    parity_cases,
    parity_rows,
    parity_sizes,
)
from sr_runtime.spec import IOSpec

__all__ = ["GATE_QUALITY_DB", "PROBE_SIDE", "QUALITY_TOLERANCE_DB", "GateInputs", "check_gate", "gate_inputs", "probe_ms"]

QUALITY_TOLERANCE_DB = 0.02
"""Reduced precision must score within this many dB of FP32 against the ground truth (Set5 through
``sr-eval``: the issue's target)."""
GATE_QUALITY_DB = QUALITY_TOLERANCE_DB / 2
"""What the gate allows on its own photos: half the target, because the photos stand in for the
user's images. Measured on an AMD EPYC (AVX-512 BF16): shipped FSRCNN x4 in OpenVINO BF16 was -0.014
dB from FP32 on the gate photos and -0.0204 dB on Set5; ESPCN x4 -0.006 and -0.009. A gate at the full
0.02 dB let FSRCNN's BF16 form through and missed the target on Set5."""
PROBE_SIDE = 128
"""LR side of the timing probe: big enough to time the convolutions, small enough for seconds."""
QUALITY_SIDE = 48
"""LR side of the crops the reduced-precision quality rule scores against the ground truth."""


@dataclass
class GateInputs:
    """What every form of one model is measured on."""

    spec: IOSpec
    images: list[tuple[str, np.ndarray]]
    """The photos (HWC uint8)."""
    cases: list[ParityCase]
    """The parity cases, as ``sr-export`` makes them."""
    refs: dict[int, np.ndarray]
    """PyTorch FP32's output per case (``id(case)``)."""
    reference: Backend
    """PyTorch FP32 on the CPU, for the quality rule."""
    probe: torch.Tensor
    """The timing probe's input: a ``PROBE_SIDE`` crop of the first photo."""


def run_form(backend: Backend, lr: torch.Tensor) -> torch.Tensor:
    """``backend``'s output for ``lr`` as a float32 CPU tensor."""
    with torch.inference_mode():
        out = backend.run(lr.to(backend.device, backend.input_dtype))
    return out.float().cpu()


def gate_inputs(spec: IOSpec, images: list[tuple[str, np.ndarray]], reference: Backend) -> GateInputs:
    """The parity cases of ``images`` with ``reference``'s outputs, and the probe input."""
    cases = parity_cases(parity_sizes(spec), images=images, batch=2)
    refs = {id(case): run_form(reference, torch.from_numpy(case.lr)).numpy() for case in cases}
    side = align_size(PROBE_SIDE, spec)
    return GateInputs(spec, images, cases, refs, reference, torch.from_numpy(crop_lr(images[0][1], side, side)))


def check_gate(backend: Backend, name: str, precision: str, inputs: GateInputs) -> tuple[float, str]:
    """(worst parity dB, "") when ``backend`` (the form ``name`` at ``precision``) passes the gate,
    else (worst so far, why it failed)."""
    need = TOLERANCES[precision].min_psnr_db
    worst = math.inf

    def run(lr: np.ndarray) -> np.ndarray:
        return run_form(backend, torch.from_numpy(lr)).numpy()

    for row in parity_rows(name, run, inputs.refs, inputs.cases, precision=precision):
        if row.nonfinite:
            return worst, f"NaN/Inf in its output on {row.image} {row.size}"
        worst = min(worst, row.psnr_db)
        if not row.passed:
            return worst, f"parity {worst:.1f} dB on {row.image} {row.size}, below the {need:g} dB a {precision} form needs"
    if precision == "fp32":
        return worst, ""
    delta = _quality_delta_db(backend, inputs)
    if abs(delta) > GATE_QUALITY_DB:
        return worst, (f"PSNR vs ground truth {delta:+.4f} dB from FP32 on the gate photos (allowed +-{GATE_QUALITY_DB:g} "
                       f"dB, half the {QUALITY_TOLERANCE_DB:g} dB target, as a margin for other images)")
    return worst, ""


def _quality_delta_db(backend: Backend, inputs: GateInputs) -> float:
    """Mean PSNR (the literature's, on Y) against the ground truth of ``backend`` minus FP32's, on
    bicubic-degraded crops of the photos."""
    from sr_runtime.metrics import psnr
    from sr_runtime.resize import make_lr, modcrop

    s = inputs.spec.scale
    side = align_size(QUALITY_SIDE, inputs.spec) * s
    deltas = []
    for _, img in inputs.images:
        hr = modcrop(torch.from_numpy(crop_lr(img, side, side)), s)
        lr = make_lr(hr, s)
        deltas.append(float(psnr(run_form(backend, lr), hr, crop=s) - psnr(run_form(inputs.reference, lr), hr, crop=s)))
    return sum(deltas) / len(deltas)


def probe_ms(backend: Backend, lr: torch.Tensor, runs: int = 3) -> float:
    """The fastest of ``runs`` timed calls on ``lr`` after one warm-up, in milliseconds."""
    x = lr.to(backend.device, backend.input_dtype)
    sync = torch.cuda.synchronize if backend.device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        backend.run(x)  # warm-up: allocations, kernel selection
        sync()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            backend.run(x)
            sync()
            times.append((time.perf_counter() - start) * 1000)
    return min(times)
