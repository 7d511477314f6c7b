"""Atomic writes: a failure at any step (full disk, failing fsync or rename, Ctrl-C) leaves the old file as it
was and no temporary file; the data is synced before the rename, which happens inside the target's folder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from sr_runtime.archs import build, resolve_hparams
from sr_runtime.atomic import atomic_write_bytes, atomic_write_text
from sr_runtime.checkpoint import load_checkpoint, read_metadata, save_checkpoint

OLD, NEW = b"old contents\n", b"new contents, longer than the old ones\n" * 100


class _FullDisk:
    """A file that takes half of the first write, then fails as a full disk does (ENOSPC)."""

    def __init__(self, f, error: BaseException) -> None:
        self._f, self._error = f, error

    def write(self, data: bytes) -> int:
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise self._error

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def _fail_write(monkeypatch, error: BaseException) -> None:
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k), error))


def _raise(error: BaseException):
    def fail(*args, **kwargs):
        raise error

    return fail


FAILURES = {
    "disk full during write": ("write", OSError(errno.ENOSPC, "No space left on device")),
    "ctrl-c during write": ("write", KeyboardInterrupt()),
    "fsync fails": ("fsync", OSError(errno.EIO, "Input/output error")),
    "rename fails": ("replace", PermissionError(errno.EACCES, "Permission denied")),
}


def _inject(monkeypatch, failure: str) -> BaseException:
    """Make the step named by ``failure`` raise; returns the error it raises."""
    step, error = FAILURES[failure]
    if step == "write":
        _fail_write(monkeypatch, error)
    else:
        monkeypatch.setattr(os, step, _raise(error))
    return error


@pytest.mark.parametrize("failure", FAILURES)
def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, failure):
    target = tmp_path / "out.bin"
    target.write_bytes(OLD)
    error = _inject(monkeypatch, failure)
    with pytest.raises(type(error)) as raised:
        atomic_write_bytes(target, NEW)
    monkeypatch.undo()
    assert raised.value is error, "the error itself reaches the caller"
    assert target.read_bytes() == OLD, "the old file is untouched"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"], "no temporary file is left behind"


@pytest.mark.parametrize("failure", FAILURES)
def test_failure_on_a_new_file_leaves_nothing(tmp_path, monkeypatch, failure):
    error = _inject(monkeypatch, failure)
    with pytest.raises(type(error)):
        atomic_write_text(tmp_path / "sub" / "new.txt", "text")
    monkeypatch.undo()
    assert list((tmp_path / "sub").iterdir()) == []


def test_data_is_synced_then_renamed_within_the_target_folder(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(OLD)
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", Path(src).parent, Path(src).read_bytes(), target.read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_bytes(target, NEW)
    monkeypatch.undo()
    assert calls == [("fsync", len(NEW)), ("replace", tmp_path, NEW, OLD)], (
        "all the data is synced before the rename, the temp file sits beside the target, "
        "and the target holds the old data until the rename"
    )
    assert target.read_bytes() == NEW
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failed_checkpoint_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    def save(path, **hp):
        hparams = resolve_hparams("fsrcnn", scale=2, **hp)
        return save_checkpoint(path, build("fsrcnn", scale=2, **hparams), arch="fsrcnn", scale=2, hparams=hparams)

    path = save(tmp_path / "model.safetensors", d=8)
    _fail_write(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(OSError, match="No space left"):
        save(path, d=16)
    monkeypatch.undo()
    assert read_metadata(path)["hparams"]["d"] == 8, "the old checkpoint is still there"
    load_checkpoint(path)  # and whole
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
