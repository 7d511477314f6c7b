"""ONNX export: every registered model at every scale matches PyTorch on ONNX Runtime CPU at two sizes.

Parametrized over ``ARCHS`` and each entry's ``scales``, so a new architecture is covered
without new code. Weights are the architectures' own random initialisation at their default
hyperparameters; images are small crops of real photos (one odd size, one larger than the
traced size, and a batch of two).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from sr_runtime.export.fp16 import convert_fp16
from sr_runtime.export.onnx import (
    INPUT_AXES,
    OUTPUT_AXES,
    check_onnx,
    export_onnx,
    read_metadata,
    set_metadata,
    slim_onnx,
)
from sr_runtime.export.verify import OnnxRunner, align_size, check_parity, compare, parity_cases
from sr_runtime.archs import ARCHS
from sr_runtime.deploy import DeployModel
from sr_runtime.errors import ExportError
from sr_runtime.spec import IOSpec

ARCH_SCALES = [(name, scale) for name, entry in ARCHS.items() for scale in entry.scales]


def _odd(size: int, spec: IOSpec) -> int:
    """``size`` aligned to the spec, made odd when ``multiple_of`` allows it."""
    size = align_size(size, spec)
    return size + 1 if spec.multiple_of == 1 and size % 2 == 0 else size


def _small_cases(spec: IOSpec, trace: int):
    """One photo crop at an odd size, one at a size larger than the trace, and a batch of two."""
    odd = (_odd(trace + 1, spec), _odd(trace + 5, spec))
    large = (align_size(trace + 8, spec), align_size(trace + 14, spec))
    cases = parity_cases([odd, large], batch=2)
    return [cases[0], cases[4], cases[-1]]


@pytest.mark.parametrize("name, scale", ARCH_SCALES, ids=[f"{n}-x{s}" for n, s in ARCH_SCALES])
def test_every_arch_and_scale_exports_with_fp32_parity(name, scale, tmp_path, signal):
    net = signal.net(name, scale)  # shipped or calibrated weights: a fresh FSRCNN outputs ~0
    spec = net.io_spec
    deploy = DeployModel(net, spec).eval()
    trace = align_size(12, spec)
    path = export_onnx(deploy, tmp_path / f"{name}_x{scale}.onnx", trace_size=(trace, trace))
    cases = _small_cases(spec, trace)
    with torch.no_grad():
        rows = check_parity(path.name, OnnxRunner(path), lambda lr: deploy(torch.from_numpy(lr)).numpy(), cases,
                            precision="fp32")
        for case in cases:
            signal.informative(deploy(torch.from_numpy(case.lr)), torch.from_numpy(case.lr), spec, threshold_db=60)
    sizes = {r.size for r in rows}
    assert len(sizes) == 3 and all(r.psnr_db >= 60 and r.nonfinite == 0 for r in rows), rows
    for case, row in zip(cases, rows):
        n, _, h, w = case.lr.shape
        assert row.size == (f"{h}x{w}" if n == 1 else f"{n}x{h}x{w}")


class _TinyRGB(nn.Module):
    """A small RGB x2 model (conv, PReLU, sub-pixel) for the tests below."""

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.PReLU(16), nn.Conv2d(16, 3 * scale * scale, 3, padding=1)
        )
        self.shuffle = nn.PixelShuffle(scale)

    @property
    def io_spec(self) -> IOSpec:
        return IOSpec(scale=self.scale)

    def forward(self, x):
        return self.shuffle(self.body(x))


def test_export_names_dynamic_axes_and_embeds_weights(tmp_path):
    path = export_onnx(DeployModel(_TinyRGB().eval()), tmp_path / "tiny.onnx", trace_size=(8, 8))
    model = onnx.load(str(path))
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("lr", "sr")
    assert {i: d.dim_param for i, d in enumerate(inp.type.tensor_type.shape.dim) if d.dim_param} == INPUT_AXES
    assert {i: d.dim_param for i, d in enumerate(out.type.tensor_type.shape.dim) if d.dim_param} == OUTPUT_AXES
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]  # no external data file beside it


def test_slim_keeps_the_contract_and_parity(tmp_path):
    deploy = DeployModel(_TinyRGB().eval())
    raw = export_onnx(deploy, tmp_path / "raw.onnx", trace_size=(8, 8))
    slim = slim_onnx(raw, tmp_path / "slim.onnx")
    cases = parity_cases([(9, 11), (20, 24)], batch=2)
    with torch.no_grad():
        rows = check_parity("slim.onnx", OnnxRunner(slim), lambda lr: deploy(torch.from_numpy(lr)).numpy(), cases,
                            precision="fp32")
    assert min(r.psnr_db for r in rows) >= 60
    assert len(onnx.load(str(slim)).graph.node) <= len(onnx.load(str(raw)).graph.node)


def test_metadata_props_round_trip(tmp_path):
    path = export_onnx(DeployModel(_TinyRGB().eval()), tmp_path / "m.onnx", trace_size=(8, 8))
    set_metadata(path, {"name": "tiny", "scale": "2", "io_spec": IOSpec(scale=2).to_dict()})
    meta = read_metadata(path)
    assert meta["name"] == "tiny" and meta["scale"] == "2"
    assert IOSpec.from_dict(__import__("json").loads(meta["io_spec"])) == IOSpec(scale=2)
    check_onnx(path)


def test_check_onnx_rejects_a_graph_without_the_contract(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ExportError, match="expected \\['lr'\\]"):
        check_onnx(path)


class _Overflowing(nn.Module):
    """Activations of ~1e6 between two convolutions: finite in FP32, Inf in FP16 (max 65504).

    Two multiplications by 1e3, so that no single constant is out of FP16's range."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    @property
    def io_spec(self) -> IOSpec:
        return IOSpec(scale=2)

    def forward(self, x):
        big = self.conv1(x) * 1e3 * 1e3
        return self.shuffle(self.conv2(big) * 1e-3 * 1e-3)


