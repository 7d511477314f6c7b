"""The one way every command fails: errno in plain words, the output-folder check, exit codes."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest

from sr_runtime.errors import ConfigError, InputError, OutputError
from sr_runtime.failures import check_writable_dir, describe_os_error, run_command


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "operation not permitted"),
        (errno.ENOSPC, "no space left on the device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.ENOENT, "no such file or folder"),
        (errno.ENOTDIR, "not a folder"),
        (errno.EISDIR, "is a folder, not a file"),
    ],
)
def test_an_os_error_reads_as_the_path_the_problem_and_a_fix(code, words):
    text = describe_os_error(OSError(code, os.strerror(code), "/data/out/x.png"))
    path, problem, fix = text.partition(": ")[0], *text.partition(": ")[2].split("; ")
    assert path == "/data/out/x.png" and problem.startswith(words) and fix
    assert "Errno" not in text


def test_an_os_error_can_name_another_path():
    e = OSError(errno.EROFS, "Read-only file system", "/ro/.x.png.abc123.tmp")
    assert describe_os_error(e, "/ro").startswith("/ro: read-only file system; ")


def test_a_writable_folder_passes_and_nothing_is_left_behind(tmp_path):
    assert check_writable_dir(tmp_path / "new" / "sub") == tmp_path / "new" / "sub"
    (tmp_path / "old").mkdir()
    check_writable_dir(tmp_path / "old", replaced=True)
    assert _tree(tmp_path) == ["old"]


def test_a_file_in_the_way_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match=r"export folder .*notes.txt/out cannot be created: .*notes.txt: not a fold"):
        check_writable_dir(tmp_path / "notes.txt" / "out", what="export folder")
    with pytest.raises(OutputError, match=r"notes.txt: a file, not a folder"):
        check_writable_dir(tmp_path / "notes.txt")
    assert _tree(tmp_path) == ["notes.txt"]


@pytest.mark.skipif(not os.path.ismount("/proc"), reason="needs /proc mounted (Linux)")
def test_a_mount_point_cannot_be_replaced():
    with pytest.raises(OutputError, match="/proc: a mount point, which cannot be replaced as a whole; give a folder"):
        check_writable_dir("/proc", replaced=True)


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs (Linux), where no one creates files")
def test_a_folder_nobody_may_write_is_refused():
    with pytest.raises(OutputError, match=r"/sys/kernel/out cannot be created: /sys/kernel: "
                                          r"(permission denied|read-only file system); "):
        check_writable_dir("/sys/kernel/out")


def _raise(exc: BaseException):
    def body() -> int:
        raise exc

    return body


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (ConfigError("steps: must be > 0"), 2, "prog: error: steps: must be > 0"),
        (InputError("a.png: no such file"), 2, "prog: error: a.png: no such file"),
        (PermissionError(errno.EACCES, "Permission denied", "/srv/out"),
         2, "prog: error: /srv/out: permission denied; use a path this user may access"),
        (OSError(errno.ENOSPC, "No space left on device"), 2, "prog: error: no space left on the device; free some"),
        (OSError(errno.EIO, "Input/output error"), 1, "prog: error: unexpected OSError: [Errno 5]"),
        (RuntimeError("shape\nmismatch"), 1, "prog: error: unexpected RuntimeError: shape mismatch (a bug or"),
        (KeyboardInterrupt(), 130, "prog: interrupted; kept X"),
    ],
)
def test_each_kind_of_failure_is_one_line_and_its_exit_code(exc, code, line, capsys):
    assert run_command("prog", _raise(exc), debug=False, interrupted="interrupted; kept X") == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line), err
    assert "Traceback" not in err
    if code == 1:
        assert err.rstrip().endswith("rerun with --debug for the traceback)")


def test_debug_prints_the_traceback_above_the_same_line(capsys):
    assert run_command("prog", _raise(RuntimeError("boom")), debug=True, interrupted="") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("Traceback") and "RuntimeError: boom" in err
    assert err[-1] == ("prog: error: unexpected RuntimeError: boom "
                       "(a bug or an unforeseen failure; the traceback is above)")
    assert run_command("prog", _raise(ConfigError("bad")), debug=True, interrupted="") == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("Traceback") and err[-1] == "prog: error: bad"


def test_success_and_argparse_exits_pass_through(capsys):
    assert run_command("prog", lambda: 0, debug=False, interrupted="") == 0
    with pytest.raises(SystemExit):
        run_command("prog", _raise(SystemExit(2)), debug=False, interrupted="")
    assert capsys.readouterr().err == ""


def _unhandled(signum, frame):
    raise AssertionError("SIGTERM reached the handler installed before run_command")


@pytest.fixture
def default_sigterm():
    """A handler that fails the test (not SIG_DFL, which would end pytest) if run_command installs none."""
    previous = signal.signal(signal.SIGTERM, _unhandled)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("rewrapped", [False, True])
def test_sigterm_cleans_up_like_ctrl_c_and_exits_143(default_sigterm, capsys, rewrapped):
    """``kill`` raises in the command (its cleanup runs) instead of ending the process mid-write; a command
    that turns the interrupt into its own KeyboardInterrupt with what it kept still exits 143."""
    cleaned = []

    def body():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt as e:
            if rewrapped:
                raise KeyboardInterrupt("interrupted; 3 segments kept") from e
            raise
        finally:
            cleaned.append(True)
        return 0

    assert run_command("prog", body, debug=False, interrupted="interrupted; kept X") == 143
    assert cleaned == [True]
    line = "prog: interrupted; 3 segments kept\n" if rewrapped else "prog: interrupted; kept X\n"
    assert capsys.readouterr().err == line
    assert signal.getsignal(signal.SIGTERM) is _unhandled
