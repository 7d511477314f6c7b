"""Foreign ONNX files (no io_spec metadata, written here with plain ``torch.onnx.export``) run without
--scale: scale, channels, value range, input dtype and static shapes come from the graph and one probe
run, and the result matches the PyTorch module within the parity gate. Graphs that are not
image-to-image are refused with one line (sr-run exits 2, nothing written)."""

from __future__ import annotations

import copy
import logging
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from sr_runtime import Upscaler  # noqa: E402
from sr_runtime.backends import create_backend  # noqa: E402
from sr_runtime.cli import main  # noqa: E402
from sr_runtime.color import image_to_tensor  # noqa: E402
from sr_runtime.deploy import DeployModel  # noqa: E402
from sr_runtime.errors import UnsupportedModelError, UnsupportedScaleError  # noqa: E402
from sr_runtime.export.verify import compare  # noqa: E402
from sr_runtime.images import read_image, write_image  # noqa: E402
from sr_runtime.spec import IOSpec  # noqa: E402


class TinySR(nn.Module):
    """conv -> ReLU -> conv -> PixelShuffle on top of a nearest upscale (so it resembles an upscaler,
    as trained models do); ``peak`` 255: takes and returns [0, 255], the scaling inside the graph."""

    def __init__(self, scale: int, channels: int = 3, peak: float = 1.0) -> None:
        super().__init__()
        self.scale, self.peak = scale, peak
        self.body = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, channels * scale * scale, 3, padding=1)
        )
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / self.peak
        up = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return (up + 0.5 * self.shuffle(self.body(x))) * self.peak


class EvenOnly(nn.Module):
    """x2 through pixel-unshuffle: runs on even sizes only; 1x1 convs, so each 2x2 input block maps
    to its own 4x4 output block and border padding cannot change the output."""

    def __init__(self) -> None:
        super().__init__()
        self.unshuffle, self.shuffle = nn.PixelUnshuffle(2), nn.PixelShuffle(4)
        self.conv = nn.Sequential(nn.Conv2d(12, 16, 1), nn.ReLU(), nn.Conv2d(16, 48, 1))

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest") + 0.5 * self.shuffle(self.conv(self.unshuffle(x)))


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinySR(2)

    def forward(self, a, b):
        return self.net(a) + self.net(b)


