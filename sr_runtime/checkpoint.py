"""Self-describing checkpoints: safetensors weights with JSON metadata in the same file.

The metadata (under the safetensors header key ``"sr_runtime"``) holds everything needed to
rebuild the model with nothing else given: registry name, scale, hyperparameters, IOSpec, and
optionally the training recipe, metrics and code revision. Loading is strict.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sr_runtime.archs import build, get_arch
from sr_runtime.atomic import atomic_write_bytes
from sr_runtime.errors import CheckpointError, SRError, UnsupportedScaleError
from sr_runtime.spec import IOSpec

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "read_metadata", "code_revision", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_META_KEY = "sr_runtime"


@dataclass
class Checkpoint:
    """A loaded model and what its file says about it."""

    model: nn.Module
    arch: str
    scale: int
    hparams: dict[str, Any]
    spec: IOSpec
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.meta.get("name") or f"{self.arch}_x{self.scale}"


def code_revision() -> str | None:
    """Git commit of the source tree this module lives in, or None outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    arch: str,
    scale: int,
    hparams: dict[str, Any],
    name: str | None = None,
    recipe: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s weights and metadata to ``path`` atomically (temp file + rename).

    ``hparams`` must be the complete keyword arguments the model was built with
    (see :func:`sr_runtime.archs.resolve_hparams`), so that :func:`load_checkpoint` rebuilds it.
    """
    from safetensors.torch import save

    path = Path(path)
    get_arch(arch)
    spec: IOSpec = model.io_spec
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name or f"{arch}_x{scale}",
        "arch": arch,
        "scale": int(scale),
        "hparams": hparams,
        "io_spec": spec.to_dict(),
        "recipe": recipe or {},
        "metrics": metrics or {},
        "code_revision": code_revision(),
        "torch_version": torch.__version__,
    }
    if extra:
        meta.update(extra)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={_META_KEY: json.dumps(meta, sort_keys=True, default=str)})
    atomic_write_bytes(path, data)
    return path


def _raw_metadata(path: Path) -> str | None:
    """The JSON text under ``"sr_runtime"`` in a safetensors header, or None when there is none."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(_META_KEY)
    except Exception as e:  # safetensors raises its own SafetensorError and OSError subclasses
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from e


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint without loading its tensors."""
    path = Path(path)
    raw = _raw_metadata(path)
    if raw is None:
        raise CheckpointError(
            f"{path}: safetensors file has no '{_META_KEY}' metadata; it was not written by save_checkpoint"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({e})") from e
    for key in ("arch", "scale", "hparams"):
        if key not in meta:
            raise CheckpointError(f"{path}: metadata lacks '{key}'")
    return meta


def load_checkpoint(
    path: str | os.PathLike, *, scale: int | None = None, device: torch.device | str = "cpu"
) -> Checkpoint:
    """Rebuild the model stored in ``path`` and load its weights strictly.

    A file without this project's metadata (a ``.pth``/``.pt``/``.ckpt``, or a ``.safetensors``
    written elsewhere) is a community checkpoint, loaded through spandrel
    (:func:`sr_runtime.community.load_community`); its ``arch`` is spandrel's architecture name.

    ``scale``, when given, must equal the checkpoint's scale. Raises CheckpointError for a
    corrupt file or missing/unexpected tensors, UnsupportedArchError for an unknown
    architecture, UnsupportedScaleError for a scale the model was not trained for.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors" or _raw_metadata(path) is None:
        return _load_community(path, scale=scale, device=device)
    meta = read_metadata(path)
    arch, ckpt_scale = meta["arch"], int(meta["scale"])
    if scale is not None and int(scale) != ckpt_scale:
        raise UnsupportedScaleError(
            f"{path}: checkpoint is {arch} x{ckpt_scale}, but scale {scale} was asked for; "
            f"use --scale {ckpt_scale} or a checkpoint trained for x{scale}"
        )
    try:
        model = build(arch, scale=ckpt_scale, **meta["hparams"])
    except SRError as e:
        raise type(e)(f"{path}: {e}") from e
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read tensors ({e})") from e
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        expected = set(model.state_dict())
        missing = sorted(expected - set(tensors))
        unexpected = sorted(set(tensors) - expected)
        detail = []
        if missing:
            detail.append(f"missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            detail.append(f"unexpected tensors {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if not detail:
            detail.append(str(e).splitlines()[0])
        raise CheckpointError(f"{path}: weights do not match {arch} x{ckpt_scale}: {'; '.join(detail)}") from e
    model.to(device).eval()
    return Checkpoint(
        model=model,
        arch=arch,
        scale=ckpt_scale,
        hparams=dict(meta["hparams"]),
        spec=model.io_spec,
        meta=meta,
        path=path,
    )


def _load_community(path: Path, *, scale: int | None, device: torch.device | str) -> Checkpoint:
    from sr_runtime.community import load_community  # imports spandrel: only for foreign files

    net, spec, description = load_community(path, scale=scale, device=device)
    meta = {"name": path.stem, "arch": net.arch, "scale": spec.scale, "source": "spandrel", "description": description}
    return Checkpoint(model=net, arch=net.arch, scale=spec.scale, hparams={}, spec=spec, meta=meta, path=path)
