"""Checkpoints rebuild their model from metadata alone, load strictly, and fail with typed errors."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from sr_runtime.archs import ARCHS, build, resolve_hparams
from sr_runtime.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from sr_runtime.errors import CheckpointError, UnsupportedArchError, UnsupportedScaleError


def _save(tmp_path, name="fsrcnn", scale=2, **hp):
    hparams = resolve_hparams(name, scale=scale, **hp)
    model = build(name, scale=scale, **hparams)
    path = save_checkpoint(tmp_path / f"{name}.safetensors", model, arch=name, scale=scale, hparams=hparams,
                           metrics={"set5_psnr": 1.0}, recipe={"lr": 1e-3})
    return model.eval(), path


@pytest.mark.parametrize("name", [n for n in ARCHS if n != "edsr-large"])
def test_round_trip_rebuilds_the_same_function(tmp_path, name):
    scale = ARCHS[name].scales[-1]
    model, path = _save(tmp_path, name, scale)
    ckpt = load_checkpoint(path)
    assert ckpt.arch == name and ckpt.scale == scale and ckpt.spec == model.io_spec
    assert ckpt.meta["metrics"] == {"set5_psnr": 1.0} and ckpt.meta["recipe"] == {"lr": 1e-3}
    spec = model.io_spec
    side = max(12, spec.min_size) * (scale if spec.pre_upsample else 1)
    x = torch.rand(1, spec.in_channels, side, side)
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(x), model(x), rtol=0, atol=0)


def test_non_default_hyperparameters_survive(tmp_path):
    _, path = _save(tmp_path, "drrn", 3, n_units=2, n_feats=8)
    ckpt = load_checkpoint(path)
    assert ckpt.hparams["n_units"] == 2 and ckpt.model.entry.out_channels == 8


@pytest.mark.parametrize("name", ["fsrcnn", "espcn"])
def test_input_mean_survives_and_changes_the_function(tmp_path, name):
    model, path = _save(tmp_path, name, 3, mean=0.5)
    ckpt = load_checkpoint(path)
    assert ckpt.hparams["mean"] == 0.5 and ckpt.model.mean == 0.5
    x = torch.rand(1, 1, 12, 12)
    plain = build(name, scale=3)
    plain.load_state_dict(model.state_dict())  # same tensors, mean 0
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(x), model(x), rtol=0, atol=0)
        # the mean is taken off the input and put back on the output, not folded into any tensor
        torch.testing.assert_close(model(x), plain.eval()(x - 0.5) + 0.5, rtol=0, atol=1e-6)


def test_wrong_scale_is_a_typed_error(tmp_path):
    _, path = _save(tmp_path, scale=2)
    with pytest.raises(UnsupportedScaleError, match=r"x2.*scale 4"):
        load_checkpoint(path, scale=4)


def test_corrupt_file_names_the_file(tmp_path):
    _, path = _save(tmp_path)
    path.write_bytes(path.read_bytes()[: 200])
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_missing_tensor_is_reported_by_name(tmp_path):
    from safetensors.torch import save_file

    model, path = _save(tmp_path)
    meta = read_metadata(path)
    tensors = {k: v for k, v in model.state_dict().items() if k != "deconv.bias"}
    save_file(tensors, str(path), metadata={"sr_runtime": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="deconv.bias"):
        load_checkpoint(path)


def test_unknown_architecture_in_metadata(tmp_path):
    from safetensors.torch import save_file

    model, path = _save(tmp_path)
    meta = read_metadata(path) | {"arch": "hypernet"}
    save_file(dict(model.state_dict()), str(path), metadata={"sr_runtime": json.dumps(meta)})
    with pytest.raises(UnsupportedArchError, match="hypernet"):
        load_checkpoint(path)


def test_foreign_safetensors_without_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="metadata"):
        load_checkpoint(path)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    _, path = _save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert header_len > 0
