"""Backends: the base class's checks, explicit selection (no silent fall back), parity with torch FP32,
the TensorRT sidecar check. GPU and TensorRT tests carry markers and skip with a reason."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch

from sr_runtime.archs import build, resolve_hparams
from sr_runtime.backends import available_backends, create_backend, model_kind, select_backend
from sr_runtime.backends.base import Backend
from sr_runtime.checkpoint import load_checkpoint, save_checkpoint
from sr_runtime.color import image_to_tensor
from sr_runtime.deploy import DeployModel
from sr_runtime.errors import BackendUnavailableError, EngineMismatchError, InputError, UnsupportedScaleError
from sr_runtime.metrics import psnr_db
from sr_runtime.options import RuntimeOptions
from sr_runtime.spec import IOSpec

PARITY_ARCHS = ("fsrcnn", "srcnn", "edsr")
"""One of each contract: Y with transposed conv, Y with bicubic pre-upsampling, RGB sub-pixel."""
TOLERANCE_DB = {"fp32": 50.0, "fp16": 45.0}
"""Minimum PSNR against torch FP32, per precision (45 dB: the gate for reduced precision)."""


def make_checkpoint(path, name: str, scale: int = 2, net=None):
    net = build(name, scale=scale) if net is None else net
    return save_checkpoint(path, net, arch=name, scale=scale, hparams=resolve_hparams(name, scale=scale))


def export_onnx(ckpt_path, onnx_path, *, with_spec: bool = True):
    """ONNX of DeployModel as sr-export writes it (input lr, output sr, dynamic axes, io_spec metadata)."""
    import onnx

    ckpt = load_checkpoint(ckpt_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            DeployModel(ckpt.model).eval(),
            (torch.rand(1, 3, 32, 32),),
            str(onnx_path),
            dynamo=False,
            input_names=["lr"],
            output_names=["sr"],
            dynamic_axes={"lr": {0: "batch", 2: "height", 3: "width"}, "sr": {0: "batch", 2: "oh", 3: "ow"}},
            opset_version=17,
        )
    if with_spec:
        model = onnx.load(str(onnx_path))
        model.metadata_props.add(key="io_spec", value=json.dumps(ckpt.spec.to_dict()))
        onnx.save(model, str(onnx_path))
    return onnx_path


@pytest.fixture(scope="module")
def fsrcnn_files(tmp_path_factory, signal):
    root = tmp_path_factory.mktemp("backends")
    # The shipped weights: a fresh FSRCNN outputs ~0, so a form returning zeros would pass parity.
    ckpt = make_checkpoint(root / "fsrcnn_x2.safetensors", "fsrcnn", net=signal.net("fsrcnn", 2))
    return ckpt, export_onnx(ckpt, root / "fsrcnn_x2.onnx")


@pytest.fixture
def photo_crop(photo_rgb_u8) -> torch.Tensor:
    return image_to_tensor(np.ascontiguousarray(photo_rgb_u8[180:244, 200:264]))


class _Nearest(Backend):
    name = "nearest"

    def __init__(self, scale=2, wrong=False, **kw):
        super().__init__(spec=IOSpec(scale=scale, multiple_of=4, min_size=8), device="cpu", precision="fp32",
                         input_dtype=torch.float32, **kw)
        self.wrong = wrong

    def _run(self, lr):
        s = self.spec.scale + (1 if self.wrong else 0)
        return lr.repeat_interleave(s, -1).repeat_interleave(s, -2)


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.rand(3, 8, 8), "N, 3, h, w"),
        (torch.rand(1, 4, 8, 8), "N, 3, h, w"),
        (torch.rand(1, 3, 8, 8, dtype=torch.float64), "float32"),
        (torch.rand(1, 3, 10, 8), "multiple of 4"),
        (torch.rand(1, 3, 4, 8), "smallest"),
        (np.zeros((1, 3, 8, 8), np.float32), "torch.Tensor"),
    ],
)
def test_base_class_checks_inputs(bad, match):
    with _Nearest() as backend, pytest.raises(InputError, match=match):
        backend.run(bad)


def test_base_class_checks_the_output_and_closing():
    with _Nearest(wrong=True) as backend, pytest.raises(InputError, match="expected"):
        backend.run(torch.rand(1, 3, 8, 8))
    backend = _Nearest()
    assert backend.run(torch.rand(2, 3, 8, 12)).shape == (2, 3, 16, 24)
    backend.close()
    with pytest.raises(InputError, match="closed"):
        backend.run(torch.rand(1, 3, 8, 8))


def test_model_kind_by_suffix():
    assert model_kind("a/b.engine") == "engine" and model_kind("x.plan") == "engine"
    assert model_kind("m.onnx") == "onnx"
    assert model_kind("fsrcnn") == "checkpoint" and model_kind("r/best.safetensors") == "checkpoint"


def test_available_backends_lists_cpu():
    have = available_backends()
    assert "cpu" in have["torch"] and "cpu" in have["onnxruntime"]


def test_auto_selection_follows_the_model_file():
    gpu = torch.cuda.is_available()
    assert select_backend("checkpoint").backend == "torch"
    assert select_backend("checkpoint").device == ("cuda:0" if gpu else "cpu")
    onnx_choice = select_backend("onnx")
    assert onnx_choice.backend == "onnxruntime" and onnx_choice.provider in ("cpu", "cuda")


@pytest.mark.parametrize(
    "kind,kwargs,match",
    [
        ("checkpoint", {"backend": "onnxruntime"}, "sr-export"),
        ("checkpoint", {"backend": "tensorrt"}, "sr-export --format engine"),
        ("onnx", {"backend": "torch"}, "checkpoint"),
        ("engine", {"backend": "onnxruntime"}, "tensorrt"),
        ("checkpoint", {"provider": "cuda"}, "onnxruntime"),
        ("checkpoint", {"backend": "tflite"}, "valid"),
        ("checkpoint", {"device": "npu"}, "available"),
    ],
)
def test_explicit_choices_that_cannot_be_honoured_are_errors(kind, kwargs, match):
    with pytest.raises(BackendUnavailableError, match=match):
        select_backend(kind, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error; this machine has a GPU")
def test_cuda_without_gpu_is_an_error_listing_devices(fsrcnn_files):
    with pytest.raises(BackendUnavailableError, match="available: cpu"):
        create_backend(fsrcnn_files[0], RuntimeOptions(device="cuda"))


def test_unavailable_onnxruntime_provider_is_an_error(fsrcnn_files):
    """Runs wherever onnxruntime lacks the CUDA provider (CPU builds; also on GPU machines)."""
    if "cuda" in available_backends()["onnxruntime"]:
        pytest.skip("this onnxruntime has a usable CUDA provider")
    with pytest.raises(BackendUnavailableError, match="provider 'cuda' is not available"):
        create_backend(fsrcnn_files[1], RuntimeOptions(provider="cuda"))


def test_fp16_on_the_cpu_is_an_error(fsrcnn_files):
    with pytest.raises(BackendUnavailableError, match="CUDA devices only"):
        create_backend(fsrcnn_files[0], RuntimeOptions(precision="fp16", device="cpu"))


def test_onnx_precision_must_match(fsrcnn_files):
    with pytest.raises(BackendUnavailableError, match="FP32 model and fp16"):
        create_backend(fsrcnn_files[1], RuntimeOptions(precision="fp16"))


@pytest.mark.parametrize("name", PARITY_ARCHS)
def test_onnxruntime_cpu_matches_torch_fp32_on_a_photo(tmp_path, name, photo_crop, signal):
    ckpt = make_checkpoint(tmp_path / f"{name}.safetensors", name, net=signal.net(name, 2))
    onnx_path = export_onnx(ckpt, tmp_path / f"{name}.onnx")
    with create_backend(ckpt, RuntimeOptions(device="cpu")) as ref, \
            create_backend(onnx_path, RuntimeOptions(provider="cpu")) as ort:
        assert ort.describe().startswith("onnxruntime on cpu at fp32")
        with torch.inference_mode():
            expected = ref.run(photo_crop)
        signal.informative(expected, photo_crop, ref.spec, threshold_db=TOLERANCE_DB["fp32"])
        got = ort.run(photo_crop)
    db = psnr_db(got, expected)
    print(f"{name}: onnxruntime CPU vs torch FP32: {db:.1f} dB")
    assert db >= TOLERANCE_DB["fp32"]


def test_torch_backend_matches_the_deploy_model(fsrcnn_files, photo_crop):
    ckpt = load_checkpoint(fsrcnn_files[0])
    with torch.inference_mode():
        expected = DeployModel(ckpt.model).eval()(photo_crop)
    for channels_last in (False, True):
        with create_backend(fsrcnn_files[0], RuntimeOptions(device="cpu", channels_last=channels_last)) as backend:
            assert psnr_db(backend.run(photo_crop), expected) >= 80


def test_onnx_without_metadata_is_probed_and_a_scale_is_checked(tmp_path, fsrcnn_files):
    """No io_spec: the scale is probed (tests/runtime/test_foreign_onnx.py has the rest)."""
    bare = export_onnx(fsrcnn_files[0], tmp_path / "bare.onnx", with_spec=False)
    for scale in (None, 2):
        with create_backend(bare, scale=scale) as backend:
            assert backend.scale == 2
            assert backend.run(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    with pytest.raises(UnsupportedScaleError, match="x2"):
        create_backend(bare, scale=3)
    with pytest.raises(UnsupportedScaleError):
        create_backend(fsrcnn_files[1], scale=3)


# --- TensorRT sidecar (runtime side; needs no TensorRT) ---------------------------------------------


def _sidecar(engine, **overrides):
    from sr_runtime.backends.tensorrt_sidecar import engine_key

    record = {
        "onnx_sha256": "0" * 64,
        "onnx_file": "model.onnx",
        "profile": {"min": "16x16", "opt": "64x64", "max": "128x128", "batch": {"min": 1, "opt": 1, "max": 4}},
        "precision": "fp16",
        "tensorrt_version": "10.9.0",
        "gpu_name": "NVIDIA H100",
        "command": "sr-export --model edsr --scale 2 --format engine",
        "io_spec": IOSpec(scale=2).to_dict(),
        "engine_sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
    }
    record["key"] = engine_key(**{k: record[k] for k in ("onnx_sha256", "profile", "precision", "tensorrt_version",
                                                          "gpu_name")})
    record.update(overrides)
    engine.with_name(engine.name + ".json").write_text(json.dumps(record))
    return record


def test_sidecar_check_accepts_the_machine_it_was_built_for(tmp_path):
    from sr_runtime.backends.tensorrt import _limits
    from sr_runtime.backends.tensorrt_sidecar import check_sidecar, read_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine-bytes")
    _sidecar(engine)
    record = read_sidecar(engine)
    check_sidecar(record, tensorrt_version="10.9.0", gpu_name="NVIDIA H100", precision="fp16", engine_path=engine)
    limits = _limits(record)
    assert limits.min_hw == (16, 16) and limits.max_hw == (128, 128) and limits.max_batch == 4


@pytest.mark.parametrize(
    "change,match",
    [
        ({"tensorrt_version": "8.6.1"}, "TensorRT version '8.6.1'"),
        ({"gpu_name": "NVIDIA A10"}, "GPU 'NVIDIA A10'"),
        ({"engine_sha256": "f" * 64}, "replaced"),
    ],
)
def test_sidecar_mismatch_raises_with_the_rebuild_command(tmp_path, change, match):
    from sr_runtime.backends.tensorrt_sidecar import check_sidecar, read_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine-bytes")
    _sidecar(engine, **change)
    with pytest.raises(EngineMismatchError, match=match) as info:
        check_sidecar(read_sidecar(engine), tensorrt_version="10.9.0", gpu_name="NVIDIA H100", engine_path=engine)
    assert "sr-export --model edsr" in str(info.value)


def test_sidecar_precision_and_onnx_changes_are_mismatches(tmp_path):
    from sr_runtime.backends.tensorrt_sidecar import check_sidecar, read_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine-bytes")
    (tmp_path / "model.onnx").write_bytes(b"changed onnx")
    _sidecar(engine)
    with pytest.raises(EngineMismatchError, match="precision 'fp16' \\(here: 'fp32'\\).*model.onnx"):
        check_sidecar(read_sidecar(engine), tensorrt_version="10.9.0", gpu_name="NVIDIA H100", precision="fp32",
                      engine_path=engine)


def test_missing_or_broken_sidecar_is_a_mismatch(tmp_path):
    from sr_runtime.backends.tensorrt_sidecar import read_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(EngineMismatchError, match="no sidecar"):
        read_sidecar(engine)
    engine.with_name("m.engine.json").write_text("{not json")
    with pytest.raises(EngineMismatchError, match="unreadable"):
        read_sidecar(engine)
    engine.with_name("m.engine.json").write_text(json.dumps({"precision": "fp32"}))
    with pytest.raises(EngineMismatchError, match="lacks"):
        read_sidecar(engine)


# --- GPU and TensorRT ----------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("options", [{}, {"cuda_graphs": True}, {"compile": True}])
def test_torch_cuda_matches_cpu_fp32(fsrcnn_files, photo_crop, precision, options, signal):
    with create_backend(fsrcnn_files[0], RuntimeOptions(device="cpu")) as ref:
        with torch.inference_mode():
            expected = ref.run(photo_crop)
    signal.informative(expected, photo_crop, ref.spec, threshold_db=TOLERANCE_DB[precision])
    with create_backend(fsrcnn_files[0], RuntimeOptions(device="cuda", precision=precision, **options)) as gpu:
        x = photo_crop.to("cuda", gpu.input_dtype)
        gpu.run(torch.flip(x, dims=[-1]))  # the first call compiles or captures, on another image
        got = gpu.run(x).float().cpu()  # a replay must compute on its own input, not the captured one
    assert psnr_db(got, expected) >= TOLERANCE_DB[precision]


@pytest.mark.gpu
def test_onnxruntime_cuda_iobinding_matches_torch(fsrcnn_files, photo_crop, signal):
    if "cuda" not in available_backends()["onnxruntime"]:
        pytest.skip("needs onnxruntime-gpu with CUDAExecutionProvider")
    with create_backend(fsrcnn_files[0], RuntimeOptions(device="cpu")) as ref:
        with torch.inference_mode():
            expected = ref.run(photo_crop)
    signal.informative(expected, photo_crop, ref.spec, threshold_db=TOLERANCE_DB["fp32"])
    with create_backend(fsrcnn_files[1], RuntimeOptions(provider="cuda")) as ort:
        got = ort.run(photo_crop.cuda())
        assert got.is_cuda
    assert psnr_db(got.cpu(), expected) >= TOLERANCE_DB["fp32"]


@pytest.mark.gpu
@pytest.mark.trt
def test_tensorrt_engine_matches_torch(tmp_path, fsrcnn_files, photo_crop):
    from sr_runtime.export.profile import ShapeProfile
    from sr_runtime.export.tensorrt_build import build_engine

    ckpt = load_checkpoint(fsrcnn_files[0])
    engine, _ = build_engine(
        fsrcnn_files[1], tmp_path / "m.engine", spec=ckpt.spec,
        profile=ShapeProfile(min=(16, 16), opt=(64, 64), max=(128, 128), batch=(1, 2, 4)),
        command="test", cache_dir=tmp_path / "cache",
    )
    with create_backend(fsrcnn_files[0], RuntimeOptions(device="cpu")) as ref:
        with torch.inference_mode():
            expected = ref.run(photo_crop)
    with create_backend(engine) as trt:
        assert trt.limits.max_hw == (128, 128)
        got = trt.run(photo_crop.cuda().to(trt.input_dtype)).float().cpu()
        with pytest.raises(InputError, match="largest"):
            trt.run(torch.rand(1, 3, 256, 256, device="cuda", dtype=trt.input_dtype))
    assert psnr_db(got, expected) >= TOLERANCE_DB[trt.precision]
    # A view into a batch starts wherever the slice does (not 256-byte aligned): realigned, same result.
    with create_backend(engine) as trt:
        pair = torch.cat([photo_crop[:, :, :, 1:], photo_crop[:, :, :, :-1]]).cuda().to(trt.input_dtype)
        view = pair.flatten()[1:].as_strided(pair[1:].shape, pair[1:].stride())
        whole = trt.run(view.clone()).float().cpu()
        assert torch.equal(trt.run(view).float().cpu(), whole)


# --- CUDA paths, checked without a GPU ---------------------------------------------------------------


def test_tensorrt_io_is_realigned_to_256_bytes():
    from sr_runtime.backends.tensorrt import IO_ALIGNMENT, aligned

    base = torch.zeros(4096)
    start = next(i for i in range(64) if (base.data_ptr() + 4 * i) % IO_ALIGNMENT == 0)
    ok = base[start : start + 1024]
    assert aligned(ok) is ok  # aligned and contiguous: used as is, no copy
    shifted = base[start + 1 : start + 1025]  # a view one float later: 4 bytes off
    shifted.copy_(torch.arange(1024.0))
    moved = aligned(shifted)
    assert moved.data_ptr() % IO_ALIGNMENT == 0 and moved.data_ptr() != shifted.data_ptr()
    torch.testing.assert_close(moved, shifted, rtol=0, atol=0)


def test_tensorrt_rejected_address_is_an_error():
    from sr_runtime.backends.tensorrt import bind_address

    class Context:
        def __init__(self, answer):
            self.answer, self.calls = answer, []

        def set_tensor_address(self, name, address):
            self.calls.append((name, address))
            return self.answer

    x = torch.zeros(1, 3, 8, 8)
    accepting = Context(True)
    bind_address(accepting, "lr", x)
    assert accepting.calls == [("lr", x.data_ptr())]
    with pytest.raises(BackendUnavailableError, match="rejected the address of I/O tensor 'lr'"):
        bind_address(Context(False), "lr", x)


def test_onnxruntime_gpu_provider_options():
    from sr_runtime.backends.onnxruntime import OnnxRuntimeBackend

    dev = torch.device("cuda", 1)
    (cuda, cuda_opts), cpu = OnnxRuntimeBackend._providers("cuda", dev, "fp32", None, stream=1234)
    assert (cuda, cpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    # No cuDNN benchmark per new tile shape; the backend's own stream, not the legacy default one.
    assert cuda_opts == {"device_id": 1, "cudnn_conv_algo_search": "HEURISTIC", "user_compute_stream": "1234"}


def test_onnxruntime_tensorrt_provider_gets_explicit_profile_shapes(tmp_path):
    from sr_runtime.backends.onnxruntime import TRT_PROFILE, OnnxRuntimeBackend

    (name, opts), (cuda, _), _ = OnnxRuntimeBackend._providers(
        "tensorrt", torch.device("cuda", 0), "fp16", tmp_path, stream=99, input_name="input"
    )
    assert (name, cuda) == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    (min_h, min_w), (opt_h, opt_w), (max_h, max_w), max_batch = TRT_PROFILE
    assert opts["trt_profile_min_shapes"] == f"input:1x3x{min_h}x{min_w}"
    assert opts["trt_profile_opt_shapes"] == f"input:1x3x{opt_h}x{opt_w}"
    assert opts["trt_profile_max_shapes"] == f"input:{max_batch}x3x{max_h}x{max_w}"
    assert opts["trt_fp16_enable"] is True and opts["trt_engine_cache_path"] == str(tmp_path)
    assert opts["user_compute_stream"] == "99"


def test_graph_input_name_is_read_from_the_file(fsrcnn_files):
    from sr_runtime.backends.onnxruntime import _graph_input_name

    assert _graph_input_name(fsrcnn_files[1]) == "lr"
