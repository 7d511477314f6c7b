"""TensorRT on this machine, and the sidecar that says what an engine was built for: the one place
for both.

Whether ``tensorrt`` is installed (:func:`tensorrt_available`, without importing it), whether it
imports (:func:`tensorrt_status`), the install command (:data:`INSTALL_HINT`), and this machine's
TensorRT version and GPU (:func:`current_environment`).

An engine runs only where it was built: same TensorRT version and same GPU. Beside every
``X.engine`` lies ``X.engine.json`` (:class:`EngineRecord`): the cache key, the ONNX sha256, the
profile (LR input ``"HxW"`` min/opt/max and the batch range), the precision, the TensorRT version,
the GPU name and the exact command that rebuilds it. The engine builder of the export library
writes it; the TensorRT backend reads it, and :func:`check_sidecar` raises
:class:`~sr_runtime.errors.EngineMismatchError` when any of it does not match the machine at hand.
``tensorrt`` is imported inside the functions that need it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sr_runtime.atomic import sha256_file
from sr_runtime.errors import BackendUnavailableError, EngineMismatchError

__all__ = [
    "INSTALL_HINT",
    "SIDECAR_VERSION",
    "EngineRecord",
    "check_sidecar",
    "current_environment",
    "engine_key",
    "import_tensorrt",
    "profile_text",
    "read_sidecar",
    "sidecar_path",
    "tensorrt_available",
    "tensorrt_status",
]

INSTALL_HINT = (
    "TensorRT is not installed: pip install tensorrt --extra-index-url https://pypi.nvidia.com "
    "(or pip install -e '.[trt]'); it needs an NVIDIA GPU and a CUDA build of torch"
)

SIDECAR_VERSION = 1


def tensorrt_available() -> bool:
    """Whether ``import tensorrt`` would find the package (does not import it)."""
    return importlib.util.find_spec("tensorrt") is not None


def tensorrt_status() -> tuple[bool, str]:
    """(usable, why): TensorRT imports here (its libraries load), and which version."""
    if not tensorrt_available():
        return False, INSTALL_HINT
    try:
        import tensorrt as trt
    except Exception as e:  # noqa: BLE001 - a broken install (missing libnvinfer) raises anything
        return False, f"tensorrt does not import ({type(e).__name__}: {e})"
    return True, f"TensorRT {trt.__version__}"


def import_tensorrt():
    """The ``tensorrt`` module; raises BackendUnavailableError with the install command otherwise."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(INSTALL_HINT) from e
    return trt


def current_environment() -> dict[str, str]:
    """``{"tensorrt_version", "gpu_name", "compute_capability"}`` of this machine.

    Raises BackendUnavailableError without TensorRT or a CUDA GPU.
    """
    trt = import_tensorrt()
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "TensorRT needs a CUDA GPU and a CUDA build of torch; none is available here "
            "(torch.cuda.is_available() is False). Build the engine on the machine that will run it"
        )
    major, minor = torch.cuda.get_device_capability()
    return {
        "tensorrt_version": str(trt.__version__),
        "gpu_name": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
    }


def _profile_dict(profile: Any) -> dict[str, Any]:
    """A profile as its sidecar dict: a ``ShapeProfile`` (``to_dict``) or the dict itself."""
    return profile.to_dict() if hasattr(profile, "to_dict") else dict(profile)


