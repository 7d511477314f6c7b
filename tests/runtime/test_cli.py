"""sr-run: naming, folders, formats, skip-existing, video, errors as one line with exit codes, demo."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sr_runtime import zoo
from sr_runtime.archs import build, resolve_hparams
from sr_runtime.checkpoint import save_checkpoint
from sr_runtime.cli import main
from sr_runtime.images import read_image, write_image


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "fsrcnn_x2.safetensors"
    return str(save_checkpoint(path, build("fsrcnn", scale=2), arch="fsrcnn", scale=2,
                               hparams=resolve_hparams("fsrcnn", scale=2)))


@pytest.fixture
def image(tmp_path, small_rgb_u8):
    return write_image(tmp_path / "photo.png", small_rgb_u8)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("sr-run: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_output_beside_the_input_named_by_scale(image, ckpt):
    assert main([str(image), "--model", ckpt, "-q"]) == 0
    out = read_image(image.with_name("photo_x2.png"))
    assert out.pixels.shape == (74, 106, 3)


def test_output_file_and_format(tmp_path, image, ckpt):
    assert main([str(image), "--model", ckpt, "-o", str(tmp_path / "o" / "big.webp"), "--quality", "90", "-q"]) == 0
    assert read_image(tmp_path / "o" / "big.webp").format == "WEBP"
    assert main([str(image), "--model", ckpt, "-o", str(tmp_path / "d"), "--format", "jpg", "-q"]) == 0
    assert read_image(tmp_path / "d" / "photo_x2.jpg").format == "JPEG"


def test_folder_recursive_keeps_the_tree_and_skips_existing(tmp_path, small_rgb_u8, ckpt, caplog):
    src = tmp_path / "in"
    write_image(src / "a.png", small_rgb_u8)
    write_image(src / "sub" / "b.jpg", small_rgb_u8)
    out = tmp_path / "out"
    assert main([str(src), "--recursive", "-o", str(out), "--model", ckpt, "--tile", "24", "-q"]) == 0
    assert (out / "a_x2.png").is_file() and (out / "sub" / "b_x2.jpg").is_file()
    before = (out / "a_x2.png").stat().st_mtime_ns
    assert main([str(src), "--recursive", "-o", str(out), "--model", ckpt, "--skip-existing"]) == 0
    assert (out / "a_x2.png").stat().st_mtime_ns == before


def test_glob_input(tmp_path, small_rgb_u8, ckpt):
    for name in ("x1.png", "x2.png", "y.png"):
        write_image(tmp_path / name, small_rgb_u8[:8, :8])
    assert main([str(tmp_path / "x*.png"), "--model", ckpt, "-o", str(tmp_path / "out"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x1_x2.png", "x2_x2.png"]


def _clip(path, frames=5):
    import av

    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = 32, 24, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 20 * i, np.uint8), format="rgb24")
            frame.pts = i
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
    return path


def _frame_count(path):
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_video_default_name(tmp_path, ckpt):
    src = _clip(tmp_path / "clip.mp4")
    assert main([str(src), "--model", ckpt, "--preset", "ultrafast", "-q"]) == 0
    assert _frame_count(tmp_path / "clip_x2.mp4") == 5


@pytest.mark.parametrize(
    "argv,match,code",
    [
        (["{image}"], "give --scale", 2),
        (["{image}", "--model", "{ckpt}", "--backend", "onnxruntime"], "sr-export", 2),
        (["{image}", "--model", "{ckpt}", "--scale", "3"], "x2", 2),
        (["{image}", "--model", "nosuchnet", "--scale", "2"], "unknown architecture", 2),
        (["{image}", "--model", "{ckpt}", "--tile", "4"], "tile", 2),
    ],
)
def test_errors_are_one_line_with_an_exit_code(capsys, image, ckpt, argv, match, code):
    argv = [a.format(image=image, ckpt=ckpt) for a in argv]
    assert main(argv + ["-q"]) == code
    assert match in one_error_line(capsys.readouterr().err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_unavailable_device_lists_what_is_available(capsys, image, ckpt):
    assert main([str(image), "--model", ckpt, "--device", "cuda"]) == 2
    assert "available: cpu" in one_error_line(capsys.readouterr().err)


def test_list_backends(capsys):
    assert main(["--list-backends"]) == 0
    assert "torch" in capsys.readouterr().out


def test_demo_without_shipped_weights_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path / "no_weights")
    assert main(["--demo", "--scale", "4", "-o", str(tmp_path / "demo")]) == 2
    assert "no model ships for scale 4" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "demo").exists()


def test_demo_with_a_model_writes_the_comparison(tmp_path, ckpt, capsys):
    assert main(["--demo", "--scale", "2", "--model", ckpt, "-o", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "bicubic" in out
    side = read_image(tmp_path / "demo" / "astronaut_x2_compare.png").pixels
    result = read_image(tmp_path / "demo" / "astronaut_x2.png").pixels
    assert side.shape == (192, 3 * 192 + 8, 3) and result.shape == (192, 192, 3)
    assert np.array_equal(side[:, 196:388], result)


def test_worker_processes_load_the_file_this_process_resolved_the_model_to(tmp_path):
    """A name resolved again in each worker could meet a newer training run: one video, two models."""
    from types import SimpleNamespace

    from sr_runtime.cli import _make_runner, build_parser

    args = build_parser().parse_args(["in.mp4", "--model", "fsrcnn", "--scale", "4", "--workers", "2"])
    resolved = tmp_path / "runs" / "fsrcnn_x4" / "best.safetensors"
    runner = _make_runner(args, SimpleNamespace(scale=4, model_file=resolved))
    assert runner.kwargs["model"] == str(resolved) and runner.kwargs["scale"] == 4
