"""RuntimeOptions and the one cache root of every built artifact."""

from __future__ import annotations

import dataclasses

import pytest

from sr_runtime.errors import BackendUnavailableError, InputError
from sr_runtime.options import ORT_TENSORRT_DIR, TENSORRT_DIR, RuntimeOptions, cache_root


def test_defaults_choose_for_you_and_fields_are_validated():
    options = RuntimeOptions()
    assert (options.backend, options.device, options.precision, options.use_cache) == ("auto", None, None, True)
    assert not options.torch_only and RuntimeOptions(compile=True).torch_only
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tflite'; valid: auto, torch"):
        RuntimeOptions(backend="tflite")
    with pytest.raises(BackendUnavailableError, match="precision 'int8' is not one of fp32, fp16, bf16"):
        RuntimeOptions(precision="int8")
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        options.replace(backend="tflite")  # replace validates too
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.backend = "torch"


def test_keywords_name_the_closest_field():
    assert RuntimeOptions.from_keywords({"device": "cpu"}) == RuntimeOptions(device="cpu")
    with pytest.raises(InputError, match="'precison'; did you mean 'precision'"):
        RuntimeOptions.from_keywords({"precison": "fp16"})


def test_one_cache_root_for_every_artifact(tmp_path, monkeypatch):
    """Fast-path entries, sr-export's TensorRT engines and ONNX Runtime's TensorRT provider engines
    all live under the root; sr-cache lists only the entries and clears everything."""
    from sr_runtime.backends.onnxruntime import _default_trt_cache
    from sr_runtime.export.tensorrt_build import default_cache_dir
    from sr_runtime.fastpath.cache import clear, get_or_build, list_entries

    root = tmp_path / "root"
    monkeypatch.setenv("SR_RUNTIME_CACHE", str(root))
    assert cache_root() == root and cache_root(tmp_path / "given") == tmp_path / "given"
    assert default_cache_dir() == root / TENSORRT_DIR
    assert _default_trt_cache() == root / ORT_TENSORRT_DIR
    monkeypatch.delenv("SR_RUNTIME_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "sr_runtime"

    def build(tmp):
        (tmp / "model.onnx").write_bytes(b"onnx")
        return {"choice": {"name": "x"}}

    get_or_build("k", build, cache_dir=root)
    (root / TENSORRT_DIR / "engines").mkdir(parents=True)
    (root / TENSORRT_DIR / "engines" / "e.engine").write_bytes(b"engine")
    (root / ORT_TENSORRT_DIR).mkdir()
    assert [row["key"] for row in list_entries(root)] == ["k"]
    assert clear(root) == 1
    assert [p for p in root.iterdir() if p.is_dir()] == []
