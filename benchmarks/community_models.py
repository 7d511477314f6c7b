"""Random-weight community models in their published file layouts, built with spandrel's own classes.

No downloads: each family is built from spandrel's architecture class with the hyperparameters of a
well-known published model (``full``) or the same layout with fewer blocks (``quick``), given
weights whose output on a photo looks like an image (:func:`calibrate`), and saved the way the
published file is (wrapper key, tensor names). ``spandrel_extra_arches`` is never used.

Used by :mod:`benchmarks.coverage` and the tests of community checkpoints.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["FAMILIES", "Family", "calibrate", "family", "save_family", "to_real_esrgan_keys"]


def to_real_esrgan_keys(old: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """spandrel's (old-arch ESRGAN) tensor names -> the names in Real-ESRGAN's published RRDBNet files
    (conv_first, body.N.rdbR.convC, conv_body, conv_up1/2, conv_hr, conv_last)."""
    out = {}
    for key, value in old.items():
        new = re.sub(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.", r"body.\1.rdb\2.conv\3.", key)
        new = new.replace(f"model.1.sub.{num_blocks}.", "conv_body.")
        for index, name in (("0", "conv_first"), ("3", "conv_up1"), ("6", "conv_up2"), ("8", "conv_hr"), ("10", "conv_last")):
            new = re.sub(rf"^model\.{index}\.", f"{name}.", new)
        if new.startswith("model."):
            raise ValueError(f"unexpected ESRGAN tensor {key!r}")
        out[new] = value.clone()
    return out


@dataclass(frozen=True)
class Family:
    """One architecture family and the published model whose hyperparameters it takes."""

    key: str
    """Short id (``rrdb_x4``, ``swinir_light``, ...)."""
    family: str
    """What the table calls it."""
    published: str
    """The published model whose hyperparameters ``full`` uses."""
    arch: str
    """spandrel's architecture id (what loading must detect)."""
    scale: int
    build: Callable[[bool], torch.nn.Module]
    """``build(quick)`` -> the spandrel module (random weights)."""
    wrapper: str | None
    """Key the published file wraps its state dict in (``params_ema``, ``params``), or None (bare)."""
    filename: str
    convert: Callable[[dict, bool], dict] | None = None
    """State-dict key conversion into the published names, when spandrel's differ."""
    reduced: str = ""
    """What ``quick`` changes."""
    conv_only: bool = False
    """Local convolutions only (no attention, no global pooling)."""
    notes: dict[str, Any] = field(default_factory=dict)


def _arch(module: str, cls: str):
    import importlib

    return getattr(importlib.import_module(f"spandrel.architectures.{module}"), cls)


def _esrgan(quick: bool, **kw):
    return _arch("ESRGAN", "ESRGAN")(num_blocks=2 if quick else 23, **kw)


def _rrdb_keys(blocks_quick: int) -> Callable[[dict, bool], dict]:
    return lambda sd, quick: to_real_esrgan_keys(sd, blocks_quick if quick else 23)


def _swinir(quick: bool, light: bool):
    SwinIR = _arch("SwinIR", "SwinIR")
    if light:  # 002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4
        return SwinIR(upscale=4, in_chans=3, img_size=64, window_size=8, img_range=1.0,
                      depths=[6, 6] if quick else [6, 6, 6, 6], embed_dim=60,
                      num_heads=[6, 6] if quick else [6, 6, 6, 6], mlp_ratio=2,
                      upsampler="pixelshuffledirect", resi_connection="1conv")
    # 001_classicalSR_DF2K_s64w8_SwinIR-M_x4
    return SwinIR(upscale=4, in_chans=3, img_size=64, window_size=8, img_range=1.0,
                  depths=[2, 2] if quick else [6] * 6, embed_dim=180 if not quick else 60,
                  num_heads=[6, 6] if quick else [6] * 6, mlp_ratio=2,
                  upsampler="pixelshuffle", resi_connection="1conv")


