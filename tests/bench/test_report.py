"""Markdown tables, plots and the published table, from hand-made rows (no model runs)."""

from __future__ import annotations

import pytest

from benchmarks.bench_quality import PAPER_ROW, PUBLISHED, published
from benchmarks.cli import build_parser
from benchmarks.plots import write_plots
from benchmarks.report import LATENCY_FIELDS, QUALITY_FIELDS, VIDEO_FIELDS, render_markdown, validate_results


def _latency(model, backend, precision, h, w, p50, weights="shipped"):
    row = {k: None for k in LATENCY_FIELDS}
    row.update(model=model, scale=4, weights=weights, backend=backend, precision=precision, device="cpu",
               input_h=h, input_w=w, output_h=4 * h, output_w=4 * w, batch=1, runs=5, warmup=1,
               p50_ms=p50, p95_ms=p50 * 1.1, p99_ms=p50 * 1.2, mean_ms=p50, min_ms=p50 * 0.9,
               fps=1000 / p50, out_mpix_s=1.0, peak_mem_mib=12.0, mem_kind="cpu_peak_rss_delta",
               build_s=0.1, first_ms=p50 * 2, parity_psnr_db=None if backend == "torch" else 90.0,
               parity_max_abs_u8=0.0 if backend == "torch" else 0.2, parity_nonfinite=0)
    return row


def _quality(model, backend, precision, psnr):
    row = {k: None for k in QUALITY_FIELDS}
    row.update(model=model, scale=4, weights="shipped", backend=backend, precision=precision, device="cpu",
               dataset="Set5", images=5, psnr=psnr, ssim=0.86, published_method="FSRCNN",
               published_psnr=30.72, published_ssim=0.866, delta_psnr=psnr - 30.72, seconds=1.0)
    return row


@pytest.fixture
def results():
    lat = [
        _latency(m, b, p, h, w, base * h * w / 16384)
        for m, base in (("fsrcnn", 10.0), ("edsr", 900.0))
        for b, p in (("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "fp16"))
        for h, w in ((128, 128), (270, 480))
    ]
    video = {k: None for k in VIDEO_FIELDS}
    video.update(model="fsrcnn", scale=4, weights="shipped", backend="torch", precision="fp32", device="cpu",
                 clip="chaplin.mp4, first 10 frames", frames=10, input_h=360, input_w=640, output_h=1440,
                 output_w=2560, pipeline_fps=2.0, inference_fps=4.0, encode_fps=5.0, decode_fps=200.0, pipeline_s=5.0)
    return {
        "schema_version": 1,
        "command": "sr-bench --quick",
        "environment": {"cpu_model": "AMD EPYC", "cpu_count": 2, "gpu": None, "driver": None, "torch": "2.13",
                        "torch_cuda": None, "onnxruntime": "1.32", "tensorrt": None, "commit": "abc"},
        "config": {},
        "models": [{"model": "fsrcnn", "scale": 4, "weights": "shipped", "params": 12000, "source": "shipped"}],
        "latency": lat,
        "parity": [],
        "quality": [_quality("fsrcnn", "torch", "fp32", 30.5), _quality("fsrcnn", "onnxruntime", "fp16", 30.49)],
        "video": [video],
        "skipped": [{"stage": "all", "backend": "tensorrt", "precision": "fp32", "reason": "no TensorRT"}],
    }


def test_markdown_has_every_section_and_marks_identical_parity(results):
    validate_results(results)
    md = render_markdown(results)
    for heading in ("## Environment", "## Latency", "## Quality", "## Video, end to end", "## Not measured"):
        assert heading in md
    assert "identical" in md  # torch FP32 against itself
    assert "| fsrcnn | x4 | 128x128 | onnxruntime | fp16 |" in md
    assert "30.72/0.8660 (FSRCNN)" in md
    assert "tensorrt fp32: no TensorRT" in md


def test_random_weights_rows_are_labelled(results):
    results["latency"][0]["weights"] = "random"
    assert "fsrcnn (random weights)" in render_markdown(results)


def test_plots_are_written_as_png(results, tmp_path):
    paths = write_plots(results, tmp_path)
    assert [p.name for p in paths] == ["latency_vs_psnr.png", "latency_vs_resolution.png", "video_fps.png"]
    for p in paths:
        assert p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 5000


def test_plots_without_quality_fall_back_to_parity(results, tmp_path):
    results["quality"], results["video"] = [], []
    assert len(write_plots(results, tmp_path)) == 2


def test_validate_rejects_unexpected_and_disordered_rows(results):
    results["latency"][0]["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        validate_results(results)
    del results["latency"][0]["surprise"]
    results["latency"][0]["p95_ms"] = results["latency"][0]["p99_ms"] * 2
    with pytest.raises(ValueError, match="out of order"):
        validate_results(results)


def test_published_table_matches_the_reference_rows():
    assert published("bicubic", 4, "Set5")[1:3] == (28.42, 0.8104)
    assert published("fsrcnn", 2, "Set14")[1:3] == (32.63, 0.9088)
    assert published("edsr", 4, "BSD100")[:3] == ("EDSR-baseline", 27.57, 0.7357)
    assert published("espcn", 2, "Set5") is None  # the paper reports x3/x4 only
    assert published("red10", 4, "Set5") is None
    assert set(PAPER_ROW.values()) <= set(PUBLISHED)


def test_help_lists_the_options():
    text = build_parser().format_help()
    for flag in ("--quick", "--out", "--models", "--scales", "--sizes", "--backends", "--precisions", "--batch",
                 "--runs", "--warmup", "--data", "--video", "--no-quality", "--device", "--limit"):
        assert flag in text
