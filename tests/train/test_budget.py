"""Training that fits a time budget: durations, the progress schedule, the plan, the thread tuner, amp=auto."""

from __future__ import annotations

import csv
import logging
import math

import pytest
import torch

import sr_runtime.machine
from sr_runtime.checkpoint import load_checkpoint
from sr_runtime.errors import ConfigError
from sr_train.config import config_from_dict, load_config, parse_duration
from sr_train.run import Schedule, resolve_amp
from sr_train.threads import ThreadTuner
from sr_train.train import _Budget, train


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("9min", 540)])
def test_durations_parse(text, seconds):
    assert parse_duration(text, "time_budget") == seconds


@pytest.mark.parametrize("text", ["9", "abc", "0m", "2hx", "-5m"])
def test_durations_without_a_unit_or_positive_length_are_refused(text):
    with pytest.raises(ConfigError, match="time_budget"):
        load_config(None, [f"time_budget={text}"])


def test_old_run_configs_with_time_limit_min_still_load():
    assert config_from_dict({"time_limit_min": 9}).time_budget == "9m"
    assert config_from_dict({"time_limit_min": 0}).time_budget is None


def _lrs(sched: Schedule, opt, steps: int, replans: dict[int, int] = {}) -> list[float]:
    out = []
    for k in range(steps):
        if k in replans:
            sched.replan(replans[k])
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def _opt(lr=1e-3):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_a_fixed_plan_is_the_recipe_schedule():
    opt = _opt()
    sched = Schedule(opt, kind="cosine", steps=10, step_size=1, milestones=[], gamma=0.5, min_lr=1e-6)
    lrs = _lrs(sched, opt, 10)
    assert lrs == pytest.approx([1e-6 + (1e-3 - 1e-6) * (1 + math.cos(math.pi * k / 10)) / 2 for k in range(1, 11)])


@pytest.mark.parametrize("new_total", [40, 15])
def test_a_replan_moves_the_end_without_a_jump_back(new_total):
    """A longer or shorter plan mid-run: the rate keeps falling and reaches min_lr on the new last step."""
    opt = _opt()
    sched = Schedule(opt, kind="cosine", steps=20, step_size=1, milestones=[], gamma=0.5, min_lr=1e-6)
    lrs = _lrs(sched, opt, new_total, replans={10: new_total})
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(1e-6)
    assert lrs[-2] > 1e-6  # it ends there, not earlier


def test_a_stretched_multistep_keeps_its_shape():
    opt = _opt()
    sched = Schedule(opt, kind="multistep", steps=100, step_size=1, milestones=[50], gamma=0.5, min_lr=0)
    sched.replan(10)
    lrs = _lrs(sched, opt, 10)
    assert lrs[:4] == [1e-3] * 4 and lrs[5:] == [5e-4] * 5


def test_the_plan_shares_what_is_left_between_steps_and_validations():
    budget = _Budget(100.0, val_every=50)
    budget.val_seconds = 2.0
    # 10 s gone, 2 s kept for the last validation: 88 s at 0.1 s/step + 2 s per 50 steps = 0.14 s/step
    assert budget.plan(step=100, elapsed=10.0, rate=10.0) == 100 + int(88 / 0.14)
    assert not budget.spent(97.9) and budget.spent(98.0)


def test_the_tuner_keeps_the_thread_count_that_steps_fastest():
    """One thread fast while 'the cores are shared', then all threads fast again: it follows both."""
    saved = torch.get_num_threads()
    try:
        tuner = ThreadTuner(2, every_s=1e9, window=3)  # only the drift starts a probe
        fast = {1}
        chosen = []
        for step in range(200):
            if step == 100:
                fast = {2}
            tuner.before_step()
            seconds = 0.01 if torch.get_num_threads() in fast else 0.05
            tuner.after_step(seconds)
            if not tuner.probing:
                chosen.append((step, torch.get_num_threads()))
        assert {n for s, n in chosen if 40 <= s < 100} == {1}
        assert {n for s, n in chosen if s >= 140} == {2}
    finally:
        torch.set_num_threads(saved)


def test_a_single_core_or_a_fixed_count_is_never_tuned():
    saved = torch.get_num_threads()
    try:
        for tuner in (ThreadTuner(1), ThreadTuner(2, enabled=False)):
            for _ in range(50):
                tuner.before_step()
                assert not tuner.probing
                tuner.after_step(0.01)
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_amp_auto_uses_bf16_only_on_cpus_with_bf16_units(monkeypatch, has_bf16):
    monkeypatch.setattr(sr_runtime.machine, "cpu_has_bf16", lambda: has_bf16)
    assert resolve_amp("auto", torch.device("cpu")) == ("bf16" if has_bf16 else "none")
    assert resolve_amp("none", torch.device("cpu")) == "none"
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_amp("fp16", torch.device("cpu"))


@pytest.mark.parametrize("has_bf16", [True, False])
def test_asking_for_bf16_on_a_cpu_without_bf16_units_warns_and_still_obeys(monkeypatch, caplog, has_bf16):
    monkeypatch.setattr(sr_runtime.machine, "cpu_has_bf16", lambda: has_bf16)
    with caplog.at_level(logging.WARNING, logger="sr_train"):
        assert resolve_amp("bf16", torch.device("cpu")) == "bf16"
    warned = "BF16 is emulated here" in caplog.text
    assert warned is not has_bf16


def test_a_budgeted_run_ends_on_time_with_a_validated_best_checkpoint(tmp_path, hr_dirs, monkeypatch):
    """steps=10^6 cannot fit in 8 s: the plan cuts them, the schedule ends near min_lr, best is validated.

    The loop's clock advances 25 ms per reading, whatever the machine is doing, so the plan is the same
    on a busy machine as on an idle one (about 0.1 s per step: some 80 steps in the budget)."""
    import sr_train.train

    now = [0.0]

    def clock() -> float:
        now[0] += 0.025
        return now[0]

    monkeypatch.setattr(sr_train.train, "_clock", clock)
    cfg = load_config(None, [
        "model.name=fsrcnn", "model.scale=2", f"data.train=[{hr_dirs[0]}]", f"data.val={hr_dirs[1]}",
        "data.patch_size=10", "data.batch_size=4", "steps=1000000", "val_every=25", "log_every=1",
        "optim.scheduler=cosine", "optim.lr=1e-3", "optim.min_lr=1e-6", "time_budget=8s",
        f"out={tmp_path / 'runs'}", "run_name=b",
    ])
    run = train(cfg, progress=False)
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    trained = [r for r in rows if r["loss"]]
    vals = [r for r in rows if r["val_psnr"]]
    assert 20 < int(trained[-1]["step"]) < 1000  # what fits in 8 s of this clock, not the recipe's 10^6
    assert 7.0 < float(vals[-1]["seconds"]) <= 8.0  # the final validation starts when the budget is spent
    assert float(trained[-1]["lr"]) < 0.05e-3  # the cosine was stretched to end with the budget
    lrs = [float(r["lr"]) for r in trained]
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))
    best = load_checkpoint(run / "best.safetensors")
    assert best.meta["metrics"]["val_psnr"] == pytest.approx(max(float(r["val_psnr"]) for r in vals), abs=1e-4)
    assert best.meta["metrics"]["val_set"].startswith("sha256:")
