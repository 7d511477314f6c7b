"""The GPU forms of the automatic fast path (sr_runtime.fastpath): TensorRT FP16, ONNX Runtime CUDA
FP16, torch FP16 channels-last (compiled when asked), then FP32.

The candidate lists, skip reasons, cache keys and the build flow around the engine run here on a
CPU with the availability checks faked (nothing GPU-side runs); the tests that build and run the
real forms are marked ``gpu``/``trt`` and skip without a GPU or TensorRT.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from sr_runtime import fastpath
from sr_runtime.backends import tensorrt_sidecar
from sr_runtime.backends.torch import TorchBackend
from sr_runtime.checkpoint import load_checkpoint
from sr_runtime.errors import BackendUnavailableError, ExportError
from sr_runtime.export.verify import align_size
from sr_runtime.fastpath import build, cache, candidates
from sr_runtime.fastpath.candidates import ONNX_FILE, ONNX_FP16_FILE, Candidate, candidates_for
from sr_runtime.metrics import psnr_db
from sr_runtime.options import RuntimeOptions
from sr_runtime.zoo import shipped_path

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

CUDA = torch.device("cuda", 0)


@pytest.fixture
def everything_installed(monkeypatch):
    """TensorRT importable, onnxruntime-gpu with its CUDA provider, the FP16 conversion's tools."""
    monkeypatch.setattr(candidates, "tensorrt_status", lambda: (True, "TensorRT 10.9.0"))
    monkeypatch.setattr(candidates, "_fp16_onnx_status", lambda: (True, ""))
    monkeypatch.setattr(candidates, "_ort_cuda", lambda: True)


def _names(found):
    return [c.name for c in found]


def test_gpu_candidates_fastest_expected_first(everything_installed):
    found, skipped = candidates_for(CUDA, None)
    assert _names(found) == [
        "tensorrt-fp16", "onnxruntime-cuda-fp16", "torch-cuda-fp16-channels-last",
        "onnxruntime-cuda-fp32", "torch-cuda-fp32",
    ]
    assert skipped == []
    trt, ort16, torch16 = found[:3]
    assert (trt.backend, trt.precision, trt.file) == ("tensorrt", "fp16", "model_fp16.engine")
    assert trt.needs_fp16_onnx and ort16.needs_fp16_onnx and ort16.file == ONNX_FP16_FILE
    assert (ort16.provider, torch16.channels_last, torch16.compile) == ("cuda", True, False)
    assert found[3].file == ONNX_FILE and not found[3].needs_fp16_onnx


def test_gpu_fp32_request_keeps_full_precision_forms_only(everything_installed):
    found, _ = candidates_for(CUDA, "fp32")
    assert _names(found) == ["tensorrt-fp32", "onnxruntime-cuda-fp32", "torch-cuda-fp32"]
    assert {c.precision for c in found} == {"fp32"}


def test_gpu_candidates_without_tensorrt_or_onnxruntime_gpu_say_why(monkeypatch):
    monkeypatch.setattr(tensorrt_sidecar, "tensorrt_available", lambda: False)
    import sr_runtime.backends.onnxruntime as ort_backend

    monkeypatch.setattr(ort_backend, "available_providers", lambda: ["cpu"])  # CPU-only onnxruntime
    found, skipped = candidates_for(CUDA, None)
    assert _names(found) == ["torch-cuda-fp16-channels-last", "torch-cuda-fp32"]
    why = dict(skipped)
    assert list(why) == ["tensorrt-fp16", "onnxruntime-cuda-fp16", "onnxruntime-cuda-fp32"]
    assert "TensorRT is not installed" in why["tensorrt-fp16"]
    assert "onnxruntime-gpu" in why["onnxruntime-cuda-fp16"] and "onnxruntime-gpu" in why["onnxruntime-cuda-fp32"]


