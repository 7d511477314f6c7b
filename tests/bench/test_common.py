"""Timers, percentiles, peak memory, the environment record and strict JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.common import PeakMemory, environment, json_safe, percentiles, time_calls, write_json


def test_percentiles_interpolate_linearly():
    p = percentiles(list(range(1, 101)))
    assert p["p50"] == pytest.approx(50.5)
    assert p["p95"] == pytest.approx(95.05)
    assert p["p99"] == pytest.approx(99.01)
    with pytest.raises(ValueError):
        percentiles([])


def test_time_calls_counts_first_warmup_and_runs_and_syncs_around_each():
    events = []
    timing = time_calls(lambda: events.append("call"), warmup=3, runs=5, sync=lambda: events.append("sync"))
    assert events.count("call") == 1 + 3 + 5
    assert timing.runs == 5 and timing.warmup == 3 and len(timing.samples_ms) == 5
    # the device is idle when each clock starts and each timed call is complete when it stops
    assert events[:3] == ["sync", "call", "sync"]
    assert events[-10:] == ["call", "sync"] * 5
    assert events[-11] == "sync"
    stats = timing.summary()
    assert stats["min"] <= stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"]
    with pytest.raises(ValueError):
        time_calls(lambda: None, warmup=0, runs=0)


def test_time_calls_measures_the_work():
    import time

    timing = time_calls(lambda: time.sleep(0.01), warmup=0, runs=3)
    assert min(timing.samples_ms) >= 9.0


def test_peak_memory_on_cpu_sees_a_fresh_allocation():
    with PeakMemory("cpu") as mem:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        del block
    assert mem.kind == "cpu_peak_rss_delta"
    assert 48 <= mem.mib <= 256


def test_json_safe_turns_nonfinite_into_null_and_writes_strict_json(tmp_path):
    data = {"a": math.inf, "b": [math.nan, 1.5, np.float32(2.0)], "c": np.int64(3)}
    assert json_safe(data) == {"a": None, "b": [None, 1.5, 2.0], "c": 3}
    path = write_json(tmp_path / "x.json", data)
    assert json.loads(path.read_text()) == {"a": None, "b": [None, 1.5, 2.0], "c": 3}
    assert not list(tmp_path.glob("*.tmp"))


def test_environment_has_the_machine_and_versions():
    env = environment()
    for key in ("cpu_model", "cpu_count", "torch", "onnxruntime", "tensorrt", "gpu", "driver", "commit", "timestamp_utc"):
        assert key in env
    assert env["cpu_model"]
    json.dumps(json_safe(env), allow_nan=False)


def test_explicit_sizes_bound_the_tiling_rows(tmp_path):
    """A dry run with --sizes 16x24 once tiled a 720x1280 frame for minutes: the tiling rows follow --sizes."""
    from benchmarks.cli import _resolve, build_parser

    def resolved(*argv):
        return _resolve(build_parser().parse_args([*argv, "--out", str(tmp_path), "--data", str(tmp_path)]))

    assert resolved("--sizes", "16x24,20x20").tiling_size == (20, 20)
    assert resolved("--sizes", "16x24", "--tiling-size", "40x56").tiling_size == (40, 56)
    assert resolved().tiling_size == (720, 1280)
