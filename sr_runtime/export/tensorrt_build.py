"""TensorRT engines from the exported ONNX, with a sidecar that says what they were built for.

Used by ``sr-export --format engine`` and by the runtime's automatic fast path
(:mod:`sr_runtime.fastpath`), which builds an FP16 engine itself where TensorRT is installed; it
lives here, below both, because ``sr_runtime`` never imports ``sr_export``.

Written against TensorRT's official Python API (10.x and 11.x): a strongly typed network (the
precision comes from the ONNX file, FP16 or FP32, never from builder flags), one optimization
profile with explicit min/opt/max shapes, a workspace limit, and a timing cache reused across
builds. ``tensorrt`` is imported inside the functions that need it.

An engine runs only where it was built: same TensorRT version and same GPU. Beside every
``X.engine`` this module writes ``X.engine.json``, the
:class:`~sr_runtime.backends.tensorrt_sidecar.EngineRecord` the TensorRT backend checks. Engines
are cached under ``<cache_dir>/engines/<key>.engine``, where the key hashes all of the record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sr_runtime.atomic import atomic_write_bytes, sha256_file
from sr_runtime.backends.tensorrt_sidecar import (
    EngineRecord,
    check_sidecar,
    current_environment,
    engine_key,
    import_tensorrt,
    profile_text,
    read_sidecar,
    sidecar_path,
)
from sr_runtime.errors import ConfigError, EngineMismatchError, ExportError
from sr_runtime.export.profile import ShapeProfile
from sr_runtime.options import TENSORRT_DIR, cache_root
from sr_runtime.spec import IOSpec, format_hw

__all__ = [
    "TRT_ELEMENT_LIMIT",
    "TensorBound",
    "max_shape_tensors",
    "check_element_limit",
    "fit_profile",
    "write_sidecar",
    "default_cache_dir",
    "build_engine",
    "load_engine",
    "TrtRunner",
]

log = logging.getLogger(__name__)

TRT_ELEMENT_LIMIT = 2**31 - 1
"""TensorRT indexes tensors with 32-bit signed integers: no tensor may hold more elements."""

# --- element limit -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorBound:
    """A tensor's shape at the profile's max shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def elements(self) -> int:
        return math.prod(self.shape)


