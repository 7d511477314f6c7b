"""Upscaler: arrays (8/16-bit, gray, RGBA), tensors, files; tiling on/off; errors; thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from sr_runtime.archs import resolve_hparams
from sr_runtime.checkpoint import save_checkpoint
from sr_runtime.color import image_to_tensor
from sr_runtime.errors import InputError
from sr_runtime.images import read_image, write_image
from sr_runtime.options import RuntimeOptions
from sr_runtime.resize import upscale_bicubic
from sr_runtime.upscaler import Upscaler


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, signal):
    # Shipped weights: a fresh FSRCNN outputs ~0, so tiled and untiled output would agree however
    # broken the tiling.
    path = tmp_path_factory.mktemp("upscaler") / "fsrcnn_x2.safetensors"
    return save_checkpoint(path, signal.net("fsrcnn", 2), arch="fsrcnn", scale=2,
                           hparams=resolve_hparams("fsrcnn", scale=2))


@pytest.fixture(scope="module")
def up(ckpt):
    with Upscaler(ckpt, device="cpu", tile=24) as upscaler:
        yield upscaler


def test_uint8_rgb_round_trip_shape_dtype_and_tiling_invariance(ckpt, up, small_rgb_u8, signal):
    tiled = up.upscale(small_rgb_u8)
    assert tiled.shape == (74, 106, 3) and tiled.dtype == np.uint8
    with Upscaler(ckpt, device="cpu", tile=0) as whole:
        untiled = whole.upscale(small_rgb_u8)
    assert np.abs(tiled.astype(int) - untiled).max() <= 1
    as_float = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].double() / 255  # noqa: E731
    signal.informative(as_float(untiled), as_float(small_rgb_u8), up.spec, threshold_db=48)


def test_uint16_in_uint16_out_consistent_with_uint8(up, small_rgb_u8):
    img16 = small_rgb_u8.astype(np.uint16) * 257
    out16 = up.upscale(img16)
    assert out16.dtype == np.uint16 and out16.shape == (74, 106, 3)
    out8 = up.upscale(small_rgb_u8)
    assert np.abs(out16 / 257.0 - out8).max() <= 1.0


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 1)])
def test_gray_runs_as_three_equal_channels_and_comes_back_gray(up, small_rgb_u8, shape):
    gray = small_rgb_u8[:, :, 1].reshape(shape)
    out = up.upscale(gray)
    assert out.shape == (74, 106) + shape[2:]
    rgb_out = up.upscale(np.repeat(small_rgb_u8[:, :, 1:2], 3, axis=2)).astype(np.float64)
    luma = rgb_out @ np.array([0.299, 0.587, 0.114])
    assert np.abs(out.reshape(74, 106) - luma).max() <= 1.0


def test_alpha_is_upscaled_bicubically_and_kept(up, small_rgb_u8):
    alpha = np.tile(np.linspace(0, 255, 53, dtype=np.uint8), (37, 1))
    out = up.upscale(np.dstack([small_rgb_u8, alpha]))
    assert out.shape == (74, 106, 4)
    expected = upscale_bicubic(image_to_tensor(alpha), 2).clamp(0, 1)[0, 0].mul(255).round().numpy()
    assert np.abs(out[:, :, 3].astype(int) - expected).max() <= 1
    np.testing.assert_array_equal(out[:, :, :3], up.upscale(small_rgb_u8))


def test_tensor_in_tensor_out(up):
    lr = torch.rand(2, 3, 20, 30, dtype=torch.float64)
    sr = up.upscale(lr)
    assert sr.shape == (2, 3, 40, 60) and sr.dtype == torch.float64 and sr.device == lr.device
    single = up.upscale(lr[1:].float())
    assert torch.allclose(sr[1:].float(), single, atol=1e-5)
    assert up.upscale(torch.rand(1, 1, 10, 10)).shape == (1, 1, 20, 20)


def test_progress_reports_every_tile(up, small_rgb_u8):
    calls = []
    up.upscale(small_rgb_u8, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1] > 1


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 5), np.uint8), np.zeros((0, 4, 3), np.uint8)]
)
def test_bad_arrays_are_input_errors(up, bad):
    with pytest.raises(InputError):
        up.upscale(bad)


def test_bad_constructor_arguments(ckpt):
    with pytest.raises(InputError, match="scale"):
        Upscaler()
    with pytest.raises(InputError, match="tile"):
        Upscaler(ckpt, tile=-1)
    with pytest.raises(InputError, match="batch"):
        Upscaler(ckpt, batch=0)


def test_runtime_options_as_keywords_or_one_dataclass(ckpt, small_rgb_u8):
    """The keywords build the same RuntimeOptions the CLI passes; a typo names the field meant."""
    with Upscaler(ckpt, device="cpu", backend="torch", tile=0) as by_keywords, \
            Upscaler(ckpt, options=RuntimeOptions(device="cpu", backend="torch"), tile=0) as by_options:
        assert by_keywords.options == by_options.options == RuntimeOptions(backend="torch", device="cpu")
        assert np.array_equal(by_keywords.upscale(small_rgb_u8), by_options.upscale(small_rgb_u8))
    with pytest.raises(InputError, match="'devcie'; did you mean 'device'"):
        Upscaler(ckpt, devcie="cpu")
    with pytest.raises(InputError, match="not both"):
        Upscaler(ckpt, options=RuntimeOptions(device="cpu"), backend="torch")


def test_closed_upscaler_refuses_work(ckpt, small_rgb_u8):
    upscaler = Upscaler(ckpt, device="cpu")
    upscaler.close()
    with pytest.raises(InputError, match="closed"):
        upscaler.upscale(small_rgb_u8)


def test_concurrent_calls_are_serialised_and_correct(up, small_rgb_u8):
    expected = up.upscale(small_rgb_u8)
    results = [None] * 4

    def work(i):
        results[i] = up.upscale(small_rgb_u8)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        np.testing.assert_array_equal(r, expected)


def test_upscale_file_keeps_format_depth_and_metadata(tmp_path, up, small_rgb_u8):
    src = write_image(tmp_path / "in.png", small_rgb_u8.astype(np.uint16) * 257)
    out = read_image(up.upscale_file(src, tmp_path / "out.png"))
    assert out.pixels.dtype == np.uint16 and out.pixels.shape == (74, 106, 3)
    jpg = read_image(up.upscale_file(src, tmp_path / "out.jpg", quality=90))
    assert jpg.pixels.dtype == np.uint8 and jpg.pixels.shape == (74, 106, 3)
    assert not list(tmp_path.glob(".*"))


def test_exif_orientation_is_applied_before_upscaling(tmp_path, up, small_rgb_u8):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(small_rgb_u8).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = read_image(up.upscale_file(tmp_path / "rot.jpg", tmp_path / "rot_x2.jpg"))
    assert out.pixels.shape == (106, 74, 3)


@pytest.mark.parametrize("tile", [None, 24])
def test_compiled_backend_sees_one_tile_shape_for_every_image_size(monkeypatch, tile):
    """torch.compile (dynamic=False) recompiles for every new input shape and falls back to eager at
    the recompile limit; the Upscaler must feed one padded tile shape: edge tiles, small images and
    other image sizes included. torch.compile itself is replaced by a shape recorder here."""
    shapes: list[tuple[int, ...]] = []

    def fake_compile(model, **kwargs):
        def forward(x):
            shapes.append(tuple(x.shape))
            return model(x)

        return forward

    monkeypatch.setattr(torch, "compile", fake_compile)
    rng = np.random.default_rng(0)
    with Upscaler("fsrcnn", scale=2, device="cpu", backend="torch", compile=True, tile=tile) as up, \
            Upscaler("fsrcnn", scale=2, device="cpu", backend="torch", tile=0) as eager:
        for h, w in [(37, 53), (20, 17), (61, 40)]:
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            out = up.upscale(img)
            assert out.shape == (2 * h, 2 * w, 3)
            # Away from the image border (where padding replaces the network's zero padding), the
            # padded tiles give the whole-image result.
            ref = eager.upscale(img)
            inner = (slice(16, -16), slice(16, -16))
            assert np.abs(out[inner].astype(int) - ref[inner]).max() <= 1
    assert len(shapes) >= 3 and len(set(shapes)) == 1, f"input shapes seen: {sorted(set(shapes))}"
