"""An interrupt stops ProcessRunner's worker processes at once instead of waiting out their items."""

from __future__ import annotations

import os
import time

import pytest

from sr_runtime.video.runners import ProcessRunner


def _first_fast_then_slow(up, item):
    if item == 0:
        return os.getpid()
    time.sleep(120)
    return item


def test_an_interrupt_ends_the_worker_processes_without_waiting_for_their_items():
    runner = ProcessRunner({"model": "fsrcnn", "scale": 2, "backend": "torch"}, workers=2)
    items = runner.map(_first_fast_then_slow, [0, 1, 2])
    _, ok, worker_pid = next(items)
    assert ok
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        items.throw(KeyboardInterrupt())
    assert time.monotonic() - started < 30, "the runner waited for the running items to finish"
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)
