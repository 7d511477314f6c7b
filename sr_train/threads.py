"""Keep a CPU training loop on the thread count that steps fastest while the cores are shared.

A parallel region of OpenMP ends at a barrier: when another process holds the cores, every step
waits for the thread that was descheduled. Measured on a 2-core Xeon: an EDSR x2 BF16 step took
0.30 s on 2 threads alone, 1.8 s on 2 threads beside a test suite, 0.52 s on 1 thread alone. The
tuner times a few real training steps on each candidate count at fixed intervals and keeps the
fastest, so a run slows gracefully when the machine is busy and takes the cores back when it is not.
"""

from __future__ import annotations

import logging
import statistics

import torch

__all__ = ["ThreadTuner"]

log = logging.getLogger("sr_train")


class ThreadTuner:
    """Call :meth:`before_step` and :meth:`after_step` around every training step.

    A probe runs ``window`` steps on each candidate (all cores, then one), drops the first step after
    each switch, and keeps the count with the lowest median step time. Probes run at the start, every
    ``every_s`` seconds, and as soon as the recent median step drifts more than ``drift`` times away
    from what the last probe measured (another process started or stopped). With one core, or
    ``enabled=False``, it does nothing. Changes the process-wide ``torch.set_num_threads``.
    """

    def __init__(self, max_threads: int, *, every_s: float = 120.0, window: int = 6, drift: float = 1.5,
                 enabled: bool = True) -> None:
        self.candidates = [max_threads, 1] if enabled and max_threads > 1 else []
        self.every_s, self.window, self.drift = every_s, window, drift
        self.current = self.chosen = max_threads
        self._probe: list[int] = []  # thread counts still to time, in order
        self._times: dict[int, list[float]] = {}
        self._left = 0  # steps left in this probe window
        self._since = 0.0  # seconds of training since the last probe
        self._reference: float | None = None  # median step of the chosen count at the last probe
        self._recent: list[float] = []
        self._due = True  # the first probe runs at once: the machine may be busy from the start
        torch.set_num_threads(max_threads)

    @property
    def probing(self) -> bool:
        return bool(self._probe)

    def before_step(self) -> None:
        if not self.candidates or self._probe or not self._due:
            return
        self._probe = list(self.candidates)
        self._times = {n: [] for n in self.candidates}
        self._switch(self._probe[0])

    def after_step(self, seconds: float) -> None:
        if not self.candidates:
            return
        if not self._probe:
            self._since += seconds
            self._recent = (self._recent + [seconds])[-self.window:]
            ratio = statistics.median(self._recent) / self._reference if self._reference else 1.0
            drifted = len(self._recent) == self.window and not 1 / self.drift < ratio < self.drift
            self._due = self._since >= self.every_s or drifted
            return
        n = self._probe[0]
        if self._left <= self.window:  # the first step after a switch pays for the change
            self._times[n].append(seconds)
        self._left -= 1
        if self._left > 0:
            return
        self._probe.pop(0)
        if self._probe:
            self._switch(self._probe[0])
            return
        medians = {k: statistics.median(v) for k, v in self._times.items()}
        best = min(medians, key=medians.get)
        if best != self.chosen:
            log.info("training on %d thread(s): %s", best,
                     ", ".join(f"{k} thread(s) {v:.3f} s/step" for k, v in sorted(medians.items(), reverse=True)))
        self._switch(best)
        self.chosen, self._reference = best, medians[best]
        self._left, self._since, self._recent, self._due = 0, 0.0, [], False

    def _switch(self, n: int) -> None:
        torch.set_num_threads(n)
        self.current = n
        self._left = self.window + 1