class Downscaler(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


def export(net: nn.Module, path, *, channels=3, static_hw=None, half=False, inputs=1):
    """A plain torch.onnx.export: no metadata, default names; dynamic N/H/W unless ``static_hw``."""
    h, w = static_hw or (24, 24)
    args = tuple(torch.rand(1, channels, h, w) for _ in range(inputs))
    if half:
        net, args = net.half(), tuple(a.half() for a in args)
    names = [f"in{i}" for i in range(inputs)]
    axes = None if static_hw else {**{n: {0: "n", 2: "h", 3: "w"} for n in names}, "out": {0: "n"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), args, str(path), dynamo=False, input_names=names, output_names=["out"],
                          dynamic_axes=axes, opset_version=17)
    return path


def reference(net: nn.Module, spec: IOSpec, rgb: torch.Tensor) -> torch.Tensor:
    """The PyTorch module under the runtime's RGB [0, 1] contract, in FP32 (Y: chroma bicubic)."""
    with torch.no_grad():
        return DeployModel(net.float().eval(), spec)(rgb)


@pytest.fixture
def photo(photo_rgb_u8) -> torch.Tensor:
    return image_to_tensor(np.ascontiguousarray(photo_rgb_u8[180:220, 200:256]))  # 40 x 56


CASES = {
    # id: (scale, channels, peak, static_hw, half)
    "x2-rgb-01-dynamic": (2, 3, 1.0, None, False),
    "x4-rgb-255-dynamic": (4, 3, 255.0, None, False),
    "x2-y-01-dynamic": (2, 1, 1.0, None, False),
    "x4-y-255-dynamic": (4, 1, 255.0, None, False),
    "x2-rgb-255-static": (2, 3, 255.0, (40, 56), False),
    "x2-rgb-01-fp16": (2, 3, 1.0, None, True),
    "x4-rgb-255-fp16": (4, 3, 255.0, None, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_foreign_graph_runs_without_scale_and_matches_pytorch(tmp_path, photo, case, caplog):
    scale, channels, peak, static_hw, half = CASES[case]
    net = TinySR(scale, channels, peak).eval()
    path = export(copy.deepcopy(net), tmp_path / f"{case}.onnx", channels=channels, static_hw=static_hw, half=half)
    with caplog.at_level(logging.INFO, logger="sr_runtime.backends.onnx_probe"), Upscaler(path) as up:
        assert "probed" in caplog.text
        assert up.scale == scale
        assert up.spec.in_channels == channels and up.spec.value_range == peak
        assert up.backend.input_dtype == (torch.float16 if half else torch.float32)
        assert up.backend.limits.static_hw == (static_hw is not None)
        out = up.upscale(photo).float()
    ref = reference(net, up.spec, photo)
    result = compare(ref, out.clamp(0, 1), precision="fp16" if half else "fp32")
    assert result.passed, f"{case}: {result.describe()}"
    # A wrong range or channel contract would be far from the gate, not near it.
    assert ref.std() > 0.1


def test_static_graph_is_run_tiled_at_its_shape_on_a_larger_image(tmp_path, photo_rgb_u8):
    torch.manual_seed(1)
    net = TinySR(2, 3, 255.0).eval()
    path = export(net, tmp_path / "static.onnx", static_hw=(24, 24))
    lr = image_to_tensor(np.ascontiguousarray(photo_rgb_u8[150:211, 180:255]))  # 61 x 75: many tiles
    shapes = []
    with Upscaler(path) as up:
        assert up.backend.limits.max_hw == (24, 24)
        run = up.backend.run
        up.backend.run = lambda x: shapes.append(tuple(x.shape)) or run(x)
        out = up.upscale(lr)
    assert len(shapes) > 4 and set(shapes) == {(1, 3, 24, 24)}
    result = compare(reference(net, up.spec, lr), out.clamp(0, 1))
    assert result.passed, result.describe()


def test_graph_that_refuses_odd_sizes_is_fed_padded_sizes(tmp_path, photo, caplog):
    net = EvenOnly().eval()
    path = export(net, tmp_path / "even.onnx")
    with caplog.at_level(logging.INFO, logger="sr_runtime.backends.onnx_probe"), Upscaler(path) as up:
        assert up.scale == 2 and up.spec.multiple_of == 32
        assert "probe 64x96" in caplog.text
        out = up.upscale(photo)  # 40 x 56: padded to 64 x 64 for the graph
        odd = up.upscale(photo[:, :, :37, :53])
    result = compare(reference(net, up.spec, photo), out.clamp(0, 1))
    assert result.passed, result.describe()
    assert odd.shape == (1, 3, 74, 106)


def test_cli_runs_a_foreign_file_without_scale(tmp_path, small_rgb_u8):
    net = TinySR(4, 1, 255.0).eval()
    path = export(net, tmp_path / "y_x4.onnx", channels=1)
    src = write_image(tmp_path / "photo.png", small_rgb_u8)
    assert main([str(src), "--model", str(path), "-q"]) == 0
    out = read_image(tmp_path / "photo_x4.png").pixels
    ref = reference(net, IOSpec(scale=4, in_channels=1, color="y", value_range=255.0), image_to_tensor(small_rgb_u8))
    expected = (ref[0].clamp(0, 1) * 255).round().permute(1, 2, 0).to(torch.uint8).numpy()
    assert out.shape == (37 * 4, 53 * 4, 3)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_own_metadata_is_used_and_no_probe_runs(tmp_path, caplog):
    import json

    import onnx

    path = export(TinySR(2).eval(), tmp_path / "own.onnx")
    model = onnx.load(str(path))
    # Deliberately unlike the graph (x2 RGB): the metadata wins, so nothing was probed.
    model.metadata_props.add(key="io_spec", value=json.dumps(IOSpec(scale=2, receptive_radius=3).to_dict()))
    onnx.save(model, str(path))
    with caplog.at_level(logging.INFO, logger="sr_runtime.backends.onnx_probe"), create_backend(path) as backend:
        assert backend.spec.receptive_radius == 3
    assert "probed" not in caplog.text


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("sr-run: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: export(Classifier(), p), "rank 2"),
        (lambda p: export(TwoInputs(), p, inputs=2), "2 input(s)"),
        (lambda p: export(Downscaler(), p), "not an upscaler"),
    ],
    ids=["classifier", "two-inputs", "downscaler"],
)
def test_not_image_to_image_is_refused_with_one_line(tmp_path, small_rgb_u8, capsys, make, match):
    path = make(tmp_path / "model.onnx")
    with pytest.raises(UnsupportedModelError, match="not an"):
        create_backend(path)
    src = write_image(tmp_path / "in" / "photo.png", small_rgb_u8)
    out = tmp_path / "out"
    assert main([str(src), "--model", str(path), "-o", str(out), "-q"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert match in line and "model.onnx" in line
    assert not out.exists() and sorted(p.name for p in src.parent.iterdir()) == ["photo.png"]


def test_a_wrong_scale_names_the_files_scale(tmp_path, small_rgb_u8, capsys):
    path = export(TinySR(4).eval(), tmp_path / "x4.onnx")
    with pytest.raises(UnsupportedScaleError, match="x4"):
        create_backend(path, scale=2)
    src = write_image(tmp_path / "photo.png", small_rgb_u8)
    assert main([str(src), "--model", str(path), "--scale", "2", "-q"]) == 2
    assert "x4" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "x4.onnx"]
    with create_backend(path, scale=4) as backend:  # the right one is accepted
        assert backend.scale == 4
