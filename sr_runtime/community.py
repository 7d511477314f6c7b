"""Community super-resolution checkpoints (Real-ESRGAN, ESRGAN, Compact, ...) loaded through spandrel.

A ``.pth`` / ``.pt`` / ``.ckpt`` / ``.safetensors`` file that is not one of this project's own
checkpoints is handed to `spandrel <https://github.com/chaiNNer-org/spandrel>`_ (MIT), which finds
the architecture and hyperparameters from the tensor names and shapes and unwraps the usual
``params_ema`` / ``params`` / ``state_dict`` wrappers. Pickled files are read with spandrel's
restricted unpickler (tensors and ordered dicts only), so a file cannot run code when it is loaded.
Only spandrel's own architectures are used, never ``spandrel_extra_arches`` (non-commercial licences).

What the descriptor says becomes the runtime's :class:`~sr_runtime.spec.IOSpec`: scale, RGB,
``multiple_of`` and ``min_size`` from its size requirements, and a receptive radius for the tile
overlap (:func:`receptive_radius`). Models that are not super-resolution (inpainting, face
restoration, denoising at 1x) and models that are not RGB -> RGB are refused with one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sr_runtime.errors import CheckpointError, UnsupportedArchError, UnsupportedScaleError
from sr_runtime.spec import IOSpec

__all__ = ["COMMUNITY_SUFFIXES", "DEFAULT_RADIUS", "MAX_RADIUS", "CommunityModel", "load_community", "receptive_radius"]

COMMUNITY_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
"""File types spandrel reads."""

DEFAULT_RADIUS = 16
"""Tile overlap radius (LR px) for architectures whose receptive field is not worked out here
(transformers, attention, large-kernel nets). Tiled output then only approximates whole-image output;
pass a larger ``--tile-overlap`` or ``--tile 0`` where seams matter."""

MAX_RADIUS = 40
"""Cap on the computed radius of deep convolutional nets. Real-ESRGAN x4plus (23 RRDB blocks) has a
theoretical radius of ~350 LR px, which would make every tile mostly overlap; its influence decays
fast, and Real-ESRGAN's own tiler pads tiles by 10 px. 40 px keeps tiles efficient and, in the tests,
tiled output equal to whole-image output within one 8-bit level."""

_CONV_ONLY = ("ESRGAN", "Compact")
"""Architectures made of local convolutions only (no attention, pooling or FFT), where the sum of the
convolutions' radii bounds the receptive field."""


