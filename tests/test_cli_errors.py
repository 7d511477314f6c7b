"""Every command fails the same way: one line on stderr, exit 2 for bad input, 1 for a fault, 130
for Ctrl-C, a traceback only with --debug, and nothing written.

An output the command cannot write is refused before the slow work: a tripwire on that work (the
model load, the export, the training, ...) turns a late check into a failed test. Three kinds of
unwritable output: a read-only bind mount (a real EROFS, in a user+mount namespace, skipped where
those are not permitted), a path under a regular file (ENOTDIR) and a folder under /sys (EACCES,
or EROFS in containers); the last two run everywhere.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Command:
    prog: str
    module: str
    writes_under: Callable[[Path, dict], tuple[list[str], dict[str, str]]]
    """(argv, env) that make the command write under (or, sr-cache, clear) the folder given."""
    missing: Callable[[Path, dict], list[str]]
    """argv naming the missing input given (a path that does not exist) and writing under tmp."""
    slow_work: str
    """``module:attr`` of the work the output check must come before."""
    first_call: str
    """``module:attr`` the command calls first once arguments are parsed (where a fault is injected)."""
    sys_ok: bool = True
    """Whether pointing the output at /sys is safe even with the guard gone (sr-cache clear is not)."""


COMMANDS = [
    Command(
        "sr-run", "sr_runtime.cli",
        lambda where, f: ([f["image"], "--scale", "4", "-o", f"{where}/out.png"], {}),
        lambda missing, f: [missing, "--scale", "4", "-o", f"{f['tmp']}/out.png"],
        "sr_runtime.upscaler:Upscaler", "sr_runtime.cli:_run_files",
    ),
    Command(
        "sr-export", "sr_export.cli",
        lambda where, f: (["--model", "fsrcnn", "--scale", "4", "--format", "onnx", "--out", f"{where}/export"], {}),
        lambda missing, f: ["--model", f"{missing}.safetensors", "--format", "onnx", "--out", f"{f['tmp']}/export"],
        "sr_export.pipeline:export_dynamic", "sr_export.cli:run_export",
    ),
    Command(
        "sr-train", "sr_train.cli",
        lambda where, f: (["--model", "fsrcnn", "--scale", "4", "--quiet", "steps=1", f"out={where}/runs"], {}),
        lambda missing, f: ["--model", "fsrcnn", "--scale", "4", "--quiet", "steps=1", "--data", missing,
                            "--val", f["data"], f"out={f['tmp']}/runs"],
        "sr_train.train:train", "sr_train.config:load_config",
    ),
    Command(
        "sr-eval", "sr_runtime.eval_cli",  # writes only its fast-path cache
        lambda where, f: ([f["data"], "--scale", "4", "--model", "fsrcnn"],
                          {"SR_RUNTIME_CACHE": f"{where}/cache", "SR_RUNTIME_ACCEL": "1"}),
        lambda missing, f: [missing, "--scale", "4", "--bicubic"],
        "sr_runtime.eval_cli:evaluate_folder", "sr_runtime.eval_cli:evaluate_folder",
    ),
    Command(
        "sr-bench", "benchmarks.cli",
        lambda where, f: (["--quick", "--models", "fsrcnn", "--no-video", "--no-tiling", "--no-quality", "--no-plots",
                           "--out", f"{where}/bench"], {}),
        lambda missing, f: ["--quick", "--models", f"{missing}.safetensors", "--out", f"{f['tmp']}/bench"],
        "benchmarks.cli:run_bench", "benchmarks.cli:_resolve",
    ),
    Command(
        "sr-cache", "sr_runtime.cache_cli",
        lambda where, f: (["clear", "--cache-dir", str(where)], {}),
        lambda missing, f: ["list", "--cache-dir", missing],
        "sr_runtime.cache_cli:clear", "sr_runtime.cache_cli:list_entries",
        sys_ok=False,
    ),
]
IDS = [c.prog for c in COMMANDS]


@pytest.fixture
def inputs(tmp_path) -> dict:
    """A tiny image, a folder holding one, and a writable folder for outputs that must stay empty."""
    data = tmp_path / "in" / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(data / "a.png")
    image = tmp_path / "in" / "small.png"
    Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(image)
    return {"image": str(image), "data": str(data), "tmp": str(tmp_path / "w")}


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _attr(spec: str):
    module, name = spec.split(":")
    return importlib.import_module(module), name


def _tripwire(spec: str):
    def tripped(*args, **kwargs):
        raise AssertionError(f"{spec} ran before the output was checked")

    return tripped


def _run(cmd: Command, argv: list[str], monkeypatch, capsys, *, env=None, tripwire=None) -> tuple[int, str]:
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    if tripwire is not None:
        monkeypatch.setattr(*_attr(tripwire), _tripwire(tripwire))
    code = importlib.import_module(cmd.module).main(argv)
    return code, capsys.readouterr().err


def _assert_one_line(cmd: Command, code: int, err: str, expected_code: int, words: str) -> None:
    assert code == expected_code, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith(f"{cmd.prog}: error:")]
    assert len(errors) == 1 and errors[0] == err.splitlines()[-1], err
    assert re.search(words, errors[0]), errors[0]
    assert "Errno" not in errors[0], errors[0]


# --- an output under a regular file (ENOTDIR) and under /sys: everywhere -------------------------------


@pytest.mark.parametrize("cmd", COMMANDS, ids=IDS)
def test_an_output_under_a_file_is_refused_before_the_work(cmd, inputs, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "in" / "notes.txt"
    blocker.write_text("a file where a folder belongs")
    before = _tree(tmp_path)
    argv, env = cmd.writes_under(blocker, inputs)
    code, err = _run(cmd, argv, monkeypatch, capsys, env=env, tripwire=cmd.slow_work)
    _assert_one_line(cmd, code, err, 2, rf"{blocker}: (a file, )?not a folder")
    assert _tree(tmp_path) == before


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs sysfs (Linux), where no one creates files")
@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.sys_ok], ids=[c.prog for c in COMMANDS if c.sys_ok])
def test_an_output_nobody_may_write_is_refused_before_the_work(cmd, inputs, tmp_path, monkeypatch, capsys):
    before = _tree(tmp_path)
    argv, env = cmd.writes_under(Path("/sys/kernel"), inputs)
    code, err = _run(cmd, argv, monkeypatch, capsys, env=env, tripwire=cmd.slow_work)
    _assert_one_line(cmd, code, err, 2, r"/sys/kernel: (permission denied|read-only file system); ")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("cmd", COMMANDS, ids=IDS)
def test_a_missing_input_is_one_line_and_writes_nothing(cmd, inputs, tmp_path, monkeypatch, capsys):
    missing = str(tmp_path / "in" / "nope")
    before = _tree(tmp_path)
    code, err = _run(cmd, cmd.missing(missing, inputs), monkeypatch, capsys)
    _assert_one_line(cmd, code, err, 2, rf"{missing}(\.safetensors)?: .*(not found|no such)")
    assert _tree(tmp_path) == before


# --- faults, --debug and Ctrl-C, through each command's main --------------------------------------------


def _fail(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("cmd", COMMANDS, ids=IDS)
def test_an_unexpected_exception_is_a_fault_with_exit_1(cmd, debug, inputs, monkeypatch, capsys):
    monkeypatch.setattr(*_attr(cmd.first_call), _fail(RuntimeError("something nobody foresaw")))
    argv = cmd.missing(inputs["data"], inputs) + (["--debug"] if debug else [])
    code, err = _run(cmd, argv, monkeypatch, capsys)
    assert code == 1, err
    last = err.splitlines()[-1]
    assert last.startswith(f"{cmd.prog}: error: unexpected RuntimeError: something nobody foresaw"), err
    if debug:
        assert "Traceback (most recent call last)" in err and last.endswith("the traceback is above)")
    else:
        assert "Traceback" not in err and last.endswith("rerun with --debug for the traceback)")


@pytest.mark.parametrize("cmd", COMMANDS, ids=IDS)
def test_debug_shows_the_traceback_of_bad_input_too(cmd, inputs, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "in" / "notes.txt"
    blocker.write_text("a file where a folder belongs")
    argv, env = cmd.writes_under(blocker, inputs)
    code, err = _run(cmd, [*argv, "--debug"], monkeypatch, capsys, env=env, tripwire=cmd.slow_work)
    assert code == 2 and "Traceback (most recent call last)" in err, err
    assert err.splitlines()[-1].startswith(f"{cmd.prog}: error: ")


@pytest.mark.parametrize("cmd", COMMANDS, ids=IDS)
def test_ctrl_c_exits_130_with_one_line(cmd, inputs, monkeypatch, capsys):
    monkeypatch.setattr(*_attr(cmd.first_call), _fail(KeyboardInterrupt()))
    code, err = _run(cmd, cmd.missing(inputs["data"], inputs), monkeypatch, capsys)
    assert code == 130 and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith(f"{cmd.prog}: ") and "interrupted" in err.splitlines()[-1]


# --- a real read-only file system (EROFS): a read-only bind mount in a user+mount namespace --------------

_MOUNT_RO = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'

_DRIVER = """
import contextlib, importlib, io, json, os, sys, traceback
results = {}
for prog, module, argv, env, tripwire in json.loads(sys.argv[1]):
    saved_env = dict(os.environ)
    os.environ.update(env)
    target, name = tripwire.split(":")
    target = importlib.import_module(target)
    saved = getattr(target, name)
    def tripped(*a, _t=tripwire, **k):
        raise AssertionError(f"{_t} ran before the output was checked")
    setattr(target, name, tripped)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = importlib.import_module(module).main(argv)
        except BaseException as e:
            traceback.print_exc()
            code = getattr(e, "code", "raised")
    setattr(target, name, saved)
    os.environ.clear()
    os.environ.update(saved_env)
    results[prog] = [code, err.getvalue()]
