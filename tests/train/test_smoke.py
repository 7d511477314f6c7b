"""Every architecture trains a few steps on CPU: finite loss, loadable best/last checkpoints, a CSV log."""

from __future__ import annotations

import csv
import math

import pytest
import torch

import sr_train.train
from sr_runtime.archs import ARCHS, build
from sr_runtime.checkpoint import load_checkpoint, save_checkpoint
from sr_runtime.deploy import DeployModel
from sr_runtime.evaluate import score_image
from sr_train.config import load_config
from sr_train.data import load_hr_folder
from sr_train.run import EMA
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
    # best.safetensors holds the best validation and its PSNR is that checkpoint's, under the protocol
    best = load_checkpoint(run / "best.safetensors")
    val_psnr = best.meta["metrics"]["val_psnr"]
    assert val_psnr == pytest.approx(max(float(r["val_psnr"]) for r in rows if r["val_psnr"]), abs=1e-4)
    hr = load_hr_folder(hr_dirs[1])[0].rgb[None].double()
    again, _ = score_image(hr, scale, model=DeployModel(best.model.eval(), best.model.io_spec).eval())
    assert val_psnr == pytest.approx(again, abs=1e-6)
    # 3 steps from a random init cannot beat bicubic by a dB; even an untrained net is not black (> 0 dB)
    assert 0 < val_psnr < score_image(hr, scale)[0] + 1.0
    assert (run / "config.yaml").is_file() and (run / "last.pt").is_file()


class _RecordingEMA(EMA):
    """The EMA the loop uses, recording the raw weights it starts from and is updated with (float64 copies)."""

    made: list[_RecordingEMA] = []

    def __init__(self, model, decay):
        super().__init__(model, decay)
        self.seen = [{k: p.detach().double().clone() for k, p in model.named_parameters()}]
        self.steps: list[int] = []
        self.made.append(self)

    def update(self, model, n):
        self.seen.append({k: p.detach().double().clone() for k, p in model.named_parameters()})
        self.steps.append(n)
        super().update(model, n)


LR, GAMMA, MIN_LR, STEPS = 1e-3, 0.5, 1e-6, 3
EXPECTED_LR = {  # lr after k optimizer steps, from each scheduler's definition
    "step": lambda k: LR * GAMMA ** (k // 2),  # step_size=2
    "multistep": lambda k: LR * GAMMA ** (k >= 1),  # milestones=[1]
    "exponential": lambda k: LR * GAMMA**k,
    "cosine": lambda k: MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * k / STEPS)) / 2,
    "none": lambda k: LR,
}


def _loss_rows(run):
    with open(run / "log.csv") as f:
        return [r for r in csv.DictReader(f) if r["loss"]]


def test_ema_amp_and_schedulers(tmp_path, hr_dirs, monkeypatch):
    monkeypatch.setattr(sr_train.train, "EMA", _RecordingEMA)
    monkeypatch.setattr(_RecordingEMA, "made", [])
    first_losses = set()
    for sched, lr_at in EXPECTED_LR.items():
        cfg = _cfg(tmp_path, hr_dirs, "espcn", 2, f"optim.scheduler={sched}", "optim.step_size=2",
                   "optim.milestones=[1]", f"optim.lr={LR}", f"optim.gamma={GAMMA}", f"optim.min_lr={MIN_LR}",
                   f"steps={STEPS}", "ema=0.9", "amp=bf16", "loss.kind=charbonnier", "optim.grad_clip=0.5",
                   f"run_name={sched}")
        run = train(cfg, progress=False)
        rows = _loss_rows(run)
        assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
        for r in rows:
            assert float(r["lr"]) == pytest.approx(lr_at(int(r["step"])), rel=1e-5), (sched, r)
        first_losses.add(rows[0]["loss"])

        # EMA: e_0 = the initial weights, e_k = d_k e_(k-1) + (1 - d_k) w_k after each optimizer step, with the
        # warmed-up decay d_k = min(0.9, k / (9 + k)) (update number n = k - 1: (1 + n) / (10 + n))
        ema = _RecordingEMA.made[-1]
        assert len(ema.seen) == STEPS + 1
        assert ema.steps == list(range(STEPS))
        state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
        for name, w_last in state["model"].items():
            if name not in ema.seen[0]:
                continue
            assert torch.equal(ema.seen[-1][name].float(), w_last), f"the EMA's last update did not see {name}"
            expected = ema.seen[0][name]
            for k, seen in enumerate(ema.seen[1:], start=1):
                d = min(0.9, k / (9 + k))
                expected = d * expected + (1 - d) * seen[name]
            torch.testing.assert_close(state["ema"][name].double(), expected, rtol=0, atol=1e-6)
            # and it lags the raw weights: after 3 small steps it is nearer the start than w_3 is
            assert (state["ema"][name].double() - ema.seen[0][name]).abs().sum() <= (
                w_last.double() - ema.seen[0][name]).abs().sum()
        moved = max(float((state["ema"][k] - state["model"][k]).abs().max()) for k in ema.seen[0])
        assert moved > 1e-5, "the EMA equals the raw weights"
        # what validation scored and last.safetensors holds are the EMA weights
        last = load_checkpoint(run / "last.safetensors").model.state_dict()
        assert all(torch.equal(last[k], state["ema"][k]) for k in ema.seen[0])

    # bf16 autocast really ran: step 1 (same init, same batch for every scheduler) differs from float32
    assert len(first_losses) == 1
    cfg = _cfg(tmp_path, hr_dirs, "espcn", 2, "steps=1", "loss.kind=charbonnier", "optim.grad_clip=0.5", "amp=none",
               "run_name=fp32")
    fp32 = float(_loss_rows(train(cfg, progress=False))[0]["loss"])
    bf16 = float(first_losses.pop())
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.05)


