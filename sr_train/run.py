"""What both training loops share: devices, DDP, run directories, data, validation, resumable state.

Everything here takes plain arguments; :mod:`sr_train.train` and :mod:`sr_train.train_gan` read the
config and call these in order.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import logging
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn

from sr_runtime.archs import build, resolve_hparams
from sr_runtime.atomic import atomic_write_bytes, atomic_write_text
from sr_runtime.checkpoint import load_checkpoint, save_checkpoint
from sr_runtime.deploy import DeployModel
from sr_runtime.errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    InputError,
    OutputError,
    UnsupportedScaleError,
)
from sr_runtime.evaluate import min_hr_size, score_image
from sr_runtime.failures import Terminated, describe_os_error
from sr_runtime.resize import modcrop
from sr_runtime.spec import IOSpec
from sr_train.config import TrainConfig, config_from_dict, config_to_dict
from sr_train.data import (
    DEFAULT_TRAIN_PHOTOS,
    DEFAULT_VAL_PHOTOS,
    HRImage,
    load_default_photos,
    load_hr_folder,
)

__all__ = [
    "Dist", "setup_dist", "resolve_device", "resolve_amp", "build_model", "load_data", "validate", "RunFiles", "EMA",
    "Schedule", "StopSignals", "validation_set_record", "ChannelsLastPixelShuffle", "channels_last_shuffles",
]

log = logging.getLogger("sr_train")

STATE_FILE = "last.pt"
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.csv"
LOG_FIELDS = ("step", "loss", "lr", "val_psnr", "val_ssim", "seconds")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    """The training device: collectives run on its tensors (an NCCL group has no CPU tensors)."""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def reduce_min(self, value: float) -> float:
        """The smallest ``value`` over all ranks."""
        if not self.enabled:
            return value
        t = torch.tensor([float(value)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return float(t.item())

    def agree(self, flag: bool) -> bool:
        """True on every rank when any rank says True (stop decisions must be collective)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


class StopSignals:
    """Ctrl-C (SIGINT) or ``kill`` (SIGTERM) during training: finish the step, save the state, stop.

    Stopping inside a step would leave the model, optimizer and EMA half-updated, so the loop reads
    :attr:`requested` at each step boundary and saves there: nothing since the last checkpoint is
    lost and ``--resume`` continues exactly. A second signal stops at once (the state saved last
    stays valid). A signal ignored when the run started stays ignored (``nohup ... &`` ignores
    SIGINT); outside the main thread nothing is installed.
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) != signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        self.requested = signum
        log.warning("%s: saving the state after this step, then stopping (send it again to stop at once)",
                    signal.Signals(signum).name)

    def interrupt(self, message: str) -> KeyboardInterrupt:
        """The exception that ends the run: :class:`Terminated` for SIGTERM (exit 143), else Ctrl-C's (130)."""
        return Terminated(message) if self.requested == signal.SIGTERM else KeyboardInterrupt(message)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {name!r} requested but CUDA is not available; use device=cpu")
    return device


def setup_dist(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=device), device
    rank = int(os.environ["RANK"])
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", rank))
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, device), device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(name: str, scale: int, hparams: dict[str, Any], init_from: str | None) -> tuple[nn.Module, dict[str, Any]]:
    """The registry model, optionally initialised from the same-shaped tensors of a checkpoint."""
    resolved = resolve_hparams(name, scale=scale, **hparams)
    model = build(name, scale=scale, **resolved)
    if init_from:
        source = load_checkpoint(init_from).model.state_dict()
        own = model.state_dict()
        taken = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
        if not taken:
            raise CheckpointError(f"{init_from}: no tensor matches {name} x{scale}; cannot initialise from it")
        own.update(taken)
        model.load_state_dict(own)
        log.info("initialised %d/%d tensors from %s", len(taken), len(own), init_from)
    return model, resolved


