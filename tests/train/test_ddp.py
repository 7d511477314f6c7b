"""Two CPU processes with the gloo backend train in lockstep on different data: their weights stay identical."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

from safetensors.torch import load_file

ARGS = ["-m", "sr_train.cli", "--model", "espcn", "--scale", "2", "--quiet", "steps=6", "val_every=3", "log_every=1",
        "data.batch_size=2", "data.patch_size=8"]


def _first_loss(run):
    with open(run / "log.csv") as f:
        return next(r["loss"] for r in csv.DictReader(f) if r["loss"])


def test_two_gloo_ranks_keep_identical_weights(tmp_path, hr_dirs):
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    data = ["--data", str(hr_dirs[0]), "--val", str(hr_dirs[1]), "--out", str(out)]
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *ARGS, *data,
         "run_name=ddp"], env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # each rank reports the largest difference between its weights and rank 0's after the last step
    sync = [line for line in res.stderr.splitlines() if "ranks in sync" in line]
    assert len(sync) == 2, res.stderr[-3000:]
    assert all(line.rstrip().endswith("max |diff| 0") for line in sync)
    # only rank 0 writes the run directory
    assert (out / "ddp" / "best.safetensors").is_file() and len(list(out.iterdir())) == 1

    # Rank 1 drew other batches than rank 0. A single process draws rank 0's batches: it starts from the
    # same weights and batch (same step-1 loss), and would end with DDP's weights had rank 1 averaged in
    # the same gradients; it ends elsewhere because rank 1's gradients came from other data.
    single = subprocess.run([sys.executable, *ARGS, *data, "run_name=single"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    assert _first_loss(out / "ddp") == _first_loss(out / "single")
    wd, ws = load_file(out / "ddp" / "last.safetensors"), load_file(out / "single" / "last.safetensors")
    diff = max(float((wd[k] - ws[k]).abs().max()) for k in ws)
    assert diff > 1e-6, diff  # exactly 0 when both ranks draw the same batches