class CommunityModel(nn.Module):
    """A spandrel model behind the runtime's network contract: RGB (N, 3, h, w) in [0, 1] ->
    RGB (N, 3, s*h, s*w), with ``io_spec`` saying how to feed it (as the project's own archs do)."""

    def __init__(self, descriptor: Any, spec: IOSpec, description: str) -> None:
        super().__init__()
        self.model = descriptor.model
        self.io_spec = spec
        self.arch: str = descriptor.architecture.id
        self.description = description
        # Some architectures need a call other than model(x) (spandrel's `call_fn`); use it where set.
        self._call_fn = getattr(descriptor, "_call_fn", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._call_fn is not None:
            return self._call_fn(self.model, x)
        return self.model(x)


def receptive_radius(descriptor: Any) -> tuple[int, bool]:
    """``(radius, exact)``: LR pixels of context a pixel's output depends on.

    For the convolution-only families (:data:`_CONV_ONLY`) the radius is the sum of every
    convolution's ``dilation * (kernel // 2)``, counted as if all ran at input resolution (an upper
    bound; convolutions after upsampling reach less) and times the pixel-unshuffle factor where the
    net unshuffles its input first; capped at :data:`MAX_RADIUS` (then ``exact`` is False).
    Other families get :data:`DEFAULT_RADIUS`, not exact.
    """
    name = descriptor.architecture.id
    if name not in _CONV_ONLY:
        return DEFAULT_RADIUS, False
    radius = 0
    for m in descriptor.model.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            radius += max(m.dilation[0] * (kh // 2), m.dilation[1] * (kw // 2))
    radius *= int(getattr(descriptor.model, "shuffle_factor", None) or 1)
    if radius > MAX_RADIUS:
        return MAX_RADIUS, False
    return radius, True


def _spandrel(path: Path) -> Any:
    try:
        import spandrel
    except ImportError as e:  # spandrel imports torchvision, which must match torch
        raise CheckpointError(
            f"{path}: not an sr_runtime checkpoint (no 'sr_runtime' metadata); loading other model files needs "
            f"spandrel, which does not import here ({e}); pip install spandrel, with a torchvision matching torch"
        ) from e
    return spandrel


def _read(path: Path) -> Any:
    spandrel = _spandrel(path)
    loader = spandrel.ModelLoader(device="cpu")
    try:
        state = loader.load_state_dict_from_file(path)
    except Exception as e:  # torch.load, the restricted unpickler and safetensors raise many types
        first = (str(e).splitlines() or [""])[0][:200]
        if "forbidden" in first:
            raise CheckpointError(
                f"{path}: refused: the pickle references {first.removeprefix('Global ').removesuffix(' is forbidden')}, "
                f"which is not a tensor; only plain state dicts are loaded (never arbitrary objects)"
            ) from e
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {first})") from e
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    try:
        return loader.load_from_state_dict(state)
    except spandrel.UnsupportedModelError as e:
        raise CheckpointError(
            f"{path}: not an sr_runtime checkpoint (no 'sr_runtime' metadata) and spandrel "
            f"{spandrel.__version__} does not recognise its architecture; pass a checkpoint written by "
            f"sr-train or a model file of an architecture spandrel supports"
        ) from e
    except Exception as e:  # a detected architecture whose tensors do not fit
        first = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path}: spandrel cannot build the model ({type(e).__name__}: {first})") from e


def load_community(
    path: str | os.PathLike, *, scale: int | None = None, device: torch.device | str = "cpu"
) -> tuple[CommunityModel, IOSpec, str]:
    """Load a community checkpoint: ``(net, spec, description)``; ``net.io_spec is spec``.

    ``scale``, when given, must be the file's. Raises CheckpointError (unreadable, unknown, or
    unsafe file), UnsupportedArchError (not RGB super-resolution), UnsupportedScaleError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix.lower() not in COMMUNITY_SUFFIXES:
        raise CheckpointError(f"{path}: unknown model file type {path.suffix!r}; expected {', '.join(COMMUNITY_SUFFIXES)}")
    desc = _read(path)
    ImageModelDescriptor = _spandrel(path).ImageModelDescriptor
    arch = desc.architecture.id
    purpose = getattr(desc, "purpose", "?")
    if not isinstance(desc, ImageModelDescriptor) or purpose != "SR":
        what = {"Inpainting": "an inpainting", "FaceSR": "a face restoration", "Restoration": "a 1x restoration"}
        raise UnsupportedArchError(
            f"{path}: {arch} is {what.get(purpose, f'a {purpose!r}')} model, not super-resolution; "
            f"sr_runtime runs image super-resolution models only"
        )
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise UnsupportedArchError(
            f"{path}: {arch} x{desc.scale} takes {desc.input_channels} and returns {desc.output_channels} channels; "
            f"only RGB -> RGB models are supported"
        )
    if scale is not None and int(scale) != desc.scale:
        raise UnsupportedScaleError(
            f"{path}: the model is {arch} x{desc.scale}, but scale {scale} was asked for; "
            f"use --scale {desc.scale} or leave --scale out"
        )
    req = desc.size_requirements
    if req.square:
        raise UnsupportedArchError(f"{path}: {arch} needs square inputs, which the runtime does not make")
    radius, exact = receptive_radius(desc)
    spec = IOSpec(
        scale=int(desc.scale),
        multiple_of=int(req.multiple_of),
        min_size=max(1, int(req.minimum)),
        receptive_radius=radius,
    )
    tags = ", ".join(desc.tags)
    description = (
        f"{arch} x{spec.scale}{f' ({tags})' if tags else ''} (spandrel: {desc.architecture.name}); "
        f"tile overlap {radius} px{'' if exact else ' (not exact)'}"
    )
    if desc.tiling.name != "SUPPORTED":
        description += f"; spandrel: tiling {desc.tiling.name.lower()}"
    net = CommunityModel(desc, spec, description)
    return net.to(device).eval(), spec, description
