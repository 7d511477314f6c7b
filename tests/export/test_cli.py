"""``sr-export`` end to end: resolution, artifacts, manifest, errors, and nothing half-written on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from skimage import data

from sr_export import cli, pipeline
from sr_runtime.atomic import sha256_file
from sr_runtime.backends.tensorrt_sidecar import tensorrt_available
from sr_runtime.export.onnx import read_metadata
from sr_runtime.export.verify import TOLERANCES, Tolerance
from sr_runtime.archs import build, resolve_hparams
from sr_runtime.checkpoint import save_checkpoint
from sr_runtime.deploy import DeployModel

needs_no_tensorrt = pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here")


def _checkpoint(path: Path, arch: str, scale: int, **hparams) -> Path:
    resolved = resolve_hparams(arch, scale=scale, **hparams)
    model = build(arch, scale=scale, **resolved)
    return save_checkpoint(path, model, arch=arch, scale=scale, hparams=resolved)


def _beats_shipped() -> dict:
    """Metrics of a training run that records a better score than the shipped weights, on their set:
    a model name then means the run (a run without a better score never replaces shipped weights)."""
    from sr_runtime.checkpoint import read_metadata
    from sr_runtime.zoo import shipped_path

    val_set = read_metadata(shipped_path("fsrcnn", 4))["metrics"]["val_set"]
    return {"val_psnr": 99.0, "val_set": val_set, "val_name": "Set5"}


def _signal_checkpoint(path: Path, arch: str, scale: int, signal, **hparams) -> Path:
    """A checkpoint whose output is far from zeros and bicubic (a fresh FSRCNN outputs ~0, so any
    broken export would pass parity against it): shipped weights, else calibrated ones."""
    resolved = resolve_hparams(arch, scale=scale, **hparams)
    model = signal.net(arch, scale) if not hparams else signal.calibrate(build(arch, scale=scale, **resolved).eval())
    lr = torch.from_numpy(np.ascontiguousarray(data.astronaut()[180:244, 200:264])).permute(2, 0, 1)[None] / 255.0
    with torch.no_grad():
        signal.informative(DeployModel(model).eval()(lr.float()), lr.float(), model.io_spec, threshold_db=60)
    return save_checkpoint(path, model, arch=arch, scale=scale, hparams=resolved, metrics=_beats_shipped())


@pytest.fixture
def workdir(tmp_path, monkeypatch, signal):
    """An empty working directory with a tiny FSRCNN x4 and EDSR x4 training run, each recording a
    validation score above the shipped weights'."""
    monkeypatch.chdir(tmp_path)
    _signal_checkpoint(tmp_path / "runs" / "fsrcnn_x4_20240101-000000" / "best.safetensors", "fsrcnn", 4, signal)
    _signal_checkpoint(tmp_path / "runs" / "edsr_x4_20240101-000000" / "best.safetensors", "edsr", 4, signal,
                       n_resblocks=2, n_feats=16)
    return tmp_path


def _leftovers(exports: Path) -> list[str]:
    return sorted(p.name for p in exports.iterdir()) if exports.exists() else []


def test_export_by_name_uses_the_better_run_and_writes_the_manifest(workdir, capsys, caplog):
    caplog.set_level("INFO", logger="sr_export")
    assert cli.main(["--model", "fsrcnn", "--scale", "4", "--format", "onnx"]) == 0
    out = workdir / "exports" / "fsrcnn_x4"
    assert _leftovers(workdir / "exports") == ["fsrcnn_x4"]
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "fsrcnn_x4.onnx"]
    assert "training run runs/fsrcnn_x4_20240101-000000/best.safetensors: 99.00 dB on Set5" in caplog.text
    manifest = json.loads((out / "export.json").read_text())
    (entry,) = manifest["files"]
    assert entry["sha256"] == sha256_file(out / "fsrcnn_x4.onnx") and entry["bytes"] == (out / entry["name"]).stat().st_size
    assert manifest["source"]["sha256"] == sha256_file(workdir / "runs/fsrcnn_x4_20240101-000000/best.safetensors")
    assert manifest["io"]["input"]["shape"] == ["batch", 3, "height", "width"]
    assert manifest["io"]["io_spec"]["scale"] == 4
    artifacts = {row["artifact"] for row in manifest["parity"]}
    assert artifacts == {"fsrcnn_x4.raw.onnx (ONNX Runtime CPU)", "fsrcnn_x4.onnx (ONNX Runtime CPU)"}
    sizes = {row["size"] for row in manifest["parity"]}
    assert {"37x53", "64x96"} <= sizes
    assert all(row["psnr_db"] == "inf" or row["psnr_db"] >= 60 for row in manifest["parity"])
    assert {"export_onnx", "parity_onnx", "slim", "total"} <= set(manifest["timings_s"])
    assert manifest["versions"]["onnx"] == onnx.__version__
    meta = read_metadata(out / "fsrcnn_x4.onnx")
    assert meta["name"] == "fsrcnn" and meta["scale"] == "4" and meta["source_sha256"] == manifest["source"]["sha256"]
    assert json.loads(meta["contract"])["io_spec"]["color"] == "y"
    assert json.loads(meta["parity"])["min_psnr_db"] >= 60
    assert "exported fsrcnn x4" in capsys.readouterr().out


