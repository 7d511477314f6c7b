"""Which input sizes an exported graph is valid for: dynamic height/width, at the size multiple the
architecture needs.

The TorchScript exporter records most size arithmetic as graph ops, but architectures that pad their
input to a multiple of a window in Python (SwinIR, HAT, Swin2SR, OmniSR: ``pad_to_multiple`` with
amounts computed from ``x.shape``) have the padding of the traced size baked in: the graph is right
at every size that needs the same padding as the trace (none, for a trace of 32x32) and wrong or
failing elsewhere. :func:`export_dynamic` exports once, runs the graph at sizes that differ from the
trace in their remainders, and, where the graph fails at sizes the model's own ``multiple_of``
allows, finds the smallest multiple (2, 4, ..., 32: all divide the trace) at which it reproduces
PyTorch. That multiple goes into the exported IOSpec (``multiple_of``), so every runtime pads inputs
to it (with edge replication, where the model itself would have reflected: the last few rows and
columns of an image that is not a multiple can then differ slightly from the eager model's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from sr_runtime.errors import ExportError
from sr_runtime.spec import IOSpec

__all__ = ["MULTIPLES", "SHAPE_CHECK_DB", "ShapeCheck", "check_sizes", "export_dynamic"]

log = logging.getLogger(__name__)

MULTIPLES = (2, 4, 8, 16, 32)
"""Size multiples tried when the graph fails at the model's own; each divides the default trace (32)."""


SHAPE_CHECK_DB = 60.0
"""PSNR against PyTorch that tells a graph valid at a size from one that baked another size in (a
baked-in size gives an error or < 60 dB). Fixed here, not the parity gate's tolerance: the gate
itself runs afterwards on photos and decides whether the export passes."""


@dataclass(frozen=True)
class ShapeCheck:
    """What :func:`export_dynamic` found."""

    spec: IOSpec
    """The model's IOSpec with ``multiple_of`` raised to what the exported graph needs."""
    shapes: str
    """``"dynamic"``: any height and width that are multiples of ``spec.multiple_of``."""
    batch: int | None = None
    """None: dynamic batch; 1: the batch is fixed at 1 (the graph baked the traced batch in)."""
    tried: tuple[str, ...] = ()
    """One line per multiple that failed, saying where and how."""
    batch_why: str = ""
    """Why the batch is fixed, when it is."""

    @property
    def raised(self) -> bool:
        return bool(self.tried)


def check_sizes(spec: IOSpec, multiple: int, trace_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Two LR sizes, multiples of ``multiple`` but (where possible) not of ``2 * multiple``, at least
    ``spec.min_size``, one of them larger than the trace in both directions: a graph that baked the
    trace's padding in fails at one of them."""

    def odd_multiple(at_least: int) -> int:
        k = -(-max(at_least, spec.min_size) // multiple)
        return (k if k % 2 else k + 1) * multiple

    th, tw = trace_size
    return [(odd_multiple(17), odd_multiple(37)), (odd_multiple(th + 1), odd_multiple(tw + 17))]


def _probe_input(h: int, w: int) -> np.ndarray:
    """A smooth random image with some fine detail, (1, 3, h, w) float32 in [0, 1]."""
    g = torch.Generator().manual_seed(h * 1000 + w)
    coarse = torch.rand(1, 3, max(2, h // 8), max(2, w // 8), generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    x = 0.8 * x + 0.2 * torch.rand(1, 3, h, w, generator=g)
    return x.clamp(0, 1).numpy()


def _quiet_runner(cls, path: Path):
    """An OnnxRunner whose session does not log the kernel errors these probes provoke on purpose."""
    import onnxruntime as ort

    runner = cls(path)
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    runner.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return runner


def export_dynamic(
    model: torch.nn.Module,
    spec: IOSpec,
    path: str | Path,
    *,
    trace_size: tuple[int, int],
    opset: int,
) -> ShapeCheck:
    """Export ``model`` (a DeployModel) to ``path`` with dynamic height/width and find the size
    multiple the graph needs (see the module doc). Raises ExportError when the export fails or the
    graph reproduces PyTorch at no multiple up to 32, naming the sizes and what went wrong."""
    from sr_runtime.export.onnx import export_onnx
    from sr_runtime.export.verify import OnnxRunner, compare

    path = Path(path)
    export_onnx(model, path, trace_size=trace_size, opset=opset)
    runner = _quiet_runner(OnnxRunner, path)
    model = model.eval()
    tried: list[str] = []

    def mismatch(h: int, w: int, batch: int = 1) -> str:
        lr = np.concatenate([_probe_input(h, w + i)[..., :w] for i in range(batch)])
        with torch.no_grad():
            ref = model(torch.from_numpy(lr)).numpy()
        try:
            out = runner(lr)
        except Exception as e:  # onnxruntime's Fail/InvalidArgument derive from Exception only
            return f"at {batch}x{h}x{w}: {str(e).splitlines()[0][:160]}"
        result = compare(ref, out, precision="fp32")
        ok = result.nonfinite == 0 and result.psnr_db >= SHAPE_CHECK_DB
        return "" if ok else f"at {batch}x{h}x{w}: {result.describe()}"

    multiples = [spec.multiple_of] + [m for m in MULTIPLES if m > spec.multiple_of and m % spec.multiple_of == 0]
    for m in multiples:
        if trace_size[0] % m or trace_size[1] % m:
            continue  # the trace's own padding is not the zero padding of multiples of m
        failure = ""
        for h, w in check_sizes(spec, m, trace_size):
            failure = mismatch(h, w)
            if failure:
                break
        if not failure:
            if tried:
                log.info(
                    "onnx: the graph needs height and width multiples of %d (the model pads to a multiple in "
                    "Python, which tracing fixes at the traced size); exported IOSpec multiple_of=%d", m, m)
            found = replace(spec, multiple_of=m)
            h, w = check_sizes(found, m, trace_size)[0]
            batch_failure = mismatch(h, w, batch=2)
            if not batch_failure:
                return ShapeCheck(spec=found, shapes="dynamic", tried=tuple(tried))
            # The traced batch is baked in (e.g. int(windows.shape[0] / ...) in window attention): a
            # fixed batch of 1 makes other batches an error instead of a wrong result.
            why = f"batch 2 does not reproduce PyTorch {batch_failure}"
            log.info("onnx: fixing the batch at 1: %s", why)
            export_onnx(model, path, trace_size=trace_size, opset=opset, dynamic_batch=False)
            runner = _quiet_runner(OnnxRunner, path)
            failure = mismatch(*check_sizes(found, m, trace_size)[1])
            if not failure:
                return ShapeCheck(spec=found, shapes="dynamic", batch=1, tried=tuple(tried), batch_why=why)
            raise ExportError(f"the exported ONNX graph with batch fixed at 1 does not reproduce PyTorch {failure}")
        tried.append(f"multiple of {m}: {failure}")
        log.debug("onnx: not valid at multiples of %d (%s)", m, failure)
    raise ExportError(
        f"the exported ONNX graph reproduces PyTorch only at the traced size {trace_size[0]}x{trace_size[1]}: "
        f"{'; '.join(tried)}. The model's forward turns input sizes into constants (Python size arithmetic) "
        f"that no size multiple up to {MULTIPLES[-1]} avoids"
    )
