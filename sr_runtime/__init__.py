"""sr_runtime: super-resolution architectures, checkpoints, evaluation protocol and tiled inference.

Importing it needs only torch, numpy, Pillow and safetensors; ONNX Runtime, TensorRT and PyAV are
imported inside the modules that use them.
"""

from sr_runtime.archs import ARCHS, build, list_archs
from sr_runtime.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sr_runtime.errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    EngineMismatchError,
    ExportError,
    InputError,
    OutputError,
    ParityError,
    SRError,
    UnsupportedArchError,
    UnsupportedModelError,
    UnsupportedScaleError,
    VideoError,
)
from sr_runtime.options import RuntimeOptions
from sr_runtime.spec import IOSpec
from sr_runtime.upscaler import Upscaler

__all__ = [
    "Upscaler",
    "RuntimeOptions",
    "ARCHS",
    "build",
    "list_archs",
    "Checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "IOSpec",
    "SRError",
    "InputError",
    "OutputError",
    "CheckpointError",
    "ConfigError",
    "UnsupportedArchError",
    "UnsupportedModelError",
    "UnsupportedScaleError",
    "BackendUnavailableError",
    "EngineMismatchError",
    "ExportError",
    "ParityError",
    "VideoError",
]
