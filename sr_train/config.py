"""Training configuration: one dataclass per concern, YAML that only serialises them, ``key=value`` overrides.

Only entry points unpack a :class:`TrainConfig`; library functions take plain arguments. An unknown
key anywhere (YAML or override) is a :class:`~sr_runtime.errors.ConfigError` naming the closest key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from sr_runtime.errors import ConfigError

__all__ = [
    "DataConfig", "ModelConfig", "OptimConfig", "LossConfig", "GANConfig", "TrainConfig",
    "load_config", "apply_overrides", "parse_duration", "config_to_dict", "config_from_dict", "recipe_path", "CONFIG_DIR",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class DataConfig:
    train: list[str] | None = None
    """Folders of HR training images (PNG/JPEG/BMP, any size, searched recursively); None: scikit-image's sample photos."""
    val: str | None = None
    """Folder of HR validation images, scored as full images; None: one held-out scikit-image photo."""
    patch_size: int = 24
    """LR patch side in pixels; the HR patch is ``scale`` times larger."""
    batch_size: int = 16
    device: str = "auto"
    """Where decoded images live and patches are cut, degraded and augmented: auto (the training device), cpu, cuda."""
    augment: bool = True
    """Random horizontal flip, vertical flip and 90-degree rotation, drawn once per pair."""
    scales: list[float] = field(default_factory=lambda: [1.0])
    """Also train on copies of each HR image shrunk by these factors (MATLAB bicubic, 8-bit), e.g.
    ``[1.0, 0.9, 0.8, 0.7, 0.6]``: the augmentation DRRN used on the 291 images. 1.0 is the image itself."""
    shifts: bool = False
    """Also train on each image (and each shrunk copy) shifted by 0 to scale-1 HR pixels down and right
    before its crop to a multiple of the scale: the same photo with its LR sampled on scale x scale grids
    (4 pairs per copy at x2, 9 at x3, 16 at x4), as a photo's content falls on any grid at test time."""

    def __post_init__(self) -> None:
        if isinstance(self.train, str):
            self.train = [self.train]
        if isinstance(self.scales, (int, float)):
            self.scales = [self.scales]
        try:
            self.scales = [float(f) for f in self.scales]
        except (TypeError, ValueError):
            raise ConfigError(f"data.scales must be a list of numbers in (0, 1], got {self.scales!r}") from None
        if not self.scales or any(not 0 < f <= 1 for f in self.scales) or len(set(self.scales)) != len(self.scales):
            raise ConfigError(f"data.scales must be distinct factors in (0, 1], e.g. [1.0, 0.8, 0.6]; got {self.scales}")
        if self.patch_size < 4:
            raise ConfigError(f"data.patch_size must be >= 4 LR pixels, got {self.patch_size}")
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class ModelConfig:
    name: str = "fsrcnn"
    """Registry name (see ``sr_runtime.list_archs()``)."""
    scale: int = 4
    hparams: dict[str, Any] = field(default_factory=dict)
    """Architecture hyperparameters overriding the name's defaults (validated by the registry)."""
    init_from: str | None = None
    """Checkpoint whose matching tensors initialise the model (e.g. FSRCNN x4 from x3, SRGAN from SRResNet)."""


@dataclass
class OptimConfig:
    optimizer: str = "adam"
    """adam or sgd."""
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    """none, step, multistep, exponential or cosine (to ``min_lr`` at the last step)."""
    step_size: int = 10000
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.5
    min_lr: float = 1e-6
    grad_clip: float = 0.0
    """Clip the gradient norm to this (0: off). VDSR and DRRN clip."""

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optim.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.scheduler not in ("none", "step", "multistep", "exponential", "cosine"):
            raise ConfigError(
                f"optim.scheduler must be none, step, multistep, exponential or cosine, got {self.scheduler!r}"
            )
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        self.betas = tuple(self.betas)


@dataclass
class LossConfig:
    kind: str = "mse"
    """l1, mse or charbonnier."""
    eps: float = 1e-3
    """Charbonnier epsilon."""

    def __post_init__(self) -> None:
        if self.kind not in ("l1", "mse", "charbonnier"):
            raise ConfigError(f"loss.kind must be l1, mse or charbonnier, got {self.kind!r}")


