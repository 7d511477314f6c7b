"""``train(cfg)``: the PSNR-oriented training loop, one function read top to bottom.

lr -> forward -> loss -> backward -> clip -> step -> EMA -> log -> validate -> checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from sr_train.config import TrainConfig, config_to_dict
from sr_train.data import PairedPatches
from sr_train.losses import pixel_loss
from sr_train.run import (
    EMA,
    RunFiles,
    Schedule,
    StopSignals,
    build_model,
    channels_last_shuffles,
    check_val_images,
    load_data,
    make_optimizer,
    progress_bar,
    resolve_amp,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    setup_dist,
    validate,
    validation_set_record,
)
from sr_train.threads import ThreadTuner

__all__ = ["train"]

log = logging.getLogger("sr_train")

_clock = time.monotonic
"""The loop's clock (the time budget, the thread tuner): tests replace it to be independent of load."""


def _autocast(amp: str, device: torch.device):
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@torch.no_grad()
def _max_diff_to_rank0(model: torch.nn.Module) -> float:
    """Largest difference between this rank's parameters and rank 0's (0 when DDP kept them in lockstep)."""
    import torch.distributed as tdist

    worst = 0.0
    for p in model.parameters():
        ref = p.detach().clone()
        tdist.broadcast(ref, src=0)
        worst = max(worst, float((ref - p).abs().max()))
    return worst


class _Budget:
    """A wall-clock budget: time the steps and validations, and plan the steps that fit what is left.

    The first plan comes after a short calibration (a few warm-up steps excluded); the plan is
    renewed every ``REPLAN`` of the budget from the speed measured since the last one, so a machine
    that gets busier or quieter moves the end of the schedule with it.
    """

    WARMUP_STEPS = 3
    CALIBRATE_STEPS, CALIBRATE_SECONDS = 20, 10.0
    REPLAN = 0.02

    def __init__(self, seconds: float, val_every: int) -> None:
        self.seconds, self.val_every = seconds, val_every
        self.val_seconds = 0.0
        self.planned = False
        self._mark: tuple[int, float] | None = None

    def rate(self, step: int, elapsed: float) -> float | None:
        """Steps/s since the last plan once enough steps and time have passed, else None."""
        if step < self.WARMUP_STEPS:
            return None
        if self._mark is None:
            self._mark = (step, elapsed)
            return None
        steps, seconds = step - self._mark[0], elapsed - self._mark[1]
        if self.planned:
            due = seconds >= max(self.REPLAN * self.seconds, 2.0)
        else:  # a long calibration only delays the plan: at most 5% of the budget, however slow the steps
            cap = 0.05 * self.seconds
            due = steps >= 3 and seconds >= min(self.CALIBRATE_SECONDS, cap) and (
                steps >= self.CALIBRATE_STEPS or seconds >= cap)
        if not due or seconds <= 0:
            return None
        self._mark = (step, elapsed)
        return steps / seconds

    def plan(self, step: int, elapsed: float, rate: float) -> int:
        """Total steps that fit: the rest of the budget shared between steps and validations."""
        self.planned = True
        left = self.seconds - elapsed - self.val_seconds  # the final validation
        per_step = 1.0 / rate + self.val_seconds / self.val_every
        return step + max(1, int(left / per_step))

    def spent(self, elapsed: float) -> bool:
        """True when the final validation must start now to end inside the budget."""
        return elapsed + self.val_seconds >= self.seconds


