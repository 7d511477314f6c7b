"""How to run a model: one set of runtime options, from the command line to the Upscaler to the
backend factory, and the one cache root every built artifact lives under.

:class:`RuntimeOptions` travels whole: ``sr-run`` builds it from its arguments, :class:`~sr_runtime.Upscaler`
takes it (or builds it from its keywords), the fast path (:mod:`sr_runtime.fastpath`) and the
backend factory (:func:`sr_runtime.backends.create_backend`) read it. Nothing unpacks it into a
dozen keyword arguments on the way.

Cache root (:func:`cache_root`): ``cache_dir`` when given, else ``$SR_RUNTIME_CACHE``, else
``$XDG_CACHE_HOME/sr_runtime`` (``~/.cache/sr_runtime``). Under it: the fast path's entries
(``<key>/``), TensorRT engines and timing caches (:data:`TENSORRT_DIR`), and ONNX Runtime's
TensorRT provider engines (:data:`ORT_TENSORRT_DIR`); ``sr-cache`` lists and clears them.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sr_runtime.errors import BackendUnavailableError, InputError

__all__ = ["BACKENDS", "ORT_TENSORRT_DIR", "PRECISIONS", "TENSORRT_DIR", "RuntimeOptions", "cache_root"]

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16")
"""Every precision some backend runs; each backend refuses those it cannot (bf16: OpenVINO on CPUs with BF16)."""
TENSORRT_DIR = "tensorrt"
"""Folder of the cache root holding TensorRT engines (``engines/<key>.engine``) and timing caches."""
ORT_TENSORRT_DIR = "ort_tensorrt"
"""Folder of the cache root holding the engines ONNX Runtime's TensorRT provider builds."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder every built artifact is cached under (see the module doc)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("SR_RUNTIME_CACHE"):
        return Path(os.environ["SR_RUNTIME_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sr_runtime"


@dataclass(frozen=True)
class RuntimeOptions:
    """What runs a model, where and how; every field has a default that picks for you.

    An explicit choice is honoured or raises BackendUnavailableError: the runtime never falls
    back to another backend, device, provider or precision on its own.
    """

    backend: str = "auto"
    """``auto`` (a checkpoint runs in its fastest parity-checked form, built once and cached; a file
    on the backend its suffix implies), ``torch``, ``onnxruntime``, ``tensorrt`` or ``openvino``."""
    device: str | None = None
    """``cpu``, ``cuda`` or ``cuda:N``; None picks the fastest available."""
    precision: str | None = None
    """None for the artifact's own (FP32 for checkpoints; with ``auto`` reduced precision competes),
    ``fp32``, ``fp16`` or ``bf16`` (OpenVINO on CPUs with BF16)."""
    provider: str | None = None
    """ONNX Runtime execution provider for ``.onnx`` models: ``cpu``, ``cuda`` or ``tensorrt``."""
    compile: bool = False
    """torch.compile the model (torch forms only)."""
    cuda_graphs: bool = False
    """Replay CUDA graphs (torch backend, CUDA)."""
    channels_last: bool | None = None
    """torch memory format; None: the backend's choice."""
    runs_dir: str | os.PathLike = "runs"
    """Where model names look for trained checkpoints before the shipped weights."""
    cache_dir: str | os.PathLike | None = None
    """Cache root of built artifacts; None: :func:`cache_root`'s default."""
    use_cache: bool = True
    """False: build the fast form for this process only and write nothing to the cache."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise BackendUnavailableError(f"unknown backend {self.backend!r}; valid: {', '.join(BACKENDS)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise BackendUnavailableError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")

    @property
    def torch_only(self) -> bool:
        """True when an option only the torch backend has was set (compile, CUDA graphs, channels-last)."""
        return self.compile or self.cuda_graphs or self.channels_last is not None

    def replace(self, **changes: Any) -> RuntimeOptions:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)

    @classmethod
    def from_keywords(cls, keywords: dict[str, Any]) -> RuntimeOptions:
        """Options from keyword arguments named like the fields; InputError names an unknown one
        and the closest valid name."""
        valid = [f.name for f in fields(cls)]
        for name in keywords:
            if name not in valid:
                close = difflib.get_close_matches(name, valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(valid)}"
                raise InputError(f"unknown runtime option {name!r}{hint}")
        return cls(**keywords)
