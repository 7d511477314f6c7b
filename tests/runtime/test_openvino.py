"""The OpenVINO backend: parity with torch FP32 (FP32 and BF16), one compiled model for every input
size and batch, the IR round trip, registration (``--backend openvino``, ``.xml`` files), and its
errors. Skipped with a reason where openvino is not installed."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("openvino", reason="openvino is not installed (pip install 'sr-runtime[openvino]')")

from sr_runtime.backends import available_backends, create_backend, model_kind, select_backend  # noqa: E402
from sr_runtime.backends import openvino as ov_backend  # noqa: E402
from sr_runtime.backends.openvino import OpenVINOBackend  # noqa: E402
from sr_runtime.backends.torch import TorchBackend  # noqa: E402
from sr_runtime.checkpoint import load_checkpoint  # noqa: E402
from sr_runtime.cli import build_parser  # noqa: E402
from sr_runtime.color import image_to_tensor  # noqa: E402
from sr_runtime.deploy import DeployModel  # noqa: E402
from sr_runtime.errors import BackendUnavailableError, InputError, UnsupportedScaleError  # noqa: E402
from sr_runtime.export.openvino import save_ir
from sr_runtime.metrics import psnr_db
from sr_runtime.options import RuntimeOptions
from sr_runtime.upscaler import Upscaler  # noqa: E402
from sr_runtime.zoo import shipped_path  # noqa: E402

TOLERANCE_DB = {"fp32": 50.0, "bf16": 40.0}
"""Minimum RGB PSNR against torch FP32, per precision."""


def export_onnx(ckpt, onnx_path, *, with_spec: bool = True, dynamic: bool = True):
    """ONNX of DeployModel as sr-export writes it (input lr, output sr, dynamic axes, io_spec metadata)."""
    import onnx

    axes = {"lr": {0: "batch", 2: "height", 3: "width"}, "sr": {0: "batch", 2: "oh", 3: "ow"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            DeployModel(ckpt.model).eval(),
            (torch.rand(1, 3, 32, 32),),
            str(onnx_path),
            dynamo=False,
            input_names=["lr"],
            output_names=["sr"],
            dynamic_axes=axes if dynamic else None,
            opset_version=17,
        )
    if with_spec:
        model = onnx.load(str(onnx_path))
        model.metadata_props.add(key="io_spec", value=json.dumps(ckpt.spec.to_dict()))
        onnx.save(model, str(onnx_path))
    return onnx_path


@pytest.fixture(scope="module")
def fsrcnn(tmp_path_factory):
    """The shipped FSRCNN x2 (a fresh FSRCNN outputs ~0: a form returning zeros would pass parity),
    its checkpoint and its ONNX export."""
    root = tmp_path_factory.mktemp("openvino")
    ckpt = load_checkpoint(shipped_path("fsrcnn", 2))
    onnx_path = export_onnx(ckpt, root / "fsrcnn_x2.onnx")
    return ckpt, onnx_path


@pytest.fixture(scope="module")
def torch_ref(fsrcnn):
    ckpt, _ = fsrcnn
    backend = TorchBackend(ckpt.model, spec=ckpt.spec, device="cpu", precision="fp32")

    def run(lr: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return backend.run(lr)

    return run


@pytest.fixture
def photo_crop(photo_rgb_u8) -> torch.Tensor:
    return image_to_tensor(np.ascontiguousarray(photo_rgb_u8[180:244, 200:264]))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_matches_torch_fp32_on_a_photo(fsrcnn, torch_ref, photo_crop, signal, precision, record_property):
    if precision == "bf16" and "BF16" not in ov_backend.cpu_capabilities():
        pytest.skip(f"this CPU has no BF16 (OpenVINO capabilities: {', '.join(ov_backend.cpu_capabilities())})")
    expected = torch_ref(photo_crop)
    # The bicubic upscale of this crop is 36.2 dB from the model's output: 3.8 dB under the BF16 bar.
    signal.informative(expected, photo_crop, fsrcnn[0].spec, threshold_db=TOLERANCE_DB[precision], margin_db=3.0)
    with OpenVINOBackend(fsrcnn[1], precision=precision) as ov:
        assert ov.describe().startswith(f"openvino on cpu at {precision}")
        # The precision OpenVINO compiled at, not only the one asked for (its AMX default is BF16).
        assert str(ov._compiled.get_property("INFERENCE_PRECISION_HINT")) == {
            "fp32": "<Type: 'float32'>", "bf16": "<Type: 'bfloat16'>"}[precision]
        got = ov.run(photo_crop)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    db = psnr_db(got, expected)
    max_levels = (got - expected).abs().max().item() * 255
    record_property(f"openvino_{precision}_vs_torch_fp32_db", round(db, 2))
    print(f"OpenVINO {precision.upper()} vs torch FP32 (shipped FSRCNN x2, 64x64 photo crop): "
          f"{db:.1f} dB, max {max_levels:.2f} levels")
    assert db >= TOLERANCE_DB[precision], f"{precision}: {db:.1f} dB < {TOLERANCE_DB[precision]} dB"


def test_one_compiled_model_runs_two_sizes_and_a_batch(fsrcnn, torch_ref, photo_rgb_u8):
    photo = image_to_tensor(np.ascontiguousarray(photo_rgb_u8[100:200, 150:300]))  # (1, 3, 100, 150)
    inputs = [photo[:, :, :40, :56], photo[:, :, 13:100, 7:150],
              torch.cat([photo[:, :, :48, :64], photo[:, :, 50:98, 80:144]])]
    with OpenVINOBackend(fsrcnn[1], threads=2) as ov:
        compiled = ov._compiled
        shape = compiled.input(0).get_partial_shape()
        assert shape[0].is_dynamic and shape[2].is_dynamic and shape[3].is_dynamic, shape
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 2
        assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
        for lr in inputs:
            got = ov.run(lr)
            assert ov._compiled is compiled  # no recompile per shape
            assert got.shape == (lr.shape[0], 3, 2 * lr.shape[2], 2 * lr.shape[3])
            assert psnr_db(got, torch_ref(lr)) >= TOLERANCE_DB["fp32"]
        # The output is a copy: the next call must not overwrite an earlier result.
        first = ov.run(inputs[0])
        kept = first.clone()
        ov.run(torch.flip(inputs[0], dims=[-1]))
        assert torch.equal(first, kept)


def test_a_static_shape_model_keeps_its_shape_as_limits(fsrcnn, torch_ref, photo_crop, tmp_path):
    """A model traced at one shape has that shape baked into its constants (FSRCNN's Y-channel
    reshape): reshaping it to dynamic would compile and then fail at run time, so the backend keeps
    the shape and says so in its limits, which the Upscaler tiles to."""
    static = export_onnx(fsrcnn[0], tmp_path / "static.onnx", dynamic=False)
    with OpenVINOBackend(static) as ov:
        assert ov.limits.static_hw and ov.limits.max_hw == (32, 32) and ov.limits.static_batch
        lr = photo_crop[:, :, :32, :32]
        assert psnr_db(ov.run(lr), torch_ref(lr)) >= TOLERANCE_DB["fp32"]
        with pytest.raises(InputError, match="larger than the largest"):
            ov.run(photo_crop[:, :, :32, :40])


def test_ir_round_trip_keeps_the_spec_and_the_output(fsrcnn, torch_ref, photo_crop, tmp_path):
    import openvino as ov

    ckpt, onnx_path = fsrcnn
    # Plain openvino.save_model keeps the ONNX metadata (rt_info "framework").
    plain = tmp_path / "plain" / "fsrcnn_x2.xml"
    plain.parent.mkdir()
    ov.save_model(ov.Core().read_model(str(onnx_path)), str(plain))
    # save_ir stores the spec under rt_info "sr_runtime" even when the source has none.
    bare = export_onnx(ckpt, tmp_path / "bare.onnx", with_spec=False)
    ours = save_ir(bare, tmp_path / "ours" / "fsrcnn_x2.xml", spec=ckpt.spec)
    assert ours.with_suffix(".bin").is_file()
    expected = torch_ref(photo_crop)
    for xml in (plain, ours):
        assert model_kind(xml) == "ir"
        with create_backend(xml) as backend:  # backend auto: an .xml runs on OpenVINO
            assert backend.name == "openvino" and backend.spec == ckpt.spec
            assert psnr_db(backend.run(photo_crop), expected) >= TOLERANCE_DB["fp32"]


def test_missing_files_are_input_errors(fsrcnn, tmp_path):
    with pytest.raises(InputError, match="not found"):
        OpenVINOBackend(tmp_path / "nope.onnx")
    xml = save_ir(fsrcnn[1], tmp_path / "m.xml")
    xml.with_suffix(".bin").unlink()
    with pytest.raises(InputError, match=r"m\.bin not found"):
        OpenVINOBackend(xml)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot read"):
        OpenVINOBackend(garbage)


def test_bf16_is_refused_where_the_cpu_lacks_it(fsrcnn, monkeypatch):
    monkeypatch.setattr(ov_backend, "cpu_capabilities", lambda: ["FP32", "INT8", "EXPORT_IMPORT"])
    with pytest.raises(BackendUnavailableError, match="bf16 needs .* FP32, INT8, EXPORT_IMPORT"):
        OpenVINOBackend(fsrcnn[1], precision="bf16")
    with pytest.raises(BackendUnavailableError, match="bf16 needs"):
        create_backend(fsrcnn[1], RuntimeOptions(backend="openvino", precision="bf16"))


def test_unsupported_precision_and_device_are_errors(fsrcnn):
    with pytest.raises(BackendUnavailableError, match="fp32 or bf16, not 'fp16'"):
        OpenVINOBackend(fsrcnn[1], precision="fp16")
    with pytest.raises(BackendUnavailableError, match="runs on cpu, not 'cuda'"):
        OpenVINOBackend(fsrcnn[1], device="cuda")
    with pytest.raises(BackendUnavailableError, match="runs on cpu, not 'cuda:0'"):
        create_backend(fsrcnn[1], RuntimeOptions(backend="openvino", device="cuda:0"))


def test_no_metadata_needs_a_scale(fsrcnn, tmp_path, photo_crop):
    bare = export_onnx(fsrcnn[0], tmp_path / "bare.onnx", with_spec=False)
    with pytest.raises(InputError, match="no io_spec metadata.*pass --scale"):
        OpenVINOBackend(bare)
    with OpenVINOBackend(bare, scale=2) as ov:
        assert ov.spec.scale == 2 and ov.run(photo_crop[:, :, :16, :16]).shape == (1, 3, 32, 32)
    with pytest.raises(UnsupportedScaleError, match="upscales x2, but scale 4"):
        OpenVINOBackend(fsrcnn[1], scale=4)


def test_registration_is_additive(fsrcnn):
    assert available_backends()["openvino"] == ["cpu"]
    assert select_backend("onnx", backend="openvino").backend == "openvino"
    assert select_backend("ir").backend == "openvino"
    assert select_backend("onnx").backend == "onnxruntime"  # auto for .onnx is unchanged
    assert select_backend("checkpoint").backend == "torch"
    with pytest.raises(BackendUnavailableError, match="cannot run an OpenVINO IR"):
        select_backend("ir", backend="onnxruntime")
    with pytest.raises(BackendUnavailableError, match="cannot run a checkpoint"):
        select_backend("checkpoint", backend="openvino")
    with pytest.raises(BackendUnavailableError, match="--provider applies to onnxruntime"):
        select_backend("onnx", backend="openvino", provider="cpu")
    # bf16 exists only on openvino: other backends refuse it rather than run FP32 under its name.
    with pytest.raises(BackendUnavailableError, match="bf16 runs on the openvino backend only"):
        create_backend("fsrcnn", RuntimeOptions(backend="torch", precision="bf16"), scale=2)
    with pytest.raises(BackendUnavailableError, match="bf16 runs on the openvino backend only"):
        create_backend(fsrcnn[1], RuntimeOptions(precision="bf16"))
    args = build_parser().parse_args(["x.png", "--backend", "openvino", "--bf16"])
    assert args.backend == "openvino" and args.precision == "bf16"


def test_upscaler_on_openvino_tiled_equals_whole(fsrcnn, small_rgb_u8):
    with Upscaler(fsrcnn[1], backend="openvino", tile=24) as tiled, \
            Upscaler(fsrcnn[1], backend="openvino", tile=0) as whole:
        assert tiled.backend.name == "openvino"
        a, b = tiled.upscale(small_rgb_u8), whole.upscale(small_rgb_u8)
    assert a.shape == (74, 106, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b).max() <= 1
    with Upscaler(shipped_path("fsrcnn", 2), backend="torch", tile=0) as ref:
        assert np.abs(ref.upscale(small_rgb_u8).astype(int) - b).max() <= 1
