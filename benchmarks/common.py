"""Measurement primitives shared by every benchmark: timers with device synchronisation,
percentiles, peak memory, the environment record and atomic file writes.

Nothing here knows about models or backends.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sr_runtime.atomic import atomic_write_text

__all__ = [
    "Timing",
    "time_calls",
    "percentiles",
    "device_sync",
    "PeakMemory",
    "environment",
    "git_revision",
    "write_json",
    "json_safe",
    "REPO_ROOT",
    "SPEED_FLAGS",
]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


def device_sync(device: str) -> Callable[[], None]:
    """A function that waits for all queued work on ``device`` ("cpu" or "cuda[:n]") to finish.

    Without it a CUDA timer measures only the kernel launches.
    """
    if str(device).startswith("cuda"):
        import torch

        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    return lambda: None


def percentiles(samples_ms: list[float] | np.ndarray, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` with linear interpolation between samples.

    With few samples the high percentiles approach the maximum; the row records ``runs`` so a
    reader can tell.
    """
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("percentiles of an empty sample")
    return {f"p{q:g}": float(np.percentile(arr, q)) for q in qs}


@dataclass
class Timing:
    """Latencies of one measured callable, in milliseconds."""

    first_ms: float
    """The very first call (cold: lazy initialisation, allocator growth, kernel selection)."""
    samples_ms: list[float]
    """One per timed call, after the warm-up."""
    warmup: int

    @property
    def runs(self) -> int:
        return len(self.samples_ms)

    def summary(self) -> dict[str, float]:
        """p50/p95/p99, mean, min, max and the standard deviation (ms)."""
        arr = np.asarray(self.samples_ms)
        out = percentiles(arr)
        out.update(
            mean=float(arr.mean()),
            min=float(arr.min()),
            max=float(arr.max()),
            std=float(arr.std()),
        )
        return out


def time_calls(fn: Callable[[], Any], *, warmup: int, runs: int, sync: Callable[[], None] | None = None) -> Timing:
    """Time ``fn``: one cold call, ``warmup`` untimed calls, then ``runs`` timed calls.

    ``sync`` (see :func:`device_sync`) runs before the clock starts and before it stops, so each
    sample covers the complete work of one call on an asynchronous device.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    sync = sync or (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return Timing(first_ms=first_ms, samples_ms=samples, warmup=warmup)


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    """Hand free heap memory back to the OS (glibc ``malloc_trim``), so that memory freed by earlier
    work does not hide this block's allocations from the RSS delta. No-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory used while the ``with`` block runs, in MiB (``.mib``), and how it was measured (``.kind``).

    * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (``kind`` =
      ``"cuda_max_memory_allocated"``): the peak of torch's allocator, weights included. Memory that
      ONNX Runtime or TensorRT allocate themselves is invisible to it, so for those backends pass
      ``torch_allocator=False``: the device-wide used memory (``torch.cuda.mem_get_info``) is sampled
      after the block, minus before (``"cuda_device_used_delta"``), a coarse figure that counts
      other processes too.
    * CPU: the increase of the process's peak resident set: ``/proc/self/clear_refs`` resets the
      high-water mark VmHWM on entry, and the result is VmHWM on exit minus VmRSS on entry
      (``"cpu_peak_rss_delta"``), after glibc's ``malloc_trim`` has returned free heap pages. Memory
      already resident when the block starts (weights, ONNX Runtime's arena from earlier calls) is
      not counted, so this is the extra memory the block needed, not the process's footprint. Without ``clear_refs`` the lifetime peak
      ``ru_maxrss`` is used, whose delta is only a lower bound (``"cpu_ru_maxrss_delta_lower_bound"``).
    """

    def __init__(self, device: str, *, torch_allocator: bool = True) -> None:
        self.device = str(device)
        self.torch_allocator = torch_allocator
        self.mib: float | None = None
        self.kind: str = ""

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)
            if self.torch_allocator:
                torch.cuda.reset_peak_memory_stats(self.device)
                self.kind = "cuda_max_memory_allocated"
            else:
                free, total = torch.cuda.mem_get_info(self.device)
                self._base = total - free
                self.kind = "cuda_device_used_delta"
            return self
        _trim_heap()
        rss = _proc_status_kib("VmRSS")
        if rss is not None and _reset_peak_rss():
            self._base = rss
            self.kind = "cpu_peak_rss_delta"
        else:
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            self.kind = "cpu_ru_maxrss_delta_lower_bound"
        return self

    def __exit__(self, *exc) -> None:
        if self.kind == "cuda_max_memory_allocated":
            import torch

            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self.kind == "cuda_device_used_delta":
            import torch

            torch.cuda.synchronize(self.device)
            free, total = torch.cuda.mem_get_info(self.device)
            self.mib = max(0, (total - free) - self._base) / 2**20
        elif self.kind == "cpu_peak_rss_delta":
            peak = _proc_status_kib("VmHWM") or self._base
            self.mib = max(0, peak - self._base) / 1024
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.mib = max(0, peak - self._base) / 1024


def git_revision(root: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout at ``root``."""

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit or None, "dirty": None if status is None else bool(status)}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    kib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
    except OSError:
        return None
    return None if kib is None else round(kib / 2**20, 1)


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "unknown")
    except Exception:  # not installed, or broken native library: either way, no version to report
        return None


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return out.stdout.strip().splitlines()[0] or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16",
               "amx_int8")
"""CPU units that change which forms are fast (the BF16 candidates need avx512_bf16 or amx_bf16)."""


def environment() -> dict[str, Any]:
    """Where the numbers were taken: CPU and its vector/matrix units, GPU, driver, CUDA, library
    versions, commit, time."""
    import torch

    from sr_runtime.machine import cpu_flags

    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    flags = cpu_flags()
    env: dict[str, Any] = {
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        "torch_threads": torch.get_num_threads(),
        "memory_gib": _mem_total_gib(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "numpy": np.__version__,
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "onnxruntime_providers": None,
        "tensorrt": _version("tensorrt"),
        "av": _version("av"),
        "gpu": None,
        "gpu_memory_gib": None,
        "gpu_capability": None,
        "driver": None,
    }
    if env["onnxruntime"]:
        import onnxruntime

        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_count=torch.cuda.device_count(),
            driver=_nvidia_driver(),
        )
    env.update(git_revision())
    return env


def json_safe(value: Any) -> Any:
    """Replace NaN/Inf floats (not valid JSON) by None, recursively; dataclasses become dicts."""
    if hasattr(value, "__dataclass_fields__"):
        value = asdict(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Atomically write ``data`` as indented, strict JSON (NaN/Inf become null)."""
    return atomic_write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
