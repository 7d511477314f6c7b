"""Paired patches are aligned, augmented identically, deterministic per step, and bad folders fail clearly."""

from __future__ import annotations

import pytest
import torch

from sr_runtime import resize
from sr_runtime.archs import build
from sr_runtime.color import rgb_to_y
from sr_runtime.errors import InputError
from sr_runtime.resize import make_lr, modcrop, upscale_bicubic
from sr_train.data import HRImage, PairedPatches, load_hr_folder


def _patches(hr_dirs, name="edsr", scale=2, **kw):
    images = load_hr_folder(hr_dirs[0])
    spec = build(name, scale=scale).io_spec
    return PairedPatches(images, spec=spec, patch_size=kw.pop("patch_size", 8), batch_size=4, **kw)


def test_lr_patch_is_the_bicubic_of_its_hr_patch(hr_dirs):
    data = _patches(hr_dirs, augment=True)
    lr, hr = data.sample(3)
    assert lr.shape == (4, 3, 8, 8) and hr.shape == (4, 3, 16, 16)
    # away from the patch border, degrading the HR patch reproduces the LR patch (to 8-bit rounding)
    again = make_lr(hr.double(), 2).float()
    assert (again[..., 2:-2, 2:-2] - lr[..., 2:-2, 2:-2]).abs().max() <= 1.5 / 255


def test_pre_upsampling_networks_get_the_bicubic_upscaled_input(hr_dirs):
    data = _patches(hr_dirs, name="vdsr", scale=3, augment=False, patch_size=16)
    net_in, hr = data.sample(0)
    assert net_in.shape == hr.shape == (4, 1, 48, 48)
    # away from the patch border (2 LR pixels for the degradation, 2 for the upscale), net_in is the
    # bicubic upscale of the LR of its HR patch, to the 8-bit rounding of the LR
    bicubic = upscale_bicubic(make_lr(hr.double(), 3, quantize=False), 3).float()
    inner = (..., slice(12, -12), slice(12, -12))
    assert (net_in - bicubic)[inner].abs().max() <= 1.5 / 255
    # and the HR patch itself is far from that: handing the network its target would fail the line above
    assert (hr - bicubic)[inner].abs().max() > 10 / 255


def test_patches_are_made_in_float64_and_rounded_once(hr_dirs):
    """Y conversion and upscaling run in float64 (CUDA would run float32 convolutions in TF32)."""
    data = _patches(hr_dirs, name="vdsr", scale=3, augment=False, patch_size=16)
    for img, net_in, target in zip(load_hr_folder(hr_dirs[0]), data.inputs, data.targets):
        hr = modcrop(img.rgb, 3)[None].double()
        lr_y = rgb_to_y(make_lr(hr, 3, quantize=True))
        assert torch.equal(target, rgb_to_y(hr)[0].float())
        assert torch.equal(net_in, upscale_bicubic(lr_y, 3)[0].float())


def test_many_image_sizes_keep_the_bicubic_weight_cache_small(tmp_path):
    """A matrix per image side and size: a large set of differently sized images must not pile them up."""
    spec = build("fsrcnn", scale=2).io_spec
    images = [HRImage(f"i{k}", torch.rand(3, 20 + 2 * k, 22 + 2 * k)) for k in range(20)]
    PairedPatches(images, spec=spec, patch_size=8, batch_size=1)
    for cache in (resize._weight_matrix, resize._weight_matrix_f64):
        assert cache.cache_info().currsize <= 8, cache.cache_info()


def test_same_step_same_batch_other_step_other_batch(hr_dirs):
    a, b = _patches(hr_dirs), _patches(hr_dirs)
    torch.testing.assert_close(a.sample(5), b.sample(5))
    assert not torch.equal(a.sample(5)[1], a.sample(6)[1])


def test_ranks_draw_different_batches(hr_dirs):
    a, b = _patches(hr_dirs, rank=0), _patches(hr_dirs, rank=1)
    assert not torch.equal(a.sample(0)[1], b.sample(0)[1])


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_hr_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        load_hr_folder(tmp_path / "empty")


def test_unreadable_image_names_the_file(hr_dirs):
    bad = hr_dirs[0] / "broken.png"
    bad.write_text("not a png")
    with pytest.raises(InputError, match="broken.png"):
        load_hr_folder(hr_dirs[0])


