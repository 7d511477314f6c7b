"""Community checkpoints load through spandrel: published key layouts and wrappers, IOSpec from the
descriptor, tiled == whole, scale errors naming the file's scale, and one-line refusals of files that
are not RGB super-resolution or not plain tensors.

No downloads: each model is built from spandrel's own architecture class with the hyperparameters of a
published model (fewer blocks where the real one is heavy; the key layout is the real one), given
weights with a real signal, and saved the way the published file is.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

spandrel = pytest.importorskip(
    "spandrel", reason="community checkpoints load through spandrel (pip install spandrel, torchvision matching torch)"
)

from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN

from benchmarks.community_models import to_real_esrgan_keys
from sr_runtime.backends import model_kind
from sr_runtime.checkpoint import load_checkpoint
from sr_runtime.cli import main
from sr_runtime.community import MAX_RADIUS, load_community
from sr_runtime.errors import CheckpointError, InputError, UnsupportedArchError, UnsupportedScaleError
from sr_runtime.images import read_image, write_image
from sr_runtime.spec import IOSpec
from sr_runtime.upscaler import Upscaler


def _calibrated(net: torch.nn.Module, spec: IOSpec, signal) -> torch.nn.Module:
    net.io_spec = spec  # what with_signal reads; not saved
    return signal.calibrate(net.eval())


@pytest.fixture(scope="module")
def files(tmp_path_factory, request):
    """Published layouts: Real-ESRGAN x4plus (.pth, params_ema), x2plus (pixel-unshuffle, params_ema),
    realesr-animevideov3 SRVGGNetCompact (.pth, params; and a bare .pt), an old-arch ESRGAN bare
    state dict as .safetensors (OpenModelDB style)."""
    from safetensors.torch import save_file

    signal = request.getfixturevalue("signal")
    d = tmp_path_factory.mktemp("community")
    # RealESRGAN_x4plus/x2plus have 23 blocks; 1 and 2 keep the test fast with the same key layout.
    x4 = _calibrated(ESRGAN(num_blocks=1, scale=4), IOSpec(scale=4), signal)
    torch.save({"params_ema": to_real_esrgan_keys(x4.state_dict(), 1)}, d / "RealESRGAN_x4plus.pth")
    x2 = _calibrated(ESRGAN(in_nc=12, num_blocks=2, scale=4, shuffle_factor=2), IOSpec(scale=2, multiple_of=4), signal)
    torch.save({"params_ema": to_real_esrgan_keys(x2.state_dict(), 2)}, d / "RealESRGAN_x2plus.pth")
    compact = _calibrated(Compact(num_feat=64, num_conv=16, upscale=4), IOSpec(scale=4), signal)
    torch.save({"params": compact.state_dict()}, d / "realesr-animevideov3.pth")
    torch.save(compact.state_dict(), d / "compact_bare.pt")
    old = ESRGAN(num_blocks=1, scale=2)
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, str(d / "2x-OldArch.safetensors"))
    return {"x4": d / "RealESRGAN_x4plus.pth", "x2": d / "RealESRGAN_x2plus.pth",
            "compact": d / "realesr-animevideov3.pth", "compact_pt": d / "compact_bare.pt",
            "old": d / "2x-OldArch.safetensors", "nets": {"x4": x4, "x2": x2, "compact": compact}}


def _spandrel_input(photo_rgb_u8, side=24):
    img = photo_rgb_u8[180 : 180 + side, 200 : 200 + side]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize(
    "key, arch, scale, multiple_of, min_size, radius",
    [
        # ESRGAN: 1 block x 3 RDBs x 5 convs + first, body, 2 upsampling, hr, last: 21 px
        ("x4", "ESRGAN", 4, 1, 2, 21),
        # 2 blocks (36 px), doubled by the pixel-unshuffle by 2 (72 px): capped
        ("x2", "ESRGAN", 2, 4, 4, MAX_RADIUS),
        # Compact: first conv, 16 body convs, last conv
        ("compact", "Compact", 4, 1, 1, 18),
        ("compact_pt", "Compact", 4, 1, 1, 18),
        ("old", "ESRGAN", 2, 1, 2, 1 + 15 + 1 + 1 + 1 + 1),
    ],
)
def test_loads_with_the_files_scale_and_size_contract(files, photo_rgb_u8, key, arch, scale, multiple_of, min_size, radius):
    net, spec, description = load_community(files[key])
    assert spec == IOSpec(scale=scale, multiple_of=multiple_of, min_size=min_size, receptive_radius=radius)
    assert net.io_spec is spec and net.arch == arch
    assert description.startswith(f"{arch} x{scale}")
    # The loaded weights are the saved ones: same function as the network that was written.
    source = files["nets"].get(key.removesuffix("_pt"))
    if source is not None:
        x = _spandrel_input(photo_rgb_u8)
        with torch.no_grad():
            torch.testing.assert_close(net(x), source(x), rtol=0, atol=1e-5)


def test_model_kind_and_load_checkpoint_route_community_files(files):
    for suffix in (".pth", ".pt", ".ckpt", ".safetensors"):
        assert model_kind(f"4x-Foo{suffix}") == "checkpoint"
    ckpt = load_checkpoint(files["x4"])
    assert (ckpt.arch, ckpt.scale, ckpt.name, ckpt.meta["source"]) == ("ESRGAN", 4, "RealESRGAN_x4plus", "spandrel")
    assert ckpt.spec.receptive_radius == 21


@pytest.mark.parametrize("key, width, exact", [("x4", 104, True), ("x2", 168, False), ("compact", 104, True)])
def test_tiled_equals_whole_with_the_default_overlap(files, photo_rgb_u8, signal, key, width, exact):
    """Several tiles with the default overlap give the whole-image output within one 8-bit level; where
    the radius is exact (not capped) the float outputs agree to rounding error. For x2plus the overlap
    is the capped MAX_RADIUS, not the theoretical 72 px. (These random weights reach only ~8 px in
    practice, so this catches a missing or tiny overlap; the radius formula itself is pinned by
    test_loads_with_the_files_scale_and_size_contract.)"""
    crop = np.ascontiguousarray(photo_rgb_u8[160:224, 180 : 180 + width])  # 64 x width: a textured face crop
    lr = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    with Upscaler(files[key], device="cpu", backend="torch", tile=0) as whole:
        ref = whole.upscale(lr)
        spec = whole.spec
    s = spec.scale
    assert ref.shape == (1, 3, 64 * s, width * s)
    tile = 2 * spec.receptive_radius + 24
    n_tiles = []
    with Upscaler(files[key], device="cpu", backend="torch", tile=tile) as up:
        assert up.overlap == spec.receptive_radius
        tiled = up.upscale(lr, progress=lambda done, total: n_tiles.append(total))
    assert n_tiles[-1] >= 3
    levels = lambda t: (t * 255).round().int()  # what an 8-bit output file holds
    assert (levels(tiled) - levels(ref)).abs().max().item() <= 1
    if exact:
        assert (tiled - ref).abs().max().item() < 1e-4
    signal.informative(ref, lr, spec, threshold_db=48)


def test_tiling_with_too_little_overlap_differs(files, photo_rgb_u8):
    """The check above can fail: with 2 px of overlap the seams show."""
    lr = np.ascontiguousarray(photo_rgb_u8[160:224, 180:284])
    with Upscaler(files["compact"], device="cpu", backend="torch", tile=0) as whole:
        ref = whole.upscale(lr)
    with Upscaler(files["compact"], device="cpu", backend="torch", tile=48, tile_overlap=2) as up:
        tiled = up.upscale(lr)
    assert np.abs(tiled.astype(int) - ref).max() > 1


def test_wrong_scale_names_the_files_scale(files):
    with pytest.raises(UnsupportedScaleError, match=r"ESRGAN x4.*scale 2.*--scale 4"):
        load_checkpoint(files["x4"], scale=2)
    with pytest.raises(UnsupportedScaleError, match=r"x2"):
        Upscaler(files["x2"], scale=4, device="cpu", backend="torch")


def test_sr_run_with_a_pth_model(tmp_path, files, small_rgb_u8, capsys):
    src = write_image(tmp_path / "photo.png", small_rgb_u8)
    out = tmp_path / "out.png"
    assert main([str(src), "--model", str(files["compact"]), "-o", str(out), "-q"]) == 0
    assert read_image(out).pixels.shape == (37 * 4, 53 * 4, 3)
    capsys.readouterr()
    assert main([str(src), "--model", str(files["compact"]), "--scale", "2", "-o", str(tmp_path / "x.png"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x4" in err[0] and "scale 2" in err[0], err
    assert not (tmp_path / "x.png").exists()


def test_a_missing_pth_is_not_taken_for_a_model_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="4x-Missing.pth: checkpoint not found"):
        Upscaler("4x-Missing.pth", device="cpu", backend="torch")


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_restoration_model_is_refused_naming_the_architecture(tmp_path):
    from spandrel.architectures.DnCNN import DnCNN

    path = tmp_path / "1x-denoise.pth"
    torch.save(DnCNN(in_nc=3, out_nc=3, nc=64, nb=20, act_mode="R").state_dict(), path)  # KAIR dncnn_color_blind
    with pytest.raises(UnsupportedArchError) as e:
        load_checkpoint(path)
    assert re.search(r"DnCNN is a 1x restoration model, not super-resolution", _one_line(e))


def test_inpainting_model_is_refused_naming_the_architecture(tmp_path):
    """LaMa (spandrel's built-in inpainting architecture) at its one published size, stored in FP16."""
    from safetensors.torch import save_file
    from spandrel.architectures.LaMa import LaMa

    path = tmp_path / "big-lama.safetensors"
    save_file({k: v.half().contiguous() for k, v in LaMa(in_nc=4, out_nc=3).state_dict().items()}, str(path))
    with pytest.raises(UnsupportedArchError) as e:
        Upscaler(path, device="cpu", backend="torch")
    assert re.search(r"LaMa is an inpainting model, not super-resolution", _one_line(e))


def test_unknown_weights_are_refused(tmp_path):
    path = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.zeros(10, 4), "fc.bias": torch.zeros(10)}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "does not recognise its architecture" in _one_line(e)


def test_truncated_pth_is_refused(tmp_path, files):
    path = tmp_path / "cut.pth"
    path.write_bytes(files["compact"].read_bytes()[:5000])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert _one_line(e).startswith(f"{path}: cannot read weights")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "4x-evil.pth"
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}, "x": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "refused" in _one_line(e) and "system" in str(e.value)
    assert not marker.exists()
