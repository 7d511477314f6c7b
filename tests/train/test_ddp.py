"""Two CPU processes with the gloo backend train in lockstep: their weights stay identical."""

from __future__ import annotations

import os
import subprocess
import sys


def test_two_gloo_ranks_keep_identical_weights(tmp_path, hr_dirs):
    out = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "sr_train.cli",
         "--model", "espcn", "--scale", "2", "--data", str(hr_dirs[0]), "--val", str(hr_dirs[1]), "--out", str(out),
         "--quiet", "steps=6", "val_every=3", "log_every=1", "data.batch_size=2", "data.patch_size=8", "run_name=ddp"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    # each rank reports the largest difference between its weights and rank 0's after the last step
    sync = [line for line in res.stderr.splitlines() if "ranks in sync" in line]
    assert len(sync) == 2, res.stderr[-3000:]
    assert all(line.rstrip().endswith("max |diff| 0") for line in sync)
    # and they really trained on different data: rank 0 logged, rank 1 did not write a second run
    assert (out / "ddp" / "best.safetensors").is_file() and len(list(out.iterdir())) == 1