class ChannelsLastPixelShuffle(nn.Module):
    """``nn.PixelShuffle`` computed in channels-last order: (N, H, W, C*r*r) -> (N, H*r, W*r, C) as one
    reshape-permute-reshape, returned as a channels-last (N, C, H*r, W*r) view.

    The same values as ``nn.PixelShuffle``; torch 2.14's CPU kernel takes a slow path for channels-last
    tensors (about 3x this in forward plus backward on EDSR x3's upsampler), which was ~10% of an
    EDSR-baseline training step. Training only: exported models keep ``nn.PixelShuffle`` (ONNX
    DepthToSpace)."""

    def __init__(self, upscale_factor: int) -> None:
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        r = self.upscale_factor
        y = x.permute(0, 2, 3, 1).reshape(n, h, w, c // (r * r), r, r)
        return y.permute(0, 1, 4, 2, 5, 3).reshape(n, h * r, w * r, c // (r * r)).permute(0, 3, 1, 2)


def channels_last_shuffles(model: nn.Module) -> nn.Module:
    """Replace every ``nn.PixelShuffle`` in ``model`` by :class:`ChannelsLastPixelShuffle` (in place; no
    parameters change, so checkpoints are the same)."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.PixelShuffle:
                setattr(parent, name, ChannelsLastPixelShuffle(child.upscale_factor))
    return model


def load_data(train_dirs: list[str] | None, val_dir: str | None) -> tuple[list[HRImage], list[HRImage]]:
    if not train_dirs:
        log.info("no --data given: training on scikit-image's sample photos (%s)", ", ".join(DEFAULT_TRAIN_PHOTOS))
        train = load_default_photos(DEFAULT_TRAIN_PHOTOS)
    else:
        train = [img for folder in train_dirs for img in load_hr_folder(folder)]
    if val_dir is None:
        log.info("no --val given: validating on scikit-image's %s", ", ".join(DEFAULT_VAL_PHOTOS))
        val = load_default_photos(DEFAULT_VAL_PHOTOS)
    else:
        val = load_hr_folder(val_dir)
    return train, val


def validation_set_record(val_dir: str | None) -> dict[str, str]:
    """What a recorded validation score was measured on: the folder, its name and its fingerprint.
    Scores are compared (which model is the default) only between equal fingerprints."""
    from sr_runtime.evaluate import dataset_fingerprint

    if val_dir is None:
        return {"val_data": "skimage:astronaut", "val_name": "astronaut", "val_set": "skimage:astronaut"}
    return {"val_data": val_dir, "val_name": Path(val_dir).name, "val_set": dataset_fingerprint(val_dir)}


def check_val_images(images: list[HRImage], scale: int) -> None:
    least = min_hr_size(scale)
    for img in images:
        h, w = img.rgb.shape[-2:]
        if min(h - h % scale, w - w % scale) < least:
            raise InputError(f"validation image {img.name} is {w}x{h}; it needs at least {least}x{least} at x{scale}")


@contextlib.contextmanager
def full_fp32():
    """No TF32 inside: on CUDA, cuDNN runs float32 convolutions (colour conversion, bicubic) in TF32 by default."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@torch.no_grad()
def validate(net: nn.Module, spec: IOSpec, images: list[HRImage], device: torch.device) -> tuple[float, float]:
    """Mean (PSNR, SSIM) on Y with a ``scale``-pixel crop, through the deploy wrapper (the literature's protocol).

    Runs without TF32, so a GPU scores what the CPU scores (to float32 rounding).
    """
    # A contiguous copy: the training copy is channels-last, and its convolutions round differently from
    # those of the checkpoint that the score is recorded for (what sr-eval loads).
    net = copy.deepcopy(net).to(memory_format=torch.contiguous_format).eval()
    model = DeployModel(net, spec).eval()
    with full_fp32():
        scores = [score_image(modcrop(img.rgb, spec.scale)[None].to(device, torch.float64), spec.scale, model=model)
                  for img in images]
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


class EMA:
    """Exponential moving average of a model's parameters (buffers are copied).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the update count ``n`` (as TensorFlow's
    ``ExponentialMovingAverage`` with ``num_updates``): with a constant 0.999 the starting weights still
    weigh 0.999^1000 = 37% after 1,000 steps, so a run started from a partial ``init_from`` (a fresh
    upsampling tail) validated and saved its untrained tail for thousands of steps. ``n`` is the global
    step, so a resumed run continues the same sequence.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = build_clone(model)

    def decay_at(self, n: int) -> float:
        """The decay of update number ``n`` (0 for the first update of a run)."""
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, n: int) -> None:
        """Fold in ``model`` as update number ``n``."""
        weight = 1.0 - self.decay_at(n)
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), weight)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


def build_clone(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model)
    clone.requires_grad_(False)
    return clone


def make_optimizer(params, *, optimizer: str, lr: float, betas, momentum: float, weight_decay: float):
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


class Schedule:
    """The learning rate as a function of training progress ``p`` in [0, 1], not of the step number.

    ``p`` moves by an equal share of what is left at each step, so the schedule ends exactly at the
    last planned step; :meth:`replan` changes how many steps are left (a time budget does, as the
    machine speeds up or slows down) without a jump backwards. With a fixed plan, ``p = step / steps``.
    ``kind``: cosine (to ``min_lr``), step, multistep and exponential (their step counts read as
    fractions of ``steps``, the recipe's length), or none.
    """

    def __init__(self, opt: torch.optim.Optimizer, *, kind: str, steps: int, step_size: int, milestones,
                 gamma: float, min_lr: float) -> None:
        self.opt, self.kind, self.steps = opt, kind, steps
        self.step_size, self.milestones, self.gamma, self.min_lr = step_size, list(milestones), gamma, min_lr
        self.base = [g["lr"] for g in opt.param_groups]
        self.p, self.done, self.planned = 0.0, 0, steps
        self._apply()

    def factor(self, base: float) -> float:
        p, n = self.p, self.steps
        if self.kind == "cosine":
            return (self.min_lr + (base - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))) / base
        if self.kind == "step":
            return self.gamma ** math.floor(p * n / self.step_size + 1e-9)
        if self.kind == "multistep":
            return self.gamma ** sum(p * n >= m - 1e-9 for m in self.milestones)
        if self.kind == "exponential":
            return self.gamma ** (p * n)
        return 1.0

    def replan(self, total_steps: int) -> None:
        """From now on, reach the end of the schedule at step ``total_steps``."""
        self.planned = max(total_steps, self.done + 1)

    def step(self) -> None:
        left = self.planned - self.done
        self.p = min(1.0, self.p + (1.0 - self.p) / left) if left > 0 else 1.0
        self.done += 1
        self._apply()

    def _apply(self) -> None:
        for g, base in zip(self.opt.param_groups, self.base):
            g["lr"] = base * self.factor(base)

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "done": self.done, "planned": self.planned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.done, self.planned = float(state["p"]), int(state["done"]), int(state["planned"])
        self._apply()


def resolve_amp(amp: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on a CUDA GPU with BF16 or a CPU with BF16 units, else ``none``; logged."""
    from sr_runtime.machine import cpu_has_bf16

    if amp == "fp16" and device.type != "cuda":  # bf16 autocast also runs on CPU; fp16's grad scaler is CUDA's
        raise ConfigError(f"amp=fp16 needs a CUDA device; training runs on {device} (set amp=bf16 or amp=none)")
    if amp != "auto":
        log.info("precision: %s (amp=%s as asked)", "fp32" if amp == "none" else f"{amp} autocast", amp)
        if amp == "bf16" and device.type == "cpu" and not cpu_has_bf16():
            # Measured: an EDSR-baseline step (batch 16, 64x64) took 5.4 s in FP32 and ~200 s in BF16
            # on an AVX2-only AMD EPYC (Zen 3); oneDNN emulates BF16 there.
            log.warning(
                "amp=bf16 on a CPU without BF16 units (AMX or AVX-512 BF16): BF16 is emulated here and "
                "many times slower than FP32; amp=auto or amp=none trains in FP32 on this machine"
            )
        return amp
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        why = "this GPU supports BF16" if bf16 else "this GPU has no BF16"
    else:
        bf16 = cpu_has_bf16()
        why = "this CPU has BF16 units (AMX or AVX-512 BF16)" if bf16 else "this CPU has no BF16 units"
    log.info("precision: %s (amp=auto: %s)", "bf16 autocast" if bf16 else "fp32", why)
    return "bf16" if bf16 else "none"


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _cpu_bytes(t: torch.Tensor) -> torch.Tensor:
    # torch and torch.cuda only take RNG states as CPU ByteTensors; a load with another map_location moves them.
    return t.to(device="cpu", dtype=torch.uint8)


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(_cpu_bytes(state["torch"]))
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_cpu_bytes(t) for t in state["cuda"]])


def atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


class RunFiles:
    """A run directory: config.yaml, log.csv, best/last checkpoints, last.pt (resumable state), TensorBoard events."""

    def __init__(self, path: Path, *, main: bool) -> None:
        self.path = path
        self.main = main
        self._tb = None

    @classmethod
    def create(cls, cfg: TrainConfig, *, main: bool) -> RunFiles:
        name = cfg.run_name or f"{cfg.model.name}_x{cfg.model.scale}_{time.strftime('%Y%m%d-%H%M%S')}"
        path = Path(cfg.out) / name
        if main:
            if (path / STATE_FILE).exists():
                raise ConfigError(f"{path} already holds a run; use --resume {path} or another run_name")
            created = [p for p in (path, *path.parents) if not p.exists()]
            try:
                path.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path / CONFIG_FILE, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
                with open(path / LOG_FILE, "w", newline="") as f:
                    csv.writer(f).writerow(LOG_FIELDS)
            except OSError as e:  # no half-made run directory: remove the folders made here
                if created:
                    shutil.rmtree(created[-1], ignore_errors=True)
                raise OutputError(f"cannot create the run directory {path}: {describe_os_error(e)}") from e
        return cls(path, main=main)

    @staticmethod
    def read_config(path: Path) -> TrainConfig:
        cfg_file = path / CONFIG_FILE
        if not (path / STATE_FILE).is_file() or not cfg_file.is_file():
            raise InputError(f"{path}: not a resumable run directory (needs {CONFIG_FILE} and {STATE_FILE})")
        data = yaml.safe_load(cfg_file.read_text())
        return config_from_dict(data)

    def truncate_log(self, step: int) -> None:
        """Drop log rows after ``step`` (written after the last saved state, before an interruption)."""
        if not self.main:
            return
        path = self.path / LOG_FILE
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= step]
        text = io.StringIO(newline="")
        csv.writer(text).writerows(keep)
        atomic_write_text(path, text.getvalue())

    def log_row(self, **values: Any) -> None:
        if not self.main:
            return
        with open(self.path / LOG_FILE, "a", newline="") as f:
            csv.writer(f).writerow([values.get(k, "") for k in LOG_FIELDS])
        tb = self.tensorboard()
        if tb is not None:
            for key in ("loss", "lr", "val_psnr", "val_ssim"):
                if values.get(key) not in (None, ""):
                    tb.add_scalar(key, float(values[key]), int(values["step"]))

    def tensorboard(self):
        if self._tb is None and self.main:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("tensorboard is not installed; TensorBoard events are not written (pip install tensorboard)")
                self._tb = False
            else:
                self._tb = SummaryWriter(str(self.path))
        return self._tb or None

    def close(self) -> None:
        if self._tb:
            self._tb.close()

    def save_weights(self, which: str, model: nn.Module, cfg: TrainConfig, hparams: dict, metrics: dict) -> Path:
        return save_checkpoint(
            self.path / f"{which}.safetensors", model, arch=cfg.model.name, scale=cfg.model.scale,
            hparams=hparams, recipe=config_to_dict(cfg), metrics=metrics,
        )

    def save_state(self, state: dict[str, Any]) -> None:
        if self.main:
            atomic_torch_save(state, self.path / STATE_FILE)

    def load_state(self) -> dict[str, Any]:
        """The resumable state, every tensor on the CPU.

        ``load_state_dict`` moves model, EMA and optimizer tensors to their parameters' devices, and
        RNG states must stay CPU ByteTensors (loading them onto CUDA makes ``torch.set_rng_state`` fail).
        """
        try:
            return torch.load(self.path / STATE_FILE, map_location="cpu", weights_only=False)
        except Exception as e:
            raise CheckpointError(f"{self.path / STATE_FILE}: cannot read the resumable state ({e})") from e


def check_resume_scale(run: Path, cfg: TrainConfig, scale: int | None, model: str | None) -> None:
    if scale is not None and scale != cfg.model.scale:
        raise UnsupportedScaleError(
            f"{run}: this run trains {cfg.model.name} x{cfg.model.scale}; --scale {scale} does not match "
            f"(drop --scale, or start a new run)"
        )
    if model is not None and model != cfg.model.name:
        raise ConfigError(f"{run}: this run trains {cfg.model.name}; --model {model} does not match")


def progress_bar(total: int, initial: int, desc: str):
    """A tqdm bar for the training loops: live on a terminal, one line a minute when stderr is a log file."""
    from tqdm import tqdm

    live = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=live,
                mininterval=0.1 if live else 60.0)
