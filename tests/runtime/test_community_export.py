"""A community checkpoint on the user's whole path: ``sr-export --fp16`` (parity in the manifest, dynamic
height/width), the FP16 ONNX through ``sr-run`` and the Upscaler without --scale (within the FP16 gate of
the .pth in PyTorch FP32), ``sr-run`` on a clip with audio, ``sr-eval`` and ``sr-bench`` on the .pth.

No downloads: RealESRGAN_x4plus (RRDBNet, ``params_ema``, Real-ESRGAN's tensor names) and
realesr-general-x4v3 (SRVGGNetCompact, ``params``) come from :mod:`benchmarks.community_models` with
random, calibrated weights and fewer blocks (``quick``), saved in the published layouts. Loading,
tiling, wrong scales and refusals are in test_community.py.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("spandrel", reason="community checkpoints load through spandrel (pip install spandrel)")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
av = pytest.importorskip("av")

from benchmarks import cli as bench_cli
from benchmarks.community_models import family, save_family
from sr_export import cli as export_cli
from sr_runtime import cli as run_cli
from sr_runtime import eval_cli
from sr_runtime.color import image_to_tensor
from sr_runtime.export.verify import TOLERANCES, compare
from sr_runtime.images import read_image, write_image
from sr_runtime.metrics import psnr_db
from sr_runtime.upscaler import Upscaler

FAMILIES = {
    # family key: (file name, architecture, the wrapper key of the published file)
    "rrdb_x4": ("RealESRGAN_x4plus.pth", "ESRGAN", "params_ema"),
    "compact": ("realesr-general-x4v3.pth", "Compact", "params"),
}
FP32_DB, FP16_DB = TOLERANCES["fp32"].min_psnr_db, TOLERANCES["fp16"].min_psnr_db


def _published(pth: Path) -> tuple[str, str, str]:
    """(file name, architecture, wrapper key) of the family ``pth`` was saved as."""
    return next(f for f in FAMILIES.values() if f[0] == pth.name)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pth(request, tmp_path_factory) -> Path:
    """The family's published file name and layout, random calibrated weights, fewer blocks."""
    path, _ = save_family(family(request.param), tmp_path_factory.mktemp(request.param), quick=True)
    return path


@pytest.fixture(scope="module")
def exported(pth, tmp_path_factory) -> tuple[int, Path]:
    """``sr-export --model FILE.pth --fp16`` into a fresh folder: (exit code, export folder).
    --parity-dir on an empty folder keeps the parity images to the scikit-image samples here."""
    root = tmp_path_factory.mktemp(f"export_{pth.stem}")
    (root / "no_extra_images").mkdir()
    out = root / "out"
    rc = export_cli.main(["--model", str(pth), "--fp16", "--format", "onnx", "--out", str(out),
                          "--parity-dir", str(root / "no_extra_images")])
    return rc, out


