"""Progress for people and for logs: a live bar on a terminal, a line every few seconds elsewhere.

tqdm redraws its bar at every update; written to a log file or a pipe that is one line per frame
(megabytes for a long video). :class:`Progress` uses tqdm on a TTY and otherwise writes at most one
plain line every :data:`LOG_INTERVAL_S` seconds, plus a last one when it closes.
"""

from __future__ import annotations

import sys
import time
from typing import IO

__all__ = ["LOG_INTERVAL_S", "Progress"]

LOG_INTERVAL_S = 5.0
"""Seconds between two progress lines when the output is not a terminal."""


class Progress:
    """Counts ``unit`` s towards ``total`` (0 or None: unknown); :meth:`update_to` sets the count.

    ``disable``: show nothing. ``stream``: where to write (default stderr). Use as a context manager.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        *,
        unit: str = "frame",
        initial: int = 0,
        disable: bool = False,
        stream: IO[str] | None = None,
        interval: float = LOG_INTERVAL_S,
    ) -> None:
        self.desc, self.unit, self.total = desc, unit, total or None
        self.n = initial
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._disabled = disable
        self._bar = None
        self._start = time.monotonic()
        self._start_n = initial
        self._last_line = self._start
        self._dirty = False
        if disable:
            return
        isatty = getattr(self._stream, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                desc=desc, total=self.total, unit=unit, initial=initial, file=self._stream, dynamic_ncols=True
            )

    def set_total(self, total: int | None) -> None:
        self.total = total or None
        if self._bar is not None and self._bar.total != self.total:
            self._bar.total = self.total
            self._bar.refresh()

    def update_to(self, n: int) -> None:
        """Set the count to ``n`` (e.g. frames done so far)."""
        if self._disabled:
            self.n = n
            return
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
            self.n = n
            return
        self.n = n
        self._dirty = True
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._line(now)

    def update(self, k: int = 1) -> None:
        self.update_to(self.n + k)

    def _line(self, now: float) -> None:
        elapsed = now - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        if self.total:
            text = f"{self.desc}: {self.n}/{self.total} {self.unit}s ({100.0 * self.n / self.total:.0f}%)"
            if rate > 0 and self.n < self.total:
                text += f", {rate:.2f} {self.unit}/s, about {_duration((self.total - self.n) / rate)} left"
        else:
            text = f"{self.desc}: {self.n} {self.unit}s" + (f", {rate:.2f} {self.unit}/s" if rate > 0 else "")
        print(text, file=self._stream, flush=True)
        self._last_line = now
        self._dirty = False

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif not self._disabled and self._dirty:
            self._line(time.monotonic())
        self._disabled = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