def test_ema_warms_up():
    """A new tail (partial init_from) must not dominate the EMA for thousands of steps: the decay warms up."""
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, 0.999)
    assert ema.decay_at(0) == pytest.approx(0.1)
    assert ema.decay_at(10**6) == 0.999
    with torch.no_grad():
        model.weight.fill_(1.0)  # the weights jump at once, as a fresh tail's do in its first steps
    for n in range(100):
        ema.update(model, n)
    # constant 0.999: 1 - 0.999**100 = 0.095 of the way; warmed up: 1 - prod((1+n)/(10+n)) > 0.99
    assert float(ema.model.weight) > 0.99
    resumed = EMA(model, 0.999)  # a resumed run continues the sequence at the global step
    resumed.model.load_state_dict(ema.model.state_dict())
    with torch.no_grad():
        model.weight.fill_(2.0)
    resumed.update(model, 100)
    before = float(ema.model.weight)
    assert float(resumed.model.weight) == pytest.approx(before + (2.0 - before) * 9 / 110)  # decay_at(100) = 101/110


def test_srgan_loop(tmp_path, hr_dirs, caplog):
    from sr_train.losses import _VGG19

    caplog.set_level("INFO", logger="sr_train")

    torch.manual_seed(1)  # not the loop's seed: weights a fresh build would not have
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

    cfg = _cfg(tmp_path, hr_dirs, "srgan", 2, f"model.init_from={init}", f"gan.vgg_weights={tmp_path / 'vgg19.pth'}",
               "data.scales=[1.0,0.75]")
    run = train_gan(cfg, progress=False)
    assert "4 training images (8 with data.scales [1.0, 0.75])" in caplog.text
    ckpt = load_checkpoint(run / "best.safetensors")
    assert ckpt.arch == "srgan"
    # initialised from the SRResNet: 3 Adam steps (about lr = 1e-3 each) away from it, and far from a fresh init
    torch.manual_seed(cfg.seed)
    fresh = build("srgan", scale=2).state_dict()
    start, final = dict(gen.named_parameters()), dict(ckpt.model.named_parameters())
    assert start.keys() == final.keys()
    for k in start:  # parameters only: BatchNorm running statistics move by their momentum
        assert (final[k] - start[k]).abs().max() <= 4 * 3 * cfg.optim.lr, k
    assert (final["head.0.weight"] - fresh["head.0.weight"]).abs().max() > 0.05
    # then moved by the adversarial steps
    assert not torch.equal(ckpt.model.tail.weight, gen.tail.weight)


def test_srgan_without_vgg_weights_is_a_clear_error(tmp_path, hr_dirs):
    from sr_runtime.errors import ConfigError
    from sr_train.train_gan import train_gan

    cfg = _cfg(tmp_path, hr_dirs, "srgan", 2, "model.init_from=x.safetensors")
    with pytest.raises(ConfigError, match="vgg_weights"):
        train_gan(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


def test_data_scales_reach_the_training_patches(tmp_path, hr_dirs, caplog):
    caplog.set_level("INFO", logger="sr_train")
    train(_cfg(tmp_path, hr_dirs, "fsrcnn", 2, "data.scales=[1.0,0.75]", "steps=1"), progress=False)
    assert "4 training images (8 with data.scales [1.0, 0.75])" in caplog.text
    train(_cfg(tmp_path, hr_dirs, "fsrcnn", 2, "data.scales=[1.0,0.75]", "data.shifts=true", "steps=1",
               "run_name=shifts"), progress=False)
    assert "4 training images (32 with data.scales [1.0, 0.75] and data.shifts)" in caplog.text
