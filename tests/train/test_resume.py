"""A run killed part-way and resumed logs the same per-step losses as an uninterrupted run."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file


def _cmd(hr_dirs, out, run_name, steps=300):
    return [sys.executable, "-m", "sr_train.cli", "--model", "fsrcnn", "--scale", "2", "--data", str(hr_dirs[0]),
            "--val", str(hr_dirs[1]), "--out", str(out), "--quiet", f"steps={steps}", "log_every=1",
            "ckpt_every=7", "val_every=100", "data.batch_size=4", "data.patch_size=10", "time_limit_min=0",
            f"run_name={run_name}"]


def _losses(run):
    with open(run / "log.csv") as f:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(f) if r["loss"]}


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_killed_then_resumed_run_equals_uninterrupted_run(tmp_path, hr_dirs):
    out = tmp_path / "runs"
    proc = subprocess.Popen(_cmd(hr_dirs, out, "killed"), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = out / "killed" / "log.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) > 40 and (out / "killed" / "last.pt").exists():
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; raise steps"
    killed_at = max(_losses(out / "killed"))
    assert killed_at < 300

    resumed = subprocess.run([sys.executable, "-m", "sr_train.cli", "--resume", str(out / "killed"), "--quiet"],
                             env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    full = subprocess.run(_cmd(hr_dirs, out, "full"), env=ENV, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr

    a, b = _losses(out / "killed"), _losses(out / "full")
    assert sorted(a) == list(range(1, 301)) and a == b
    wa, wb = load_file(out / "killed" / "last.safetensors"), load_file(out / "full" / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


@pytest.mark.parametrize("bad", ["--scale", "--model"])
def test_resume_with_a_different_scale_or_model_is_refused(tmp_path, hr_dirs, bad):
    out = tmp_path / "runs"
    subprocess.run(_cmd(hr_dirs, out, "r", steps=2), env=ENV, check=True, capture_output=True)
    value = "3" if bad == "--scale" else "espcn"
    res = subprocess.run([sys.executable, "-m", "sr_train.cli", "--resume", str(out / "r"), bad, value],
                         env=ENV, capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "does not match" in res.stderr
