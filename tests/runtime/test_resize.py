"""MATLAB-compatible bicubic: imresize against a literal transcription and Pillow, and upscale_bicubic's ONNX export."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from sr_runtime.resize import imresize, make_lr, modcrop, quantize_u8, upscale_bicubic


def _matlab_resize_1d(vec: np.ndarray, out_len: int, scale: float) -> np.ndarray:
    """Per-pixel transcription of MATLAB imresize.m contributions() + resizeAlongDim, for one row."""

    def cubic(x):
        ax = abs(x)
        if ax <= 1:
            return 1.5 * ax**3 - 2.5 * ax**2 + 1
        if ax <= 2:
            return -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
        return 0.0

    n = len(vec)
    width = 4.0 / scale if scale < 1 else 4.0
    kernel = (lambda x: scale * cubic(scale * x)) if scale < 1 else cubic
    out = np.zeros(out_len)
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        idx = [left + j for j in range(math.ceil(width) + 2)]
        w = np.array([kernel(u - i) for i in idx])
        w /= w.sum()
        aux = list(range(1, n + 1)) + list(range(n, 0, -1))
        src = [aux[(i - 1) % (2 * n)] - 1 for i in idx]
        out[x - 1] = sum(wi * vec[s] for wi, s in zip(w, src))
    return out


def _matlab_imresize(img: np.ndarray, out_hw: tuple[int, int], scale: float) -> np.ndarray:
    rows = np.stack([_matlab_resize_1d(img[:, j], out_hw[0], scale) for j in range(img.shape[1])], axis=1)
    return np.stack([_matlab_resize_1d(rows[i], out_hw[1], scale) for i in range(out_hw[0])], axis=0)


@pytest.mark.parametrize(
    ("in_hw", "scale", "out_hw"),
    [((12, 9), 0.5, (6, 5)), ((9, 12), 1 / 3, (3, 4)), ((13, 8), 0.25, (4, 2)), ((5, 7), 2, (10, 14)),
     ((4, 3), 3, (12, 9)), ((7, 6), 0.6, (5, 4)), ((1, 3), 4, (4, 12)), ((3, 2), 1.5, (5, 3))],
)  # fmt: skip
def test_imresize_matches_matlab_transcription(in_hw, scale, out_hw):
    img = np.random.default_rng(1).random(in_hw)
    expected = _matlab_imresize(img, out_hw, scale)
    got = imresize(torch.from_numpy(img)[None, None], scale=scale)[0, 0].numpy()
    assert got.shape == out_hw
    np.testing.assert_allclose(got, expected, atol=1e-12)


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.25, 2.0, 3.0])
def test_imresize_interior_matches_pillow_bicubic(scale):
    # Pillow's BICUBIC is also Keys a=-0.5 with the same antialiasing; only its borders differ (clamp vs mirror).
    img = np.random.default_rng(2).random((48, 60)).astype(np.float32)
    out_h, out_w = round(48 * scale), round(60 * scale)
    pil = np.asarray(Image.fromarray(img, mode="F").resize((out_w, out_h), Image.BICUBIC))
    ours = imresize(torch.from_numpy(img).double()[None, None], scale=scale)[0, 0].numpy()
    margin = 3 if scale < 1 else 3 * int(scale) + 1  # output pixels the border handling can reach
    np.testing.assert_allclose(ours[margin:-margin, margin:-margin], pil[margin:-margin, margin:-margin], atol=1e-5)


def test_imresize_size_sets_output_and_constant_stays_constant():
    x = torch.full((2, 3, 10, 15), 0.25, dtype=torch.float64)
    y = imresize(x, size=(4, 6))
    assert y.shape == (2, 3, 4, 6)
    torch.testing.assert_close(y, torch.full_like(y, 0.25))


def test_imresize_is_batched_and_keeps_dtype():
    x = torch.rand(3, 2, 9, 11)
    y = imresize(x, scale=0.5)
    assert y.dtype == torch.float32 and y.shape == (3, 2, 5, 6)
    torch.testing.assert_close(y[1:2, 1:2], imresize(x[1:2, 1:2], scale=0.5))


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (7, 10)])
def test_upscale_bicubic_equals_imresize(scale, hw):
    x = torch.rand(2, 3, *hw, dtype=torch.float64)
    torch.testing.assert_close(upscale_bicubic(x, scale), imresize(x, scale=scale), atol=1e-12, rtol=0)
    x32 = x.float()
    torch.testing.assert_close(upscale_bicubic(x32, scale), imresize(x32, scale=scale), atol=1e-6, rtol=0)


def test_upscale_bicubic_float16_on_cpu():
    x = torch.rand(1, 3, 6, 5)
    try:
        y = upscale_bicubic(x.half(), 2)
    except RuntimeError as e:  # an older torch without CPU half convolution
        pytest.skip(f"float16 conv2d unsupported on this CPU build: {e}")
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float(), imresize(x, scale=2), atol=5e-3, rtol=0)


def test_upscale_bicubic_rejects_non_integer_scale():
    with pytest.raises(ValueError, match="integer"):
        upscale_bicubic(torch.rand(1, 1, 4, 4), 1.5)


class _Upscale(torch.nn.Module):
    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upscale_bicubic(x, self.scale)


@pytest.mark.parametrize("scale", [3, 4])
def test_upscale_bicubic_exports_to_onnx_with_dynamic_size(tmp_path, scale):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "upscale.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        torch.onnx.export(
            _Upscale(scale), (torch.rand(1, 3, 8, 8),), str(path), opset_version=17, dynamo=False,
            input_names=["lr"], output_names=["sr"], dynamic_axes={"lr": axes, "sr": axes},
        )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 16, 12), (2, 3, 7, 13)]:
        x = torch.rand(shape)
        (out,) = session.run(None, {"lr": x.numpy()})
        expected = imresize(x.double(), scale=scale).float().numpy()
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, atol=2e-6)


def test_modcrop_drops_last_rows_and_columns():
    arr = np.arange(7 * 10 * 3).reshape(7, 10, 3)
    np.testing.assert_array_equal(modcrop(arr, 3), arr[:6, :9])
    t = torch.rand(2, 3, 7, 10)
    assert torch.equal(modcrop(t, 4), t[..., :4, :8])
    assert modcrop(t, 1).shape == t.shape


def test_quantize_u8_rounds_half_away_from_zero_and_clamps():
    x = torch.tensor([0.5, 1.5, 2.5, -3.0, 254.6, 300.0], dtype=torch.float64) / 255
    expected = torch.tensor([1, 2, 3, 0, 255, 255], dtype=torch.float64) / 255
    torch.testing.assert_close(quantize_u8(x), expected)


def test_make_lr_is_quantized_matlab_downscale():
    hr = torch.rand(1, 3, 12, 18, dtype=torch.float64)
    lr = make_lr(hr, 3)
    assert lr.shape == (1, 3, 4, 6)
    levels = lr * 255
    torch.testing.assert_close(levels, levels.round(), atol=1e-9, rtol=0)
    torch.testing.assert_close(make_lr(hr, 3, quantize=False), imresize(hr, scale=1 / 3))
    assert (lr - imresize(hr, scale=1 / 3)).abs().max() <= 0.5 / 255 + 1e-12


def test_make_lr_rejects_uncropped_hr():
    with pytest.raises(ValueError, match="modcrop"):
        make_lr(torch.rand(1, 3, 13, 12), 4)


@pytest.mark.gpu
def test_resize_on_cuda_matches_cpu():
    x = torch.rand(2, 3, 17, 13, dtype=torch.float64)
    torch.testing.assert_close(imresize(x.cuda(), scale=0.25).cpu(), imresize(x, scale=0.25))
    torch.testing.assert_close(upscale_bicubic(x.cuda(), 3).cpu(), imresize(x, scale=3))
