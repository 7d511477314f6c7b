"""scripts/gpu_check.py, the prepared GPU run (issue 17): its CPU dry run end to end, and its parsers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.py"
STEPS = ("tests", "train", "eval", "bench", "summary")


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_dry_run_records_every_step_and_goes_on_after_a_failure(tmp_path):
    out = tmp_path / "gpu_out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "GPU_CHECK_FAIL": "eval"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=3600)  # a guard: about a minute on an idle 2-core machine
    assert proc.returncode == 1, proc.stdout  # one step failed: the run says so
    record = json.loads((out / "steps.json").read_text())
    steps = {s["name"]: s for s in record["steps"]}
    assert tuple(steps) == STEPS
    for s in steps.values():
        assert {"status", "seconds", "started"} <= set(s), s
    # the injected failure is a failure, and the steps after it still ran (bench after eval)
    assert steps["eval"]["status"] == "failed"
    assert "injected failure" in steps["eval"]["stdout_tail"]
    assert steps["eval"]["commands"][0]["rc"] == 1
    assert [steps[n]["status"] for n in ("tests", "train", "bench", "summary")] == ["ok"] * 4, proc.stdout
    # what the real steps produced
    assert steps["tests"]["counts"].get("skipped", 0) >= 1  # no CUDA here: the gpu tests are listed as skipped
    assert all(r["outcome"] == "skipped" for r in steps["tests"]["results"])
    assert (out / "train" / "best.safetensors").is_file() and steps["train"]["steps_done"] >= 1
    assert steps["train"]["calibrated_steps_per_s"] > 0
    forms = {(r["backend"], r["precision"]) for r in steps["bench"]["latency"]}
    assert ("torch", "fp32") in forms and ("torch-compile[eager]", "fp32") in forms
    assert any(b.startswith("default") for b, _ in forms)
    assert steps["bench"]["video"] and steps["bench"]["srrun"] == "ok"
    # the summary names every step, with its status, and shows the failure's output
    summary = (out / "summary.md").read_text()
    assert "DRY RUN" in summary
    for name in STEPS:
        assert f"| {name} | {steps[name]['status']} |" in summary
    assert "## failures" in summary and "injected failure (GPU_CHECK_FAIL)" in summary


def test_a_step_that_outlives_its_timeout_is_recorded_as_timed_out(tmp_path):
    gc = _load()
    runner = gc.Runner(tmp_path, dict(os.environ))
    step = {"name": "slow"}
    entry = runner.run(step, "sleep", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(30)"],
                       timeout=2)
    assert entry["timed_out"] and entry["rc"] is None and not gc.ok(entry)
    assert entry["seconds"] < 20
    assert "timed out after 2 s" in step["stdout_tail"]
    assert "sleep" in (tmp_path / "logs" / "slow.log").read_text()
    # --deadline-s: a command that would start with almost no time left is not started at all
    late = gc.Runner(tmp_path, dict(os.environ), deadline=gc.time.monotonic() + 1)
    entry = late.run(step, "late", [sys.executable, "-c", "print('ran')"], timeout=60)
    assert entry["timed_out"] and entry["rc"] is None and "not started" in entry["stdout_tail"]


def test_junit_parsing_and_training_rate(tmp_path):
    gc = _load()
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest">'
        '<testcase classname="tests.a" name="test_ok" time="0.1"/>'
        '<testcase classname="tests.a" name="test_bad" time="0.1"><failure message="assert 1 == 2">x</failure></testcase>'
        '<testcase classname="tests.b" name="test_skip" time="0"><skipped message="needs a CUDA GPU"/></testcase>'
        '<testcase classname="tests.b" name="test_err" time="0"><error message="fixture broke"/></testcase>'
        "</testsuite></testsuites>"
    )
    rows = gc.parse_junit(xml)
    assert [(r["test"], r["outcome"]) for r in rows] == [
        ("tests.a::test_ok", "passed"), ("tests.a::test_bad", "failed"),
        ("tests.b::test_skip", "skipped"), ("tests.b::test_err", "error"),
    ]
    assert rows[1]["message"] == "assert 1 == 2"
    # log.csv rows: training rows every 50 steps (first one dropped as warm-up), validation rows ignored
    log = [{"step": str(s), "loss": "0.1", "seconds": str(t)} for s, t in ((50, 10.0), (100, 11.0), (150, 12.0))]
    log.append({"step": "150", "loss": "", "val_psnr": "30", "seconds": "13.0"})
    assert gc.steps_per_second(log) == pytest.approx(50.0)
    assert gc.steps_per_second(log[:1]) is None
    files = gc.marked_test_files()
    assert "tests/runtime/test_backends.py" in files and "tests/test_gpu_check.py" not in files
