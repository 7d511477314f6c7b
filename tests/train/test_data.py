"""Paired patches are aligned, augmented identically, deterministic per step, and bad folders fail clearly."""

from __future__ import annotations

import pytest
import torch

from sr_runtime.archs import build
from sr_runtime.errors import InputError
from sr_runtime.resize import make_lr
from sr_train.data import PairedPatches, load_hr_folder


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
    data = _patches(hr_dirs, name="vdsr", scale=3, augment=False, patch_size=10)
    net_in, hr = data.sample(0)
    assert net_in.shape == hr.shape == (4, 1, 30, 30)
    # net_in is close to HR (it is its blurred version), far closer than noise
    assert (net_in - hr).abs().mean() < 0.05


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
