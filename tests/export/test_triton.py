"""Triton model repositories: configs built and parsed with Triton's own schema, matching the ONNX graphs."""

from __future__ import annotations

import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2")

from google.protobuf import text_format  # noqa: E402

from sr_export.triton import check_repository, triton_schema, write_repository  # noqa: E402
from sr_runtime.checkpoint import load_checkpoint  # noqa: E402
from sr_runtime.deploy import DeployModel  # noqa: E402
from sr_runtime.errors import ExportError  # noqa: E402
from sr_runtime.export.onnx import export_onnx  # noqa: E402
from sr_runtime.zoo import shipped_path  # noqa: E402


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    from sr_runtime.export.fp16 import convert_fp16

    d = tmp_path_factory.mktemp("onnx")
    ckpt = load_checkpoint(shipped_path("fsrcnn", 4))
    model = DeployModel(ckpt.model, ckpt.spec).eval()
    fp32 = export_onnx(model, d / "m.onnx")
    fixed = export_onnx(model, d / "fixed.onnx", dynamic_batch=False)
    fp16 = d / "m_fp16.onnx"
    import numpy as np

    convert_fp16(fp32, fp16, calibration=[np.random.default_rng(0).random((1, 3, 24, 32), dtype=np.float32)])
    return fp32, fp16, fixed


def _config(path):
    cfg = triton_schema().ModelConfig()
    text_format.Parse(path.read_text(), cfg)
    return cfg


def test_the_repository_has_each_form_with_a_valid_config(tmp_path, onnx_files):
    fp32, fp16, _ = onnx_files
    engine = tmp_path / "e.plan"
    engine.write_bytes(b"not a real engine: only its placement and config are checked here")
    models = write_repository(tmp_path / "repo", name="fsrcnn_x4", onnx_fp32=fp32, onnx_fp16=fp16,
                              engines={"9.0": engine}, scale=4)
    repo = tmp_path / "repo"
    assert [m.name for m in models] == ["fsrcnn_x4", "fsrcnn_x4_fp16", "fsrcnn_x4_trt"]
    mc = triton_schema()
    for name in ("fsrcnn_x4", "fsrcnn_x4_fp16"):
        cfg = _config(repo / name / "config.pbtxt")
        assert (repo / name / "1" / "model.onnx").is_file() and cfg.backend == "onnxruntime"
        assert cfg.max_batch_size == 8 and cfg.dynamic_batching.max_queue_delay_microseconds > 0
        (inp,), (out,) = cfg.input, cfg.output
        assert (inp.name, list(inp.dims), inp.data_type) == ("lr", [3, -1, -1], mc.TYPE_FP32)  # FP16 keeps FP32 I/O
        assert (out.name, list(out.dims)) == ("sr", [3, -1, -1])
        assert cfg.parameters["scale"].string_value == "4" and cfg.parameters["value_range"].string_value == "0,1"
        (warm,) = cfg.model_warmup
        assert list(warm.inputs["lr"].dims) == [3, 64, 64] and len(cfg.instance_group) == 1
    trt = _config(repo / "fsrcnn_x4_trt" / "config.pbtxt")
    assert trt.platform == "tensorrt_plan" and dict(trt.cc_model_filenames) == {"9.0": "model_sm90.plan"}
    assert (repo / "fsrcnn_x4_trt" / "1" / "model_sm90.plan").is_file()
    assert trt.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_a_graph_with_a_fixed_batch_declares_it(tmp_path, onnx_files):
    _, _, fixed = onnx_files
    write_repository(tmp_path, name="m", onnx_fp32=fixed, onnx_fp16=None, scale=4)
    cfg = _config(tmp_path / "m" / "config.pbtxt")
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [1, 3, -1, -1]
    assert not cfg.HasField("dynamic_batching")


def test_a_config_that_disagrees_with_its_graph_is_refused(tmp_path, onnx_files):
    fp32, _, _ = onnx_files
    write_repository(tmp_path, name="m", onnx_fp32=fp32, onnx_fp16=None, scale=4)
    path = tmp_path / "m" / "config.pbtxt"
    path.write_text(path.read_text().replace('name: "lr"', 'name: "input"'))
    with pytest.raises(ExportError, match="input"):
        check_repository(tmp_path)
    path.write_text("this is { not a config")
    with pytest.raises(ExportError, match="not a valid Triton model config"):
        check_repository(tmp_path)


def test_sr_export_triton_writes_the_checked_forms_as_a_repository(tmp_path, monkeypatch, capsys):
    from sr_export import cli
    from sr_runtime.atomic import sha256_file

    monkeypatch.chdir(tmp_path)  # no runs/ here: the shipped FSRCNN x4
    assert cli.main(["--model", "fsrcnn", "--scale", "4", "--format", "onnx", "--parity-dir", str(tmp_path),
                     "--triton", "repo"]) == 0
    repo, out = tmp_path / "repo", tmp_path / "exports" / "fsrcnn_x4"
    assert sorted(p.name for p in repo.iterdir()) == ["fsrcnn_x4", "fsrcnn_x4_fp16"]  # --triton implies --fp16
    check_repository(repo)
    # The repository serves the very files that passed the parity gate.
    assert sha256_file(repo / "fsrcnn_x4" / "1" / "model.onnx") == sha256_file(out / "fsrcnn_x4.onnx")
    assert sha256_file(repo / "fsrcnn_x4_fp16" / "1" / "model.onnx") == sha256_file(out / "fsrcnn_x4_fp16.onnx")
    import json

    manifest = json.loads((out / "export.json").read_text())
    assert set(manifest["triton"]["models"]) == {"fsrcnn_x4", "fsrcnn_x4_fp16"}
    assert "--triton repo" in manifest["command"] and "no Triton server was run" in capsys.readouterr().out


def test_sr_export_triton_without_the_schema_fails_before_any_export(tmp_path, monkeypatch, capsys):
    from sr_export import cli, triton
    from sr_runtime.errors import BackendUnavailableError

    def missing():
        raise BackendUnavailableError("--triton validates configs with Triton's schema from tritonclient: pip install x")

    monkeypatch.setattr(triton, "triton_schema", missing)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--model", "fsrcnn", "--scale", "4", "--format", "onnx", "--triton", "repo"]) == 2
    assert "tritonclient" in capsys.readouterr().err
    assert not (tmp_path / "exports").exists() and not (tmp_path / "repo").exists()