def _intermediate_bounds(onnx_path: Path, input_shape: tuple[int, int, int, int]) -> list[TensorBound]:
    """Shapes of the graph's tensors at ``input_shape``, by ONNX shape inference (unresolved ones omitted)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise ExportError(f"{onnx_path}: expected one graph input, found {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, input_shape):
        dim.Clear()
        dim.dim_value = value
    # Weights are not needed for shapes: drop them so inference on large models stays cheap.
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    for init in graph.initializer:
        if init.data_type in float_types and init.data_location != onnx.TensorProto.EXTERNAL:
            init.ClearField("raw_data")
            init.ClearField("float_data")
            init.ClearField("int32_data")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:  # onnx raises InferenceError and others; the estimate then relies on the IOSpec
        log.debug("shape inference at %s failed: %s", input_shape, e)
        return []
    bounds = []
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        if shape and all(s > 0 for s in shape):
            bounds.append(TensorBound(vi.name, shape))
    return bounds


def max_shape_tensors(spec: IOSpec, profile: ShapeProfile, *, onnx_path: str | Path | None = None) -> list[TensorBound]:
    """Tensors at the profile's max shape, largest first.

    Always the input ``lr`` (N, 3, H, W) and output ``sr`` (N, 3, s*H, s*W) from the IOSpec, and
    the network's own input at HR size when it pre-upsamples; with ``onnx_path``, every
    intermediate whose shape ONNX shape inference resolves (the widest feature map is usually the
    upsampler's: features x HR area).
    """
    n, (h, w) = profile.batch[2], profile.max
    hr_h, hr_w = spec.output_size(h, w)
    bounds = [TensorBound("lr", (n, 3, h, w)), TensorBound("sr", (n, 3, hr_h, hr_w))]
    if onnx_path is not None:
        bounds += _intermediate_bounds(Path(onnx_path), (n, 3, h, w))
    return sorted(bounds, key=lambda b: b.elements, reverse=True)


def check_element_limit(
    spec: IOSpec, profile: ShapeProfile, *, onnx_path: str | Path | None = None, limit: int = TRT_ELEMENT_LIMIT
) -> list[TensorBound]:
    """Raise ConfigError if a tensor at the max shape exceeds TensorRT's element limit.

    The message names the tensor, its shape, and the largest ``--max-shape`` (or ``--batch``)
    that fits. Returns the bounds checked (largest first) when everything fits.
    """
    bounds = max_shape_tensors(spec, profile, onnx_path=onnx_path)
    widest = bounds[0]
    if widest.elements <= limit:
        return bounds
    factor = math.sqrt(limit / widest.elements)
    suggestion = profile.scaled_max(factor * 0.999, spec)
    fixes = f"lower --max-shape to {format_hw(suggestion)} or less (and tile larger inputs)"
    if profile.batch[2] > 1:
        per_image = widest.elements // profile.batch[2]
        if per_image <= limit:
            fixes += f", or lower --batch to {max(1, limit // per_image)}"
    raise ConfigError(
        f"at the max shape {format_hw(profile.max)} x batch {profile.batch[2]}, tensor {widest.name!r} of shape "
        f"{'x'.join(map(str, widest.shape))} has {widest.elements:,} elements, over TensorRT's limit of "
        f"{limit:,}{' (2^31-1)' if limit == TRT_ELEMENT_LIMIT else ''}; {fixes}"
    )


def fit_profile(spec: IOSpec, profile: ShapeProfile, *, onnx_path: str | Path | None = None,
                keep_max: bool = False) -> ShapeProfile:
    """``profile`` when every tensor at its max shape fits TensorRT's element limit; else, unless
    ``keep_max`` (a max shape the user gave: then ConfigError), the max shape lowered until it fits
    (and opt clipped to it), with a warning. Raises ConfigError."""
    from dataclasses import replace

    for _ in range(4):
        try:
            check_element_limit(spec, profile, onnx_path=onnx_path)
            return profile
        except ConfigError:
            if keep_max:
                raise
            widest = max_shape_tensors(spec, profile, onnx_path=onnx_path)[0]
            new_max = profile.scaled_max((TRT_ELEMENT_LIMIT / widest.elements) ** 0.5 * 0.999, spec)
            new_opt = (min(profile.opt[0], new_max[0]), min(profile.opt[1], new_max[1]))
            log.warning(
                "profile: the default max shape %s puts %s elements in tensor %r, over TensorRT's limit; "
                "using max %s (tile larger inputs, or pass --max-shape)",
                format_hw(profile.max),
                f"{widest.elements:,}",
                widest.name,
                format_hw(new_max),
            )
            profile = replace(profile, max=new_max, opt=new_opt)
    check_element_limit(spec, profile, onnx_path=onnx_path)
    return profile


# --- build and load -------------------------------------------------------------------------------


def write_sidecar(engine_path: str | Path, record: EngineRecord) -> Path:
    """Write ``record`` beside ``engine_path`` atomically; returns the sidecar path."""
    path = sidecar_path(engine_path)
    atomic_write_bytes(path, (json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return path


def default_cache_dir() -> Path:
    """Timing caches and built engines: ``tensorrt/`` under the one cache root
    (:func:`sr_runtime.options.cache_root`: ``$SR_RUNTIME_CACHE`` or ``~/.cache/sr_runtime``)."""
    return cache_root() / TENSORRT_DIR


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def _onnx_precision(onnx_path: Path) -> str:
    """ "fp16" when the graph's convolution weights are FP16, else "fp32"."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    float_types = {init.data_type for init in model.graph.initializer if len(init.dims) >= 2}
    return "fp16" if onnx.TensorProto.FLOAT16 in float_types else "fp32"


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    spec: IOSpec,
    profile: ShapeProfile,
    command: str,
    workspace_gib: float = 4.0,
    cache_dir: str | Path | None = None,
) -> tuple[Path, EngineRecord]:
    """Build (or reuse from the cache) the engine of ``onnx_path`` and write it with its sidecar.

    The network is strongly typed, so the engine's precision is the ONNX file's (FP16 weights and
    compute for an FP16 ONNX). Raises BackendUnavailableError without TensorRT or a GPU,
    ConfigError for a profile the model cannot take or too large for TensorRT, ExportError when
    parsing or building fails. Returns the engine path and its record.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    trt = import_tensorrt()
    env = current_environment()
    profile.validate(spec)
    check_element_limit(spec, profile, onnx_path=onnx_path)
    if workspace_gib <= 0:
        raise ConfigError(f"--workspace must be a positive number of GiB, got {workspace_gib}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    onnx_sha = sha256_file(onnx_path)
    precision = _onnx_precision(onnx_path)
    key = engine_key(
        onnx_sha256=onnx_sha,
        profile=profile,
        precision=precision,
        tensorrt_version=env["tensorrt_version"],
        gpu_name=env["gpu_name"],
    )
    record = EngineRecord(
        key=key,
        onnx_sha256=onnx_sha,
        onnx_file=onnx_path.name,
        profile=profile.to_dict(),
        precision=precision,
        tensorrt_version=env["tensorrt_version"],
        gpu_name=env["gpu_name"],
        compute_capability=env["compute_capability"],
        command=command,
        io_spec=spec.to_dict(),
        workspace_gib=workspace_gib,
    )
    cached = cache_dir / "engines" / f"{key}.engine"
    data = _read_cached(cached, record)
    if data is None:
        data = _build_serialized(trt, onnx_path, profile, precision, workspace_gib, cache_dir, env)
        record.engine_sha256 = hashlib.sha256(data).hexdigest()
        atomic_write_bytes(cached, data)
        write_sidecar(cached, record)
    record.engine_sha256 = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(engine_path, data)
    write_sidecar(engine_path, record)
    return engine_path, record


def _read_cached(cached: Path, record: EngineRecord) -> bytes | None:
    """The cached engine's bytes when its sidecar matches ``record``, else None."""
    if not (cached.is_file() and sidecar_path(cached).is_file()):
        return None
    try:
        check_sidecar(
            read_sidecar(cached),
            onnx_sha256=record.onnx_sha256,
            precision=record.precision,
            profile=record.profile,
            tensorrt_version=record.tensorrt_version,
            gpu_name=record.gpu_name,
        )
    except EngineMismatchError as e:
        log.warning("engine: cached %s does not match (%s); rebuilding", cached, e)
        return None
    log.info("engine: reusing cached %s (key %s)", cached, record.key)
    return cached.read_bytes()


