"""PSNR/SSIM: agreement with scikit-image on the same Y planes, Y conversion, batching, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sr_runtime.color import image_to_tensor
from sr_runtime.errors import InputError
from sr_runtime.metrics import psnr, psnr_y, ssim, ssim_y, y_channel_255
from sr_runtime.resize import imresize, make_lr, modcrop, quantize_u8

skm = pytest.importorskip("skimage.metrics")


def _skimage_scores(sr_y: np.ndarray, hr_y: np.ndarray, crop: int) -> tuple[float, float]:
    a, b = sr_y[crop:-crop, crop:-crop], hr_y[crop:-crop, crop:-crop]
    p = skm.peak_signal_noise_ratio(b, a, data_range=255)
    s = skm.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    return p, s


@pytest.mark.parametrize("crop", [2, 3, 4])
def test_psnr_ssim_match_skimage_on_a_photo(photo_rgb_u8, crop):
    hr = modcrop(image_to_tensor(photo_rgb_u8[:120, :90], dtype=torch.float64), crop)
    sr = quantize_u8(imresize(make_lr(hr, crop), scale=crop))
    sr_y, hr_y = y_channel_255(sr), y_channel_255(hr)
    expected_p, expected_s = _skimage_scores(sr_y[0, 0].numpy(), hr_y[0, 0].numpy(), crop)
    assert abs(float(psnr_y(sr_y, hr_y, crop=crop)[0]) - expected_p) < 1e-4
    assert abs(float(ssim_y(sr_y, hr_y, crop=crop)[0]) - expected_s) < 1e-4
    assert abs(float(psnr(sr, hr, crop=crop)[0]) - expected_p) < 1e-4
    assert abs(float(ssim(sr, hr, crop=crop)[0]) - expected_s) < 1e-4


def test_ssim_matches_skimage_on_unrounded_planes():
    rng = np.random.default_rng(3)
    hr_y = rng.random((40, 33)) * 255
    sr_y = np.clip(hr_y + rng.normal(0, 12, hr_y.shape), 0, 255)
    expected_p, expected_s = _skimage_scores(sr_y, hr_y, 4)
    t = lambda a: torch.from_numpy(a)[None, None]  # noqa: E731
    assert abs(float(psnr_y(t(sr_y), t(hr_y), crop=4)[0]) - expected_p) < 1e-4
    assert abs(float(ssim_y(t(sr_y), t(hr_y), crop=4)[0]) - expected_s) < 1e-4


def test_y_channel_is_matlab_rgb2ycbcr_and_gray_is_its_own_y():
    rgb = torch.tensor([0.0, 1.0], dtype=torch.float64).view(2, 1, 1, 1).expand(2, 3, 1, 1)
    assert y_channel_255(rgb).flatten().tolist() == [16.0, 235.0]
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert float(y_channel_255(red, round_y=False)) == pytest.approx(16 + 65.481)
    assert float(y_channel_255(red)) == 81.0  # rounded like rgb2ycbcr on uint8
    gray = torch.tensor([[[[0.0, 0.5, 1.0]]]])
    assert y_channel_255(gray, round_y=False).flatten().tolist() == [0.0, 127.5, 255.0]


def test_metrics_are_per_image_for_a_batch():
    hr = torch.rand(3, 3, 24, 24, dtype=torch.float64)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    p, s = psnr(sr, hr, crop=2), ssim(sr, hr, crop=2)
    assert p.shape == s.shape == (3,)
    for i in range(3):
        assert float(p[i]) == pytest.approx(float(psnr(sr[i : i + 1], hr[i : i + 1], crop=2)[0]), abs=1e-9)
        assert float(s[i]) == pytest.approx(float(ssim(sr[i : i + 1], hr[i : i + 1], crop=2)[0]), abs=1e-9)


def test_identical_images_score_inf_and_one():
    hr = torch.rand(1, 3, 20, 20)
    assert float(psnr(hr, hr, crop=2)[0]) == float("inf")
    assert float(ssim(hr, hr, crop=2)[0]) == pytest.approx(1.0)


def test_metrics_reject_mismatched_or_too_small_inputs():
    with pytest.raises(InputError, match="shapes differ"):
        psnr(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 21), crop=2)
    with pytest.raises(InputError, match="too small"):
        psnr(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), crop=4)
    with pytest.raises(InputError, match="11x11"):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), crop=4)
    with pytest.raises(InputError, match="N, 3, H, W"):
        psnr(torch.rand(1, 2, 16, 16), torch.rand(1, 2, 16, 16), crop=1)


@pytest.mark.gpu
def test_metrics_on_cuda_match_cpu():
    hr = torch.rand(2, 3, 32, 32)
    sr = (hr + 0.05 * torch.randn_like(hr)).clamp(0, 1)
    torch.testing.assert_close(psnr(sr.cuda(), hr.cuda(), crop=3).cpu(), psnr(sr, hr, crop=3))
    torch.testing.assert_close(ssim(sr.cuda(), hr.cuda(), crop=3).cpu(), ssim(sr, hr, crop=3))
