"""Runners: worker processes and Ray retry the segment of a worker that died, and Ray runs a folder
one file per task. Real processes (``sr-run`` as a subprocess); clips from :mod:`tests.runtime.video.clips`."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tests.runtime.video.clips import COMMON, check_output, make_clip, sr_run


@pytest.mark.slow
def test_workers_retry_the_segment_of_a_worker_that_died(tmp_path):
    src = make_clip(tmp_path / "clip.mp4")
    dst = tmp_path / "clip_x2.mp4"
    marker = tmp_path / "crashed"
    cmd, env = sr_run(src, *COMMON, "--workers", "2", env={"SR_RUNTIME_TEST_CRASH_SEGMENT": f"1:{marker}"})
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert marker.exists(), "the worker running segment 1 died"
    assert "a worker process died; retrying" in run.stderr
    check_output(dst, src)
    marker.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip_x2.mp4"]


@pytest.mark.slow
def test_ray_runs_segments_and_folders_and_retries_a_dead_actor(tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'sr-runtime[ray]'")
    src = make_clip(tmp_path / "clip.mp4")
    dst = tmp_path / "clip_x2.mp4"
    marker = tmp_path / "crashed"
    cmd, env = sr_run(src, *COMMON, "--ray", env={"SR_RUNTIME_TEST_CRASH_SEGMENT": f"2:{marker}"})
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert marker.exists(), "the actor running segment 2 died and its segment was retried"
    check_output(dst, src)
    # a folder: one file per task, a bad file reported on its own line, the others done
    from PIL import Image

    folder = tmp_path / "shots"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / name)
    (folder / "bad.png").write_bytes(b"not a png")
    cmd, env = sr_run(folder, "-o", tmp_path / "out", "--scale", "2", "--backend", "torch", "--ray")
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr[-3000:]
    assert sum("bad.png" in line and "error" in line for line in run.stderr.splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x2.png", "b_x2.png"]
    assert Image.open(tmp_path / "out" / "a_x2.png").size == (48, 40)

