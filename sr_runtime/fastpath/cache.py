"""The fast path's cache: built forms of a model (ONNX files, engines, the choice of the fastest) on this machine.

An entry is a directory ``<root>/<key>/`` holding the artifacts and ``entry.json``: what was built,
from what, the sha256 of each artifact, the candidates tried and the one chosen. The key hashes
everything that could make an entry wrong elsewhere: the checkpoint's sha256, the build options,
the versions of torch, onnx, ONNX Runtime, OpenVINO and TensorRT, and the device (GPU name and
compute capability; the CPU's BF16 support).

Writes are atomic (built in a temporary directory beside the entry, then renamed) and serialised by
a file lock per key, so concurrent processes on a cold cache build once and all succeed. An entry
whose files do not match their recorded hashes is reported, removed and rebuilt.

Root: :func:`sr_runtime.options.cache_root`, the one root of every built artifact; besides the
entries it holds the TensorRT engine cache of ``sr-export`` and ONNX Runtime's TensorRT provider
engines (:data:`~sr_runtime.options.TENSORRT_DIR`, :data:`~sr_runtime.options.ORT_TENSORRT_DIR`),
which :func:`list_entries` leaves out and :func:`clear` removes too.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sr_runtime.atomic import sha256_file
from sr_runtime.failures import check_writable_dir
from sr_runtime.machine import cpu_flags
from sr_runtime.options import ORT_TENSORRT_DIR, TENSORRT_DIR, cache_root

__all__ = ["CacheEntry", "cache_key", "clear", "get_or_build", "list_entries", "machine_record"]

log = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
ARTIFACT_DIRS = (TENSORRT_DIR, ORT_TENSORRT_DIR)
"""Folders of the root that hold other built artifacts, not entries."""
FORMAT_VERSION = 1
"""Bump when the layout or the meaning of an entry changes: old entries then miss."""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")
"""TensorRT's pip distributions: the ``tensorrt`` meta package, or only a CUDA-specific one."""


def _first_version(dists: tuple[str, ...]) -> str | None:
    for dist in dists:
        version = _version(dist)
        if version is not None:
            return version
    return None


def machine_record(device: torch.device) -> dict[str, Any]:
    """What an artifact's validity and speed depend on: library versions and the device (on CUDA:
    GPU name, compute capability, the CUDA and cuDNN torch was built with; an engine runs only
    where it was built)."""
    versions = {
        name: _version(dist)
        for name, dist in (
            ("torch", "torch"),
            ("onnx", "onnx"),
            ("onnxruntime", "onnxruntime"),
            ("onnxruntime-gpu", "onnxruntime-gpu"),
            ("onnxconverter-common", "onnxconverter-common"),
            ("openvino", "openvino"),
        )
    }
    versions["tensorrt"] = _first_version(TENSORRT_DISTRIBUTIONS)
    record: dict[str, Any] = {"versions": versions, "device": device.type}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
        record["capability"] = list(torch.cuda.get_device_capability(device))
        record["cuda"] = torch.version.cuda
        record["cudnn"] = torch.backends.cudnn.version()
    else:
        flags = cpu_flags()
        record["cpu_bf16"] = sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
        record["cpu_isa"] = sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni"})
    return record


def cache_key(inputs: dict[str, Any]) -> str:
    """A short stable hash of ``inputs`` (JSON-serialisable)."""
    blob = json.dumps({"format": FORMAT_VERSION, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class CacheEntry:
    """A verified entry: its directory and its record (``entry.json``)."""

    path: Path
    record: dict[str, Any]
    hit: bool

    def file(self, name: str) -> Path:
        return self.path / name


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock_path`` (POSIX flock; no lock where fcntl is missing)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: concurrent cold builds may both build; the rename keeps one
        yield
        return
    with open(lock_path, "a+") as handle:
        waited = time.monotonic()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("cache: another process is building %s; waiting for it", lock_path.stem)
            fcntl.flock(handle, fcntl.LOCK_EX)
            log.info("cache: waited %.1f s", time.monotonic() - waited)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _verify(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(record, "") for a complete entry, else (None, why it is not)."""
    try:
        record = json.loads((path / ENTRY_FILE).read_text())
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as e:
        return None, f"unreadable {ENTRY_FILE} ({e})"
    for name, digest in record.get("files", {}).items():
        file = path / name
        if not file.is_file():
            return None, f"{name} is missing"
        if sha256_file(file) != digest:
            return None, f"{name} does not match its recorded sha256 (truncated or modified)"
    return record, ""


def get_or_build(
    key: str,
    build: Callable[[Path], dict[str, Any]],
    *,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> CacheEntry:
    """The verified entry ``key``, building it first when it is missing or corrupt.

    ``build(tmp_dir)`` writes the artifacts into ``tmp_dir`` and returns the record; its
    ``files`` (name -> sha256) are filled in here for every file it wrote. With ``use_cache``
    False the entry is built in a temporary directory that lives until the process exits (the
    artifacts must stay readable while a backend uses them) and nothing is written to the cache.
    """
    if not use_cache:
        tmp = Path(tempfile.mkdtemp(prefix="sr_runtime-nocache-"))
        import atexit

        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        return CacheEntry(tmp, _finish(tmp, build(tmp), key), hit=False)
    root = cache_root(cache_dir)
    # A read-only cache fails here in plain words, not at its lock file.
    check_writable_dir(root, what="cache folder (--cache-dir or $SR_RUNTIME_CACHE; sr-run --no-cache writes none)")
    root.mkdir(parents=True, exist_ok=True)
    path = root / key
    with _locked(root / f"{key}.lock"):
        record, why = _verify(path)
        if record is not None:
            return CacheEntry(path, record, hit=True)
        if why != "missing":
            log.warning("cache: entry %s is corrupt (%s); rebuilding it", path, why)
            shutil.rmtree(path, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
        try:
            record = _finish(tmp, build(tmp), key)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return CacheEntry(path, record, hit=False)


def _finish(tmp: Path, record: dict[str, Any], key: str) -> dict[str, Any]:
    record = dict(record)
    record["key"] = key
    record["format"] = FORMAT_VERSION
    record["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    record["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file() and p.name != ENTRY_FILE}
    text = json.dumps(record, indent=2, sort_keys=True, default=str)
    (tmp / ENTRY_FILE).write_text(text)
    return record


def list_entries(cache_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One dict per entry: key, path, bytes, ok (hashes match), and the record's summary fields."""
    root = cache_root(cache_dir)
    if not root.is_dir():
        return []
    rows = []
    for path in sorted(p for p in root.iterdir() if _is_entry(p)):
        record, why = _verify(path)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        row = {"key": path.name, "path": str(path), "bytes": size, "ok": record is not None, "problem": why}
        if record is not None:
            row.update({k: record.get(k) for k in ("model", "choice", "created")})
        rows.append(row)
    return rows


def clear(cache_dir: str | os.PathLike | None = None) -> int:
    """Remove every entry (and the other built artifacts, stale temporary directories and locks);
    returns how many entries."""
    root = cache_root(cache_dir)
    if not root.is_dir():
        return 0
    count = 0
    for path in root.iterdir():
        if path.is_dir():
            count += _is_entry(path)
            shutil.rmtree(path, ignore_errors=True)
        elif path.suffix == ".lock":
            path.unlink(missing_ok=True)
    return count


def _is_entry(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".tmp-") and path.name not in ARTIFACT_DIRS
