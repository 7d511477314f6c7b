"""ONNX export of :class:`~sr_runtime.deploy.DeployModel`: one contract for every architecture.

The graph takes ``lr``: RGB float (batch, 3, height, width) in [0, 1], and returns ``sr``: RGB
float (batch, 3, out_height, out_width) in [0, 1], every axis but the channels dynamic and named.
Weights are embedded (no external data: the models here are far below ONNX's 2 GB limit).

Exporter: PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) with
``dynamic_axes``. In torch 2.13 the default is the torch.export-based ("dynamo") exporter, which
needs onnxscript and specialises any size that the model's Python code turns into an int unless
every such expression is declared in ``dynamic_shapes``; the TorchScript exporter records size
arithmetic as graph ops and handles every architecture here. Tracing could still bake a size in,
so the parity gate runs sizes other than (and larger than) the traced one.

After export: ``onnx.checker`` (full check), strict shape inference, optional onnxslim, and the
metadata (name, scale, contract, checkpoint sha256, parity figures) in ``metadata_props``.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from sr_runtime.deploy import DeployModel
from sr_runtime.errors import BackendUnavailableError, ExportError

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "INPUT_AXES",
    "OUTPUT_AXES",
    "DEFAULT_OPSET",
    "export_onnx",
    "check_onnx",
    "slim_onnx",
    "set_metadata",
    "read_metadata",
    "io_description",
]

log = logging.getLogger(__name__)

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
INPUT_AXES = {0: "batch", 2: "height", 3: "width"}
OUTPUT_AXES = {0: "batch", 2: "out_height", 3: "out_width"}
DEFAULT_OPSET = 17
_MAX_PROTO_BYTES = 2**31 - 1


def _import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise BackendUnavailableError("ONNX export needs onnx: pip install onnx (or the .[onnx] extra)") from e
    return onnx


def io_description() -> dict[str, Any]:
    """Names and axes of the ONNX contract, for the manifest."""
    return {
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, "height", "width"], "dtype": "float32", "range": [0, 1]},
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch", 3, "out_height", "out_width"],
            "dtype": "float32",
            "range": [0, 1],
        },
    }


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    *,
    trace_size: tuple[int, int] = (32, 32),
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` (a DeployModel: (N, 3, h, w) -> (N, 3, s*h, s*w)) to ``path``.

    Traced on CPU in FP32 at ``trace_size`` (LR height, width) with batch 1; every axis but the
    channels is dynamic (``dynamic_batch=False``: batch fixed at 1, for graphs whose batch size
    tracing turns into a constant). Runs :func:`check_onnx` on the result. Raises ExportError.
    """
    onnx = _import_onnx()
    path = Path(path)
    model = model.eval().to("cpu", torch.float32)
    if isinstance(model, DeployModel):
        model = model.export_form()  # the same function, arranged for graph compilers
    example = torch.rand(1, 3, *trace_size)
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter announces its deprecation and warns about traced size
            # arithmetic; the parity gate at other sizes is what checks the latter.
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=(
                    {INPUT_NAME: INPUT_AXES, OUTPUT_NAME: OUTPUT_AXES}
                    if dynamic_batch
                    else {INPUT_NAME: _without_batch(INPUT_AXES), OUTPUT_NAME: _without_batch(OUTPUT_AXES)}
                ),
                opset_version=opset,
                do_constant_folding=True,
                export_params=True,
            )
    except Exception as e:  # the exporter raises many unrelated types (RuntimeError, SymbolicValueError, ...)
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__} at opset {opset}: {e}") from e
    data = buffer.getvalue()
    if len(data) > _MAX_PROTO_BYTES:
        raise ExportError(
            f"the ONNX model is {len(data) / 2**30:.2f} GiB, over protobuf's 2 GiB; external data is not supported"
        )
    proto = onnx.load_from_string(data)
    _name_dims(proto)
    onnx.save(proto, str(path))
    check_onnx(path)
    return path


def _without_batch(axes: dict[int, str]) -> dict[int, str]:
    return {i: n for i, n in axes.items() if i != 0}


def _static_batch(value) -> bool:
    dims = value.type.tensor_type.shape.dim
    return len(dims) == 4 and dims[0].HasField("dim_value") and dims[0].dim_value == 1


def _name_dims(proto) -> None:
    """Make sure the graph I/O carry the named dynamic axes (the exporter may leave expressions);
    a batch fixed at 1 by the export stays fixed."""
    static = _static_batch(proto.graph.input[0])
    for value, axes in ((proto.graph.input[0], INPUT_AXES), (proto.graph.output[0], OUTPUT_AXES)):
        dims = value.type.tensor_type.shape.dim
        if static:
            axes = _without_batch(axes)
            dims[0].Clear()
            dims[0].dim_value = 1
        for index, name in axes.items():
            dims[index].Clear()
            dims[index].dim_param = name
        dims[1].Clear()
        dims[1].dim_value = 3


def check_onnx(path: str | Path) -> None:
    """``onnx.checker`` (full check) and strict shape inference; checks the I/O contract. Raises ExportError."""
    onnx = _import_onnx()
    path = Path(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path))
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"{path.name} fails the ONNX checker or strict shape inference: {e}") from e
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise ExportError(
            f"{path.name}: graph I/O is {[i.name for i in inputs]} -> {[o.name for o in graph.output]}, "
            f"expected [{INPUT_NAME!r}] -> [{OUTPUT_NAME!r}]"
        )
    static = _static_batch(inputs[0])
    for value, axes in ((inputs[0], INPUT_AXES), (graph.output[0], OUTPUT_AXES)):
        dims = value.type.tensor_type.shape.dim
        if static:  # batch fixed at 1 (export_onnx(dynamic_batch=False)): the input's and the output's
            if not _static_batch(value):
                raise ExportError(f"{path.name}: {value.name} has a dynamic batch but the input's is fixed at 1")
            axes = _without_batch(axes)
        got = {i: d.dim_param for i, d in enumerate(dims) if d.dim_param}
        if len(dims) != 4 or got != axes:
            raise ExportError(f"{path.name}: {value.name} has dynamic axes {got}, expected {axes}")


def slim_onnx(src: str | Path, dst: str | Path) -> Path:
    """Simplify ``src`` with onnxslim (constant folding, dead code, fusions) into ``dst``, then check it."""
    onnx = _import_onnx()
    try:
        import onnxslim
    except ImportError as e:
        raise BackendUnavailableError("onnxslim is not installed: pip install onnxslim (or the .[onnx] extra)") from e
    src, dst = Path(src), Path(dst)
    try:
        slimmed = onnxslim.slim(onnx.load(str(src)))
    except Exception as e:  # onnxslim raises whatever its passes raise
        raise ExportError(f"onnxslim failed on {src.name}: {e}") from e
    if slimmed is None:
        raise ExportError(f"onnxslim returned nothing for {src.name}")
    _name_dims(slimmed)
    onnx.save(slimmed, str(dst))
    check_onnx(dst)
    return dst


def set_metadata(path: str | Path, metadata: dict[str, Any]) -> None:
    """Write ``metadata`` into the model's ``metadata_props`` (values not str are JSON-encoded)."""
    onnx = _import_onnx()
    path = Path(path)
    model = onnx.load(str(path))
    existing = {p.key: p.value for p in model.metadata_props}
    for key, value in metadata.items():
        existing[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, allow_nan=False)
    del model.metadata_props[:]
    for key, value in existing.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "sr-export"
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict of strings."""
    onnx = _import_onnx()
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
