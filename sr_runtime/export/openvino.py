"""OpenVINO IR from an ONNX file, with the model's IOSpec inside, for the OpenVINO backend to open.

The IR (``.xml`` + ``.bin``) keeps the exported weights (FP32: precision is an inference choice,
made when the backend compiles it) and stores the IOSpec in ``rt_info["sr_runtime"]["io_spec"]``,
where :func:`sr_runtime.backends.openvino.read_ov_spec` finds it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sr_runtime.backends.openvino import IR_SPEC_PATH, import_openvino, read_ov_model, read_ov_spec
from sr_runtime.errors import InputError
from sr_runtime.spec import IOSpec

__all__ = ["save_ir"]


def save_ir(model_path: str | os.PathLike, xml_path: str | os.PathLike, *, spec: IOSpec | None = None) -> Path:
    """Convert ``model_path`` (``.onnx`` or ``.xml``) to OpenVINO IR at ``xml_path`` (+ ``.bin``),
    FP32 weights, with the IOSpec (``spec``, else the source's) in ``rt_info["sr_runtime"]["io_spec"]``.

    Returns ``xml_path``. Raises InputError when the source cannot be read or carries no spec and
    none is given, BackendUnavailableError without OpenVINO.
    """
    ov = import_openvino()
    model_path, xml_path = Path(model_path), Path(xml_path)
    model = read_ov_model(model_path)
    spec = spec or read_ov_spec(model)
    if spec is None:
        raise InputError(f"{model_path}: no io_spec metadata to store in the IR; pass spec=IOSpec(...)")
    model.set_rt_info(json.dumps(spec.to_dict()), list(IR_SPEC_PATH))
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    # compress_to_fp16=False: the IR's weights stay as exported; precision is an inference choice.
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path
