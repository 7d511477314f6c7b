"""What the loops share, on the paths a GPU run takes: DDP collectives' device, RNG states after a load, TF32."""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
import pytest
import torch

import sr_train.run as run_mod
from sr_runtime.archs import build
from sr_runtime.failures import Terminated
from sr_runtime.resize import upscale_bicubic
from sr_train.data import HRImage
from sr_train.run import Dist, RunFiles, StopSignals, rng_state, set_rng_state, validate


def _draws() -> tuple:
    return torch.rand(4).tolist(), np.random.rand(2).tolist(), random.random()


class _Reduced(Exception):
    pass


def test_agree_reduces_a_tensor_on_the_training_device(monkeypatch):
    """An NCCL group reduces CUDA tensors only: the flag must live where training does (meta stands in for CUDA)."""
    seen = []

    def all_reduce(t, op=None):
        seen.append(t.device)
        raise _Reduced  # a meta tensor holds no value to read back

    monkeypatch.setattr(run_mod.dist, "all_reduce", all_reduce)
    with pytest.raises(_Reduced):
        Dist(rank=0, world=2, device=torch.device("meta")).agree(True)
    assert seen == [torch.device("meta")]


@pytest.mark.parametrize(("mine", "other", "expected"),
                         [(False, False, False), (False, True, True), (True, False, True)])
def test_agree_is_true_on_every_rank_when_any_rank_says_so(monkeypatch, mine, other, expected):
    def all_reduce(t, op=None):  # the other rank's flag, reduced with MAX
        assert op == run_mod.dist.ReduceOp.MAX and t.device.type == "cpu"
        t.copy_(torch.maximum(t, torch.tensor([float(other)])))

    monkeypatch.setattr(run_mod.dist, "all_reduce", all_reduce)
    assert Dist(rank=1, world=2, device=torch.device("cpu")).agree(mine) is expected


def test_single_process_agree_needs_no_group():
    assert Dist(device=torch.device("cpu")).agree(True) is True


@pytest.mark.parametrize("moved", ["int32", "float64"])
def test_rng_state_moved_off_cpu_bytes_still_restores_the_stream(moved):
    """torch.load(map_location=cuda) turns the saved RNG state into a CUDA tensor, which torch.set_rng_state
    rejects like any non-CPU-ByteTensor; on CPU another dtype hits the same check."""
    state = rng_state()
    expected = _draws()
    state = {**state, "torch": state["torch"].to(getattr(torch, moved))}
    set_rng_state(state)
    assert _draws() == expected


def test_resumable_state_loads_on_cpu_and_restores_the_stream(tmp_path):
    files = RunFiles(tmp_path, main=True)
    files.save_state({"rng": rng_state(), "w": torch.ones(2)})
    expected = _draws()
    state = files.load_state()
    assert state["rng"]["torch"].device.type == "cpu" and state["rng"]["torch"].dtype == torch.uint8
    set_rng_state(state["rng"])
    assert _draws() == expected


def test_validation_runs_without_tf32():
    """cuDNN's TF32 default would put ~1e-3 errors into the colour conversion and bicubic of validation."""
    seen = []

    class Probe(torch.nn.Module):
        io_spec = build("espcn", scale=2).io_spec

        def forward(self, x):
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
            return upscale_bicubic(x, 2)

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    image = HRImage("x", torch.rand(3, 40, 40))
    validate(Probe(), Probe.io_spec, [image], torch.device("cpu"))
    assert seen == [(False, False)]
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_a_second_signal_stops_training_at_once():
    """The first Ctrl-C/SIGTERM is deferred to the step boundary; a second one raises where it lands,
    SIGTERM as Terminated (exit 143), and the previous handlers come back afterwards."""
    def unhandled(signum, frame):  # not SIG_DFL, which would end pytest if StopSignals installed nothing
        raise AssertionError("SIGTERM reached the handler installed before StopSignals")

    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        _second_signal()
    finally:
        signal.signal(signal.SIGTERM, before)


def _second_signal():
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert signals.requested == signal.SIGTERM
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert isinstance(signals.interrupt("x"), Terminated)
    assert signal.getsignal(signal.SIGTERM).__name__ == "unhandled"


@pytest.mark.parametrize("name, scale", [("edsr", 3), ("edsr", 4), ("espcn", 2)])
def test_training_pixel_shuffle_gives_the_registry_models_values_and_gradients(name, scale):
    """The trainer swaps nn.PixelShuffle for a channels-last one: same outputs, same gradients, same state dict."""
    torch.manual_seed(0)
    ref = build(name, scale=scale).to(memory_format=torch.channels_last)
    fast = run_mod.channels_last_shuffles(build(name, scale=scale).to(memory_format=torch.channels_last))
    fast.load_state_dict(ref.state_dict())
    assert any(isinstance(m, run_mod.ChannelsLastPixelShuffle) for m in fast.modules())
    assert not any(type(m) is torch.nn.PixelShuffle for m in fast.modules())
    assert fast.state_dict().keys() == ref.state_dict().keys()
    channels = 3 if name == "edsr" else 1
    x = torch.rand(2, channels, 13, 9).contiguous(memory_format=torch.channels_last)
    outs = []
    for model in (ref, fast):
        model.zero_grad()
        out = model(x)
        (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()
        outs.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=0)
    for g_fast, g_ref in zip(outs[1][1], outs[0][1]):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-5, atol=1e-6)
