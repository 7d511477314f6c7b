"""A tiny real sr-bench run (fsrcnn, shipped weights, tiny sizes, 2 runs, no data) and its output schema.

Shipped, not random, weights: a fresh FSRCNN outputs almost nothing, so a broken backend returning
zeros would score 60+ dB of "parity" against it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.cli import main
from benchmarks.report import LATENCY_FIELDS, PARITY_FIELDS, validate_results

# The fields the issue requires on every latency row.
REQUIRED = (
    "model", "scale", "input_h", "input_w", "backend", "precision", "batch",
    "p50_ms", "p95_ms", "p99_ms", "fps", "peak_mem_mib", "parity_psnr_db", "parity_max_abs_u8",
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rc = main([
        "--models", "fsrcnn", "--scales", "2",
        "--sizes", "16x16,24x32", "--batch", "1,2", "--runs", "2", "--warmup", "0",
        "--backends", "torch,onnxruntime", "--precisions", "fp32",
        "--parity-size", "16x24", "--parity-images", "1",
        "--no-quality", "--no-video", "--no-tiling", "--runs-dir", str(out / "no_runs"), "--out", str(out),
    ])
    assert rc == 0
    return out


def _strict_json(path):
    def reject(value):
        raise AssertionError(f"non-standard JSON constant {value} in {path}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_tiny_run_writes_json_markdown_and_two_plots(tiny_run):
    assert (tiny_run / "results.json").is_file()
    assert (tiny_run / "report.md").read_text().startswith("# sr-bench report")
    pngs = sorted(p.name for p in tiny_run.glob("*.png"))
    assert pngs == ["latency_vs_psnr.png", "latency_vs_resolution.png"]
    for png in pngs:
        assert (tiny_run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_follow_the_schema(tiny_run):
    data = _strict_json(tiny_run / "results.json")
    validate_results(data)
    # 2 backends x 2 sizes x 2 batches, all measured on this CPU
    assert len(data["latency"]) == 8
    assert {(r["backend"], r["input_h"], r["input_w"], r["batch"]) for r in data["latency"]} == {
        (b, h, w, n) for b in ("torch", "onnxruntime") for h, w in ((16, 16), (24, 32)) for n in (1, 2)
    }
    for row in data["latency"]:
        assert set(row) == set(LATENCY_FIELDS)
        for key in REQUIRED:
            assert key in row
        assert row["model"] == "fsrcnn" and row["scale"] == 2 and row["weights"] == "shipped"
        assert row["output_h"] == 2 * row["input_h"] and row["output_w"] == 2 * row["input_w"]
        assert row["runs"] == 2 and row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert math.isclose(row["fps"], row["batch"] * 1000 / row["p50_ms"])
        assert row["peak_mem_mib"] is not None and row["peak_mem_mib"] >= 0
        assert row["mem_kind"].startswith("cpu_")
        assert row["parity_max_abs_u8"] is not None and row["parity_nonfinite"] == 0
    for row in data["parity"]:
        assert set(row) == set(PARITY_FIELDS)
    by_backend = {r["backend"]: r for r in data["parity"]}
    # torch FP32 is the reference itself; ONNX Runtime FP32 agrees to far better than one level
    assert by_backend["torch"]["max_abs_u8"] == 0 and by_backend["torch"]["psnr_db"] is None
    ort = by_backend["onnxruntime"]
    assert ort["max_abs_u8"] < 0.01
    assert ort["psnr_db"] is None or ort["psnr_db"] > 80  # None: bit-identical


def test_parity_reference_is_far_from_broken_forms(signal, photo_rgb_u8):
    """The benchmarked model's output on a photo is far from zeros, bicubic and a zero network, so
    the parity rows above could not pass for a backend that returned one of those."""
    import numpy as np
    import torch

    from sr_runtime.color import image_to_tensor
    from sr_runtime.deploy import DeployModel

    net = signal.net("fsrcnn", 2)
    lr = image_to_tensor(np.ascontiguousarray(photo_rgb_u8[180:244, 200:264]))
    with torch.no_grad():
        ref = DeployModel(net).eval()(lr)
    signal.informative(ref, lr, net.io_spec, threshold_db=80)


def test_environment_names_machine_versions_and_commit(tiny_run):
    env = _strict_json(tiny_run / "results.json")["environment"]
    assert env["cpu_model"] and env["cpu_count"] >= 1
    assert env["torch"] and env["onnxruntime"]
    for key in ("gpu", "driver", "torch_cuda", "tensorrt", "commit"):
        assert key in env  # None where absent, but always recorded


def test_random_weights_are_marked_and_get_no_quality(tmp_path, photo_rgb_u8):
    from PIL import Image

    data_dir = tmp_path / "data" / "Set5"  # a tiny stand-in set, so quality runs for what deserves it
    data_dir.mkdir(parents=True)
    Image.fromarray(np.ascontiguousarray(photo_rgb_u8[100:164, 100:164])).save(data_dir / "a.png")
    rc = main([
        "--models", "fsrcnn", "--scales", "2", "--random-weights", "--sizes", "16x16", "--batch", "1",
        "--runs", "1", "--warmup", "0", "--backends", "torch", "--precisions", "fp32", "--parity-size", "16x16",
        "--parity-images", "1", "--no-video", "--no-tiling", "--runs-dir", str(tmp_path / "no_runs"),
        "--out", str(tmp_path / "out"),
        "--data", str(tmp_path / "data"), "--datasets", "Set5",
    ])
    tmp_path = tmp_path / "out"
    assert rc == 0
    data = _strict_json(tmp_path / "results.json")
    assert data["models"][0]["weights"] == "random"
    assert "random weights" in (tmp_path / "report.md").read_text()
    assert data["quality"] and not [q for q in data["quality"] if q["model"] == "fsrcnn"]  # no quality for random weights


def test_shipped_weights_are_marked(tiny_run):
    assert _strict_json(tiny_run / "results.json")["models"][0]["weights"] == "shipped"


def test_validate_rejects_a_row_without_percentiles(tiny_run):
    data = _strict_json(tiny_run / "results.json")
    del data["latency"][0]["p99_ms"]
    with pytest.raises(ValueError, match="p99_ms"):
        validate_results(data)


def test_default_path_is_measured_beside_torch_eager(tmp_path, photo_rgb_u8):
    """--backends torch,default: the runtime's automatic fast path (what sr-run uses) gets rows that
    name the form it chose, parity against torch FP32, quality, and a Default path table with the speed-up."""
    from PIL import Image

    data_dir = tmp_path / "data" / "Set5"
    data_dir.mkdir(parents=True)
    Image.fromarray(np.ascontiguousarray(photo_rgb_u8[100:164, 100:164])).save(data_dir / "a.png")
    rc = main([
        "--models", "fsrcnn", "--scales", "2", "--sizes", "24x32", "--batch", "1", "--runs", "2", "--warmup", "0",
        "--backends", "torch,default", "--precisions", "fp32", "--parity-size", "16x24", "--parity-images", "1",
        "--data", str(tmp_path / "data"), "--datasets", "Set5", "--no-video", "--tiling-size", "40x56", "--runs-dir", str(tmp_path / "no_runs"),
        "--out", str(tmp_path),
    ])
    assert rc == 0
    data = _strict_json(tmp_path / "results.json")
    validate_results(data)
    # The tiling rows ran in the default path's form, every mode, whole first and exact.
    assert [r["mode"] for r in data["tiling"]] == ["whole", "auto", "auto, 1/4 budget", "tile 256"]
    assert all(r["backend"].startswith("default:") and (r["input_h"], r["input_w"]) == (40, 56) for r in data["tiling"])
    assert data["tiling"][0]["overhead_pct"] == 0 and data["tiling"][0]["tile"] == "whole"
    assert "## Tiling" in (tmp_path / "report.md").read_text()
    (default,) = [r for r in data["latency"] if r["backend"].startswith("default:")]
    (quality,) = [q for q in data["quality"] if q["backend"].startswith("default:")]
    assert (quality["backend"], quality["precision"]) == (default["backend"], default["precision"])
    assert default["backend"].split(":", 1)[1] in ("onnxruntime", "openvino", "torch")
    assert default["parity_psnr_db"] is None or default["parity_psnr_db"] >= 45
    report = (tmp_path / "report.md").read_text()
    assert "## Default path" in report and default["backend"].split(":", 1)[1] in report.split("## Default path")[1]
