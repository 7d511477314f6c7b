"""The evaluation protocol and sr-eval: self-consistency, model path, JSON schema, bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sr_runtime.color import image_to_tensor
from sr_runtime.deploy import DeployModel
from sr_runtime.eval_cli import main
from sr_runtime.evaluate import evaluate_folder, score_image
from sr_runtime.images import write_image
from sr_runtime.metrics import psnr, ssim
from sr_runtime.resize import imresize, modcrop, quantize_u8, upscale_bicubic
from sr_runtime.spec import IOSpec

_REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("SR_DATA_DIR", _REPO.parent / "shared" / "data"))


@pytest.fixture
def hr_folder(tmp_path, photo_rgb_u8) -> Path:
    """Two RGB images (one not a multiple of 2, 3 or 4) and one gray image."""
    folder = tmp_path / "hr"
    write_image(folder / "a.png", photo_rgb_u8[:50, :61])
    write_image(folder / "b.png", photo_rgb_u8[200:263, 100:140])
    write_image(folder / "c.png", photo_rgb_u8[300:345, 300:348, 1])
    return folder


class _Identity(nn.Module):
    def __init__(self, spec: IOSpec) -> None:
        super().__init__()
        self.io_spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Bicubic(nn.Module):
    """An RGB 'network' that upsamples bicubically and insists on inputs that are multiples of 4."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.io_spec = IOSpec(scale=scale, multiple_of=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0
        return upscale_bicubic(x, self.io_spec.scale)


def test_bicubic_score_is_the_protocol_step_by_step(photo_rgb_u8):
    hr = image_to_tensor(photo_rgb_u8[:61, :47], dtype=torch.float64)
    hr_c = modcrop(hr, 3)
    assert hr_c.shape[-2:] == (60, 45)
    lr = quantize_u8(imresize(hr_c, scale=1 / 3))
    sr = quantize_u8(imresize(lr, scale=3))
    p, s = score_image(hr, 3)
    assert p == pytest.approx(float(psnr(sr, hr_c, crop=3)[0]), abs=1e-12)
    assert s == pytest.approx(float(ssim(sr, hr_c, crop=3)[0]), abs=1e-12)
    assert 20 < p < 40 and 0.5 < s < 1


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_models_equivalent_to_bicubic_score_as_bicubic(hr_folder, scale):
    bicubic = evaluate_folder(hr_folder, scale)
    # Y-only pre-upsampling identity: chroma and luma both bicubic, through YCbCr and back.
    y_identity = DeployModel(_Identity(IOSpec(scale=scale, in_channels=1, color="y", pre_upsample=True)))
    # RGB network with a multiple_of constraint: the LR is padded and the output cropped.
    rgb_bicubic = DeployModel(_Bicubic(scale))
    for model in (y_identity, rgb_bicubic):
        result = evaluate_folder(hr_folder, scale, model=model, method="fake")
        assert [s.name for s in result.per_image] == ["a", "b", "c"]
        for got, ref in zip(result.per_image, bicubic.per_image):
            assert got.psnr == pytest.approx(ref.psnr, abs=1e-3)  # float32 may flip a rare rounding
            assert got.ssim == pytest.approx(ref.ssim, abs=1e-5)


def test_evaluate_folder_means_and_labels(hr_folder):
    result = evaluate_folder(hr_folder, 2)
    assert result.images == 3 and result.method == "bicubic"
    assert result.psnr == pytest.approx(np.mean([s.psnr for s in result.per_image]))
    assert result.ssim == pytest.approx(np.mean([s.ssim for s in result.per_image]))


def test_json_output_schema(hr_folder, capsys):
    assert main([str(hr_folder), "--scale", "3", "--bicubic", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # exactly one JSON object and nothing else
    assert out["scale"] == 3 and out["bicubic"] is True and out["model"] is None and out["crop"] == 3
    assert out["data_dir"] == str(hr_folder) and out["images"] == 3
    assert isinstance(out["psnr"], float) and isinstance(out["ssim"], float)
    assert [set(item) for item in out["per_image"]] == [{"name", "psnr", "ssim"}] * 3
    assert out["psnr"] == pytest.approx(np.mean([item["psnr"] for item in out["per_image"]]))


def test_table_output(hr_folder, capsys):
    assert main([str(hr_folder), "--scale", "2", "--bicubic"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("bicubic x2 on") and lines[-1].startswith("mean")
    assert [line.split()[0] for line in lines[2:5]] == ["a", "b", "c"]


def _bad_input(tmp_path: Path, case: str, rgb: np.ndarray) -> tuple[Path, str]:
    folder = tmp_path / case
    if case == "missing":
        return folder, "missing: folder not found"
    folder.mkdir()
    if case == "empty":
        (folder / "readme.txt").write_text("no images here")
        return folder, "empty: folder has no images"
    write_image(folder / "good.png", rgb)
    if case == "not_an_image":
        (folder / "fake.png").write_text("this is text")
        return folder, "fake.png is not an image"
    write_image(folder / "tiny.png", rgb[:3, :3])
    return folder, "tiny.png: image is 3x3, too small to evaluate at x4"


@pytest.mark.parametrize("case", ["missing", "empty", "not_an_image", "too_small"])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, small_rgb_u8, capsys, case):
    folder, message = _bad_input(tmp_path, case, small_rgb_u8)
    assert main([str(folder), "--scale", "4", "--bicubic", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sr-eval: error: ") and message in lines[0]


def test_model_checkpoint_path(tmp_path, hr_folder, capsys):
    from sr_runtime.archs import build, resolve_hparams
    from sr_runtime.checkpoint import save_checkpoint

    hparams = resolve_hparams("fsrcnn", scale=2)
    path = save_checkpoint(tmp_path / "fsrcnn.safetensors", build("fsrcnn", scale=2), arch="fsrcnn", scale=2,
                           hparams=hparams)  # fmt: skip
    assert main([str(hr_folder), "--scale", "2", "--model", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bicubic"] is False and out["model"] == str(path) and out["checkpoint"] == str(path)
    assert out["images"] == 3 and np.isfinite(out["psnr"])
    assert main([str(hr_folder), "--scale", "3", "--model", str(path)]) == 2  # a x2 checkpoint at x3
    assert "x2" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA_DIR / "Set5").is_dir(), reason=f"benchmark data not found at {DATA_DIR} (set SR_DATA_DIR)")
def test_set5_x4_bicubic_reproduces_the_published_row():
    result = evaluate_folder(DATA_DIR / "Set5", 4)
    assert result.images == 5
    assert result.psnr == pytest.approx(28.42, abs=0.03)
    assert result.ssim == pytest.approx(0.8104, abs=0.002)