def _build_serialized(
    trt,
    onnx_path: Path,
    profile: ShapeProfile,
    precision: str,
    workspace_gib: float,
    cache_dir: Path,
    env: dict[str, str],
) -> bytes:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 11 networks are always strongly typed; 10.x needs the flag.
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    flags = 1 << int(strongly_typed) if strongly_typed is not None else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # FP32 means FP32: no 10-bit-mantissa TF32 convolutions
    shapes = profile.input_shapes()
    opt_profile = builder.create_optimization_profile()
    input_name = network.get_input(0).name
    opt_profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(opt_profile)

    cache_file = cache_dir / f"timing-trt{_slug(env['tensorrt_version'])}-{_slug(env['gpu_name'])}.cache"
    blob = cache_file.read_bytes() if cache_file.is_file() else b""
    timing_cache = config.create_timing_cache(blob)
    if not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        log.warning("engine: timing cache %s does not match this build; starting a fresh one", cache_file)
        timing_cache = config.create_timing_cache(b"")
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
    log.info(
        "engine: building %s (%s, profile %s, workspace %g GiB)",
        onnx_path.name,
        precision,
        profile_text(profile.to_dict()),
        workspace_gib,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above); "
            f"try a smaller --max-shape or a larger --workspace"
        )
    atomic_write_bytes(cache_file, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def load_engine(engine_path: str | Path, *, onnx_sha256: str | None = None):
    """Deserialize ``engine_path`` after checking its sidecar against this machine.

    Returns ``(engine, record)``. Raises EngineMismatchError (with the rebuild command) when the
    engine was built for another TensorRT, GPU or ONNX, BackendUnavailableError without TensorRT.
    """
    engine_path = Path(engine_path)
    record = read_sidecar(engine_path)
    env = current_environment()
    check_sidecar(
        record,
        tensorrt_version=env["tensorrt_version"],
        gpu_name=env["gpu_name"],
        onnx_sha256=onnx_sha256,
        engine_path=engine_path,
    )
    trt = import_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise EngineMismatchError(
            f"{engine_path}: TensorRT could not deserialize the engine; rebuild with: {record.command}"
        )
    return engine, record


class TrtRunner:
    """An engine on the GPU: ``runner(lr) -> sr`` on float32 numpy arrays, for the parity gate."""

    def __init__(self, engine_path: str | Path) -> None:
        import torch

        trt = import_tensorrt()
        self.engine, self.record = load_engine(engine_path)
        self.context = self.engine.create_execution_context()
        self.input_name, self.output_name = self.record.input_name, self.record.output_name
        to_torch = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        self.in_dtype = to_torch[self.engine.get_tensor_dtype(self.input_name)]
        self.out_dtype = to_torch[self.engine.get_tensor_dtype(self.output_name)]

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(lr)).to("cuda", self.in_dtype)
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise ExportError(f"input shape {tuple(x.shape)} is outside the engine's profile {self.record.profile}")
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        y = torch.empty(out_shape, dtype=self.out_dtype, device="cuda")
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        self.context.set_tensor_address(self.output_name, y.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT execution failed")
        stream.synchronize()
        return y.float().cpu().numpy()
