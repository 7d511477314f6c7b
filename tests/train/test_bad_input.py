"""Bad training input: a one-line error naming the problem, and no run directory left behind."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def _run(args, tmp_path):
    out = tmp_path / "runs"
    res = subprocess.run(
        [sys.executable, "-m", "sr_train.cli", "--model", "fsrcnn", "--scale", "4", "--out", str(out), "--quiet",
         "steps=2", *args], capture_output=True, text=True,
    )
    return res, out


def _check(res, out, pattern):
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("sr-train: error:") and pattern in lines[-1], res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists(), "a run directory was left behind"


def test_empty_data_folder(tmp_path, hr_dirs):
    (tmp_path / "empty").mkdir()
    res, out = _run(["--data", str(tmp_path / "empty"), "--val", str(hr_dirs[1])], tmp_path)
    _check(res, out, "no images")


def test_missing_data_folder(tmp_path, hr_dirs):
    res, out = _run(["--data", str(tmp_path / "nope"), "--val", str(hr_dirs[1])], tmp_path)
    _check(res, out, "not found")


def test_unreadable_image(tmp_path, hr_dirs):
    (hr_dirs[0] / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    res, out = _run(["--data", str(hr_dirs[0]), "--val", str(hr_dirs[1])], tmp_path)
    _check(res, out, "bad.png")


def test_images_smaller_than_a_patch(tmp_path, hr_dirs):
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(small / "s.png")
    res, out = _run(["--data", str(small), "--val", str(hr_dirs[1])], tmp_path)
    _check(res, out, "smaller than one HR patch")


@pytest.mark.parametrize(("args", "pattern"), [(["optim.lrr=1"], "did you mean 'lr'"), (["--scale", "5"], "scale")])
def test_bad_config(tmp_path, hr_dirs, args, pattern):
    res, out = _run(["--data", str(hr_dirs[0]), "--val", str(hr_dirs[1]), *args], tmp_path)
    _check(res, out, pattern)