def engine_key(*, onnx_sha256: str, profile: Any, precision: str, tensorrt_version: str, gpu_name: str) -> str:
    """Cache key of an engine: a hash of everything that makes an engine valid (24 hex digits).
    ``profile``: a ``ShapeProfile`` or its sidecar dict."""
    payload = json.dumps(
        {
            "onnx_sha256": onnx_sha256,
            "profile": _profile_dict(profile),
            "precision": precision,
            "tensorrt_version": tensorrt_version,
            "gpu_name": gpu_name,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass
class EngineRecord:
    """The sidecar JSON of an engine: what it was built from, for and with."""

    key: str
    onnx_sha256: str
    onnx_file: str
    profile: dict[str, Any]
    """LR input shapes: ``min``/``opt``/``max`` as ``"HxW"``, ``batch`` as ``{min, opt, max}``."""
    precision: str
    tensorrt_version: str
    gpu_name: str
    command: str
    """The command line that rebuilds this engine."""
    io_spec: dict[str, Any] = field(default_factory=dict)
    input_name: str = "lr"
    output_name: str = "sr"
    workspace_gib: float | None = None
    engine_sha256: str | None = None
    compute_capability: str | None = None
    sidecar_version: int = SIDECAR_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineRecord:
        required = ("key", "onnx_sha256", "profile", "precision", "tensorrt_version", "gpu_name")
        missing = [k for k in required if k not in data] if isinstance(data, dict) else list(required)
        if missing:
            raise EngineMismatchError(f"engine sidecar lacks {missing}; rebuild the engine with sr-export")
        if not isinstance(data["profile"], dict):
            raise EngineMismatchError(f"engine sidecar profile {data['profile']!r} is not a record; rebuild the engine")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: str | Path) -> EngineRecord:
    """The record beside ``engine_path``; raises EngineMismatchError when missing or unreadable."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise EngineMismatchError(
            f"{engine_path}: no sidecar {path.name} beside the engine, so it cannot be checked against this "
            f"machine; rebuild it with sr-export --format engine"
        )
    try:
        return EngineRecord.from_dict(json.loads(path.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise EngineMismatchError(f"{path}: unreadable engine sidecar ({e}); rebuild the engine with sr-export") from e


def check_sidecar(
    record: EngineRecord,
    *,
    tensorrt_version: str,
    gpu_name: str,
    onnx_sha256: str | None = None,
    profile: Any = None,
    precision: str | None = None,
    engine_path: str | Path | None = None,
) -> None:
    """Raise EngineMismatchError unless ``record`` fits this TensorRT and GPU (and the ONNX hash,
    profile and precision when given) and its key is the hash of what it records. With
    ``engine_path``: also unless the engine's bytes are the ones the sidecar hashed and the ONNX
    file it was built from, when it lies beside the engine, is unchanged.

    The message lists each mismatch and the exact command that rebuilds the engine here.
    """
    expected: dict[str, Any] = {"TensorRT version": tensorrt_version, "GPU": gpu_name}
    recorded: dict[str, Any] = {"TensorRT version": record.tensorrt_version, "GPU": record.gpu_name}
    if onnx_sha256 is not None:
        expected["ONNX sha256"], recorded["ONNX sha256"] = onnx_sha256, record.onnx_sha256
    if precision is not None:
        expected["precision"], recorded["precision"] = precision, record.precision
    if profile is not None:
        expected["profile"], recorded["profile"] = profile_text(_profile_dict(profile)), profile_text(record.profile)
    mismatches = [f"{k} {recorded[k]!r} (here: {expected[k]!r})" for k in expected if recorded[k] != expected[k]]
    if not mismatches:
        recomputed = engine_key(profile=record.profile, tensorrt_version=tensorrt_version, gpu_name=gpu_name,
                                onnx_sha256=record.onnx_sha256, precision=record.precision)
        if recomputed != record.key:
            mismatches.append(f"cache key {record.key} (here: {recomputed})")
    if engine_path is not None:
        mismatches += _file_mismatches(Path(engine_path), record)
    if mismatches:
        what = f"{engine_path}: " if engine_path else ""
        raise EngineMismatchError(
            f"{what}engine was built for {'; '.join(mismatches)}. TensorRT engines only run where they were built; "
            f"rebuild it on this machine with: {record.command}"
        )


def _file_mismatches(engine_path: Path, record: EngineRecord) -> list[str]:
    mismatches = []
    if record.engine_sha256 and sha256_file(engine_path) != record.engine_sha256:
        mismatches.append("other engine bytes (the .engine file was replaced after its sidecar was written)")
    if record.onnx_file and record.onnx_sha256:
        onnx_path = engine_path.with_name(Path(record.onnx_file).name)
        if onnx_path.is_file() and sha256_file(onnx_path) != record.onnx_sha256:
            mismatches.append(f"another version of {onnx_path.name} (the ONNX beside it changed since the build)")
    return mismatches


def profile_text(profile: dict[str, Any]) -> str:
    """A sidecar profile dict in one line: ``min 32x32 opt 270x480 max 1088x1920 batch 1/1/4``."""
    batch = profile.get("batch", {})
    return (
        f"min {profile.get('min')} opt {profile.get('opt')} max {profile.get('max')} "
        f"batch {batch.get('min', 1)}/{batch.get('opt', 1)}/{batch.get('max', 1)}"
    )
