"""Every architecture trains a few steps on CPU: finite loss, loadable best/last checkpoints, a CSV log."""

from __future__ import annotations

import csv
import math

import pytest

from sr_runtime.archs import ARCHS, build
from sr_runtime.checkpoint import load_checkpoint, save_checkpoint
from sr_train.config import load_config
from sr_train.train import train

PSNR_ARCHS = [n for n in ARCHS if n != "srgan"]


def _cfg(tmp_path, hr_dirs, name, scale, *extra):
    spec = build(name, scale=scale).io_spec
    patch = max(8, spec.min_size)
    return load_config(None, [
        f"model.name={name}", f"model.scale={scale}", f"data.train=[{hr_dirs[0]}]", f"data.val={hr_dirs[1]}",
        f"data.patch_size={patch}", "data.batch_size=2", "steps=3", "val_every=2", "log_every=1",
        f"out={tmp_path / 'runs'}", "run_name=r", *extra,
    ])


@pytest.mark.parametrize("name", PSNR_ARCHS)
def test_architecture_trains_and_checkpoints(tmp_path, hr_dirs, name):
    scale = ARCHS[name].scales[0]
    run = train(_cfg(tmp_path, hr_dirs, name, scale), progress=False)
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["loss"]) for r in rows if r["loss"]]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert any(r["val_psnr"] for r in rows)
    for which in ("best", "last"):
        ckpt = load_checkpoint(run / f"{which}.safetensors", scale=scale)
        assert ckpt.arch == name and ckpt.meta["recipe"]["model"]["name"] == name
    assert load_checkpoint(run / "best.safetensors").meta["metrics"]["val_psnr"] > 0
    assert (run / "config.yaml").is_file() and (run / "last.pt").is_file()


def test_ema_amp_and_schedulers(tmp_path, hr_dirs):
    for i, sched in enumerate(["step", "multistep", "exponential", "cosine", "none"]):
        cfg = _cfg(tmp_path, hr_dirs, "espcn", 2, f"optim.scheduler={sched}", "optim.milestones=[1]", "ema=0.9",
                   "loss.kind=charbonnier", "optim.grad_clip=0.5", f"run_name=s{i}")
        assert (train(cfg, progress=False) / "best.safetensors").is_file()


def test_srgan_loop(tmp_path, hr_dirs):
    import torch

    from sr_train.losses import _VGG19

    gen = build("srresnet", scale=2)
    init = save_checkpoint(tmp_path / "srresnet.safetensors", gen, arch="srresnet", scale=2,
                           hparams={"n_blocks": 16, "n_feats": 64})
    # a VGG19 file in torchvision's layout (random weights: the loop's plumbing is under test, not VGG)
    state, i, c = {}, 0, 3
    for v in _VGG19:
        if v != "M":
            state[f"features.{i}.weight"], state[f"features.{i}.bias"] = torch.randn(v, c, 3, 3) * 0.01, torch.zeros(v)
            c, i = v, i + 2
        else:
            i += 1
    torch.save(state, tmp_path / "vgg19.pth")
    from sr_train.train_gan import train_gan

    cfg = _cfg(tmp_path, hr_dirs, "srgan", 2, f"model.init_from={init}", f"gan.vgg_weights={tmp_path / 'vgg19.pth'}")
    run = train_gan(cfg, progress=False)
    ckpt = load_checkpoint(run / "best.safetensors")
    assert ckpt.arch == "srgan"
    # initialised from the SRResNet, then moved by the adversarial steps
    assert not torch.equal(ckpt.model.tail.weight, gen.tail.weight)


def test_srgan_without_vgg_weights_is_a_clear_error(tmp_path, hr_dirs):
    from sr_runtime.errors import ConfigError
    from sr_train.train_gan import train_gan

    cfg = _cfg(tmp_path, hr_dirs, "srgan", 2, "model.init_from=x.safetensors")
    with pytest.raises(ConfigError, match="vgg_weights"):
        train_gan(cfg, progress=False)
    assert not (tmp_path / "runs").exists()
