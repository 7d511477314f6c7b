"""Run equal-shape tiles from concurrent requests as one backend call.

Each request's thread calls :meth:`TileBatcher.run` with the tiles it would have run alone; a single
worker thread owns the backend (backends are not re-entrant), waits up to ``window_s`` for more tiles of
the same shape and dtype, concatenates up to ``max_batch`` of them along the batch axis, runs them once,
and hands every caller its own rows back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import torch

__all__ = ["TileBatcher"]


class _Item:
    __slots__ = ("x", "future", "key")

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.future: Future = Future()
        self.key = (tuple(x.shape[1:]), x.dtype, x.device)


class TileBatcher:
    """A thread-safe ``run(x)`` that batches calls of equal shape.

    ``run_fn`` maps (N, C, h, w) -> (N, C, s*h, s*w) and is only ever called from the worker thread.
    ``max_batch`` bounds the rows per call (a backend's own limit included); ``window_s`` is how long the
    first waiting tile waits for company. ``on_batch(rows)`` is called after each backend call (metrics).
    """

    def __init__(self, run_fn: Callable[[torch.Tensor], torch.Tensor], *, max_batch: int = 4,
                 window_s: float = 0.005, on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._run_fn, self.max_batch, self.window_s = run_fn, max_batch, window_s
        self._on_batch = on_batch
        self._pending: list[_Item] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="sr-serve-batcher", daemon=True)
        self._thread.start()

    def run(self, x: torch.Tensor) -> torch.Tensor:
        """Run ``x`` (N, C, h, w), batched with other callers' tiles of the same shape; blocks until done."""
        item = _Item(x)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._pending.append(item)
            self._cond.notify_all()
        return item.future.result()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def _take(self) -> list[_Item]:
        """The oldest waiting tile and every other one of its shape, up to ``max_batch`` rows."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return []
            first = self._pending[0]
            deadline = time.monotonic() + self.window_s
            while True:
                rows = sum(i.x.shape[0] for i in self._pending if i.key == first.key)
                left = deadline - time.monotonic()
                if rows >= self.max_batch or left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            taken, rows = [], 0
            for item in list(self._pending):
                n = item.x.shape[0]
                if item.key == first.key and (not taken or rows + n <= self.max_batch):
                    taken.append(item)
                    rows += n
                    self._pending.remove(item)
            return taken

    def _loop(self) -> None:
        while True:
            items = self._take()
            if not items:
                return
            try:
                x = items[0].x if len(items) == 1 else torch.cat([i.x for i in items])
                y = self._run_fn(x)
            except BaseException as e:  # every caller of this batch gets the error
                for item in items:
                    item.future.set_exception(e)
                continue
            if self._on_batch is not None:
                self._on_batch(x.shape[0])
            start = 0
            for item in items:
                n = item.x.shape[0]
                item.future.set_result(y[start : start + n])
                start += n