def test_images_smaller_than_a_patch(hr_dirs):
    with pytest.raises(InputError, match="smaller than one HR patch"):
        _patches(hr_dirs, scale=4, patch_size=20)


def test_scales_add_shrunk_copies_of_each_image(hr_dirs):
    images = load_hr_folder(hr_dirs[0])  # four 64x72 crops
    data = _patches(hr_dirs, scales=[1.0, 0.75])
    assert len(data) == 2 * len(images)
    # the copy is the image shrunk by 0.75 (MATLAB bicubic, 8-bit): 48x54, cropped to 48x54 for x2
    lr_copy, copy = data.pair(1)
    assert copy.shape == (3, 48, 54)
    shrunk = resize.quantize_u8(resize.imresize(images[0].rgb[None].double(), scale=0.75).clamp(0, 1))[0].float()
    assert torch.equal(copy, shrunk)
    # and its LR is that copy's degradation, as for every pair
    assert torch.allclose(lr_copy, make_lr(copy[None].double(), 2).float()[0], atol=1e-6)


def test_shifts_add_the_same_photo_sampled_on_every_lr_grid(hr_dirs):
    images = load_hr_folder(hr_dirs[0])  # four 64x72 crops
    data = _patches(hr_dirs, scales=[1.0, 0.75], shifts=True)
    assert len(data) == 2 * 4 * len(images)  # x2: shifts of 0 or 1 HR pixel down and right, 4 grids per copy
    hr = images[0].rgb[None].double()
    for k, (dy, dx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        net_in, target = data.pair(k)
        shifted = modcrop(hr[..., dy:, dx:], 2)
        assert torch.equal(target, shifted[0].float())
        assert torch.equal(net_in, make_lr(shifted, 2, quantize=True)[0].float())
    # the shifted grids are new LR images, not the first one cropped: the network sees other samples
    lr00, lr11 = data.pair(0)[0], data.pair(3)[0]
    assert lr00.shape == (3, 32, 36) and lr11.shape == (3, 31, 35)
    assert (lr00[:, :31, :35] - lr11).abs().max() > 2 / 255
    assert (lr00[:, 1:, 1:] - lr11[:, :31, :35]).abs().max() > 2 / 255  # nor shifted by a whole LR pixel
    # the shrunk copy gets its four grids too
    assert data.pair(4)[1].shape == (3, 48, 54) and data.pair(7)[1].shape == (3, 46, 52)


def test_8bit_pairs_are_stored_as_uint8_and_cut_as_the_same_float32(hr_dirs):
    """A quarter of the memory (the 291 images x scales x shifts fill gigabytes) and not a bit of difference."""
    images = load_hr_folder(hr_dirs[0])
    data = _patches(hr_dirs, augment=False)
    assert data.inputs[0].dtype == data.targets[0].dtype == torch.uint8
    hr = modcrop(images[0].rgb[None].double(), 2)
    assert torch.equal(data.pair(0)[1], hr[0].float())
    assert torch.equal(data.pair(0)[0], make_lr(hr, 2, quantize=True)[0].float())
    lr, target = data.sample(0)
    assert lr.dtype == target.dtype == torch.float32 and 0 < float(target.mean()) < 1
    # values that are not 8-bit levels (Y planes, bicubic-upscaled inputs) stay float32
    vdsr = _patches(hr_dirs, name="vdsr", scale=3, augment=False, patch_size=16)
    assert vdsr.inputs[0].dtype == vdsr.targets[0].dtype == torch.float32


def test_scales_drop_copies_smaller_than_a_patch_and_keep_the_rest(hr_dirs, caplog):
    data = _patches(hr_dirs, scales=[1.0, 0.5], patch_size=20)  # 40x40 HR patch: 32x36 copies are too small
    assert len(data) == 4
    assert "@0.5" in caplog.text


def test_bad_scales_are_config_errors():
    from sr_train.config import ConfigError, DataConfig

    assert DataConfig(scales=[1, 0.8]).scales == [1.0, 0.8]
    for bad in ([], [1.2], [0.0], [0.8, 0.8], ["big"]):
        with pytest.raises(ConfigError, match="data.scales"):
            DataConfig(scales=bad)