@pytest.fixture
def overflowing(tmp_path):
    model = _Overflowing().eval()
    return model, export_onnx(model, tmp_path / "overflow.onnx", trace_size=(8, 8))


def _fp16_rows(model, path):
    cases = parity_cases([(9, 11), (16, 20)], batch=2)
    with torch.no_grad():
        return check_parity(path.name, OnnxRunner(path), lambda lr: model(torch.from_numpy(lr)).numpy(), cases,
                            precision="fp16")


def test_fp16_naive_conversion_of_an_overflowing_model_gives_inf(overflowing, tmp_path):
    model, path = overflowing
    naive = convert_fp16(path, tmp_path / "naive.onnx", calibration=[np.full((1, 3, 8, 8), 0.5, np.float32)],
                         range_limit=float("inf"), max_rounds=1)
    lr = parity_cases([(9, 11)], batch=1)[0].lr
    with torch.no_grad():
        ref = model(torch.from_numpy(lr)).numpy()
    assert compare(ref, OnnxRunner(naive.path)(lr), precision="fp16").nonfinite > 0


def test_fp16_range_pass_keeps_overflowing_layers_fp32(overflowing, tmp_path):
    model, path = overflowing
    calibration = [c.lr for c in parity_cases([(16, 16)], batch=1)]
    result = convert_fp16(path, tmp_path / "fp16.onnx", calibration=calibration)
    kept = {k.op for k in result.kept_fp32}
    assert {"Mul", "Conv"} <= kept and all(k.reason == "range" for k in result.kept_fp32)
    check_onnx(result.path)
    rows = _fp16_rows(model, result.path)
    assert min(r.psnr_db for r in rows) >= 45 and sum(r.nonfinite for r in rows) == 0
    fp16_weights = [i for i in onnx.load(str(result.path)).graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert fp16_weights  # conv1 still runs in FP16


def test_fp16_error_pass_finds_overflowing_layers_without_the_range_pass(overflowing, tmp_path):
    model, path = overflowing
    calibration = [c.lr for c in parity_cases([(16, 16)], batch=1)]
    result = convert_fp16(path, tmp_path / "fp16.onnx", calibration=calibration, range_limit=float("inf"))
    assert result.kept_fp32 and all(k.reason == "error" for k in result.kept_fp32)
    assert result.calibration_psnr_db >= 45
    rows = _fp16_rows(model, result.path)
    assert min(r.psnr_db for r in rows) >= 45 and sum(r.nonfinite for r in rows) == 0


def test_fp16_io_option_sets_the_graph_io_dtype(tmp_path):
    deploy = DeployModel(_TinyRGB().eval())
    path = export_onnx(deploy, tmp_path / "tiny.onnx", trace_size=(8, 8))
    calibration = [c.lr for c in parity_cases([(16, 16)], batch=1)]
    fp32_io = convert_fp16(path, tmp_path / "a.onnx", calibration=calibration)
    fp16_io = convert_fp16(path, tmp_path / "b.onnx", calibration=calibration, keep_io_fp32=False)
    elem = lambda p: onnx.load(str(p)).graph.input[0].type.tensor_type.elem_type  # noqa: E731
    assert elem(fp32_io.path) == onnx.TensorProto.FLOAT and elem(fp16_io.path) == onnx.TensorProto.FLOAT16
    for result in (fp32_io, fp16_io):
        check_onnx(result.path)
        assert min(r.psnr_db for r in _fp16_rows(deploy, result.path)) >= 45
