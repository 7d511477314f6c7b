"""Where a model name comes from: an explicit path, a training run, or the weights shipped in the package."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sr_runtime.archs import get_arch
from sr_runtime.errors import InputError

__all__ = ["WEIGHTS_DIR", "shipped_weights", "shipped_path", "default_model", "resolve_checkpoint", "DEFAULT_MODELS"]

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Shipped checkpoints, named ``<name>_x<scale>.safetensors``."""

DEFAULT_MODELS: tuple[str, ...] = ("edsr", "fsrcnn", "espcn")
"""Preference order for the default model of a scale: the best one shipped wins."""


def shipped_weights() -> dict[tuple[str, int], Path]:
    """``{(name, scale): path}`` for every checkpoint shipped in the package."""
    found: dict[tuple[str, int], Path] = {}
    if not WEIGHTS_DIR.is_dir():
        return found
    for path in sorted(WEIGHTS_DIR.glob("*_x*.safetensors")):
        name, _, scale = path.stem.rpartition("_x")
        if scale.isdigit():
            found[(name, int(scale))] = path
    return found


def shipped_path(name: str, scale: int) -> Path | None:
    return shipped_weights().get((name, int(scale)))


def default_model(scale: int) -> str:
    """Name of the best shipped model for ``scale``; raises InputError when none ships."""
    shipped = shipped_weights()
    for name in DEFAULT_MODELS:
        if (name, scale) in shipped:
            return name
    names = sorted({n for (n, s) in shipped if s == scale})
    if names:
        return names[0]
    have = ", ".join(f"{n} x{s}" for n, s in sorted(shipped)) or "none"
    raise InputError(f"no model ships for scale {scale} (shipped: {have}); pass --model PATH to a checkpoint")


def _newest_run_checkpoint(name: str, scale: int, runs_dir: Path) -> Path | None:
    if not runs_dir.is_dir():
        return None
    candidates = []
    for best in runs_dir.glob("*/best.safetensors"):
        try:
            from sr_runtime.checkpoint import read_metadata

            meta = read_metadata(best)
        except Exception:  # a half-made or foreign run directory is not a candidate
            continue
        if meta.get("arch") == name and int(meta.get("scale", 0)) == scale:
            candidates.append(best)
    return max(candidates, key=os.path.getmtime) if candidates else None


def resolve_checkpoint(model: str, scale: int | None, *, runs_dir: str | os.PathLike = "runs") -> tuple[Path, str]:
    """Resolve ``model`` (a path or a registry name) to a checkpoint file.

    Order: an existing path; else the newest ``best`` checkpoint of that name and scale under
    ``runs_dir``; else the shipped weights. Returns ``(path, how)`` where ``how`` says which,
    for the log. Raises InputError (or UnsupportedArchError for an unknown name).
    """
    candidate = Path(model)
    if candidate.suffix.lower() in (".safetensors", ".pth", ".pt", ".ckpt") or candidate.exists() or os.sep in model:
        if not candidate.is_file():
            raise InputError(f"{model}: checkpoint not found")
        return candidate, f"checkpoint {candidate}"
    get_arch(model)
    if scale is None:
        raise InputError(f"--scale is required with a model name ({model!r})")
    run = _newest_run_checkpoint(model, scale, Path(runs_dir))
    if run is not None:
        return run, f"newest training run {run}"
    shipped = shipped_path(model, scale)
    if shipped is not None:
        return shipped, f"shipped weights {shipped.name}"
    have = ", ".join(f"{n} x{s}" for n, s in sorted(shipped_weights())) or "none"
    raise InputError(
        f"no checkpoint for {model} x{scale}: none under {runs_dir}/ and none shipped (shipped: {have}). "
        f"Train one with `sr-train --model {model} --scale {scale}` or pass a checkpoint path"
    )
