"""Progress: a line every few seconds to a log, a live bar on a terminal."""

from __future__ import annotations

import io

from sr_runtime import progress as progress_mod


def test_progress_to_a_log_writes_a_line_every_few_seconds(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    with progress_mod.Progress("film.mp4", 10_000, stream=out) as bar:
        for n in range(1, 10_001):  # 10 000 frames over 300 s
            clock[0] = n * 0.03
            bar.update_to(n)
    lines = out.getvalue().splitlines()
    assert 300 / progress_mod.LOG_INTERVAL_S - 1 <= len(lines) <= 300 / progress_mod.LOG_INTERVAL_S + 1
    assert "\r" not in out.getvalue() and lines[-1].startswith("film.mp4: 10000/10000 frames (100%)")
    assert "about" in lines[0] and "left" in lines[0]


def test_progress_on_a_terminal_is_a_live_bar():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    with progress_mod.Progress("film.mp4", 100, stream=out) as bar:
        for n in range(1, 101):
            bar.update_to(n)
    assert "\r" in out.getvalue() and "100/100" in out.getvalue()