def test_a_tensorrt_that_does_not_import_is_skipped_with_the_error(monkeypatch):
    monkeypatch.setattr(tensorrt_sidecar, "tensorrt_available", lambda: True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # found on disk, but `import tensorrt` fails
    monkeypatch.setattr(candidates, "_ort_cuda", lambda: False)
    found, skipped = candidates_for(CUDA, None)
    assert "tensorrt-fp16" not in _names(found)
    assert "tensorrt does not import" in dict(skipped)["tensorrt-fp16"]


def test_fp16_forms_need_the_fp16_conversion_tools(monkeypatch):
    monkeypatch.setattr(candidates, "tensorrt_status", lambda: (True, "TensorRT 10.9.0"))
    monkeypatch.setattr(candidates, "_ort_cuda", lambda: True)
    real_have = candidates._have
    monkeypatch.setattr(candidates, "_have", lambda m: m != "onnxconverter_common" and real_have(m))
    found, skipped = candidates_for(CUDA, None)
    assert _names(found) == ["torch-cuda-fp16-channels-last", "onnxruntime-cuda-fp32", "torch-cuda-fp32"]
    why = dict(skipped)
    assert "onnxconverter_common" in why["tensorrt-fp16"] and "onnxconverter_common" in why["onnxruntime-cuda-fp16"]


def test_compile_asks_for_the_compiled_torch_forms_only(everything_installed):
    found, skipped = candidates_for(CUDA, None, compile=True)
    assert _names(found) == ["torch-cuda-fp16-channels-last-compiled", "torch-cuda-fp32-compiled"]
    assert all(c.backend == "torch" and c.compile and c.channels_last for c in found)
    assert {n for n, _ in skipped} == {"tensorrt", "onnxruntime-cuda"}
    assert all("--compile" in why for _, why in skipped)


def test_cpu_never_lists_gpu_forms_even_with_gpu_libraries_installed(everything_installed):
    for precision in (None, "fp32"):
        found, skipped = candidates_for(torch.device("cpu"), precision)
        assert not [c for c in found if c.backend == "tensorrt" or "cuda" in c.name or c.precision == "fp16"]
        assert not [n for n, _ in skipped if "cuda" in n or "tensorrt" in n]
        assert found[-1].name == "torch-cpu-fp32"


def test_explicit_tensorrt_candidates_or_an_error(monkeypatch, everything_installed):
    found, _ = candidates_for(CUDA, None, backend="tensorrt")
    assert _names(found) == ["tensorrt-fp16", "tensorrt-fp32"]  # TensorRT only: nothing else competes
    assert _names(candidates_for(CUDA, "fp16", backend="tensorrt")[0]) == ["tensorrt-fp16"]
    assert _names(candidates_for(CUDA, "fp32", backend="tensorrt")[0]) == ["tensorrt-fp32"]
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        candidates_for(torch.device("cpu"), None, backend="tensorrt")
    monkeypatch.setattr(candidates, "tensorrt_status", lambda: (False, tensorrt_sidecar.INSTALL_HINT))
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        candidates_for(CUDA, None, backend="tensorrt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-TensorRT/no-GPU error; this machine has a GPU")
def test_backend_tensorrt_with_a_checkpoint_and_no_tensorrt_is_an_error(fast):
    import importlib.util

    expected = "TensorRT is not installed" if importlib.util.find_spec("tensorrt") is None else "CUDA GPU"
    with pytest.raises(BackendUnavailableError, match=expected):
        fastpath.load_backend("fsrcnn", RuntimeOptions(backend="tensorrt"), scale=2)
    with pytest.raises(BackendUnavailableError, match="--provider"):
        fastpath.load_backend("fsrcnn", RuntimeOptions(backend="tensorrt", provider="cuda"), scale=2)
    assert not fast.exists() or list(fast.iterdir()) == []  # nothing was built, nothing fell back


def test_backend_tensorrt_without_a_gpu_is_an_error_even_with_tensorrt(fast, monkeypatch):
    import importlib.util

    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorrt"
                        else real_find(name, *a))
    monkeypatch.setattr("sr_runtime.fastpath.torch_devices", lambda: ["cpu"])
    with pytest.raises(BackendUnavailableError, match="needs a CUDA GPU"):
        fastpath.load_backend("fsrcnn", RuntimeOptions(backend="tensorrt"), scale=2)
    with pytest.raises(BackendUnavailableError, match="CUDA device"):
        fastpath.load_backend("fsrcnn", RuntimeOptions(backend="tensorrt", device="cpu"), scale=2)
    assert not fast.exists() or list(fast.iterdir()) == []


def test_compile_on_the_cpu_runs_as_asked_not_through_the_fast_path(fast, monkeypatch):
    monkeypatch.setattr(fastpath, "accelerated_backend", lambda *a, **k: pytest.fail("compile on CPU is not accelerated"))
    backend = fastpath.load_backend("fsrcnn", RuntimeOptions(device="cpu", compile=True), scale=2)
    assert isinstance(backend, TorchBackend) and backend.compiled
    backend.close()


