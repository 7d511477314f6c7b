"""Triton Inference Server model repositories from an export: ``sr-export --triton DIR``.

For an export named ``NAME`` it writes, beside any models already in ``DIR``::

    DIR/NAME/config.pbtxt        DIR/NAME/1/model.onnx          FP32 ONNX, ONNX Runtime backend
    DIR/NAME_fp16/config.pbtxt   DIR/NAME_fp16/1/model.onnx     FP16 ONNX (FP32 I/O), ONNX Runtime backend
    DIR/NAME_trt/config.pbtxt    DIR/NAME_trt/1/model_sm<CC>.plan   TensorRT engines, one per GPU compute
                                                                  capability (``cc_model_filenames``)

Each ``config.pbtxt`` is built as Triton's own ``ModelConfig`` protobuf (``tritonclient``'s
``model_config_pb2``): batch dimension (``max_batch_size``; 0 with the batch in ``dims`` where the graph's
batch is fixed), dynamic height/width (``-1``, or the graph's fixed tile), dynamic batching with a short
queue delay, an instance group, a warm-up request at a small size, and the scale and value range as
parameters. :func:`check_repository` parses every config back with that schema and checks its I/O names,
types and dims against the ONNX graph it serves. No Triton server runs here: these checks are what
the repository is known to satisfy.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sr_runtime.errors import BackendUnavailableError, ExportError

__all__ = ["TritonModel", "write_repository", "check_repository", "triton_schema"]

log = logging.getLogger("sr_export")

_ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 2: "TYPE_UINT8", 11: "TYPE_FP64"}
"""ONNX ``TensorProto`` element types -> Triton data types."""


def triton_schema():
    """Triton's ``model_config_pb2`` module (from ``tritonclient``). Raises BackendUnavailableError."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise BackendUnavailableError(
            "--triton validates configs with Triton's schema from tritonclient: pip install 'tritonclient[grpc]' "
            "(or the .[serve] extra)"
        ) from e
    return model_config_pb2


@dataclass(frozen=True)
class TritonModel:
    """One model of the repository: its name, what serves it and the file(s) it serves."""

    name: str
    kind: str
    """``onnx`` or ``plan``."""
    files: dict[str, Path]
    """``{"": model.onnx}`` for ONNX; ``{"8.0": engine, ...}`` by compute capability for TensorRT."""


