"""How every command fails: one line on stderr and an exit code, the same for all six.

Exit codes of ``sr-run``, ``sr-export``, ``sr-train``, ``sr-eval``, ``sr-bench`` and ``sr-cache``:

* 0: done.
* 2, bad input: the command refused, for a reason it names with the fix. Every :class:`SRError`
  (a missing or unreadable input, a bad option or config, an unsupported model or scale, a backend
  this machine lacks, an artifact that fails its parity check), and an ``OSError`` about a path
  the user chose (read-only folder, permission denied, disk full, missing file, a file where a
  folder belongs: see :data:`PLAIN_ERRNO`).
* 1, fault: anything else (a bug, or a library failing in a way nobody foresaw). The line names the
  exception and says to rerun with ``--debug`` for the traceback. ``sr-run`` also exits 1 when
  some of its inputs failed and the others were done.
* 130: interrupted (Ctrl-C); 143: stopped by ``kill`` (SIGTERM, also what ``docker stop``, systemd
  and ``timeout`` send), handled exactly like Ctrl-C. Each command says what was kept.

``--debug`` prints the traceback above the same line and keeps the same exit code. Outputs are
written atomically and output folders are checked with :func:`check_writable_dir` before the slow
work, so a failing command leaves nothing half-written behind.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from sr_runtime.errors import OutputError, SRError

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAULT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "PLAIN_ERRNO",
    "Terminated",
    "add_debug_argument",
    "check_writable_dir",
    "describe_os_error",
    "run_command",
]

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process that SIGTERM ended


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so the same cleanup runs."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()

PLAIN_ERRNO: dict[int, tuple[str, str]] = {
    errno.EROFS: ("read-only file system", "write somewhere else, or remount it read-write"),
    errno.EACCES: ("permission denied", "use a path this user may access, or change its permissions"),
    errno.EPERM: ("operation not permitted", "use a path this user may access, or change its permissions"),
    errno.ENOSPC: ("no space left on the device", "free some space, or write somewhere else"),
    errno.EDQUOT: ("disk quota exceeded", "free some space, or write somewhere else"),
    errno.EFBIG: ("file too large for this file system", "write somewhere else"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOTDIR: ("not a folder (a part of the path is a file)", "check the path"),
    errno.EISDIR: ("is a folder, not a file", "give a file name"),
    errno.EEXIST: ("already exists", "remove it, or choose another name"),
    errno.ENAMETOOLONG: ("file name too long", "use a shorter path"),
    errno.ELOOP: ("too many levels of symbolic links", "check the links in the path"),
    errno.EBUSY: ("busy, or a mount point", "close what uses it, or use a folder inside it"),
}
"""errno -> (the problem in plain words, the fix): the OSErrors that are bad input (exit 2)."""


def describe_os_error(e: OSError, path: str | os.PathLike | None = None) -> str:
    """``PATH: problem in plain words; fix`` for ``e`` (``path`` overrides the path ``e`` names)."""
    where = path if path is not None else e.filename
    if e.filename2 is not None and path is None:
        where = f"{e.filename} -> {e.filename2}"
    problem, fix = PLAIN_ERRNO.get(e.errno, (e.strerror or type(e).__name__, ""))
    text = f"{where}: {problem}" if where is not None else problem
    return f"{text}; {fix}" if fix else text


def check_writable_dir(path: str | os.PathLike, *, what: str = "output folder", replaced: bool = False) -> Path:
    """Raise :class:`OutputError` unless files can be created in the folder ``path`` (or, when it does
    not exist yet, in the nearest folder above it, where it would be created). With ``replaced`` the
    folder is built beside ``path`` and renamed into place, so its parent must be writable and it must
    not be a mount point. Call it before the slow work; it leaves nothing behind (the probe file is
    removed). Returns ``path``.
    """
    path = Path(path)
    existing = path.parent if replaced else path
    try:
        if path.exists() and not path.is_dir():
            raise OutputError(f"{what} {path}: a file, not a folder; give a folder name")
        if replaced and path.is_dir() and _is_mount_point(path):
            raise OutputError(f"{what} {path}: a mount point, which cannot be replaced as a whole; "
                              f"give a folder inside it, e.g. {path / 'export'}")
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        fd, probe = tempfile.mkstemp(prefix=".sr-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        message = describe_os_error(e, path=existing.resolve() if str(existing) in (".", "..") else existing)
        lead = what if existing == path else f"{what} {path} cannot be created:"
        raise OutputError(f"{lead} {message}") from e
    return path


def _is_mount_point(path: Path) -> bool:
    """Also true for bind mounts, which ``os.path.ismount`` misses (same device as the parent)."""
    if os.path.ismount(path):
        return True
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:  # not Linux
        return False
    points = set()
    for line in lines:  # field 5 is the mount point, with spaces and the like as octal escapes
        fields = line.split()
        if len(fields) > 4:
            points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return str(path.resolve()) in points


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """``--debug``: on an error, print the traceback too."""
    parser.add_argument("--debug", action="store_true", help="on an error, print the full traceback too")


def run_command(prog: str, body: Callable[[], int], *, debug: bool, interrupted: str) -> int:
    """``body()``'s exit code, or the exit code of what it raised, reported as one line on stderr.

    ``interrupted`` is the line (after ``prog:``) for Ctrl-C and SIGTERM: what was kept and how to
    resume. SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread while ``body``
    runs, so a ``kill`` cleans up exactly as Ctrl-C does instead of ending the process mid-write; code
    that handles SIGTERM itself (``sr-serve``'s uvicorn, training's stop at a step boundary) installs
    its own handler over this one. An ignored SIGTERM stays ignored; the previous handler comes back after.
    """
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) != signal.SIG_IGN:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run(prog, body, debug=debug, interrupted=interrupted)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(prog: str, body: Callable[[], int], *, debug: bool, interrupted: str) -> int:
    try:
        return body()
    except KeyboardInterrupt as e:
        _say(prog, str(e) or interrupted)
        return EXIT_TERMINATED if _terminated(e) else EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 -- the one place that turns any failure into an exit code
        failure = e
    if isinstance(failure, SRError):
        code, message = EXIT_BAD_INPUT, f"error: {failure}"
    elif isinstance(failure, OSError) and failure.errno in PLAIN_ERRNO:
        code, message = EXIT_BAD_INPUT, f"error: {describe_os_error(failure)}"
    else:
        hint = "the traceback is above" if debug else "rerun with --debug for the traceback"
        code = EXIT_FAULT
        message = f"error: unexpected {type(failure).__name__}: {failure} (a bug or an unforeseen failure; {hint})"
    if debug:
        traceback.print_exception(type(failure), failure, failure.__traceback__, file=sys.stderr)
    _say(prog, message)
    return code


def _terminated(e: BaseException | None) -> bool:
    """Whether SIGTERM is behind ``e`` (a command may re-raise it as its own KeyboardInterrupt)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, Terminated):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def _say(prog: str, message: str) -> None:
    print(f"{prog}: {' '.join(message.split())}", file=sys.stderr)
