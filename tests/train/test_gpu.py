"""Training on CUDA: the paths CPU tests can only approximate (NCCL collectives, RNG states after a CUDA load, TF32)."""

from __future__ import annotations

import csv

import pytest
import torch

from sr_runtime.archs import build
from sr_train.config import load_config
from sr_train.data import PairedPatches, load_hr_folder
from sr_train.run import Dist
from sr_train.train import train

pytestmark = pytest.mark.gpu


def _cfg(tmp_path, hr_dirs, *extra):
    return load_config(None, [
        "model.name=fsrcnn", "model.scale=2", f"data.train=[{hr_dirs[0]}]", f"data.val={hr_dirs[1]}",
        "data.patch_size=10", "data.batch_size=2", "steps=2", "val_every=2", "log_every=1", "ckpt_every=1",
        "device=cuda", f"out={tmp_path / 'runs'}", "run_name=r", *extra,
    ])


def _steps(run):
    with open(run / "log.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r["loss"]]


@pytest.mark.parametrize(("name", "scale"), [("vdsr", 3), ("espcn", 2)])
def test_patches_on_cuda_equal_the_cpu_ones(hr_dirs, name, scale):
    """Colour conversion and bicubic run in float64 on the GPU too, not in TF32 (which errs by ~1e-3)."""
    images = load_hr_folder(hr_dirs[0])
    spec = build(name, scale=scale).io_spec
    on = {d: PairedPatches(images, spec=spec, patch_size=10, batch_size=4, device=d) for d in ("cpu", "cuda")}
    for a, b in zip(on["cuda"].inputs + on["cuda"].targets, on["cpu"].inputs + on["cpu"].targets):
        torch.testing.assert_close(a.cpu(), b, rtol=0, atol=1e-6)


def test_resume_on_cuda_restores_rng_states(tmp_path, hr_dirs):
    run = train(_cfg(tmp_path, hr_dirs), progress=False)
    run = train(_cfg(tmp_path, hr_dirs, "steps=4"), resume=run, progress=False)
    assert _steps(run) == [1, 2, 3, 4]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_trains_on_cuda(tmp_path, hr_dirs, amp):
    assert len(_steps(train(_cfg(tmp_path, hr_dirs, f"amp={amp}"), progress=False))) == 2


def test_agree_on_an_nccl_group():
    """An NCCL group has no CPU tensors: agree() must reduce on the CUDA device."""
    import torch.distributed as dist

    torch.cuda.set_device(0)
    dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ranks = Dist(rank=0, world=2, device=torch.device("cuda", 0))  # world > 1 so that agree() reduces
        assert ranks.agree(True) is True and ranks.agree(False) is False
    finally:
        dist.destroy_process_group()
