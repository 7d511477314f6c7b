"""FP16 ONNX: FP16 weights and compute, with the layers that overflow in FP16 kept in FP32.

The graph conversion itself is onnxconverter-common's ``convert_float_to_float16`` (it inserts
the Casts around FP32 islands and keeps FP32 graph I/O when asked). Which nodes stay FP32 is
decided here from data, in two passes over calibration images on ONNX Runtime CPU:

1. range: the FP32 graph runs with every intermediate exposed; a node whose inputs, weights or
   outputs reach beyond ``range_limit`` (well inside FP16's 65504, for headroom on other images)
   is kept FP32;
2. error: the converted graph runs beside the FP32 one; while its output has NaN/Inf or misses
   the FP16 tolerance, the first node (in graph order) whose FP16 output has NaN/Inf or a
   relative error above ``node_rel_error`` is kept FP32 too, and the graph is converted again.

The parity gate in :mod:`sr_runtime.export.verify` then measures the result against PyTorch FP32.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sr_runtime.export.verify import compare
from sr_runtime.errors import BackendUnavailableError, ExportError

__all__ = ["FP16_MAX", "KeptNode", "Fp16Result", "convert_fp16", "name_nodes"]

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
"""Largest finite FP16 value."""
FP16_MIN_SUBNORMAL = 2.0**-24
"""Smallest positive FP16 value; weights of smaller magnitude are stored as +-this."""


@dataclass(frozen=True)
class KeptNode:
    """A node left in FP32 and why."""

    node: str
    op: str
    reason: str
    """``"range"`` (values beyond the limit in FP32) or ``"error"`` (NaN/Inf or large error in FP16)."""
    value: float
    """Largest |value| seen (range) or the relative error / NaN-Inf count reached in FP16 (error)."""


@dataclass
class Fp16Result:
    path: Path
    keep_io_fp32: bool
    kept_fp32: list[KeptNode] = field(default_factory=list)
    rounds: int = 1
    calibration_psnr_db: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "io": "fp32" if self.keep_io_fp32 else "fp16",
            "kept_fp32": [vars(k) for k in self.kept_fp32],
            "conversion_rounds": self.rounds,
            "calibration_psnr_db": None if self.calibration_psnr_db is None else round(self.calibration_psnr_db, 3),
        }


def _import_float16():
    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise BackendUnavailableError(
            "FP16 ONNX export needs onnxconverter-common: pip install onnxconverter-common (or the .[onnx] extra)"
        ) from e
    return float16


def name_nodes(model) -> None:
    """Give every unnamed node a unique name (``<op>_<index>``), so nodes can be listed and blocked."""
    seen = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in seen:
                name += "_"
            node.name = name
            seen.add(name)


def _expose_intermediates(model, *, float_only: bool = True):
    """A copy of ``model`` whose graph outputs also list every (float) node output, with their dtypes."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.value_info}
    types.update({vi.name: vi.type.tensor_type.elem_type for vi in inferred.graph.output})
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    present = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            elem = types.get(name)
            if not name or name in present or elem is None or (float_only and elem not in float_types):
                continue
            exposed.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
            present.add(name)
    return exposed


def _session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # Default optimizations, as in the parity gate: with them disabled, ONNX Runtime CPU runs
    # FP16 nodes that lack FP16 kernels in FP32 between casts it then drops, hiding overflows.
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _run_all(model, lr: np.ndarray) -> dict[str, np.ndarray]:
    """Every float tensor of ``model`` on input ``lr`` (cast to the input's dtype), as float32."""
    session = _session(_expose_intermediates(model))
    inp = session.get_inputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {inp.name: lr.astype(dtype)})
    return {n: v.astype(np.float32) for n, v in zip(names, values)}


def _initializer_max(model) -> dict[str, float]:
    from onnx import numpy_helper

    out = {}
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if np.issubdtype(arr.dtype, np.floating) and arr.size:
            out[init.name] = float(np.max(np.abs(arr)))
    return out


def _range_pass(model, calibration: Sequence[np.ndarray], range_limit: float) -> list[KeptNode]:
    peaks: dict[str, float] = {}
    for lr in calibration:
        for name, value in _run_all(model, lr).items():
            if value.size == 0:  # empty slices (window-attention masks at small sizes) hold nothing
                continue
            finite = value[np.isfinite(value)]
            peak = float(np.max(np.abs(finite))) if finite.size else float("inf")
            peaks[name] = max(peaks.get(name, 0.0), peak)
    peaks.update(_initializer_max(model))
    kept = []
    for node in model.graph.node:
        values = [peaks[t] for t in list(node.input) + list(node.output) if t in peaks]
        if values and max(values) > range_limit:
            kept.append(KeptNode(node.name, node.op_type, "range", max(values)))
    return kept


