"""Creating a run directory: all or nothing, and a failure in plain words."""

from __future__ import annotations

import errno
import os

import pytest

import sr_train.run as run_mod
from sr_runtime.errors import OutputError
from sr_train.config import load_config
from sr_train.run import RunFiles


def test_a_run_directory_that_cannot_be_written_is_removed_whole(tmp_path, monkeypatch):
    cfg = load_config(None, ["model.name=fsrcnn", "model.scale=4", f"out={tmp_path / 'runs' / 'nested'}",
                             "run_name=r"])

    def disk_full(path, text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(run_mod, "atomic_write_text", disk_full)
    with pytest.raises(OutputError, match=r"cannot create the run directory .*/runs/nested/r: .*config.yaml: "
                                          r"no space left on the device; free some space"):
        RunFiles.create(cfg, main=True)
    assert list(tmp_path.iterdir()) == [], "a half-made run directory was left behind"
