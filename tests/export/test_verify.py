"""The parity comparison: figures reached, per-precision tolerances, and the failure message."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sr_runtime.export.verify import (
    TOLERANCES,
    ParityCase,
    align_size,
    check_parity,
    compare,
    parity_cases,
    parity_sizes,
)
from sr_runtime.errors import ExportError, ParityError
from sr_runtime.spec import IOSpec


def test_compare_identical_outputs_is_infinite_psnr_and_passes():
    ref = np.random.rand(1, 3, 8, 8).astype(np.float32)
    result = compare(ref, ref.copy())
    assert math.isinf(result.psnr_db) and result.psnr_db > 0
    assert result.max_abs_levels == 0 and result.mean_abs == 0 and result.nonfinite == 0
    assert result.passed


def test_compare_reports_psnr_and_levels_of_a_known_error():
    ref = np.full((1, 3, 10, 10), 0.5, dtype=np.float32)
    out = ref + 1e-3  # MSE 1e-6 -> 60 dB; 0.255 levels
    result = compare(ref, out)
    assert result.psnr_db == pytest.approx(60.0, abs=0.01)
    assert result.max_abs_levels == pytest.approx(0.255, rel=1e-3)
    assert result.mean_abs == pytest.approx(0.255, rel=1e-3)


def test_compare_uses_the_tolerance_of_the_precision():
    ref = np.full((1, 3, 10, 10), 0.5, dtype=np.float32)
    out = ref + 2e-3  # ~54 dB: not FP32 parity, fine for FP16
    assert not compare(ref, out, precision="fp32").passed
    assert compare(ref, out, precision="fp16").passed
    assert TOLERANCES["fp32"].min_psnr_db == 60 and TOLERANCES["fp16"].min_psnr_db == 45


def test_compare_counts_nan_and_inf_and_fails():
    ref = np.zeros((1, 3, 4, 4), dtype=np.float32)
    out = ref.copy()
    out[0, 0, 0, 0] = np.nan
    out[0, 1, 1, 1] = np.inf
    result = compare(ref, out, precision="fp16")
    assert result.nonfinite == 2
    assert not result.passed


def test_compare_accepts_torch_tensors_and_rejects_shape_mismatch():
    torch = pytest.importorskip("torch")
    ref = torch.rand(1, 3, 4, 4)
    assert compare(ref, ref.clone().half()).psnr_db > 60
    with pytest.raises(ExportError, match="shape"):
        compare(ref, torch.rand(1, 3, 4, 5))
    with pytest.raises(ExportError, match="precision"):
        compare(ref, ref, precision="int8")


def test_parity_sizes_include_an_odd_and_a_larger_size_aligned_to_the_spec():
    assert parity_sizes(IOSpec(scale=2)) == [(37, 53), (64, 96)]
    aligned = parity_sizes(IOSpec(scale=2, multiple_of=4, min_size=40))
    assert all(h % 4 == 0 and w % 4 == 0 and min(h, w) >= 40 for h, w in aligned)
    assert align_size(37, IOSpec(scale=2, multiple_of=8)) == 40


def test_parity_cases_are_real_image_crops_at_every_size_plus_a_batch():
    cases = parity_cases([(11, 13), (20, 24)], batch=2)
    shapes = {c.lr.shape for c in cases}
    assert (1, 3, 11, 13) in shapes and (1, 3, 20, 24) in shapes and (2, 3, 11, 13) in shapes
    assert {"astronaut", "chelsea", "coffee"} <= {c.image for c in cases}
    for case in cases:
        assert case.lr.dtype == np.float32 and 0 <= case.lr.min() and case.lr.max() <= 1
        assert case.lr.std() > 0.01  # a photo, not a constant


def test_parity_cases_read_an_extra_folder(tmp_path):
    from PIL import Image

    Image.fromarray((np.random.rand(40, 50, 3) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    cases = parity_cases([(11, 13)], folder=tmp_path, batch=1)
    assert [c.image for c in cases][-1] == f"{tmp_path.name}/x"


def test_check_parity_returns_rows_with_figures():
    cases = parity_cases([(8, 8)], batch=1)
    rows = check_parity("same.onnx", lambda lr: lr + 1e-5, lambda lr: lr, cases, precision="fp32")
    assert len(rows) == len(cases)
    assert all(r.passed and r.psnr_db == pytest.approx(100, abs=0.1) for r in rows)
    assert rows[0].to_dict()["size"] == "8x8"


def test_check_parity_failure_names_artifact_image_and_figures():
    case = ParityCase("chelsea", np.full((1, 3, 5, 7), 0.5, dtype=np.float32))
    with pytest.raises(ParityError) as info:
        check_parity("model_fp16.onnx", lambda lr: lr + 0.05, lambda lr: lr, [case], precision="fp16")
    message = str(info.value)
    assert "model_fp16.onnx" in message and "chelsea" in message and "5x7" in message
    assert "26.02 dB" in message and "45" in message


def test_check_parity_wraps_a_crashing_runner():
    case = ParityCase("coffee", np.zeros((1, 3, 4, 4), dtype=np.float32))

    def broken(lr):
        raise RuntimeError("kernel exploded")

    with pytest.raises(ParityError, match="coffee.*kernel exploded"):
        check_parity("x.engine", broken, lambda lr: lr, [case], precision="fp32")