def _hat(quick: bool):
    # HAT-S_SRx4: embed_dim 144, 6 groups of 6, window 16, compress_ratio 24, squeeze_factor 24
    return _arch("HAT", "HAT")(upscale=4, in_chans=3, img_size=64, window_size=16, compress_ratio=24,
                               squeeze_factor=24, conv_scale=0.01, overlap_ratio=0.5, img_range=1.0,
                               depths=[2] if quick else [6] * 6, embed_dim=48 if quick else 144,
                               num_heads=[6] if quick else [6] * 6, mlp_ratio=2,
                               upsampler="pixelshuffle", resi_connection="1conv")


def _dat(quick: bool):
    # DAT-light x4: embed_dim 60, split [8, 32], one group of 18 blocks, expansion 2, pixelshuffledirect
    return _arch("DAT", "DAT")(upscale=4, in_chans=3, img_size=64, img_range=1.0, embed_dim=60,
                               split_size=[8, 32], depth=[2] if quick else [18], num_heads=[6],
                               expansion_factor=2, resi_connection="3conv", upsampler="pixelshuffledirect")


def _swin2sr(quick: bool):
    # Swin2SR_Lightweight_X2_64: embed 60, 4 groups of 6, window 8, pixelshuffledirect
    return _arch("Swin2SR", "Swin2SR")(upscale=2, in_chans=3, img_size=64, window_size=8, img_range=1.0,
                                       depths=[2, 2] if quick else [6, 6, 6, 6], embed_dim=60,
                                       num_heads=[6, 6] if quick else [6, 6, 6, 6], mlp_ratio=2,
                                       upsampler="pixelshuffledirect", resi_connection="1conv")


def _realplksr(quick: bool):
    # 4xNomos2_realplksr_dysample-like layout without dysample: dim 64, 28 blocks, kernel 17
    return _arch("PLKSR", "RealPLKSR")(dim=64, n_blocks=4 if quick else 28, upscaling_factor=4, kernel_size=17,
                                       split_ratio=0.25, use_ea=True, norm_groups=4)


FAMILIES: tuple[Family, ...] = (
    Family("rrdb_x4", "ESRGAN / Real-ESRGAN RRDBNet x4", "RealESRGAN_x4plus (23 RRDB, 64 ch)", "ESRGAN", 4,
           lambda q: _esrgan(q, scale=4), "params_ema", "RealESRGAN_x4plus.pth",
           convert=_rrdb_keys(2), reduced="2 of 23 RRDB blocks", conv_only=True),
    Family("rrdb_x2", "Real-ESRGAN RRDBNet x2 (pixel-unshuffle)", "RealESRGAN_x2plus (23 RRDB, unshuffle 2)",
           "ESRGAN", 2, lambda q: _esrgan(q, in_nc=12, scale=4, shuffle_factor=2), "params_ema",
           "RealESRGAN_x2plus.pth", convert=_rrdb_keys(2), reduced="2 of 23 RRDB blocks", conv_only=True),
    Family("compact", "Real-ESRGAN Compact (SRVGGNetCompact)", "realesr-general-x4v3 (64 ch, 32 convs)",
           "Compact", 4, lambda q: _arch("Compact", "Compact")(num_feat=64, num_conv=8 if q else 32, upscale=4),
           "params", "realesr-general-x4v3.pth", reduced="8 of 32 body convs", conv_only=True),
    Family("swinir_classical", "SwinIR classical", "001_classicalSR_DF2K_s64w8_SwinIR-M_x4", "SwinIR", 4,
           lambda q: _swinir(q, light=False), "params", "001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth",
           reduced="2 of 6 RSTB groups of depth 2, embed 60 instead of 180"),
    Family("swinir_light", "SwinIR lightweight", "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4", "SwinIR", 4,
           lambda q: _swinir(q, light=True), "params", "002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4.pth",
           reduced="2 of 4 RSTB groups"),
    Family("hat", "HAT", "HAT-S_SRx4 (embed 144, 6x6, window 16)", "HAT", 4, _hat, "params_ema",
           "HAT-S_SRx4.pth", reduced="1 group of depth 2, embed 48"),
    Family("span", "SPAN", "4x-SPAN (48 ch, NTIRE 2024 ESR winner)", "SPAN", 4,
           lambda q: _arch("SPAN", "SPAN")(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=4),
           "params_ema", "4x-SPAN.pth", reduced="none (already small)"),
    Family("omnisr", "OmniSR", "OmniSR_X4_DIV2K (64 ch, 5 OSAG)", "OmniSR", 4,
           lambda q: _arch("OmniSR", "OmniSR")(num_feat=64, block_num=1, pe=True, window_size=8,
                                               res_num=2 if q else 5, up_scale=4, bias=True),
           None, "OmniSR_X4_DIV2K.safetensors", reduced="2 of 5 OSAG groups"),
    # spandrel has one architecture, id "PLKSR", for PLKSR and RealPLKSR (the latter tagged "Real").
    Family("realplksr", "RealPLKSR", "4x realplksr (64 ch, 28 blocks, kernel 17)", "PLKSR", 4, _realplksr,
           "params_ema", "4x_realplksr.pth", reduced="4 of 28 blocks"),
    Family("realcugan", "RealCUGAN", "up4x-latest-conservative (UpCunet4x)", "RealCUGAN", 4,
           lambda q: _arch("RealCUGAN", "UpCunet4x")(in_channels=3, out_channels=3), None,
           "up4x-latest-conservative.pth", reduced="none"),
    Family("dat", "DAT", "DAT_light_x4 (embed 60, 18 blocks, split 8x32)", "DAT", 4, _dat, "params",
           "DAT_light_x4.pth", reduced="2 of 18 blocks"),
    Family("swin2sr", "Swin2SR", "Swin2SR_Lightweight_X2_64 (embed 60, 4x6, window 8)", "Swin2SR", 2,
           _swin2sr, "params", "Swin2SR_Lightweight_X2_64.pth", reduced="2 of 4 RSTB groups of depth 2"),
)


