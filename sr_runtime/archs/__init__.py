"""The one explicit registry of architectures.

A model *name* (``"edsr"``, ``"edsr-large"``, ``"red10"``...) maps to an architecture class and
the hyperparameters that distinguish it. Nothing registers itself on import: to add an
architecture, write its file and list it in :data:`ARCHS`.

Every architecture class takes keyword-only hyperparameters (``scale`` among them, so that
pre-upsampling networks can state their contract too) and exposes ``io_spec``, an
:class:`~sr_runtime.spec.IOSpec`.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from torch import nn

from sr_runtime.archs.drrn import DRRN
from sr_runtime.archs.edsr import EDSR
from sr_runtime.archs.espcn import ESPCN
from sr_runtime.archs.fsrcnn import FSRCNN
from sr_runtime.archs.rednet import RED10, RED30
from sr_runtime.archs.srcnn import SRCNN
from sr_runtime.archs.srresnet import SRResNet
from sr_runtime.archs.vdsr import VDSR
from sr_runtime.errors import ConfigError, UnsupportedArchError, UnsupportedScaleError

__all__ = ["ARCHS", "ArchEntry", "build", "get_arch", "list_archs", "resolve_hparams"]


@dataclass(frozen=True)
class ArchEntry:
    """One registered model name."""

    cls: type[nn.Module]
    scales: tuple[int, ...]
    """Scales this name can be built at."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Hyperparameters that distinguish this name from the class defaults."""
    summary: str = ""


ARCHS: Mapping[str, ArchEntry] = MappingProxyType(
    {
        "srcnn": ArchEntry(SRCNN, (2, 3, 4), {}, "SRCNN 9-1-5 (Dong et al. 2014), Y, bicubic pre-upsampling"),
        "fsrcnn": ArchEntry(FSRCNN, (2, 3, 4), {}, "FSRCNN d=56 s=12 m=4 (Dong et al. 2016), Y, transposed conv"),
        "espcn": ArchEntry(ESPCN, (2, 3, 4), {}, "ESPCN (Shi et al. 2016), Y, tanh, sub-pixel convolution"),
        "vdsr": ArchEntry(VDSR, (2, 3, 4), {}, "VDSR 20 layers (Kim et al. 2016), Y, global residual"),
        "edsr": ArchEntry(EDSR, (2, 3, 4), {}, "EDSR baseline 16x64 (Lim et al. 2017), RGB"),
        "edsr-large": ArchEntry(
            EDSR, (2, 3, 4), {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}, "EDSR 32x256, res_scale 0.1, RGB"
        ),
        "red10": ArchEntry(RED10, (2, 3, 4), {}, "RED10 (Mao et al. 2016, seed-study variant), Y, unpadded"),
        "red30": ArchEntry(RED30, (2, 3, 4), {}, "RED30 (Mao et al. 2016), Y, symmetric skips"),
        "drrn": ArchEntry(DRRN, (2, 3, 4), {}, "DRRN B1U9 (Tai et al. 2017), Y, recursive residual units"),
        "srresnet": ArchEntry(SRResNet, (2, 4), {}, "SRResNet 16 blocks (Ledig et al. 2017), RGB"),
        "srgan": ArchEntry(SRResNet, (2, 4), {}, "SRResNet generator trained adversarially (SRGAN), RGB"),
    }
)


def list_archs() -> list[str]:
    """Registered model names, in registry order."""
    return list(ARCHS)


def get_arch(name: str) -> ArchEntry:
    """Registry entry for ``name``; raises :class:`UnsupportedArchError` naming the closest names."""
    try:
        return ARCHS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), ARCHS, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnsupportedArchError(
            f"unknown architecture {name!r}.{hint} Valid names: {', '.join(ARCHS)}"
        ) from None


def resolve_hparams(name: str, *, scale: int, **hparams: Any) -> dict[str, Any]:
    """The complete keyword arguments ``build`` would pass to the class, defaults filled in."""
    entry = get_arch(name)
    if scale not in entry.scales:
        raise UnsupportedScaleError(
            f"{name!r} does not support scale {scale}; supported scales: {', '.join(map(str, entry.scales))}"
        )
    params = inspect.signature(entry.cls.__init__).parameters
    valid = [p for p in params if p not in ("self", "scale")]
    unknown = [k for k in hparams if k not in valid]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, valid, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"unknown hyperparameter {', '.join(hints)} for {name!r}; valid: {', '.join(valid)}"
        )
    resolved = {p: params[p].default for p in valid}
    resolved.update(entry.defaults)
    resolved.update(hparams)
    return resolved


def build(name: str, *, scale: int, **hparams: Any) -> nn.Module:
    """Build model ``name`` at ``scale``; ``hparams`` override the name's defaults.

    Raises UnsupportedArchError, UnsupportedScaleError, or ConfigError for an unknown hyperparameter.
    """
    resolved = resolve_hparams(name, scale=scale, **hparams)
    return get_arch(name).cls(scale=scale, **resolved)
