"""The community-model coverage table (benchmarks/coverage.py): real measurements per family, failures
recorded in their row, the Markdown and JSON outputs, and ``sr-bench coverage``."""

from __future__ import annotations

import json
import runpy
import sys

import pytest

import benchmarks
from benchmarks import coverage
from benchmarks.cli import main
from benchmarks.common import environment
from benchmarks.community_models import FAMILIES, Family, family, save_family
from sr_runtime.checkpoint import load_checkpoint
from sr_runtime.errors import ExportError

CHEAP = ("compact", "rrdb_x2")
"""Two layouts (bare Compact; RRDBNet with pixel-unshuffle, multiple of 4), both cheap as quick builds."""
SIZE = (32, 48)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    # Module-scoped, so set here what the autouse fixtures set per test: a scratch cache, and the fast
    # path off (backend="auto" then runs eager torch, as it does in every test but the fast path's own).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SR_RUNTIME_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("SR_RUNTIME_ACCEL", "0")
        return coverage.run_coverage(
            [family(k) for k in CHEAP], quick=True, size=SIZE, runs=2, workdir=tmp_path_factory.mktemp("cov")
        )


def test_every_row_holds_real_measurements(rows):
    assert [r.key for r in rows] == list(CHEAP)
    for r in rows:
        fam = family(r.key)
        assert r.status == "ok" and r.ok, r.status
        assert r.loads is True
        assert r.arch == fam.arch
        assert r.params == sum(p.numel() for p in fam.build(True).parameters())
        assert r.onnx in ("dynamic", f"multiple of {r.model_multiple_of}")
        assert r.fp32_db >= 60, r.fp32_db
        assert 45 <= r.fp16_db < r.fp32_db, (r.fp16_db, r.fp32_db)  # FP16 really ran: below FP32
        assert r.tiling.split(", ")[2].startswith("4 tiles"), r.tiling  # the tiled run did cut seams
        assert 0 <= r.tiled_max_levels <= 1
        assert r.torch_ms > 0 and r.ort_ms > 0 and r.fast_ms > 0
        assert r.fast_path == "torch-cpu-fp32"  # SR_RUNTIME_ACCEL=0: the automatic form is eager torch
        assert set(r.step_seconds) == set(coverage.STEPS)
    assert rows[1].onnx == "multiple of 4"  # pixel-unshuffle by 2, then the 2x2 blocks of spandrel's check


def test_markdown_has_the_hardware_line_and_one_row_per_family(rows):
    env = environment()
    md = coverage.to_markdown(rows, env, settings={"quick": True, "size": list(SIZE), "runs": 2})
    lines = md.splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 1 + len(rows)  # the header, then one row per family
    for r, line in zip(rows, table[1:]):
        assert line.startswith(f"| {r.family} | {r.published} | {r.arch} |")
        assert f"| {r.fp32_db:.1f} | {r.fp16_db:.1f} |" in line and line.endswith("| ok |")
    hardware = next(line for line in lines if line.startswith("CPU: "))
    assert env["cpu_model"] in hardware and f"{env['cpu_count']} cores" in hardware
    assert f"torch {env['torch']}" in hardware and f"onnxruntime {env['onnxruntime']}" in hardware
    assert "median of 2 runs at LR 32x48" in md


def _broken_build(quick: bool):
    raise RuntimeError("no layer named conv_zero in this layout")