def family(key: str) -> Family:
    for f in FAMILIES:
        if f.key == key:
            return f
    raise KeyError(f"unknown family {key!r}; known: {', '.join(f.key for f in FAMILIES)}")


def _photo_probe(side: int = 48) -> torch.Tensor:
    from skimage import data

    img = data.astronaut()[180 : 180 + side, 200 : 200 + side]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


def calibrate(net: torch.nn.Module, *, multiple_of: int = 1) -> dict[str, float]:
    """Rescale ``net``'s last convolution so that its output on a photo has detail (std 0.1) around a
    mean of about 0.45, instead of a fresh initialisation's near-constant output (which would make
    any parity figure meaningless). Output is affine in the last convolution's weights for these
    nets (pixel shuffle and additive skips after it), so two probes set it. Returns the output's
    mean and std on the probe after calibration."""
    side = -(-48 // multiple_of) * multiple_of
    x = _photo_probe(side)
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    last = convs[-1]
    net.eval()
    with torch.no_grad():
        weight = last.weight.clone()
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()
        base = net(x)
        last.weight.copy_(weight)
        detail = net(x) - base
        a = 0.1 / detail.std().clamp_min(1e-12)
        last.weight.mul_(a)
        if last.bias is not None:
            last.bias.add_(float(0.45 - (base + a * detail).mean()))
        out = net(x)
    return {"mean": float(out.mean()), "std": float(out.std())}


def save_family(fam: Family, folder: str | Path, *, quick: bool, seed: int = 0) -> tuple[Path, dict]:
    """Build ``fam`` (random weights, calibrated), save it in the published layout under ``folder``;
    ``(path, info)`` with the parameter count and the calibrated output statistics."""
    torch.manual_seed(seed)
    net = fam.build(quick).eval()
    stats = calibrate(net, multiple_of=16 if fam.arch in ("RealCUGAN",) else 1)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    if fam.convert is not None:
        state = fam.convert(state, quick)
    path = Path(folder) / fam.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({fam.wrapper: state} if fam.wrapper else state, path)
    params = sum(p.numel() for p in net.parameters())
    return path, {"params": params, "calibrated": stats}