def _first_bad_node(model32, model16, lr: np.ndarray, skip: set[str], node_rel_error: float) -> KeptNode | None:
    ref = _run_all(model32, lr)
    got = _run_all(model16, lr)
    for node in model16.graph.node:
        if node.name in skip or node.op_type == "Cast":
            continue
        for name in node.output:
            if name not in ref or name not in got or ref[name].shape != got[name].shape:
                continue
            a, b = ref[name], got[name]
            bad = int(np.count_nonzero(~np.isfinite(b)))
            if bad:
                return KeptNode(node.name, node.op_type, "error", float(bad))
            scale = float(np.max(np.abs(a))) + 1e-6
            rel = float(np.max(np.abs(a - b))) / scale
            if rel > node_rel_error:
                return KeptNode(node.name, node.op_type, "error", rel)
    return None


def _convert(model32, *, keep_io_fp32: bool, block: list[str]):
    import onnx

    float16 = _import_float16()
    # Shape-inferred value_info (onnxslim leaves it in) keeps FP32 types on tensors the converter
    # turns FP16, and the Casts it inserts around blocked ops (Resize, in nearest-upsampling nets
    # such as ESRGAN) then fail ONNX Runtime's type check; the converter re-infers what it needs.
    model = onnx.ModelProto()
    model.CopyFrom(model32)
    del model.graph.value_info[:]
    with warnings.catch_warnings():
        # One warning per weight below FP16's smallest subnormal: they become +-2^-24, harmlessly.
        warnings.simplefilter("ignore", UserWarning)
        return float16.convert_float_to_float16(
            model,
            keep_io_types=keep_io_fp32,
            node_block_list=block,
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST),
            min_positive_val=FP16_MIN_SUBNORMAL,
            max_finite_val=FP16_MAX,
        )


def _calibration_score(model32, model16, calibration: Sequence[np.ndarray]) -> tuple[bool, float]:
    s32, s16 = _session(model32), _session(model16)
    worst = float("inf")
    ok = True
    for lr in calibration:
        ref = s32.run(None, {s32.get_inputs()[0].name: lr.astype(np.float32)})[0]
        dtype = np.float16 if s16.get_inputs()[0].type == "tensor(float16)" else np.float32
        out = s16.run(None, {s16.get_inputs()[0].name: lr.astype(dtype)})[0]
        result = compare(ref, out, precision="fp16")
        worst = min(worst, result.psnr_db)
        ok = ok and result.passed
    return ok, worst


def convert_fp16(
    src: str | Path,
    dst: str | Path,
    *,
    calibration: Sequence[np.ndarray],
    keep_io_fp32: bool = True,
    range_limit: float = 16384.0,
    node_rel_error: float = 0.05,
    max_rounds: int = 8,
) -> Fp16Result:
    """Convert the FP32 ONNX file ``src`` to FP16 at ``dst``, keeping overflowing layers in FP32.

    ``calibration``: LR inputs, (N, 3, h, w) float32 in [0, 1], run through both graphs (keep them
    small: they run on ONNX Runtime CPU). ``keep_io_fp32``: FP32 graph input/output (default) or
    FP16 I/O. Returns which nodes were kept FP32 and why. Raises BackendUnavailableError without
    onnxconverter-common, ExportError when the conversion fails.
    """
    import onnx

    if not calibration:
        raise ExportError("FP16 conversion needs at least one calibration image")
    src, dst = Path(src), Path(dst)
    model32 = onnx.load(str(src))
    name_nodes(model32)
    kept = _range_pass(model32, calibration, range_limit)
    for k in kept:
        log.info(
            "fp16: keeping %s (%s) in FP32: |x| reaches %.4g in FP32 (limit %.4g)", k.node, k.op, k.value, range_limit
        )
    rounds = 0
    while True:
        rounds += 1
        try:
            model16 = _convert(model32, keep_io_fp32=keep_io_fp32, block=[k.node for k in kept])
        except Exception as e:  # onnxconverter-common raises plain exceptions on graphs it cannot handle
            raise ExportError(f"FP16 conversion of {src} failed: {e}") from e
        ok, worst = _calibration_score(model32, model16, calibration)
        if ok or rounds >= max_rounds:
            break
        skip = {k.node for k in kept}
        culprit = None
        for lr in calibration:
            culprit = _first_bad_node(model32, model16, lr, skip, node_rel_error)
            if culprit is not None:
                break
        if culprit is None:
            break
        log.info(
            "fp16: keeping %s (%s) in FP32: FP16 error %.4g (calibration PSNR %.2f dB)",
            culprit.node,
            culprit.op,
            culprit.value,
            worst,
        )
        kept.append(culprit)
    if not ok:
        log.warning("fp16: calibration PSNR %.2f dB after %d rounds; the parity gate will decide", worst, rounds)
    onnx.save(model16, str(dst))
    return Fp16Result(path=dst, keep_io_fp32=keep_io_fp32, kept_fp32=kept, rounds=rounds, calibration_psnr_db=worst)
