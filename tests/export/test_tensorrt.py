"""TensorRT engine bookkeeping that needs no TensorRT: element limit, cache key, sidecar, mismatch errors.

The real builds are at the end, marked ``trt`` (and ``gpu``): they skip with a reason where
TensorRT is not installed.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from torch import nn

from sr_runtime.backends import tensorrt_sidecar as sidecar
from sr_runtime.export import tensorrt_build as trt_export
from sr_runtime.export.onnx import export_onnx
from sr_runtime.export.profile import ShapeProfile, default_profile
from sr_runtime.spec import parse_hw
from sr_runtime.deploy import DeployModel
from sr_runtime.errors import BackendUnavailableError, ConfigError, EngineMismatchError
from sr_runtime.spec import IOSpec


class _WideUpsampler(nn.Module):
    """x4 sub-pixel upsampler with 256-channel convolutions at 2x: its widest tensor dwarfs the output."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 64, 3, padding=1)
        self.up = nn.Sequential(
            nn.Conv2d(64, 256, 3, padding=1),
            nn.PixelShuffle(2),  # (N, 64, 2h, 2w)
            nn.Conv2d(64, 256, 3, padding=1),  # (N, 256, 2h, 2w): the widest tensor
            nn.PixelShuffle(2),
            nn.Conv2d(64, 3, 3, padding=1),
        )

    @property
    def io_spec(self) -> IOSpec:
        return IOSpec(scale=4)

    def forward(self, x):
        return self.up(self.head(x))


@pytest.fixture(scope="module")
def wide_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("trt") / "wide.onnx"
    return export_onnx(DeployModel(_WideUpsampler().eval()), path, trace_size=(8, 8))


def _profile(max_hw=(1088, 1920), batch=1) -> ShapeProfile:
    return ShapeProfile(min=(32, 32), opt=(256, 256), max=max_hw, batch=(1, batch, batch))


def test_element_limit_counts_the_output_from_the_iospec():
    spec = IOSpec(scale=4)
    bounds = trt_export.check_element_limit(spec, _profile())
    assert bounds[0].name == "sr" and bounds[0].shape == (1, 3, 4352, 7680)
    with pytest.raises(ConfigError, match=r"'sr' of shape 1x3x\d+x\d+ .* lower --max-shape"):
        trt_export.check_element_limit(IOSpec(scale=32), _profile())


def test_element_limit_finds_the_widest_intermediate_in_the_onnx(wide_onnx):
    spec = IOSpec(scale=4)
    profile = _profile(max_hw=(1216, 1920))
    trt_export.check_element_limit(spec, profile)  # the output alone fits
    with pytest.raises(ConfigError) as info:
        trt_export.check_element_limit(spec, profile, onnx_path=wide_onnx)
    message = str(info.value)
    # 256 channels at 2x (or the same elements after the pixel shuffle): 2.39e9 > 2^31-1
    assert re.search(r"1x256x2432x3840|1x64x4864x7680", message) and "2^31-1" in message
    suggested = parse_hw(re.search(r"--max-shape to (\d+x\d+)", message).group(1))
    bounds = trt_export.check_element_limit(spec, _profile(max_hw=suggested), onnx_path=wide_onnx)
    assert bounds[0].elements <= trt_export.TRT_ELEMENT_LIMIT
    assert bounds[0].name != "sr" and bounds[0].shape[1] in (64, 256)  # an intermediate is the widest


def test_element_limit_suggests_a_smaller_batch_when_one_image_fits():
    with pytest.raises(ConfigError, match=r"or lower --batch to 5\b"):
        trt_export.check_element_limit(IOSpec(scale=4), _profile(batch=8), limit=600_000_000)


def test_engine_key_is_stable_and_changes_with_every_field():
    base = dict(
        onnx_sha256="a" * 64, profile=_profile(), precision="fp16", tensorrt_version="10.9.0", gpu_name="NVIDIA H100"
    )
    key = sidecar.engine_key(**base)
    assert key == sidecar.engine_key(**base) and len(key) == 24
    variants = [
        {"onnx_sha256": "b" * 64},
        {"profile": _profile(max_hw=(544, 960))},
        {"precision": "fp32"},
        {"tensorrt_version": "11.0.0"},
        {"gpu_name": "NVIDIA L4"},
    ]
    assert len({sidecar.engine_key(**{**base, **v}) for v in variants} | {key}) == len(variants) + 1


def _record(**overrides) -> sidecar.EngineRecord:
    profile = _profile()
    fields = dict(onnx_sha256="a" * 64, precision="fp16", tensorrt_version="10.9.0", gpu_name="NVIDIA H100")
    fields.update(overrides)
    key = sidecar.engine_key(profile=profile, **fields)
    return sidecar.EngineRecord(
        key=key,
        onnx_file="edsr_x4_fp16.onnx",
        profile=profile.to_dict(),
        command="sr-export --model /ckpt/edsr.safetensors --scale 4 --fp16 --format onnx,engine",
        io_spec=IOSpec(scale=4).to_dict(),
        **fields,
    )


