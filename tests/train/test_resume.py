"""A run killed part-way and resumed continues from its saved step and ends where an uninterrupted run ends."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file


def _cmd(hr_dirs, out, run_name, steps=300, ema=0.0):
    return [sys.executable, "-m", "sr_train.cli", "--model", "fsrcnn", "--scale", "2", "--data", str(hr_dirs[0]),
            "--val", str(hr_dirs[1]), "--out", str(out), "--quiet", f"steps={steps}", "log_every=1",
            "ckpt_every=7", "val_every=100", "data.batch_size=4", "data.patch_size=10", "time_budget=null",
            f"ema={ema}", f"run_name={run_name}"]


def _rows(run):
    """Every row of log.csv in file order (duplicates kept: a step logged twice must show)."""
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


def _losses(run):
    return [(int(r["step"]), r["loss"]) for r in _rows(run) if r["loss"]]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_killed_then_resumed_run_equals_uninterrupted_run(tmp_path, hr_dirs):
    """With EMA on: the resumed process restores model, EMA, optimizer and RNG at the saved step, not step 0."""
    out = tmp_path / "runs"
    proc = subprocess.Popen(_cmd(hr_dirs, out, "killed", ema=0.999), env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    log = out / "killed" / "log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) > 40 and (out / "killed" / "last.pt").exists():
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; raise steps"
    saved = torch.load(out / "killed" / "last.pt", map_location="cpu", weights_only=False)["step"]
    assert 7 <= saved < 300 and saved % 7 == 0
    before = [r for r in _rows(out / "killed") if int(r["step"]) <= saved]

    resumed = subprocess.run([sys.executable, "-m", "sr_train.cli", "--resume", str(out / "killed"), "--quiet"],
                             env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    # the resumed process started from the saved state, not from scratch ...
    assert re.search(rf"resumed \S+ at step {saved} ", resumed.stderr), resumed.stderr[-2000:]
    rows = _rows(out / "killed")
    # ... kept the killed process's rows up to that step as they were, dropped the ones after it ...
    assert rows[: len(before)] == before
    # ... and logged each later step exactly once.
    assert [s for s, _ in _losses(out / "killed")] == list(range(1, 301))
    assert [int(r["step"]) for r in rows if r["val_psnr"]] == [100, 200, 300]

    full = subprocess.run(_cmd(hr_dirs, out, "full", ema=0.999), env=ENV, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    assert _losses(out / "killed") == _losses(out / "full")
    # last.safetensors holds the EMA weights (what validation scores); last.pt the raw model and the EMA
    wa, wb = load_file(out / "killed" / "last.safetensors"), load_file(out / "full" / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
    sa, sb = (torch.load(out / r / "last.pt", map_location="cpu", weights_only=False) for r in ("killed", "full"))
    for part in ("model", "ema"):
        assert all(torch.equal(sa[part][k], sb[part][k]) for k in sb[part]), part
    assert not all(torch.equal(sb["model"][k], sb["ema"][k]) for k in sb["model"]), "EMA is not on"


@pytest.mark.parametrize("bad", ["--scale", "--model"])
def test_resume_with_a_different_scale_or_model_is_refused(tmp_path, hr_dirs, bad):
    out = tmp_path / "runs"
    subprocess.run(_cmd(hr_dirs, out, "r", steps=2), env=ENV, check=True, capture_output=True)
    value = "3" if bad == "--scale" else "espcn"
    res = subprocess.run([sys.executable, "-m", "sr_train.cli", "--resume", str(out / "r"), bad, value],
                         env=ENV, capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "does not match" in res.stderr


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a shell that started the tests in the background ignores it


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_kill_saves_the_step_it_stopped_at_and_the_resumed_run_is_exact(tmp_path, hr_dirs, sig, code):
    """Ctrl-C or ``kill`` mid-run: the step it stopped at is saved (not the last periodic checkpoint:
    there is none here), the exit code and line say so, and resuming ends where an uninterrupted run ends."""
    out = tmp_path / "runs"
    cmd = [*_cmd(hr_dirs, out, "stopped"), "ckpt_every=100000", "ckpt_minutes=0"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)
    log = out / "stopped" / "log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and len(log.read_text().splitlines()) > 40):
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    stopped = int(re.search(r"sr-train: stopped at step (\d+) of 300; its state is saved", err).group(1))
    assert 40 <= stopped < 300, err[-2000:]
    assert torch.load(out / "stopped" / "last.pt", map_location="cpu", weights_only=False)["step"] == stopped
    assert max(s for s, _ in _losses(out / "stopped")) == stopped  # no logged step was lost
    assert f"--resume {out / 'stopped'}" in err

    resumed = subprocess.run([sys.executable, "-m", "sr_train.cli", "--resume", str(out / "stopped"), "--quiet"],
                             env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(rf"resumed \S+ at step {stopped} ", resumed.stderr), resumed.stderr[-2000:]
    full = subprocess.run(_cmd(hr_dirs, out, "full"), env=ENV, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr
    assert _losses(out / "stopped") == _losses(out / "full")
    wa, wb = load_file(out / "stopped" / "last.safetensors"), load_file(out / "full" / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wb)
