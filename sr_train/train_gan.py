"""``train_gan(cfg)``: the SRGAN loop (Ledig et al. 2017), generator step then discriminator step.

The generator is an SRResNet initialised from an SRResNet checkpoint (``model.init_from``); its
loss is ``content_weight * MSE + perceptual_weight * VGG54 + adv_weight * adversarial``. Validation
PSNR is logged, but SRGAN trades PSNR for texture, so the ``best`` checkpoint is the latest one.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch.nn.functional as F

from sr_runtime.errors import ConfigError
from sr_train.config import TrainConfig, config_to_dict
from sr_train.data import PairedPatches
from sr_train.discriminator import SRGANDiscriminator
from sr_train.losses import VGGFeatures, adversarial_loss
from sr_train.run import (
    RunFiles,
    build_model,
    check_val_images,
    load_data,
    make_optimizer,
    progress_bar,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    validate,
)

__all__ = ["train_gan"]

log = logging.getLogger("sr_train")


def train_gan(cfg: TrainConfig, *, resume: Path | None = None, progress: bool = True) -> Path:
    """Adversarially fine-tune an SRResNet into SRGAN; returns the run directory. Single process."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    g = cfg.gan
    if not cfg.model.init_from and resume is None:
        raise ConfigError("SRGAN starts from a trained SRResNet: set model.init_from=PATH/to/srresnet_x4.safetensors")
    vgg = VGGFeatures(g.vgg_weights).to(device) if g.perceptual_weight > 0 else None
    gen, hparams = build_model(cfg.model.name, cfg.model.scale, cfg.model.hparams,
                               cfg.model.init_from if resume is None else None)
    spec = gen.io_spec
    train_images, val_images = load_data(cfg.data.train, cfg.data.val)
    check_val_images(val_images, spec.scale)
    data = PairedPatches(train_images, spec=spec, patch_size=cfg.data.patch_size, batch_size=cfg.data.batch_size,
                         augment=cfg.data.augment, scales=cfg.data.scales, shifts=cfg.data.shifts, seed=cfg.seed,
                         device=device)
    log.info("%d training images (%d with data.scales %s%s), %d validation images; srgan x%d on %s",
             len(train_images), len(data), cfg.data.scales, " and data.shifts" * cfg.data.shifts, len(val_images),
             spec.scale, device)
    disc = SRGANDiscriminator().to(device).train()
    gen.to(device).train()
    o = cfg.optim
    opt_g = make_optimizer(gen.parameters(), optimizer=o.optimizer, lr=o.lr, betas=o.betas, momentum=o.momentum,
                           weight_decay=o.weight_decay)
    opt_d = make_optimizer(disc.parameters(), optimizer=o.optimizer, lr=g.d_lr, betas=o.betas, momentum=o.momentum,
                           weight_decay=o.weight_decay)
    step, elapsed = 0, 0.0
    if resume is not None:
        run = RunFiles(resume, main=True)
        state = run.load_state()
        gen.load_state_dict(state["model"])
        disc.load_state_dict(state["disc"])
        opt_g.load_state_dict(state["optimizer"])
        opt_d.load_state_dict(state["opt_d"])
        step, elapsed = state["step"], state["elapsed"]
        set_rng_state(state["rng"])
        run.truncate_log(step)
    else:
        run = RunFiles.create(cfg, main=True)
        log.info("run directory %s; resolved config: %s", run.path, config_to_dict(cfg))

    bar = None
    if progress:
        bar = progress_bar(cfg.steps, step, f"srgan x{spec.scale}")
    started = time.monotonic() - elapsed
    while step < cfg.steps:
        lr_in, hr = data.sample(step)
        lr_in, hr = lr_in.to(device), hr.to(device)

        sr = gen(lr_in)
        loss_g = g.content_weight * F.mse_loss(sr, hr)
        if vgg is not None:
            loss_g = loss_g + g.perceptual_weight * F.mse_loss(vgg(sr), vgg(hr))
        loss_g = loss_g + g.adv_weight * adversarial_loss(disc(sr), real=True)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        loss_d = adversarial_loss(disc(hr), real=True) + adversarial_loss(disc(sr.detach()), real=False)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        step += 1
        elapsed = time.monotonic() - started
        if not math.isfinite(loss_g.item()):
            raise FloatingPointError(f"generator loss became {loss_g.item()} at step {step}; lower optim.lr")
        if step % cfg.log_every == 0:
            run.log_row(step=step, loss=f"{loss_g.item():.8g}", lr=f"{o.lr:.6g}", seconds=f"{elapsed:.1f}")
        if bar is not None:
            bar.update(1)
            bar.set_postfix(g=f"{loss_g.item():.4g}", d=f"{loss_d.item():.4g}", refresh=False)
        last = step == cfg.steps or (cfg.budget_seconds is not None and elapsed > cfg.budget_seconds)
        if step % cfg.val_every == 0 or last:
            val_psnr, val_ssim = validate(gen, spec, val_images, device)
            run.log_row(step=step, val_psnr=f"{val_psnr:.4f}", val_ssim=f"{val_ssim:.5f}", seconds=f"{elapsed:.1f}")
            metrics = {"step": step, "val_psnr": val_psnr, "val_ssim": val_ssim, "train_seconds": round(elapsed, 1)}
            run.save_weights("best", gen, cfg, hparams, metrics)
        if step % cfg.ckpt_every == 0 or last:
            run.save_state({"model": gen.state_dict(), "disc": disc.state_dict(), "optimizer": opt_g.state_dict(),
                            "opt_d": opt_d.state_dict(), "step": step, "elapsed": elapsed, "rng": rng_state()})
            run.save_weights("last", gen, cfg, hparams, {"step": step})
        if last:
            break
    if bar is not None:
        bar.close()
    run.close()
    return run.path