def test_sidecar_round_trips(tmp_path):
    engine = tmp_path / "edsr_x4_fp16.engine"
    engine.write_bytes(b"not really an engine")
    record = _record()
    path = trt_export.write_sidecar(engine, record)
    assert path.name == "edsr_x4_fp16.engine.json"
    assert json.loads(path.read_text())["gpu_name"] == "NVIDIA H100"
    loaded = sidecar.read_sidecar(engine)
    assert loaded == record
    assert ShapeProfile.from_dict(loaded.profile) == _profile()


def test_check_sidecar_accepts_the_machine_it_was_built_on():
    sidecar.check_sidecar(
        _record(), tensorrt_version="10.9.0", gpu_name="NVIDIA H100", onnx_sha256="a" * 64, precision="fp16",
        profile=_profile(),
    )


@pytest.mark.parametrize(
    "here, what",
    [
        ({"gpu_name": "NVIDIA L4"}, "GPU 'NVIDIA H100' (here: 'NVIDIA L4')"),
        ({"tensorrt_version": "11.0.0"}, "TensorRT version '10.9.0' (here: '11.0.0')"),
        ({"onnx_sha256": "b" * 64}, "ONNX sha256"),
        ({"precision": "fp32"}, "precision"),
        ({"profile": ShapeProfile(min=(32, 32), opt=(64, 64), max=(64, 64))}, "profile"),
    ],
)
def test_check_sidecar_mismatch_says_what_differs_and_how_to_rebuild(here, what):
    args = {"tensorrt_version": "10.9.0", "gpu_name": "NVIDIA H100", **here}
    with pytest.raises(EngineMismatchError) as info:
        sidecar.check_sidecar(_record(), **args)
    message = str(info.value)
    assert what in message
    assert "rebuild it on this machine with: sr-export --model /ckpt/edsr.safetensors" in message


def test_check_sidecar_detects_a_tampered_key():
    record = _record()
    record.key = "0" * 24
    with pytest.raises(EngineMismatchError, match="cache key"):
        sidecar.check_sidecar(record, tensorrt_version="10.9.0", gpu_name="NVIDIA H100")


def test_read_sidecar_missing_or_broken_raises_mismatch(tmp_path):
    engine = tmp_path / "m.engine"
    with pytest.raises(EngineMismatchError, match="no sidecar"):
        sidecar.read_sidecar(engine)
    sidecar.sidecar_path(engine).write_text("{not json")
    with pytest.raises(EngineMismatchError, match="unreadable"):
        sidecar.read_sidecar(engine)
    sidecar.sidecar_path(engine).write_text(json.dumps({"key": "k"}))
    with pytest.raises(EngineMismatchError, match="lacks"):
        sidecar.read_sidecar(engine)


@pytest.mark.skipif(sidecar.tensorrt_available(), reason="TensorRT is installed here")
def test_without_tensorrt_building_fails_with_the_install_command(wide_onnx, tmp_path):
    with pytest.raises(BackendUnavailableError, match=r"pip install tensorrt --extra-index-url https://pypi.nvidia.com"):
        trt_export.build_engine(
            wide_onnx, tmp_path / "x.engine", spec=IOSpec(scale=4), profile=_profile(), command="sr-export ..."
        )


@pytest.mark.trt
@pytest.mark.gpu
def test_build_engine_writes_engine_and_sidecar_and_reuses_the_cache(tmp_path):
    from sr_runtime.export.verify import check_parity, parity_cases

    net = _WideUpsampler().eval()
    spec = net.io_spec
    deploy = DeployModel(net)
    onnx_path = export_onnx(deploy, tmp_path / "wide.onnx", trace_size=(16, 16))
    profile = default_profile(spec, min_hw=(16, 16), opt_hw=(64, 64), max_hw=(128, 128), batch=2)
    cache = tmp_path / "cache"
    engine, record = trt_export.build_engine(
        onnx_path, tmp_path / "wide.engine", spec=spec, profile=profile, command="sr-export ...", cache_dir=cache
    )
    assert engine.is_file() and sidecar.read_sidecar(engine) == record
    assert record.precision == "fp32" and list(cache.glob("timing-*.cache"))
    cases = parity_cases([(37, 53), (64, 96)], batch=2)
    with torch.no_grad():
        reference = {id(c): deploy(torch.from_numpy(c.lr)).numpy() for c in cases}
    rows = check_parity("wide.engine", trt_export.TrtRunner(engine), reference, cases, precision="fp32")
    assert min(r.psnr_db for r in rows) >= 60
    again, record2 = trt_export.build_engine(
        onnx_path, tmp_path / "again.engine", spec=spec, profile=profile, command="sr-export ...", cache_dir=cache
    )
    assert record2.key == record.key and again.read_bytes() == engine.read_bytes()
    assert np.isfinite(rows[0].psnr_db)