print(json.dumps(results))
"""


def _read_only_mount_works(folder: Path) -> str | None:
    """None when a read-only bind mount can be made here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", _MOUNT_RO, str(folder), "touch", str(folder / "x")],
                           capture_output=True, text=True, timeout=60, check=False)
    if "Read-only file system" in probe.stderr:
        return None
    return f"no read-only bind mount in a user+mount namespace here: {probe.stderr.strip() or probe.returncode}"


@pytest.fixture(scope="module")
def read_only_runs(tmp_path_factory):
    """Every command run once against a read-only folder, in one process inside the namespace."""
    tmp = tmp_path_factory.mktemp("erofs")
    ro = tmp / "ro"
    (ro / "0123abcd").mkdir(parents=True)  # a cache entry for sr-cache clear
    why = _read_only_mount_works(ro)
    if why is not None:
        pytest.skip(why)
    fixtures = {"image": str(tmp / "small.png"), "data": str(tmp / "data"), "tmp": str(tmp / "w")}
    (tmp / "data").mkdir()
    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(tmp / "data" / "a.png")
    Image.fromarray(np.full((12, 12, 3), 128, np.uint8)).save(tmp / "small.png")
    jobs = [[c.prog, c.module, *c.writes_under(ro, fixtures), c.slow_work] for c in COMMANDS]
    before = _tree(tmp)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(["unshare", "-rm", "sh", "-c", _MOUNT_RO, str(ro), sys.executable, "-c", _DRIVER,
                          json.dumps(jobs)], capture_output=True, text=True, env=env, cwd=tmp, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1]), before, _tree(tmp)


@pytest.mark.parametrize("cmd", COMMANDS, ids=IDS)
def test_a_read_only_output_is_one_line_exit_2_and_nothing_written(cmd, read_only_runs):
    results, before, after = read_only_runs
    code, err = results[cmd.prog]
    _assert_one_line(cmd, code, err, 2, r"/ro: read-only file system; write somewhere else, or remount it read-write")
    assert after == before