def _tiny_photo() -> np.ndarray:
    """24 x 32 pixels of a real photo (not the export's 32 x 32 trace size)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[180:204, 200:232])


def test_the_file_is_in_the_published_layout(pth):
    _, arch, wrapper = _published(pth)
    state = torch.load(pth, map_location="cpu", weights_only=True)
    assert list(state) == [wrapper]
    if arch == "ESRGAN":  # Real-ESRGAN's RRDBNet names, not spandrel's old-arch ESRGAN ones
        assert {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_last.weight"} <= set(
            state[wrapper]
        )
        assert not any(k.startswith("model.") for k in state[wrapper])
    else:
        assert {"body.0.weight", "body.1.weight"} <= set(state[wrapper])


def test_fp16_export_writes_both_onnx_files_with_parity_and_dynamic_height_width(pth, exported):
    rc, out = exported
    assert rc == 0
    stem = f"{pth.stem}_x4"
    assert sorted(p.name for p in out.iterdir()) == sorted(["export.json", f"{stem}.onnx", f"{stem}_fp16.onnx"])
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["source"]["arch"] == _published(pth)[1] and manifest["scale"] == 4
    by_precision: dict[str, list[dict]] = {"fp32": [], "fp16": []}
    for row in manifest["parity"]:
        by_precision[row["precision"]].append(row)
    assert by_precision["fp32"] and by_precision["fp16"]
    # psnr_db is "inf" (a string, for strict JSON) where the outputs are identical
    assert all(float(r["psnr_db"]) >= FP32_DB for r in by_precision["fp32"]), by_precision["fp32"]
    assert all(float(r["psnr_db"]) >= FP16_DB and r["nonfinite"] == 0 for r in by_precision["fp16"]), by_precision["fp16"]
    assert {r["artifact"].split(" ")[0] for r in by_precision["fp16"]} == {f"{stem}_fp16.onnx"}
    for name in (f"{stem}.onnx", f"{stem}_fp16.onnx"):
        dims = onnx.load(str(out / name)).graph.input[0].type.tensor_type.shape.dim
        assert len(dims) == 4 and dims[1].dim_value == 3
        for axis in (2, 3):  # a named dynamic axis, not a fixed size
            assert dims[axis].dim_param and not dims[axis].HasField("dim_value"), (name, axis, dims[axis])


def test_fp16_onnx_runs_without_scale_and_matches_the_pth_in_fp32(pth, exported, tmp_path, signal):
    rc, out = exported
    assert rc == 0
    onnx16 = out / f"{pth.stem}_x4_fp16.onnx"
    photo = _tiny_photo()
    src = write_image(tmp_path / "tiny.png", photo)
    lr = image_to_tensor(photo)
    with Upscaler(pth, device="cpu", backend="torch", tile=0) as torch_fp32:
        ref = torch_fp32.upscale(lr)
        spec = torch_fp32.spec
    assert ref.shape == (1, 3, 96, 128)
    signal.informative(ref, lr, spec, threshold_db=FP16_DB)  # a broken FP16 graph could not pass below

    dst = tmp_path / "tiny_x4.png"
    assert run_cli.main([str(src), "--model", str(onnx16), "-o", str(dst), "-q"]) == 0
    written = read_image(dst).pixels
    assert written.shape == (96, 128, 3)
    assert psnr_db(image_to_tensor(written), ref) >= FP16_DB

    with Upscaler(onnx16, device="cpu") as up:
        assert up.spec.scale == 4 and up.backend.precision == "fp16"
        sr = up.upscale(lr)
    result = compare(ref, sr, precision="fp16")
    assert result.passed and result.psnr_db >= FP16_DB, result


def _clip_with_audio(path: Path, pts_ms=(0, 40, 80, 200, 240)) -> Path:
    """A 32 x 24 H.264 clip, variable frame rate (``pts_ms``), with an AAC mono track."""
    rng = np.random.default_rng(0)
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 32, 24, "yuv420p"
        v.time_base = v.codec_context.time_base = tb
        a = out.add_stream("aac", rate=8000, layout="mono")
        for p in pts_ms:
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = p, tb
            out.mux(v.encode(frame))
        out.mux(v.encode())
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * 1024) / 8000)).astype(np.float32)[None]
        for i in range(3):
            af = av.AudioFrame.from_ndarray(samples[:, i * 1024 : (i + 1) * 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts = 8000, i * 1024
            out.mux(a.encode(af))
        out.mux(a.encode())
    return path


def _describe(path: Path) -> dict:
    with av.open(str(path)) as c:
        video = c.streams.video[0]
        info = {"size": (video.codec_context.width, video.codec_context.height),
                "pts": [float(f.pts * f.time_base) for f in c.decode(video)]}
    with av.open(str(path)) as c:
        info["audio"] = [bytes(p) for p in c.demux(*c.streams.audio) if p.size]
    return info


def test_sr_run_on_a_clip_keeps_frames_timestamps_and_audio(pth, tmp_path):
    src = _clip_with_audio(tmp_path / "clip.mp4")
    dst = tmp_path / "clip_x4.mp4"
    assert run_cli.main([str(src), "--model", str(pth), "-o", str(dst), "-q"]) == 0
    before, after = _describe(src), _describe(dst)
    assert len(after["pts"]) == len(before["pts"]) == 5
    assert after["pts"] == before["pts"]
    assert after["audio"] == before["audio"] and before["audio"], "the audio packets are copied as they are"
    assert after["size"] == (4 * 32, 4 * 24)


def test_sr_eval_upscaler_and_sr_bench_take_the_pth_without_a_scale(pth, tmp_path, monkeypatch, capsys):
    from skimage import data

    hr = tmp_path / "hr"
    hr.mkdir()
    write_image(hr / "astronaut.png", np.ascontiguousarray(data.astronaut()[100:148, 200:264]))
    write_image(hr / "chelsea.png", np.ascontiguousarray(data.chelsea()[100:148, 200:264]))
    capsys.readouterr()
    assert eval_cli.main([str(hr), "--model", str(pth), "--scale", "4", "--json"]) == 0
    model = json.loads(capsys.readouterr().out)
    assert eval_cli.main([str(hr), "--bicubic", "--scale", "4", "--json"]) == 0
    bicubic = json.loads(capsys.readouterr().out)
    assert model["images"] == 2 and model["checkpoint"] == str(pth)
    assert all(math.isfinite(s["psnr"]) for s in model["per_image"]) and math.isfinite(model["psnr"])
    assert abs(model["psnr"] - bicubic["psnr"]) > 0.1, "the model was evaluated, not bicubic"

    monkeypatch.chdir(pth.parent)  # a bare file name in the working directory, as a user types it
    with Upscaler(pth.name) as up:
        assert up.spec.scale == 4
        assert up.upscale(_tiny_photo()).shape == (96, 128, 3)

    out = tmp_path / "bench"
    assert bench_cli.main([
        "--models", str(pth), "--scales", "4", "--sizes", "32x32", "--backends", "torch", "--runs", "1",
        "--warmup", "0", "--no-quality", "--no-video", "--no-tiling", "--no-plots", "--out", str(out),
        # kept small for 2 CPU cores: one batch size, FP32 only, one small parity photo
        "--batch", "1", "--precisions", "fp32", "--parity-size", "16x24", "--parity-images", "1",
        "--runs-dir", str(tmp_path / "no_runs"),
    ]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [m["checkpoint"] for m in results["models"]] == [str(pth)]
    (row,) = results["latency"]
    assert (row["model"], row["scale"], row["weights"], row["backend"]) == (pth.stem, 4, "checkpoint", "torch")
    assert (row["input_h"], row["input_w"], row["output_h"], row["output_w"]) == (32, 32, 128, 128)
    assert row["p50_ms"] > 0
