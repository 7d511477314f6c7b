"""What this CPU can do: feature flags, BF16 units, core count. Read by the fast path's cache keys
and by the trainer's precision choice."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cpu_flags", "cpu_has_bf16", "cpu_count"]

BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""Flags of CPU units that compute in BF16 natively (AVX-512 BF16 dot products, AMX tiles)."""


def cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (Linux), else an empty set."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_bf16() -> bool:
    """True where the CPU has BF16 units (AMX or AVX-512 BF16): BF16 matmuls and convolutions run
    natively there; elsewhere BF16 is emulated and slower than FP32."""
    return bool(cpu_flags() & BF16_FLAGS)


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
