"""``export.json``: what an export directory holds, how it was made and how close it is to PyTorch.

One manifest per export directory: the files (name, sha256, bytes), the I/O contract (names,
axes, IOSpec), the TensorRT profile, the parity table (artifact, image, size, PSNR, max |diff|,
NaN/Inf), the time each step took, the source checkpoint and the versions of every tool involved.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sr_runtime.atomic import atomic_write_bytes, sha256_file
from sr_runtime.export.verify import ParityRow

__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "file_entry",
    "tool_versions",
    "write_manifest",
    "read_manifest",
]

MANIFEST_NAME = "export.json"
MANIFEST_VERSION = 1

_TOOLS = ("torch", "onnx", "onnxruntime", "onnxslim", "onnxconverter-common", "tensorrt", "numpy")


def file_entry(path: str | Path, *, kind: str, precision: str | None = None) -> dict[str, Any]:
    """``{"name", "kind", "precision", "sha256", "bytes"}`` of a file in the export directory."""
    path = Path(path)
    entry: dict[str, Any] = {"name": path.name, "kind": kind, "sha256": sha256_file(path), "bytes": path.stat().st_size}
    if precision is not None:
        entry["precision"] = precision
    return entry


def tool_versions() -> dict[str, str | None]:
    """Versions of Python and of the packages an export uses (None where not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    from sr_runtime.checkpoint import code_revision

    versions["sr_runtime_revision"] = code_revision()
    return versions


@dataclass
class Manifest:
    """The content of ``export.json``; fields are filled in as the export proceeds."""

    name: str
    scale: int
    command: str
    source: dict[str, Any]
    """Checkpoint path, how it was resolved, sha256, arch, hparams."""
    io: dict[str, Any]
    """Input/output names, dynamic axes and the IOSpec."""
    files: list[dict[str, Any]] = field(default_factory=list)
    parity: list[ParityRow] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    fp16: dict[str, Any] | None = None
    """FP16 conversion: I/O precision and the nodes kept in FP32."""
    engine: dict[str, Any] | None = None
    triton: dict[str, Any] | None = None
    """The Triton model repository written from this export (``--triton DIR``): its folder and models."""
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str | None] = field(default_factory=tool_versions)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def add_file(self, path: str | Path, *, kind: str, precision: str | None = None) -> None:
        entry = file_entry(path, kind=kind, precision=precision)
        self.files = [f for f in self.files if f["name"] != entry["name"]] + [entry]

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_version": MANIFEST_VERSION,
            "name": self.name,
            "scale": self.scale,
            "created": self.created,
            "command": self.command,
            "source": self.source,
            "io": self.io,
            "files": self.files,
            "profile": self.profile,
            "fp16": self.fp16,
            "engine": self.engine,
            "triton": self.triton,
            "parity": [row.to_dict() for row in self.parity],
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
            "versions": self.versions,
            "notes": self.notes,
        }


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Write ``directory/export.json`` atomically (temp file + rename); returns its path."""
    text = json.dumps(manifest.to_dict(), indent=2, allow_nan=False) + "\n"
    return atomic_write_bytes(Path(directory) / MANIFEST_NAME, text.encode())


def read_manifest(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / MANIFEST_NAME).read_text())