def test_a_failing_step_is_reported_in_its_row_and_the_next_family_goes_on(tmp_path, monkeypatch):
    broken = Family("broken", "Broken family", "nothing", "Compact", 4, _broken_build, None, "broken.pth")
    compact = family("compact")
    mislabelled = Family("mislabelled", "Compact claimed as SPAN", "nothing", "SPAN", 4, compact.build,
                         "params", "mislabelled.pth")
    monkeypatch.setattr(coverage, "FAMILIES", (broken, mislabelled, compact))

    def failing_export(request):
        raise ExportError("the exported ONNX graph reproduces PyTorch only at the traced size 32x32")

    monkeypatch.setattr("sr_export.pipeline.run_export", failing_export)
    rows = coverage.run_coverage(coverage.select_families(["broken", "mislabelled", "compact"]),
                                 quick=True, size=SIZE, runs=1, workdir=tmp_path)
    assert [r.key for r in rows] == ["broken", "mislabelled", "compact"]
    first, second, third = rows
    assert first.status == "fails at build: RuntimeError: no layer named conv_zero in this layout"
    assert (first.params, first.loads, first.torch_ms, first.fp32_db) == (None, None, None, None)
    assert second.status.startswith("fails at load: CheckpointError: ") and "detected Compact, expected SPAN" in second.status
    assert second.arch == "Compact" and second.loads is None and second.tiled_max_levels is None
    # The steps before the failing one are measured, the ones after it are not.
    assert third.failed_step == "export" and third.reason.startswith("ExportError: the exported ONNX graph")
    assert third.loads is True and third.torch_ms > 0 and third.tiled_max_levels <= 1
    assert (third.onnx, third.fp32_db, third.fp16_db, third.ort_ms, third.fast_path) == (None,) * 5
    md = coverage.to_markdown(rows, environment())
    assert "| fails at build: RuntimeError: no layer named conv_zero in this layout |" in md
    assert "| - | - | - | - | - | - | fails at export: ExportError:" in md


def test_unknown_family_keys_are_named_with_the_valid_ones():
    with pytest.raises(coverage.ConfigError, match=r"unknown nope; valid: rrdb_x4, rrdb_x2, compact"):
        coverage.select_families(["compact", "nope"])


def test_json_row_writes_identical_outputs_as_inf():
    row = coverage.CoverageRow("k", "F", "P", "Compact", True, fp32_db=float("inf"), fp16_db=51.5)
    out = json.loads(json.dumps(row.to_dict(), allow_nan=False))
    assert out["fp32_db"] == "inf" and out["fp16_db"] == 51.5


def test_sr_bench_coverage_writes_json_and_markdown(tmp_path, capsys):
    out = tmp_path / "cov"
    assert main(["coverage", "--families", "compact", "--quick", "--size", "32x48", "--runs", "1", "--out", str(out)]) == 0
    doc = json.loads((out / "coverage.json").read_text())
    assert doc["schema"] == coverage.SCHEMA
    assert doc["settings"]["size"] == [32, 48] and doc["settings"]["quick"] is True
    assert doc["environment"]["cpu_model"]
    [row] = doc["rows"]
    assert row["key"] == "compact" and row["status"] == "ok" and row["fp32_db"] >= 60 and row["ort_ms"] > 0
    md = (out / "coverage.md").read_text()
    assert sum(line.startswith("| Real-ESRGAN Compact") for line in md.splitlines()) == 1
    assert "1 of 1 families ok" in capsys.readouterr().out
    assert not list(out.glob(".*"))  # atomic writes leave no temporary files behind


def test_sr_bench_coverage_refuses_an_unknown_family(tmp_path, capsys):
    assert main(["coverage", "--families", "nope", "--out", str(tmp_path / "cov")]) == 2
    assert "unknown nope; valid:" in capsys.readouterr().err
    assert not (tmp_path / "cov").exists()


def test_python_m_benchmarks_coverage_runs_the_same_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["coverage", "--families", "nope", "--out", str(tmp_path)])
    # run_module warns when the module is already imported; the re-import it causes is undone afterwards.
    monkeypatch.delitem(sys.modules, "benchmarks.coverage")
    monkeypatch.setattr(benchmarks, "coverage", coverage)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("benchmarks.coverage", run_name="__main__")
    assert exit_info.value.code == 2
    assert "sr-bench coverage: error: --families: unknown nope" in capsys.readouterr().err


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.key)
def test_every_family_loads_as_the_arch_its_row_expects(fam, tmp_path):
    # The table's load step for every family: a wrong Family.arch (RealPLKSR is spandrel's PLKSR) fails its row.
    path, _ = save_family(fam, tmp_path, quick=True)
    ckpt = load_checkpoint(path)
    assert (ckpt.arch, ckpt.scale) == (fam.arch, fam.scale)