def train(cfg: TrainConfig, *, resume: Path | None = None, progress: bool = True) -> Path:
    """Train ``cfg.model`` and return the run directory (holding best/last checkpoints and logs).

    With ``resume`` (a run directory) training continues exactly where its last saved state left off:
    model, EMA, optimizer, scheduler, grad scaler, step, RNG states, data order and the planned steps.
    With ``cfg.time_budget`` the steps are planned from a calibration and the run stops, validated and
    checkpointed, when the budget is spent (:class:`_Budget`).
    Raises InputError for unusable data, ConfigError for an inconsistent config.
    """
    device = resolve_device(cfg.device)
    dist, device = setup_dist(device)
    seed_everything(cfg.seed)
    amp = resolve_amp(cfg.amp, device)

    # Everything that can fail on bad input happens before the run directory exists.
    model, hparams = build_model(cfg.model.name, cfg.model.scale, cfg.model.hparams, cfg.model.init_from)
    spec = model.io_spec
    train_images, val_images = load_data(cfg.data.train, cfg.data.val)
    check_val_images(val_images, spec.scale)
    val_set = validation_set_record(cfg.data.val)
    data_device = device if cfg.data.device == "auto" else torch.device(cfg.data.device)
    data = PairedPatches(
        train_images, spec=spec, patch_size=cfg.data.patch_size, batch_size=cfg.data.batch_size,
        augment=cfg.data.augment, scales=cfg.data.scales, shifts=cfg.data.shifts, seed=cfg.seed, rank=dist.rank,
        device=data_device,
    )
    log.info("%d training images (%d with data.scales %s%s), %d validation images; model %s x%d, %.2fM parameters "
             "on %s (world %d)", len(train_images), len(data), cfg.data.scales, " and data.shifts" * cfg.data.shifts,
             len(val_images), cfg.model.name, spec.scale,
             sum(p.numel() for p in model.parameters()) / 1e6, device, dist.world)

    # Channels-last lets oneDNN (CPU) and cuDNN (CUDA) run the convolutions without layout reorders.
    model = channels_last_shuffles(model.to(device, memory_format=torch.channels_last)).train()
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    o = cfg.optim
    opt = make_optimizer(model.parameters(), optimizer=o.optimizer, lr=o.lr, betas=o.betas,
                         momentum=o.momentum, weight_decay=o.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    tuner = None
    if device.type == "cpu":
        tuner = ThreadTuner(cfg.threads or torch.get_num_threads(), enabled=cfg.threads == 0)

    sched = Schedule(opt, kind=o.scheduler, steps=cfg.steps, step_size=o.step_size, milestones=o.milestones,
                     gamma=o.gamma, min_lr=o.min_lr)
    budget = _Budget(cfg.budget_seconds, cfg.val_every) if cfg.budget_seconds else None
    step, best_psnr, stale, elapsed = 0, -math.inf, 0, 0.0
    if resume is not None:
        run = RunFiles(resume, main=dist.main)
        state = run.load_state()
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, best_psnr, stale, elapsed = state["step"], state["best_psnr"], state["stale"], state["elapsed"]
        sched.load_state_dict(state["scheduler"])
        if budget is not None:
            budget.val_seconds, budget.planned = state.get("val_seconds", 0.0), True
        set_rng_state(state["rng"])
        run.truncate_log(step)
        log.info("resumed %s at step %d (best val PSNR %.3f dB)", resume, step, best_psnr)
    else:
        run = RunFiles.create(cfg, main=dist.main)
        log.info("run directory %s; resolved config: %s", run.path, config_to_dict(cfg))
    net = DistributedDataParallel(model) if dist.enabled else model
    eval_model = ema.model if ema is not None else model

    saved_at, saved_step = elapsed, step  # when the state was last written: the time-based save, the stop's

    def save_state() -> None:
        nonlocal saved_at, saved_step
        saved_at, saved_step = elapsed, step
        run.save_state({
            "model": model.state_dict(), "ema": ema.model.state_dict() if ema else None,
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
            "step": step, "best_psnr": best_psnr, "stale": stale, "elapsed": elapsed, "rng": rng_state(),
            "val_seconds": budget.val_seconds if budget else 0.0,
        })
        if dist.main:
            run.save_weights("last", eval_model, cfg, hparams, {"step": step, "best_val_psnr": best_psnr})

    started = _clock() - elapsed
    if budget is not None and not budget.planned:
        # Time one validation first: the plan reserves time for every validation and the final one.
        t0 = _clock()
        if dist.main:
            psnr0, _ = validate(eval_model, spec, val_images, device)
            log.info("time budget %s: the model before training scores %.3f dB on validation", cfg.time_budget, psnr0)
        budget.val_seconds = _clock() - t0
        elapsed = _clock() - started

    bar = None
    if progress and dist.main:
        bar = progress_bar(sched.planned, step, f"{cfg.model.name} x{spec.scale}")
    val_psnr = math.nan
    with StopSignals() as signals:
        while step < sched.planned:
            if tuner is not None:
                tuner.before_step()
            t_step = _clock()
            lr_in, hr = data.sample(step)
            lr_in = lr_in.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            hr = hr.to(device, non_blocking=True)
            with _autocast(amp, device):
                sr = net(lr_in)
                loss = pixel_loss(cfg.loss.kind, sr.float(), hr, eps=cfg.loss.eps)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if o.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema.update(model, step)
            step += 1
            loss_value = loss.item()
            elapsed = _clock() - started
            if tuner is not None:
                tuner.after_step(_clock() - t_step)

            if budget is not None and not (tuner is not None and tuner.probing):
                rate = budget.rate(step, elapsed)
                if rate is not None:
                    first = not budget.planned
                    planned = budget.plan(step, elapsed, rate)
                    if dist.enabled:  # every rank runs the same number of steps: the slowest rank's plan
                        planned = int(dist.reduce_min(planned))
                    sched.replan(planned)
                    (log.info if first else log.debug)(
                        "time budget %s: %.2f steps/s, validation %.1f s -> %d steps (recipe: %d)",
                        cfg.time_budget, rate, budget.val_seconds, sched.planned, cfg.steps)
                    if bar is not None:
                        bar.total = sched.planned
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step}; lower optim.lr or set optim.grad_clip")
            if step % cfg.log_every == 0:
                run.log_row(step=step, loss=f"{loss_value:.8g}", lr=f"{opt.param_groups[0]['lr']:.6g}",
                            seconds=f"{elapsed:.1f}")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4g}", psnr=f"{val_psnr:.2f}", refresh=False)

            out_of_time = False
            if budget is not None and (not dist.enabled or step % min(cfg.log_every, 10) == 0):  # ranks ask together
                out_of_time = dist.agree(budget.spent(elapsed))
            last = step >= sched.planned or out_of_time
            if step % cfg.val_every == 0 or last:
                stop = False
                if dist.main:
                    t0 = _clock()
                    val_psnr, val_ssim = validate(eval_model, spec, val_images, device)
                    if budget is not None:
                        budget.val_seconds = max(budget.val_seconds, _clock() - t0)
                    run.log_row(step=step, val_psnr=f"{val_psnr:.4f}", val_ssim=f"{val_ssim:.5f}", seconds=f"{elapsed:.1f}")
                    if val_psnr > best_psnr:
                        best_psnr, stale = val_psnr, 0
                        metrics = {"step": step, "val_psnr": val_psnr, "val_ssim": val_ssim, **val_set,
                                   "train_seconds": round(elapsed, 1)}
                        run.save_weights("best", eval_model, cfg, hparams, metrics)
                    else:
                        stale += 1
                    log.info("step %d: val PSNR %.3f dB, SSIM %.4f (best %.3f)", step, val_psnr, val_ssim, best_psnr)
                    stop = cfg.patience > 0 and stale >= cfg.patience
                if dist.agree(stop):
                    log.info("early stop: no better validation PSNR in %d validations", cfg.patience)
                    last = True
            if step % cfg.ckpt_every == 0 or last or 0 < cfg.ckpt_minutes * 60 <= elapsed - saved_at:
                save_state()
            stopping = signals.requested is not None
            if dist.enabled:  # ranks stop together, at a step they all reach
                stopping = step % min(cfg.log_every, 10) == 0 and dist.agree(stopping)
            if stopping and not last:
                if saved_step != step:
                    save_state()
                best = run.path / "best.safetensors"
                kept = f" (best so far: {best}, {best_psnr:.3f} dB)" if best.is_file() else " (not validated yet)"
                raise signals.interrupt(f"stopped at step {step} of {sched.planned}; its state is saved: continue with "
                                        f"`sr-train --resume {run.path}`{kept}")
            if out_of_time:
                log.info("time budget %s spent at step %d of %d planned", cfg.time_budget, step, sched.planned)
            if last:
                break
    if bar is not None:
        bar.close()
    if dist.enabled:
        import torch.distributed as tdist

        log.info("rank %d: ranks in sync, max |diff| %g", dist.rank, _max_diff_to_rank0(model))
        # Tear gloo/NCCL down before interpreter exit: a live process group's threads abort the
        # process at shutdown ("terminate called without an active exception").
        tdist.barrier()
        tdist.destroy_process_group()
    run.close()
    if dist.main:
        log.info("done: %d steps in %.0f s, best val PSNR %.3f dB -> %s", step, elapsed, best_psnr,
                 run.path / "best.safetensors")
    return run.path
