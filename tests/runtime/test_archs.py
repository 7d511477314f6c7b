"""Every registered architecture: builds at each scale, honours its IOSpec, and rejects bad hyperparameters."""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from sr_runtime.archs import ARCHS, build, resolve_hparams
from sr_runtime.deploy import DeployModel
from sr_runtime.errors import ConfigError, UnsupportedArchError, UnsupportedScaleError

CASES = [(name, scale) for name, entry in ARCHS.items() for scale in entry.scales]


def _lr_size(spec, base=(13, 17)):
    """An LR size that satisfies the contract (multiple_of, min_size) and is not square."""
    h, w = (max(b, spec.min_size) for b in base)
    m = spec.multiple_of
    return -(-h // m) * m, -(-w // m) * m


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_network_output_shape_follows_its_io_spec(name, scale):
    net = build(name, scale=scale).eval()
    spec = net.io_spec
    assert spec.scale == scale
    h, w = _lr_size(spec)
    # pre-upsampling networks take the bicubic-upscaled image, others the LR image
    ih, iw = (h * scale, w * scale) if spec.pre_upsample else (h, w)
    x = torch.rand(2, spec.in_channels, ih, iw)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, spec.in_channels, h * scale, w * scale)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_deploy_wrapper_maps_rgb_to_rgb_at_scale(name, scale):
    net = build(name, scale=scale).eval()
    model = DeployModel(net)
    h, w = _lr_size(net.io_spec)
    with torch.no_grad():
        out = model(torch.rand(1, 3, h, w))
    assert out.shape == (1, 3, h * scale, w * scale)
    assert out.min() >= 0 and out.max() <= 1


class _DeviceRecorder(TorchDispatchMode):
    """Records the device of every tensor that any aten op reads."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: set[str] = set()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for t in pytree.tree_leaves((args, kwargs or {})):
            if isinstance(t, torch.Tensor):
                self.devices.add(t.device.type)
                if t.device.type != "meta":
                    self.ops.add(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", list(ARCHS))
def test_deploy_forward_reads_no_host_tensor_once_moved(name):
    """Constants (YCbCr matrices, bicubic filters, mean shifts) move with the module: after
    ``.to(device)`` the forward pass touches tensors on that device only. A host constant copied per
    call is illegal inside CUDA graph capture; the meta device stands in for CUDA here."""
    scale = ARCHS[name].scales[0]
    model = DeployModel(build(name, scale=scale)).eval().to("meta")
    h, w = _lr_size(model.spec)
    recorder = _DeviceRecorder()
    with torch.no_grad(), recorder:
        out = model(torch.empty(1, 3, h, w, device="meta"))
    assert out.shape == (1, 3, h * scale, w * scale)
    assert recorder.devices == {"meta"}, f"ops read host tensors: {sorted(recorder.ops)}"


@pytest.mark.parametrize("name", list(ARCHS))
def test_hyperparameters_are_keyword_only_and_typos_fail(name):
    entry = ARCHS[name]
    scale = entry.scales[0]
    with pytest.raises(TypeError):
        entry.cls(scale)  # positional use is rejected
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        build(name, scale=scale, not_a_real_option=3)


def test_unknown_arch_suggests_the_closest_name():
    with pytest.raises(UnsupportedArchError, match="did you mean 'edsr'|Did you mean 'edsr'"):
        build("edrs", scale=4)


def test_unsupported_scale_lists_supported_ones():
    with pytest.raises(UnsupportedScaleError, match="supported scales: 2, 4"):
        build("srresnet", scale=3)


def test_paper_sizes():
    """Spot checks that the defaults are the papers' networks, not toy versions."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build("fsrcnn", scale=3)) == 12_464 + 173 + 172  # paper weights, biases, PReLU slopes
    vdsr = build("vdsr", scale=2)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in vdsr.modules()) == 20
    edsr = build("edsr", scale=4)
    assert 1.3e6 < count(edsr) < 1.6e6  # EDSR baseline: ~1.5M
    large = resolve_hparams("edsr-large", scale=4)
    assert (large["n_resblocks"], large["n_feats"], large["res_scale"]) == (32, 256, 0.1)
    red10 = build("red10", scale=2)
    assert [c.out_channels for c in red10.encoder] == [32, 48, 64, 96, 128]
    assert [c.kernel_size[0] for c in red10.encoder] == [7, 7, 5, 5, 3]
    assert len(build("red30", scale=2).encoder) == 15
    drrn = build("drrn", scale=2)
    assert drrn.n_units == 9 and build("drrn", scale=2, n_units=25).n_units == 25
    srcnn955 = build("srcnn", scale=3, f2=5)
    assert srcnn955.conv2.kernel_size == (5, 5)


def test_drrn_units_share_weights():
    small = build("drrn", scale=2, n_units=1)
    big = build("drrn", scale=2, n_units=25)
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in big.parameters())


def test_unpadded_rednet_declares_its_minimum_size():
    net = build("red30", scale=2).eval()
    spec = net.io_spec
    side = spec.min_size * 2
    with torch.no_grad():
        assert net(torch.rand(1, 1, side, side)).shape[-1] == side
    with pytest.raises(RuntimeError):
        net(torch.rand(1, 1, side - 2, side - 2))


@pytest.mark.parametrize("res_scale", [1.0, 0.1])
def test_residual_block_adds_its_body_scaled_by_res_scale(res_scale):
    """EDSR's block is x + res_scale * body(x); at 1.0 (the baseline) the multiply is skipped, not the scale."""
    from sr_runtime.archs.blocks import ResidualBlock

    torch.manual_seed(0)
    block = ResidualBlock(8, res_scale=res_scale).eval()
    x = torch.randn(2, 8, 7, 5)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + res_scale * block.body(x))
