"""Typed errors. Every message says what was wrong and how to fix it.

Only the ``cli`` modules turn an :class:`SRError` into one line and a non-zero exit.
"""

from __future__ import annotations

__all__ = [
    "SRError",
    "InputError",
    "UnsupportedModelError",
    "CheckpointError",
    "UnsupportedArchError",
    "UnsupportedScaleError",
    "ConfigError",
    "BackendUnavailableError",
    "EngineMismatchError",
    "ExportError",
    "ParityError",
    "VideoError",
    "OutputError",
]


class SRError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(SRError, ValueError):
    """An input file, folder or array is missing, unreadable or of the wrong shape."""


class UnsupportedModelError(InputError):
    """A model file that is not an image-to-image upscaler (a classifier, several inputs, an output
    that is not an integer multiple of its input)."""


class CheckpointError(SRError):
    """A checkpoint file is corrupt, incomplete or does not match its metadata."""


class UnsupportedArchError(SRError, KeyError):
    """An architecture name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnsupportedScaleError(SRError, ValueError):
    """A scale that the architecture or checkpoint does not support."""


class ConfigError(SRError, ValueError):
    """A configuration key or value is invalid."""


class BackendUnavailableError(SRError, RuntimeError):
    """A requested backend, device or precision is not available on this machine."""


class EngineMismatchError(SRError):
    """A TensorRT engine was built for another GPU, TensorRT version, ONNX file or profile."""


class ExportError(SRError):
    """An export step failed."""


class ParityError(ExportError):
    """An exported artifact does not compute what PyTorch computes, within tolerance."""


class VideoError(InputError):
    """A video cannot be decoded or encoded."""


class OutputError(InputError):
    """An output file or folder cannot be written: a read-only file system, no permission, a full disk,
    or a file where a folder belongs."""
