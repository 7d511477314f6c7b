"""Shared fixtures: seeding, tiny images, and skips for GPU/TensorRT tests."""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU; none on this machine"))
        if "trt" in item.keywords and not has_trt:
            item.add_marker(
                pytest.mark.skip(reason="needs TensorRT (pip install tensorrt, from NVIDIA's index); not installed here")
            )


@pytest.fixture(autouse=True)
def _runtime_environment(monkeypatch, tmp_path_factory):
    """No test writes the user's cache. The automatic fast path (export, parity gate, probe: seconds
    per checkpoint) is off except in the tests of it (tests/runtime/test_fastpath*.py), which turn it on;
    every other test runs its checkpoints on eager torch, as ``backend="torch"`` does."""
    monkeypatch.setenv("SR_RUNTIME_CACHE", str(tmp_path_factory.getbasetemp() / "sr_runtime_cache"))
    monkeypatch.setenv("SR_RUNTIME_ACCEL", "0")


@pytest.fixture
def fast(monkeypatch, tmp_path):
    """The fast path on (tests/runtime/test_fastpath*.py), with an empty cache of its own."""
    monkeypatch.setenv("SR_RUNTIME_ACCEL", "1")
    root = tmp_path / "cache"
    monkeypatch.setenv("SR_RUNTIME_CACHE", str(root))
    return root


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def photo_rgb_u8() -> np.ndarray:
    """A real photo (scikit-image's astronaut), HWC uint8, 512x512."""
    from skimage import data

    return data.astronaut()


@pytest.fixture
def small_rgb_u8(photo_rgb_u8) -> np.ndarray:
    """A 37x53 crop of a real photo: odd sizes on purpose."""
    return np.ascontiguousarray(photo_rgb_u8[100:137, 200:253])


# --- weights with a real signal, and a guard on reference outputs ----------------------------------
# A freshly initialised FSRCNN or SRCNN outputs almost nothing (about +-0.005): a broken form that
# returns zeros would still score 60+ dB against it. Parity tests use shipped weights where they
# exist and these calibrated weights elsewhere, and check their reference with `informative`.


def _probe_rgb(spec, size: int = 40) -> torch.Tensor:
    """A textured crop of a real photo (scikit-image's astronaut), aligned to ``spec``."""
    from skimage import data

    m = spec.multiple_of
    side = max(-(-size // m) * m, -(-spec.min_size // m) * m)
    img = data.astronaut()[180 : 180 + side, 200 : 200 + side]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


def _net_input(rgb: torch.Tensor, spec) -> torch.Tensor:
    from sr_runtime.color import rgb_to_ycbcr
    from sr_runtime.resize import upscale_bicubic

    x = upscale_bicubic(rgb, spec.scale) if spec.pre_upsample else rgb
    if spec.color == "y":
        x = rgb_to_ycbcr(x)[:, :1]
    return x * spec.value_range


def with_signal(net: torch.nn.Module) -> torch.nn.Module:
    """Rescale ``net``'s last convolution so that its output on a photo is image-like: detail with a
    standard deviation of 0.1 (in [0, 1] units) around a mean of about 0.45, not the near-zero output
    of a fresh initialisation. The output is affine in the last layer, so two probes calibrate it."""
    spec = net.io_spec
    vr = spec.value_range
    x = _net_input(_probe_rgb(spec), spec)
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    last = convs[-1]
    with torch.no_grad():
        weight = last.weight.clone()
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()
        base = net(x)
        last.weight.copy_(weight)
        detail = net(x) - base
        # Last layers without a bias cannot re-centre the detail: bound its mean shift as well.
        spread = detail.std() if last.bias is not None else torch.maximum(detail.std(), detail.mean().abs())
        a = 0.1 * vr / spread.clamp_min(1e-12)
        last.weight.mul_(a)
        if last.bias is not None:
            last.bias.fill_(float(0.45 * vr - (base + a * detail).mean()))
        out = net(x) / vr
    inside = ((out > 0) & (out < 1)).float().mean().item()
    if not (0.03 < out.std().item() < 0.35 and inside > 0.8):
        raise RuntimeError(f"with_signal could not calibrate {type(net).__name__}: std {out.std():.3f}, "
                           f"{inside:.0%} of values inside (0, 1)")
    return net


def signal_net(name: str, scale: int) -> torch.nn.Module:
    """The shipped weights of ``name`` x``scale`` when there are some, else :func:`with_signal` weights."""
    from sr_runtime.archs import build
    from sr_runtime.checkpoint import load_checkpoint
    from sr_runtime.zoo import shipped_path

    path = shipped_path(name, scale)
    if path is not None:
        return load_checkpoint(path).model.eval()
    return with_signal(build(name, scale=scale).eval())


class _ZeroNet(torch.nn.Module):
    def __init__(self, spec) -> None:
        super().__init__()
        self.io_spec = spec

    def forward(self, x):
        r = 1 if self.io_spec.pre_upsample else self.io_spec.scale
        n, c, h, w = x.shape
        return x.new_zeros(n, c, h * r, w * r)


def informative(ref, lr, spec, *, threshold_db: float, margin_db: float = 5.0) -> None:
    """Assert that ``ref`` (a model's RGB output for RGB ``lr``, tensors or NCHW arrays in [0, 1])
    is at least ``margin_db`` below ``threshold_db`` from each broken-form baseline: all zeros, the
    bicubic upscale of ``lr`` (an identity network), and the model's wrapper around a network that
    returns zeros. Then a form that returns one of those cannot pass a parity test at that threshold."""
    from sr_runtime.deploy import DeployModel
    from sr_runtime.metrics import psnr_db
    from sr_runtime.resize import upscale_bicubic

    ref, lr = torch.as_tensor(ref).float(), torch.as_tensor(lr).float()
    with torch.no_grad():
        baselines = {
            "zeros": torch.zeros_like(ref),
            "bicubic": upscale_bicubic(lr, spec.scale).clamp(0, 1),
            "zero network": DeployModel(_ZeroNet(spec)).eval()(lr),
        }
    for what, baseline in baselines.items():
        score = psnr_db(ref, baseline)
        assert score < threshold_db - margin_db, (
            f"reference output is {score:.1f} dB from the {what} baseline: too close to tell a broken form "
            f"from a working one at {threshold_db} dB; use weights with a real signal"
        )


@pytest.fixture(scope="session")
def signal():
    """The helpers above, for tests: ``signal.net(name, scale)``, ``signal.calibrate(net)``,
    ``signal.informative(ref, lr, spec, threshold_db=...)``."""
    import types

    return types.SimpleNamespace(net=signal_net, calibrate=with_signal, informative=informative)