def test_gpu_cache_key_covers_gpu_capability_tensorrt_and_the_request(monkeypatch):
    path = shipped_path("fsrcnn", 2)
    ckpt = load_checkpoint(path)
    gpu = {"name": "NVIDIA H100 80GB HBM3", "cc": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu["name"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: gpu["cc"])

    def key(**kw):
        return cache.cache_key(fastpath.key_inputs(path, ckpt, CUDA, None, **kw))

    base = key()
    assert key() == base
    record = cache.machine_record(CUDA)
    assert record["gpu"] == "NVIDIA H100 80GB HBM3" and record["capability"] == [9, 0]
    assert "tensorrt" in record["versions"] and "cuda" in record
    gpu["name"] = "NVIDIA L4"
    assert key() != base  # another GPU
    gpu["name"] = "NVIDIA H100 80GB HBM3"
    gpu["cc"] = (8, 9)
    assert key() != base  # another compute capability
    gpu["cc"] = (9, 0)
    assert key() == base
    real_version = cache._version
    # Only the CUDA-specific wheel installed (no `tensorrt` meta package): its version still counts.
    monkeypatch.setattr(cache, "_version", lambda d: "10.9.0" if d == "tensorrt-cu12" else
                        (None if d == "tensorrt" else real_version(d)))
    with_trt = key()
    assert with_trt != base
    monkeypatch.setattr(cache, "_version", lambda d: "10.13.0" if d == "tensorrt-cu12" else
                        (None if d == "tensorrt" else real_version(d)))
    assert key() != with_trt  # another TensorRT version
    monkeypatch.setattr(cache, "_version", real_version)
    assert key(compile=True) != base and key(backend="tensorrt") != base
    monkeypatch.setitem(fastpath.BUILD_OPTIONS, "engine", {**fastpath.BUILD_OPTIONS["engine"], "max": "544x960"})
    assert key() != base  # the engine profile


# --- the build flow around the GPU forms, on the CPU ----------------------------------------------


def test_fp16_onnx_is_written_once_and_gated_like_sr_export_writes_it(tmp_path, monkeypatch):
    """The FP16 ONNX the GPU forms run (here on ONNX Runtime CPU, which runs FP16 graphs too)."""
    pytest.importorskip("onnxconverter_common")
    ckpt = load_checkpoint(shipped_path("fsrcnn", 2))
    forms = [Candidate("onnxruntime-cpu-fp16", "onnxruntime", "fp16", provider="cpu"),
             Candidate("torch-cpu-fp32", "torch", "fp32", channels_last=False)]
    monkeypatch.setattr(build, "candidates_for", lambda *a, **k: (forms, []))
    calls = []
    real_fp16 = build._export_fp16
    monkeypatch.setattr(build, "_export_fp16", lambda *a: calls.append(a) or real_fp16(*a))
    seen = {}
    real_open = build.open_candidate

    def open_form(candidate, ckpt, device, artifact, source):
        if candidate.backend == "onnxruntime":
            from sr_runtime.export.onnx import read_metadata

            seen["file"], seen["meta"] = artifact.name, read_metadata(artifact)
        form = real_open(candidate, ckpt, device, artifact, source)
        if candidate.backend == "onnxruntime":
            seen["precision"] = form.precision
        return form

    monkeypatch.setattr(build, "open_candidate", open_form)
    record = build.build_entry(ckpt, torch.device("cpu"), None, "fsrcnn x2")(tmp_path)
    assert len(calls) == 1
    assert seen["file"] == ONNX_FP16_FILE and seen["meta"]["precision"] == "fp16"
    assert seen["precision"] == "fp16"
    rows = {r["name"]: r for r in record["candidates"]}
    row = rows["onnxruntime-cpu-fp16"]
    assert row["status"] in ("passed", "failed"), row  # it ran through the gate: not skipped
    if row["status"] == "failed":
        assert "parity" in row["reason"] or "PSNR" in row["reason"], row
    else:
        assert row["parity_db"] >= 45
    kept = {p.name for p in tmp_path.iterdir() if p.is_file()}
    chosen = record["choice"]["file"]
    assert kept == ({chosen} if chosen else set())  # only the chosen form's artifact stays


def test_engine_build_failure_is_skipped_with_its_reason(tmp_path, monkeypatch):
    ckpt = load_checkpoint(shipped_path("fsrcnn", 2))
    forms = [Candidate("tensorrt-fp32", "tensorrt", "fp32"),
             Candidate("torch-cpu-fp32", "torch", "fp32", channels_last=False)]
    monkeypatch.setattr(build, "candidates_for", lambda *a, **k: (forms, []))
    built = []

    def no_engine(ckpt, onnx_path, engine_path, source):
        built.append((onnx_path.name, engine_path.name))
        raise ExportError("TensorRT failed to build an engine (out of workspace)")

    monkeypatch.setattr(build, "_engine", no_engine)
    record = build.build_entry(ckpt, torch.device("cpu"), "fp32", "fsrcnn x2")(tmp_path)
    assert built == [(ONNX_FILE, "model_fp32.engine")]  # the engine is built from the FP32 ONNX
    rows = {r["name"]: r for r in record["candidates"]}
    assert rows["tensorrt-fp32"]["status"] == "skipped"
    assert "cannot build the engine: TensorRT failed" in rows["tensorrt-fp32"]["reason"]
    assert record["choice"]["name"] == "torch-cpu-fp32"
    assert not list(tmp_path.iterdir())  # the unused ONNX is not kept
    # With --backend tensorrt the same failure is an error, not a fall back to torch.
    only_trt = forms[:1]
    monkeypatch.setattr(build, "candidates_for", lambda *a, **k: (only_trt, []))
    (tmp_path / "again").mkdir()
    with pytest.raises(BackendUnavailableError, match="--backend tensorrt: no form.*TensorRT failed"):
        build.build_entry(ckpt, torch.device("cpu"), "fp32", "fsrcnn x2", backend="tensorrt")(tmp_path / "again")


def test_engine_profile_is_aligned_and_holds_the_gate_inputs():
    from sr_runtime.export.profile import ShapeProfile

    ckpt = load_checkpoint(shipped_path("fsrcnn", 2))
    profile = build._engine_profile(ckpt)
    assert isinstance(profile, ShapeProfile)
    profile.validate(ckpt.spec)
    assert profile.batch[2] >= 2  # the gate's batch of two
    assert profile.min[0] <= align_size(37, ckpt.spec) and profile.max[1] >= 1920


# --- on a GPU -------------------------------------------------------------------------------------


def _entry(root):
    (entry_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return entry_dir, json.loads((entry_dir / "entry.json").read_text())


@pytest.mark.gpu
@pytest.mark.trt
def test_auto_path_builds_a_tensorrt_fp16_engine_that_passes_parity(fast, photo_rgb_u8):
    from sr_runtime.upscaler import Upscaler

    img = np.ascontiguousarray(photo_rgb_u8[150:214, 200:280])
    with Upscaler("fsrcnn", scale=2, device="cuda", backend="tensorrt", tile=0) as up, \
            Upscaler("fsrcnn", scale=2, device="cpu", backend="torch", tile=0) as ref:
        assert up.backend.name == "tensorrt" and up.backend.precision in ("fp16", "fp32")
        out, want = up.upscale(img), ref.upscale(img)
    entry_dir, record = _entry(fast)
    rows = {r["name"]: r for r in record["candidates"]}
    assert list(rows) == ["tensorrt-fp16", "tensorrt-fp32"][: len(rows)]  # TensorRT only, FP16 first
    assert rows["tensorrt-fp16"]["status"] == "passed", rows["tensorrt-fp16"]
    assert record["choice"]["file"] in {p.name for p in entry_dir.iterdir()}
    assert psnr_db(out, want, data_range=255.0) >= 45
    # The default auto path on this GPU builds the engine too, as its first candidate.
    for p in fast.iterdir():
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
    fastpath.load_backend("fsrcnn", RuntimeOptions(device="cuda"), scale=2).close()
    _, record = _entry(fast)
    first = [r for r in record["candidates"] if r.get("backend")][0]
    assert first["name"] == "tensorrt-fp16" and first["status"] == "passed", first


@pytest.mark.gpu
def test_auto_path_on_a_gpu_gates_onnxruntime_cuda_fp16_and_torch_fp16(fast):
    from sr_runtime.backends.onnxruntime import available_providers

    backend = fastpath.load_backend("fsrcnn", RuntimeOptions(device="cuda"), scale=2)
    backend.close()
    _, record = _entry(fast)
    rows = {r["name"]: r for r in record["candidates"]}
    assert rows["torch-cuda-fp16-channels-last"]["status"] == "passed", rows
    if "cuda" in available_providers():
        assert rows["onnxruntime-cuda-fp16"]["status"] == "passed", rows["onnxruntime-cuda-fp16"]
    else:
        assert "onnxruntime-gpu" in rows["onnxruntime-cuda-fp16"]["reason"]
    assert record["speedup_vs_torch_fp32"] > 0


@pytest.mark.gpu
def test_compile_on_a_gpu_picks_a_compiled_torch_form(fast):
    backend = fastpath.load_backend("fsrcnn", RuntimeOptions(device="cuda", compile=True), scale=2)
    try:
        assert isinstance(backend, TorchBackend) and backend.compiled
    finally:
        backend.close()
    _, record = _entry(fast)
    assert record["choice"]["name"].endswith("-compiled") and record["choice"]["compile"] is True
    assert {r["name"] for r in record["candidates"] if r.get("status") == "passed"} <= {
        "torch-cuda-fp16-channels-last-compiled", "torch-cuda-fp32-compiled"}