def test_fp16_export_writes_both_onnx_files_with_fp16_parity(workdir):
    result = cli.run_export(cli.ExportRequest(model="edsr", fp16=True, formats=("onnx",), parity_dir=None))
    assert result.out_dir == Path("exports/edsr_x4")
    names = {f["name"]: f for f in result.manifest["files"]}
    assert set(names) == {"edsr_x4.onnx", "edsr_x4_fp16.onnx"}
    fp16_rows = [r for r in result.manifest["parity"] if r["precision"] == "fp16"]
    assert fp16_rows and all(r["psnr_db"] >= 45 and r["nonfinite"] == 0 for r in fp16_rows)
    assert result.manifest["fp16"]["io"] == "fp32"
    model = onnx.load(str(result.out_dir / "edsr_x4_fp16.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def test_a_checkpoint_path_exports_to_the_given_directory(workdir):
    ckpt = _checkpoint(workdir / "elsewhere" / "my.safetensors", "espcn", 3)
    assert cli.main(["--model", str(ckpt), "--out", "out/espcn", "--format", "onnx", "--no-slim"]) == 0
    manifest = json.loads((workdir / "out" / "espcn" / "export.json").read_text())
    assert manifest["scale"] == 3 and manifest["source"]["path"] == str(ckpt)
    assert "--no-slim" in manifest["command"] and str(ckpt.resolve()) in manifest["command"]


def test_errors_are_one_line_with_exit_code_2(workdir, capsys):
    assert cli.main(["--model", "srcnn", "--scale", "3"]) == 2  # no run, nothing shipped
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("sr-export: error: no checkpoint for srcnn x3")
    assert cli.main(["--model", "edsrr"]) == 2
    assert "Did you mean 'edsr'" in capsys.readouterr().err
    assert cli.main(["--model", "fsrcnn", "--fp16-io"]) == 2
    assert "add --fp16" in capsys.readouterr().err
    assert cli.main(["--model", "fsrcnn", "--format", "onnx,tflite"]) == 2
    assert "valid: onnx,engine" in capsys.readouterr().err
    assert _leftovers(workdir / "exports") == []


def test_a_profile_the_model_cannot_take_fails_before_any_export(workdir, capsys):
    assert cli.main(["--model", "fsrcnn", "--format", "onnx,engine", "--min-shape", "64x64", "--max-shape", "32x32"]) == 2
    assert "min <= opt <= max" in capsys.readouterr().err
    assert cli.main(["--model", "fsrcnn", "--format", "engine", "--max-shape", "1088x1920x"]) == 2
    assert "--max-shape: expected HEIGHTxWIDTH" in capsys.readouterr().err
    assert _leftovers(workdir / "exports") == []


@needs_no_tensorrt
def test_engine_without_tensorrt_fails_with_install_hint_after_the_onnx_is_written(workdir, capsys):
    assert cli.main(["--model", "fsrcnn", "--format", "onnx,engine", "--no-slim"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sr-export: error: TensorRT is not installed: pip install tensorrt --extra-index-url")
    assert "'.[trt]'" in err
    out = workdir / "exports" / "fsrcnn_x4"
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "fsrcnn_x4.onnx"]
    assert _leftovers(workdir / "exports") == ["fsrcnn_x4"]


@needs_no_tensorrt
def test_default_formats_skip_the_engine_with_a_notice(workdir, caplog):
    caplog.set_level("INFO", logger="sr_export")
    result = cli.run_export(cli.ExportRequest(model="fsrcnn", slim=False, parity_dir=None))
    assert "engine: skipped, TensorRT is not installed" in caplog.text
    assert [f["kind"] for f in result.manifest["files"]] == ["onnx"] and result.manifest["profile"] is None


def test_a_parity_failure_leaves_nothing_under_exports(workdir, monkeypatch, capsys):
    monkeypatch.setitem(TOLERANCES, "fp32", Tolerance(min_psnr_db=1000.0))
    assert cli.main(["--model", "fsrcnn", "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sr-export: error: fsrcnn_x4.raw.onnx (ONNX Runtime CPU) does not match PyTorch FP32 on")
    assert "PSNR" in err and "needs PSNR >= 1000 dB" in err
    assert _leftovers(workdir / "exports") == []


def test_an_interrupt_mid_export_leaves_nothing_under_exports(workdir, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "slim_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.run_export(cli.ExportRequest(model="fsrcnn", formats=("onnx",), parity_dir=None))
    assert _leftovers(workdir / "exports") == []
    assert cli.main(["--model", "fsrcnn", "--format", "onnx"]) == 130
    assert _leftovers(workdir / "exports") == []


def test_a_failing_step_keeps_the_previous_export_intact(workdir, monkeypatch):
    first = cli.run_export(cli.ExportRequest(model="fsrcnn", formats=("onnx",), slim=False, parity_dir=None))
    before = {p.name: p.read_bytes() for p in first.out_dir.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline, "set_metadata", broken)
    with pytest.raises(RuntimeError):
        cli.run_export(cli.ExportRequest(model="fsrcnn", formats=("onnx",), slim=False, parity_dir=None))
    assert {p.name: p.read_bytes() for p in first.out_dir.iterdir()} == before
    assert _leftovers(workdir / "exports") == ["fsrcnn_x4"]


def test_a_second_export_replaces_the_first(workdir):
    request = cli.ExportRequest(model="fsrcnn", formats=("onnx",), slim=False, parity_dir=None)
    cli.run_export(request)
    second = cli.run_export(cli.ExportRequest(model="fsrcnn", formats=("onnx",), slim=True, parity_dir=None))
    assert _leftovers(workdir / "exports") == ["fsrcnn_x4"]
    on_disk = json.loads((second.out_dir / "export.json").read_text())
    assert "slim" in on_disk["timings_s"] and "--no-slim" not in on_disk["command"]