def _graph_io(onnx_path: Path) -> tuple[dict, dict]:
    """(input, output) of an ONNX graph: ``{"name", "type", "dims"}`` with -1 for a dynamic axis."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ExportError(f"{onnx_path}: a Triton SR model needs one input and one output")

    def describe(value) -> dict:
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if t.elem_type not in _ONNX_TO_TRITON or len(dims) != 4:
            raise ExportError(f"{onnx_path}: {value.name} is not a float NCHW tensor")
        return {"name": value.name, "type": _ONNX_TO_TRITON[t.elem_type], "dims": dims}

    return describe(graph.input[0]), describe(graph.output[0])


def _config(name: str, backend_or_platform: tuple[str, str], inp: dict, out: dict, *, scale: int,
            value_range: float, max_batch: int, instances: int, kind: str, queue_delay_us: int,
            warmup_hw: tuple[int, int], cc_files: dict[str, str] | None):
    mc = triton_schema()
    cfg = mc.ModelConfig(name=name)
    key, value = backend_or_platform
    setattr(cfg, key, value)
    dynamic_batch = inp["dims"][0] == -1
    cfg.max_batch_size = max_batch if dynamic_batch else 0
    strip = slice(1, None) if dynamic_batch else slice(None)
    for field, io in ((cfg.input, inp), (cfg.output, out)):
        field.add(name=io["name"], data_type=getattr(mc, io["type"]), dims=io["dims"][strip])
    if dynamic_batch:
        cfg.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    cfg.instance_group.add(count=instances, kind=mc.ModelInstanceGroup.KIND_GPU if kind == "plan"
                           else mc.ModelInstanceGroup.KIND_AUTO)
    for param, text in (("scale", str(scale)), ("value_range", f"0,{value_range:g}"),
                        ("layout", "NCHW RGB"), ("exported_by", "sr-export")):
        cfg.parameters[param].string_value = text
    h, w = [d if d > 0 else s for d, s in zip(inp["dims"][2:], warmup_hw)]
    warm = cfg.model_warmup.add(name="warmup", batch_size=1)
    warm_input = warm.inputs[inp["name"]]
    warm_input.data_type = getattr(mc, inp["type"])
    warm_input.dims.extend(([] if dynamic_batch else [1]) + [inp["dims"][1], h, w])
    warm_input.random_data = True
    if cc_files:
        for cc, filename in cc_files.items():
            cfg.cc_model_filenames[cc] = filename
    return cfg


def write_repository(
    repo: str | os.PathLike,
    *,
    name: str,
    onnx_fp32: Path,
    onnx_fp16: Path | None,
    engines: dict[str, Path] | None = None,
    scale: int,
    value_range: float = 1.0,
    max_batch: int = 8,
    instances: int = 1,
    queue_delay_us: int = 2000,
    warmup_hw: tuple[int, int] = (64, 64),
) -> list[TritonModel]:
    """Write the models of one export into ``repo`` (each model folder staged, then renamed into place).

    ``engines`` maps a compute capability (``"8.0"``) to a TensorRT engine built for it; the engine's I/O
    is the FP32 ONNX graph's. Returns what was written; raises ExportError / BackendUnavailableError.
    """
    from google.protobuf import text_format

    repo = Path(repo)
    inp, out = _graph_io(onnx_fp32)
    plans = [(f"{name}", "onnx", {"": onnx_fp32}, inp, out)]
    if onnx_fp16 is not None:
        plans.append((f"{name}_fp16", "onnx", {"": onnx_fp16}, *_graph_io(onnx_fp16)))
    if engines:
        plans.append((f"{name}_trt", "plan", dict(engines), inp, out))
    written = []
    repo.mkdir(parents=True, exist_ok=True)
    for model_name, kind, files, i, o in plans:
        stage = repo / f".{model_name}.tmp-{os.getpid()}"
        shutil.rmtree(stage, ignore_errors=True)
        (stage / "1").mkdir(parents=True)
        try:
            if kind == "onnx":
                shutil.copy2(files[""], stage / "1" / "model.onnx")
                cc_files, which = None, ("backend", "onnxruntime")
                placed = {"": repo / model_name / "1" / "model.onnx"}
            else:
                cc_files = {cc: f"model_sm{cc.replace('.', '')}.plan" for cc in files}
                for cc, src in files.items():
                    shutil.copy2(src, stage / "1" / cc_files[cc])
                which = ("platform", "tensorrt_plan")
                placed = {cc: repo / model_name / "1" / f for cc, f in cc_files.items()}
            cfg = _config(model_name, which, i, o, scale=scale, value_range=value_range, max_batch=max_batch,
                          instances=instances, kind=kind, queue_delay_us=queue_delay_us, warmup_hw=warmup_hw,
                          cc_files=cc_files)
            (stage / "config.pbtxt").write_text(text_format.MessageToString(cfg))
            target = repo / model_name
            if target.exists():
                shutil.rmtree(target)
            os.replace(stage, target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        written.append(TritonModel(model_name, kind, placed))
        log.info("triton: %s (%s) -> %s", model_name, "ONNX Runtime" if kind == "onnx" else "TensorRT", repo / model_name)
    check_repository(repo, [m.name for m in written])
    return written


def check_repository(repo: str | os.PathLike, names: list[str] | None = None) -> None:
    """Parse each model's ``config.pbtxt`` with Triton's schema and check it against its files.

    For ONNX models: input/output names, data types and dims (batch dimension stripped when
    ``max_batch_size > 0``) equal the graph's; for TensorRT models: every ``cc_model_filenames`` file
    exists. Raises ExportError naming the model and the mismatch.
    """
    from google.protobuf import text_format

    mc = triton_schema()
    repo = Path(repo)
    names = names or sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    for name in names:
        cfg = mc.ModelConfig()
        path = repo / name / "config.pbtxt"
        try:
            text_format.Parse(path.read_text(), cfg)
        except (OSError, text_format.ParseError) as e:
            raise ExportError(f"{path}: not a valid Triton model config ({e})") from e
        if cfg.name != name:
            raise ExportError(f"{path}: name {cfg.name!r} differs from its folder {name!r}")
        if cfg.platform == "tensorrt_plan":
            missing = [f for f in cfg.cc_model_filenames.values() if not (repo / name / "1" / f).is_file()]
            if missing or not cfg.cc_model_filenames:
                raise ExportError(f"{path}: engine files missing: {missing or 'none listed'}")
            continue
        onnx_path = repo / name / "1" / "model.onnx"
        if cfg.backend != "onnxruntime" or not onnx_path.is_file():
            raise ExportError(f"{path}: expected the onnxruntime backend with 1/model.onnx")
        inp, out = _graph_io(onnx_path)
        strip = slice(1, None) if cfg.max_batch_size > 0 else slice(None)
        for field, io in ((cfg.input, inp), (cfg.output, out)):
            (entry,) = field
            want = (io["name"], getattr(mc, io["type"]), io["dims"][strip])
            got = (entry.name, entry.data_type, list(entry.dims))
            if got != want:
                raise ExportError(f"{path}: {entry.name} is {got} in the config but {want} in {onnx_path.name}")
