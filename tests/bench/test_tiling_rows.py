"""sr-bench's tiling rows: the same frame whole and tiled through one Upscaler, the plan, the time
overhead and the difference from the whole-frame output, for a real (shipped) model."""

from __future__ import annotations

import pytest

from benchmarks.bench_backends import Form, prepare_model
from benchmarks.bench_tiling import TILING_MODES, bench_tiling
from benchmarks.report import TILING_FIELDS, render_markdown, validate_results


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiling")
    mut = prepare_model("fsrcnn", 2, workdir=work, runs_dir=work / "no_runs", random_weights=False)
    # 32 MiB of working memory: under this 80x300 frame's needs, so "auto" must tile.
    return bench_tiling(mut, Form("torch", "fp32", "cpu"), (80, 300), warmup=0, runs=1, memory_budget=32 << 20)


def test_every_mode_has_a_row_with_the_schema_fields(rows):
    assert [r["mode"] for r in rows] == list(TILING_MODES)
    for row in rows:
        assert set(row) == set(TILING_FIELDS)
        assert row["p50_ms"] > 0 and row["runs"] == 1


def test_whole_is_the_reference_and_tiled_modes_split_the_frame(rows):
    whole, auto, quarter, fixed = rows
    assert (whole["tile"], whole["tiles"], whole["overhead_pct"], whole["max_abs_u8"]) == ("whole", 1, 0.0, 0)
    assert whole["computed_px_overhead_pct"] == 0
    assert auto["tiles"] > 1 and auto["memory_budget_mib"] == 32
    assert quarter["tiles"] > auto["tiles"]  # a quarter of the budget: smaller tiles, more of them
    assert fixed["tile"] != "whole" and fixed["tiles"] == 2  # 300 px wide in 256 px tiles
    for row in (auto, quarter, fixed):
        assert row["computed_px_overhead_pct"] > 0  # the overlap is recomputed
        assert row["max_abs_u8"] <= 1  # seamless: at most one level of rounding


def test_report_renders_the_tiling_table(rows):
    data = {
        "schema_version": 1, "environment": dict.fromkeys(
            ("cpu_model", "cpu_count", "gpu", "driver", "torch", "torch_cuda", "onnxruntime", "tensorrt", "commit")),
        "config": {}, "models": [], "latency": [], "parity": [], "quality": [], "video": [], "skipped": [],
        "tiling": rows,
    }
    validate_results(data)
    md = render_markdown(data)
    assert "## Tiling" in md and md.count("| fsrcnn") == len(TILING_MODES)
    broken = dict(rows[0])
    del broken["overhead_pct"]
    with pytest.raises(ValueError, match="overhead_pct"):
        validate_results({**data, "tiling": [broken]})