@dataclass
class GANConfig:
    """SRGAN only (``train_gan``)."""

    vgg_weights: str | None = None
    """File with torchvision VGG19 ``features.*`` weights for the perceptual loss; required when perceptual_weight > 0."""
    content_weight: float = 1.0
    """MSE content loss weight."""
    perceptual_weight: float = 6e-3
    """VGG54 loss weight (the paper's 1/12.75^2 rescaling folded in)."""
    adv_weight: float = 1e-3
    d_lr: float = 1e-4


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    steps: int = 10000
    """Optimizer steps."""
    val_every: int = 1000
    log_every: int = 50
    ckpt_every: int = 1000
    """Write the resumable ``last`` state every N steps (and at the end, and where Ctrl-C or SIGTERM stops it)."""
    ckpt_minutes: float = 10.0
    """Also write it when this many minutes of training passed since the last write (0: steps only), so a
    crash or ``kill -9`` loses at most that much of a slow run (an EDSR step on a CPU is about a second)."""
    ema: float = 0.0
    """EMA decay for evaluation weights (0: off; e.g. 0.999), warmed up as min(ema, (1+n)/(10+n)) at step n."""
    amp: str = "auto"
    """auto, none, bf16 (autocast on CUDA or CPU) or fp16 (CUDA only, with a grad scaler). auto: bf16
    on a CUDA GPU that supports it and on a CPU with BF16 units (AMX or AVX-512 BF16), else none."""
    threads: int = 0
    """CPU threads for training; 0: every core, dropping to one while another process holds the cores
    (timed every few hundred steps, see :mod:`sr_train.threads`)."""
    patience: int = 0
    """Stop after this many validations without a better PSNR (0: never)."""
    time_budget: str | None = None
    """Wall-clock budget such as ``9m``, ``2h`` or ``1h30m``. A short calibration measures steps/s and
    validation time, ``steps`` becomes what fits, the schedule is stretched to end with it, and the run
    stops (validated, checkpointed) when the budget is spent whatever the speed. None: run ``steps``."""
    seed: int = 0
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda, cuda:N."""
    out: str = "runs"
    """Parent folder of run directories."""
    run_name: str | None = None
    """Run directory name; default ``<model>_x<scale>_<timestamp>``."""

    def __post_init__(self) -> None:
        for name in ("steps", "val_every", "log_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.amp not in ("auto", "none", "bf16", "fp16"):
            raise ConfigError(f"amp must be auto, none, bf16 or fp16, got {self.amp!r}")
        if self.ckpt_minutes < 0:
            raise ConfigError(f"ckpt_minutes must be >= 0 (0: every ckpt_every steps only), got {self.ckpt_minutes}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0 (0: every core, tuned), got {self.threads}")
        if self.time_budget is not None:
            self.time_budget = str(self.time_budget)
            parse_duration(self.time_budget, "time_budget")
        if not 0.0 <= self.ema < 1.0:
            raise ConfigError(f"ema must be in [0, 1), got {self.ema}")

    @property
    def budget_seconds(self) -> float | None:
        """``time_budget`` in seconds, None without one."""
        return None if self.time_budget is None else parse_duration(self.time_budget, "time_budget")


_UNITS = {"h": 3600.0, "m": 60.0, "min": 60.0, "s": 1.0}


def parse_duration(text: str, key: str) -> float:
    """``"2h"``, ``"90m"``, ``"1h30m"``, ``"45s"`` -> seconds (> 0). Raises ConfigError naming ``key``."""
    import re

    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(h|min|m|s)", text.strip().lower())
    rebuilt = "".join(n + u for n, u in parts)
    if not parts or rebuilt != re.sub(r"\s+", "", text.strip().lower()):
        raise ConfigError(f"{key} must be a duration with a unit such as 9m, 2h, 1h30m or 300s, got {text!r}")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ConfigError(f"{key} must be longer than zero, got {text!r}")
    return seconds


def _closest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else f"; valid keys: {', '.join(valid)}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Numbers written as strings (YAML 1.1 reads ``2e-4`` as a string) become the field's type."""
    kinds = [t for t in getattr(hint, "__args__", (hint,)) if t in (int, float)]
    if isinstance(value, str) and kinds:
        for kind in (float,) if float in kinds else (int,):
            try:
                return kind(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and hint is float:
        return float(value)
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"unknown config key {prefix + key!r}{_closest(key, names)}")
        sub = hints[key]
        if dataclasses.is_dataclass(sub):
            kwargs[key] = _build(sub, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, sub, prefix + key)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"bad value in {prefix.rstrip('.') or 'config'}: {e}") from e


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    if "time_limit_min" in data:  # run directories written before time_budget replaced it
        data = dict(data)
        minutes = float(data.pop("time_limit_min") or 0)
        if minutes > 0 and data.get("time_budget") is None:
            data["time_budget"] = f"{minutes:g}m"
    return _build(TrainConfig, data, "")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)

    def plain(v):
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(out)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a config dict; unknown keys raise ConfigError."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (for example optim.lr=1e-4)")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        cls: Any = TrainConfig
        node = data
        for i, part in enumerate(parts):
            if cls is None:  # inside a free-form dict (model.hparams)
                if i < len(parts) - 1:
                    node = node.setdefault(part, {})
                    continue
                node[part] = _parse_value(text)
                break
            names = [f.name for f in fields(cls)]
            if part not in names:
                raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])!r}{_closest(part, names)}")
            sub = get_type_hints(cls)[part]
            if i == len(parts) - 1:
                node[part] = _parse_value(text)
            else:
                node = node.setdefault(part, {})
                cls = sub if dataclasses.is_dataclass(sub) else None
    return data


def recipe_path(name: str, scale: int) -> Path | None:
    """The shipped recipe for ``name`` at ``scale``: ``<name>_x<scale>.yaml``, else ``<name>.yaml``."""
    for candidate in (CONFIG_DIR / f"{name}_x{scale}.yaml", CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML recipe (or start from defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from e
    return config_from_dict(apply_overrides(data, list(overrides)))
