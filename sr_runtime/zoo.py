"""Which checkpoint a model name (or a bare scale) means: the best one by its recorded validation score.

Every checkpoint this project trains records its validation PSNR (Y channel, ``scale``-pixel crop: the
literature's protocol) and a fingerprint of the validation images (``metrics.val_set``); the shipped
weights carry theirs. Resolution:

- an existing path is used as given;
- a name (``--model edsr``) or a bare ``--scale`` means the best shipped model for that name or scale
  by recorded score; a training run under ``runs_dir`` replaces it only when its recorded score on the
  *same* validation set is higher. Otherwise one line names the run found, its score, the shipped score
  and how to use the run anyway (pass its path). The newest run never wins by being newest;
- with nothing shipped for a name, its best-scoring training run (the newest when none is comparable).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sr_runtime.archs import get_arch
from sr_runtime.errors import InputError

__all__ = [
    "WEIGHTS_DIR", "Candidate", "shipped_weights", "shipped_path", "default_model", "resolve_checkpoint",
    "choose_checkpoint",
]

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Shipped checkpoints, named ``<name>_x<scale>.safetensors``."""


@dataclass(frozen=True)
class Candidate:
    """A checkpoint that a name or scale may resolve to, with what its metadata records."""

    path: Path
    name: str
    scale: int
    score: float | None
    """Recorded validation PSNR (dB), None when the checkpoint records none."""
    val_set: str | None
    """Fingerprint of the validation images the score was measured on (:func:`sr_runtime.evaluate.dataset_fingerprint`)."""
    val_name: str | None
    shipped: bool

    def describe_score(self) -> str:
        if self.score is None:
            return "no recorded validation score"
        return f"{self.score:.2f} dB on {self.val_name or 'its validation set'}"


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


def _candidate(path: Path, *, shipped: bool) -> Candidate | None:
    from sr_runtime.checkpoint import read_metadata

    try:
        meta = read_metadata(path)
        metrics = meta.get("metrics") or {}
        score = metrics.get("val_psnr")
        return Candidate(path, str(meta["arch"]), int(meta["scale"]), None if score is None else float(score),
                         metrics.get("val_set"), metrics.get("val_name"), shipped)
    except Exception:  # a half-written or foreign file is not a candidate
        return None


def _shipped(name: str | None, scale: int) -> list[Candidate]:
    found = (_candidate(p, shipped=True) for (n, s), p in shipped_weights().items()
             if s == scale and (name is None or n == name))
    return [c for c in found if c is not None]


def _runs(name: str | None, scale: int, runs_dir: Path) -> list[Candidate]:
    if not runs_dir.is_dir():
        return []
    found = (_candidate(p, shipped=False) for p in sorted(runs_dir.glob("*/best.safetensors")))
    return [c for c in found if c is not None and c.scale == scale and (name is None or c.name == name)]


def _score(c: Candidate) -> float:
    return c.score if c.score is not None else float("-inf")


def choose_checkpoint(name: str | None, scale: int, *, runs_dir: str | os.PathLike = "runs") -> tuple[Candidate, str]:
    """The best checkpoint for ``name`` (None: any model) at ``scale`` and why, for the log.

    Raises InputError when there is none.
    """
    runs_dir = Path(runs_dir)
    shipped, runs = _shipped(name, scale), _runs(name, scale, runs_dir)
    what = f"{name} x{scale}" if name else f"x{scale}"
    if not shipped:
        if not runs:
            have = ", ".join(f"{n} x{s}" for n, s in sorted(shipped_weights())) or "none"
            hint = f"`sr-train --model {name} --scale {scale}`" if name else "`sr-train --model NAME --scale ...`"
            raise InputError(
                f"no checkpoint for {what}: none under {runs_dir}/ and none shipped (shipped: {have}). "
                f"Train one with {hint} or pass a checkpoint path"
            )
        sets = {r.val_set for r in runs}
        pick = max(runs, key=_score) if len(sets) == 1 and None not in sets else max(runs, key=lambda r: r.path.stat().st_mtime)
        return pick, f"training run {pick.path} ({pick.describe_score()}; nothing ships for {what})"
    best = max(shipped, key=_score)
    comparable = [r for r in runs if r.score is not None and r.val_set is not None and r.val_set == best.val_set]
    challenger = max(comparable, key=_score, default=None)
    if challenger is not None and challenger.score > _score(best):
        return challenger, (f"training run {challenger.path}: {challenger.describe_score()}, better than the shipped "
                            f"{best.path.stem} ({best.describe_score()})")
    if runs:
        run = challenger or max(runs, key=lambda r: r.path.stat().st_mtime)
        if run in comparable:
            why = f"the shipped {best.path.stem} scores {best.describe_score()}"
        else:
            why = (f"not comparable with the shipped {best.path.stem}'s {best.describe_score()}: "
                   + ("no recorded score" if run.score is None else "validated on another set"))
        log.warning("found training run %s (%s); %s, so the shipped weights are used. To use the run anyway, "
                 "pass --model %s", run.path, run.describe_score(), why, run.path)
    return best, f"shipped weights {best.path.name} ({best.describe_score()})"


def default_model(scale: int, *, runs_dir: str | os.PathLike | None = None) -> str:
    """Name of the best model for ``scale`` by recorded score (shipped weights; with ``runs_dir``, a
    better training run too); raises InputError when none ships."""
    if runs_dir is None:
        shipped = _shipped(None, scale)
        if not shipped:
            have = ", ".join(f"{n} x{s}" for n, s in sorted(shipped_weights())) or "none"
            raise InputError(f"no model ships for scale {scale} (shipped: {have}); pass --model PATH to a checkpoint")
        return max(shipped, key=_score).name
    return choose_checkpoint(None, scale, runs_dir=runs_dir)[0].name


def resolve_checkpoint(model: str | None, scale: int | None, *,
                       runs_dir: str | os.PathLike = "runs") -> tuple[Path, str]:
    """Resolve ``model`` (a path, a registry name, or None for the best model at ``scale``) to a file.

    Returns ``(path, how)`` where ``how`` says which and why, for the log. Raises InputError (or
    UnsupportedArchError for an unknown name).
    """
    if model is not None:
        candidate = Path(model)
        if (candidate.suffix.lower() in (".safetensors", ".pth", ".pt", ".ckpt") or candidate.exists()
                or os.sep in model):
            if not candidate.is_file():
                raise InputError(f"{model}: checkpoint not found")
            return candidate, f"checkpoint {candidate}"
        get_arch(model)
        if scale is None:
            raise InputError(f"--scale is required with a model name ({model!r})")
    elif scale is None:
        raise InputError("give a model (name or file) or a scale to pick the default model")
    chosen, how = choose_checkpoint(model, scale, runs_dir=runs_dir)
    return chosen.path, how
