"""Video: each output frame is its own input frame upscaled, timestamps (VFR too), copied audio (bytes and
timestamps), colour metadata, 10-bit values, odd sizes, encoder checks, nothing half-written on failure,
damaged packets skipped. Tiny synthetic clips made with PyAV."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import sr_runtime
from sr_runtime.archs import build, resolve_hparams
from sr_runtime.checkpoint import save_checkpoint
from sr_runtime.errors import VideoError
from sr_runtime.resize import upscale_bicubic
from sr_runtime.upscaler import Upscaler
from sr_runtime.video.probe import probe_video
from sr_runtime.video.reader import VideoReader
from sr_runtime.video.writer import VideoWriter, check_encoder

VFR_PTS = [0, 40, 80, 200, 240, 300, 333, 400, 440, 480]
"""Milliseconds: irregular on purpose (variable frame rate)."""


def make_video(path: Path, *, width=32, height=24, pts=VFR_PTS, codec="libx264", pix_fmt="yuv420p",
               audio=True, color=None, content=None, options=None, rotation=None) -> Path:
    """``content(i)``: frame i as HWC uint8 (rgb24) or uint16 (rgb48le); default random noise.
    ``options``: encoder options (``{"qp": "0"}`` makes libx264 lossless). ``rotation``: degrees
    counter-clockwise of a display matrix on the video stream (as a phone writes it)."""
    rng = np.random.default_rng(0)
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=25)
        v.width, v.height, v.pix_fmt = width, height, pix_fmt
        v.time_base = v.codec_context.time_base = tb
        if options:
            v.options = options
        if rotation is not None:
            v.set_display_rotation(rotation)
        for key, value in (color or {}).items():
            setattr(v.codec_context, key, value)
        a = out.add_stream("aac", rate=8000, layout="mono") if audio else None
        for i, p in enumerate(pts):
            rgb = content(i) if content else rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le" if rgb.dtype == np.uint16 else "rgb24")
            kwargs = {"dst_colorspace": color["colorspace"], "dst_color_range": color["color_range"]} if color else {}
            frame = frame.reformat(format=pix_fmt, **kwargs)
            frame.pts, frame.time_base = p, tb
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        if a is not None:
            t = np.arange(4 * 1024) / 8000
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for i in range(4):
                af = av.AudioFrame.from_ndarray(samples[:, i * 1024 : (i + 1) * 1024], format="fltp", layout="mono")
                af.sample_rate, af.pts = 8000, i * 1024
                for packet in a.encode(af):
                    out.mux(packet)
            for packet in a.encode():
                out.mux(packet)
    return path


CODE_BITS = 4
"""Frame i shows the number i + 1 (never 0, so a black frame reads as no frame) in CODE_BITS blocks."""


def coded_frame(i: int, *, width=32, height=24, dtype=np.uint8) -> np.ndarray:
    """Frame ``i`` of a test clip: the top half is i + 1 in binary, one white (1) or black (0) block per
    bit, most significant on the left; the bottom half is frame-specific (noise for uint8, a grey ramp
    with more than 256 levels, shifted by ``i``, for uint16)."""
    peak = np.iinfo(dtype).max
    rgb = np.zeros((height, width, 3), dtype)
    block = width // CODE_BITS
    for bit in range(CODE_BITS):
        if (i + 1) >> (CODE_BITS - 1 - bit) & 1:
            rgb[: height // 2, bit * block : (bit + 1) * block] = peak
    rows = height - height // 2
    if dtype == np.uint8:
        rgb[height // 2 :] = np.random.default_rng(100 + i).integers(0, 256, (rows, width, 3), dtype=np.uint8)
    else:
        ramp = np.roll(np.linspace(0, peak, rows * width), 7 * i).reshape(rows, width)
        rgb[height // 2 :] = np.round(ramp).astype(dtype)[:, :, None]
    return rgb


def read_code(rgb: np.ndarray) -> int:
    """The number :func:`coded_frame` drew into ``rgb`` (any size): the mean of each block's centre."""
    height, width = rgb.shape[:2]
    half = rgb[: height // 2].astype(np.float64) / np.iinfo(rgb.dtype).max
    block, rows = width // CODE_BITS, slice(height // 8, 3 * height // 8)
    value = 0
    for bit in range(CODE_BITS):
        centre = half[rows, bit * block + block // 4 : (bit + 1) * block - block // 4]
        value = 2 * value + int(centre.mean() > 0.5)
    return value


def decode_rgb(path: Path, fmt: str = "rgb24") -> list[np.ndarray]:
    """Every frame of ``path`` in presentation order, as HWC rgb24 (uint8) or rgb48le (uint16)."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format=fmt) for f in c.decode(c.streams.video[0])]


def bicubic_hwc(lr_hwc: np.ndarray, scale: int) -> np.ndarray:
    """What a bicubic upscaler outputs for ``lr_hwc`` (uint8 or uint16 HWC), in the same dtype."""
    peak = np.iinfo(lr_hwc.dtype).max
    lr = torch.from_numpy(lr_hwc.astype(np.float64) / peak).permute(2, 0, 1)[None]
    sr = upscale_bicubic(lr, scale).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return np.round(sr * peak).astype(lr_hwc.dtype)


def describe(path: Path) -> dict:
    """Frame pts (seconds), audio packet bytes, colour tags; decodes every frame (raises on errors)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        ctx = v.codec_context
        info = {
            "size": (ctx.width, ctx.height),
            "pix_fmt": ctx.pix_fmt,
            "color": (ctx.color_range, ctx.colorspace, ctx.color_primaries, ctx.color_trc),
            "duration": c.duration,
        }
        info["pts"] = [float(f.pts * f.time_base) for f in c.decode(v)]
    with av.open(str(path)) as c:
        audio = c.streams.audio
        packets = [p for p in c.demux(*audio) if p.size] if audio else []
        info["audio"] = [bytes(p) for p in packets]
        info["audio_timing"] = [(p.pts, p.dts, p.duration, p.time_base) for p in packets]
        info["audio_codec"] = [s.codec_context.name for s in audio]
    return info


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_models")
    paths = {}
    for scale in (2, 3):
        paths[scale] = save_checkpoint(root / f"fsrcnn_x{scale}.safetensors", build("fsrcnn", scale=scale),
                                       arch="fsrcnn", scale=scale, hparams=resolve_hparams("fsrcnn", scale=scale))
    return paths


@pytest.fixture(scope="module")
def up2(ckpts):
    with Upscaler(ckpts[2], device="cpu", batch=3) as up:
        yield up


@pytest.fixture(scope="module")
def bicubic_x2(tmp_path_factory):
    """A x2 checkpoint whose output is the bicubic upscale of its input, so every output frame can be
    predicted: VDSR adds its residual to the bicubic upscale, and its last convolution is zeroed."""
    hparams = resolve_hparams("vdsr", scale=2, depth=3, n_feats=4)
    net = build("vdsr", scale=2, **hparams)
    torch.nn.init.zeros_(net.body[-1].weight)
    path = tmp_path_factory.mktemp("video_bicubic") / "bicubic_x2.safetensors"
    return save_checkpoint(path, net, arch="vdsr", scale=2, hparams=hparams)


ON_CUDA = pytest.param("cuda", marks=pytest.mark.gpu, id="cuda")
"""The CUDA frame pipeline (pinned buffers, device-side quantisation): the same checks, on the GPU."""


@pytest.mark.parametrize(
    "suffix, device", [(".mp4", "cpu"), (".mkv", "cpu"), pytest.param(".mkv", "cuda", marks=pytest.mark.gpu)]
)
def test_frames_content_timestamps_and_audio_survive(tmp_path, bicubic_x2, suffix, device):
    # Lossless 4:4:4 in and out (qp 0, crf 0): what is left is the RGB <-> YCbCr rounding, a few levels.
    src = make_video(tmp_path / f"in{suffix}", pix_fmt="yuv444p", options={"qp": "0"}, content=coded_frame)
    dst = tmp_path / f"out{suffix}"
    calls = []
    # Tile 16 on 32x24 frames: several tiles per frame; batch 3: frames 10 = 3 + 3 + 3 + 1.
    with Upscaler(bicubic_x2, device=device, batch=3, tile=16) as up:
        result = up.upscale_video(src, dst, crf=0, pix_fmt="yuv444p", preset="ultrafast",
                                  progress=lambda d, t: calls.append(d))
    lr_frames, sr_frames = decode_rgb(src), decode_rgb(dst)
    numbers = list(range(1, len(VFR_PTS) + 1))
    assert [read_code(f) for f in lr_frames] == numbers, "the test clip shows frame i as i + 1"
    assert [read_code(f) for f in sr_frames] == numbers, "output frame i shows input frame i"
    for i, (lr, sr) in enumerate(zip(lr_frames, sr_frames)):
        err = np.abs(sr.astype(int) - bicubic_hwc(lr, 2).astype(int)).max()
        assert err <= 4, f"output frame {i} is not input frame {i} upscaled: off by up to {err} levels"
    a, b = describe(src), describe(dst)
    assert result.frames == len(VFR_PTS) == len(b["pts"])
    assert b["pts"] == a["pts"], "every output frame keeps its input timestamp"
    assert b["size"] == (64, 48)
    assert b["audio_codec"] == a["audio_codec"] == ["aac"]
    assert b["audio"] == a["audio"] and len(a["audio"]) > 0, "audio packets are copied byte for byte"
    assert b["audio_timing"] == a["audio_timing"], "audio packets keep their pts, dts, duration and time base"
    assert calls[-1] == len(VFR_PTS)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("device", ["cpu", ON_CUDA])
def test_ten_bit_output_holds_ten_bit_values(tmp_path, bicubic_x2, device):
    # FFV1 is lossless at 10 bits (libx264 at crf 0 is not): encoder noise would add grey levels.
    src = make_video(tmp_path / "in10.mkv", codec="ffv1", pix_fmt="yuv444p10le", audio=False,
                     pts=VFR_PTS[:4], content=lambda i: coded_frame(i, dtype=np.uint16))
    dst = tmp_path / "out10.mkv"
    with Upscaler(bicubic_x2, device=device, batch=2, tile=12) as up:  # uint16 frames cut into tiles
        up.upscale_video(src, dst, codec="ffv1", crf=None, pix_fmt="yuv444p10le")
    assert describe(dst)["pix_fmt"] == "yuv444p10le"
    lr_frames, sr_frames = decode_rgb(src, "rgb48le"), decode_rgb(dst, "rgb48le")
    assert [read_code(f) for f in sr_frames] == [read_code(f) for f in lr_frames] == [1, 2, 3, 4]
    for i, (lr, sr) in enumerate(zip(lr_frames, sr_frames)):
        ramp = sr[sr.shape[0] // 2 + 4 :, :, 1]  # the grey ramp, clear of the code blocks' bicubic ringing
        levels = len(np.unique(ramp))
        assert levels > 256, f"output frame {i}: {levels} grey levels on a 10-bit ramp, so 8-bit values were encoded"
        err = np.abs(sr.astype(int) - bicubic_hwc(lr, 2).astype(int)).max() / 64  # in 10-bit steps
        assert err <= 3, f"output frame {i} is not input frame {i} upscaled: off by up to {err:.1f} 10-bit steps"


def test_ten_bit_full_range_bt709_is_kept(tmp_path, up2):
    color = {"color_range": 2, "colorspace": 1, "color_primaries": 1, "color_trc": 1}
    src = make_video(tmp_path / "in10.mkv", pix_fmt="yuv420p10le", color=color, audio=False)
    up2.upscale_video(src, tmp_path / "out10.mkv", preset="ultrafast")
    out = describe(tmp_path / "out10.mkv")
    assert out["pix_fmt"] == "yuv420p10le"
    assert out["color"] == (2, 1, 1, 1)


def test_ten_bit_decode_keeps_sixteen_bit_frames(tmp_path):
    src = make_video(tmp_path / "in10.mkv", pix_fmt="yuv420p10le", audio=False)
    with VideoReader(src, high_bit_depth=True) as reader:
        frame, info = next(iter(reader))
    assert frame.dtype == np.uint16 and frame.shape == (24, 32, 3) and info.pts == 0


def test_odd_output_size_is_cropped_by_one_pixel(tmp_path, ckpts, caplog):
    src = make_video(tmp_path / "odd.mkv", width=15, height=11, pix_fmt="yuv444p", audio=False, pts=[0, 40, 80])
    with Upscaler(ckpts[3], device="cpu") as up3, caplog.at_level(logging.WARNING):
        result = up3.upscale_video(src, tmp_path / "odd_x3.mkv", preset="ultrafast", pix_fmt="yuv420p")
    assert (result.width, result.height) == (44, 32)
    assert describe(tmp_path / "odd_x3.mkv")["size"] == (44, 32)
    assert "cropping the 45x33 output to 44x32" in caplog.text


def test_unknown_encoder_or_pixel_format_fails_before_any_output(tmp_path, up2):
    src = make_video(tmp_path / "in.mp4", audio=False)
    before = set(tmp_path.iterdir())
    with pytest.raises(VideoError, match="no video encoder"):
        up2.upscale_video(src, tmp_path / "out.mp4", codec="not_a_codec")
    with pytest.raises(VideoError, match="pixel format"):
        up2.upscale_video(src, tmp_path / "out.mp4", pix_fmt="rgb48le")
    with pytest.raises(VideoError, match="pixel format"):
        check_encoder("libx264", width=64, height=48, pix_fmt="rgb48le")
    assert set(tmp_path.iterdir()) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="NVENC may work on a machine with an NVIDIA GPU")
def test_nvenc_without_a_gpu_fails_before_any_output(tmp_path, up2):
    src = make_video(tmp_path / "in.mp4", audio=False)
    before = set(tmp_path.iterdir())
    with pytest.raises(VideoError, match="NVENC needs an NVIDIA GPU"):
        up2.upscale_video(src, tmp_path / "out.mp4", codec="h264_nvenc")
    assert set(tmp_path.iterdir()) == before


@pytest.mark.gpu
def test_nvenc_on_a_gpu_encodes_every_frame_or_fails_before_any_output(tmp_path, bicubic_x2):
    # Some NVIDIA GPUs (H100, H200, A100) have no NVENC unit: then the clear error, and nothing written.
    src = make_video(tmp_path / "in.mp4", audio=False, content=coded_frame)
    before = set(tmp_path.iterdir())
    with Upscaler(bicubic_x2, device="cuda") as up:
        try:
            up.upscale_video(src, tmp_path / "out.mp4", codec="h264_nvenc", crf=18)
        except VideoError as e:
            assert "h264_nvenc" in str(e) and set(tmp_path.iterdir()) == before, e
            return
    assert [read_code(f) for f in decode_rgb(tmp_path / "out.mp4")] == list(range(1, len(VFR_PTS) + 1))


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupt_or_crash_leaves_no_file(tmp_path, up2, error):
    src = make_video(tmp_path / "in.mp4")
    dst = tmp_path / "out.mp4"

    def progress(done, total):
        if done >= 3:
            raise error("stop")

    with pytest.raises(error):
        up2.upscale_video(src, dst, preset="ultrafast", progress=progress)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


@pytest.mark.parametrize("failure", ["crash", "disk full", "rename"])
def test_failure_keeps_an_existing_output_untouched(tmp_path, up2, monkeypatch, failure):
    src = make_video(tmp_path / "in.mkv")
    dst = tmp_path / "out.mkv"
    dst.write_bytes(b"the previous output")
    expected: type[BaseException] = RuntimeError
    progress = None

    def crash(done, total):
        if done >= 3:
            raise RuntimeError("stop")

    if failure == "crash":  # in the caller, part-way
        progress = crash
    elif failure == "disk full":  # in the encode thread, after a few frames
        encode, calls = VideoWriter._encode, []

        def full_disk(self, rgb, info):
            calls.append(info.index)
            if len(calls) > 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            encode(self, rgb, info)

        monkeypatch.setattr(VideoWriter, "_encode", full_disk)
        expected = VideoError
    else:  # the final rename

        def fail(*args):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(os, "replace", fail)
        expected = PermissionError
    with pytest.raises(expected, match="stop|No space left|Permission denied"):
        up2.upscale_video(src, dst, preset="ultrafast", progress=progress)
    monkeypatch.undo()
    assert dst.read_bytes() == b"the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "out.mkv"], "no partial file is left"


def test_damaged_packet_is_reported_and_skipped(tmp_path, up2, caplog):
    src = make_video(tmp_path / "png.mov", codec="png", pix_fmt="rgb24", audio=False)
    data = bytearray(src.read_bytes())
    starts = [i for i in range(len(data) - 4) if data[i : i + 4] == b"\x89PNG"]
    data[starts[3] : starts[3] + 16] = bytes(16)  # break the 4th frame's PNG signature
    bad = tmp_path / "damaged.mov"
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        result = up2.upscale_video(bad, tmp_path / "out.mp4", preset="ultrafast")
    assert result.skipped_packets == 1 and result.frames == len(VFR_PTS) - 1
    assert "damaged packet" in caplog.text
    assert len(describe(tmp_path / "out.mp4")["pts"]) == len(VFR_PTS) - 1


def test_probe_reports_what_the_writer_needs(tmp_path):
    info = probe_video(make_video(tmp_path / "in.mkv"))
    assert (info.width, info.height, info.pix_fmt, info.bit_depth) == (32, 24, "yuv420p", 8)
    assert any(":audio:aac" in s for s in info.copy_streams)


def display_matrices(path: Path) -> tuple[int, bytes | None]:
    """(rotation in degrees, raw display-matrix side data) of the first decoded video frame: where a
    player finds it (FFmpeg puts the stream's display matrix on every decoded frame)."""
    with av.open(str(path)) as c:
        frame = next(c.decode(c.streams.video[0]))
        raw = [bytes(sd) for sd in frame.side_data if sd.type.name == "DISPLAYMATRIX"]
        return frame.rotation, (raw[0] if raw else None)


@pytest.mark.parametrize("suffix, rotation", [(".mp4", 90), (".mp4", -90), (".mov", 90), (".mkv", -90)])
def test_display_rotation_of_a_phone_video_is_kept(tmp_path, up2, suffix, rotation):
    src = make_video(tmp_path / f"phone{suffix}", rotation=rotation)
    rot, matrix = display_matrices(src)
    assert rot == rotation and matrix is not None, "the test clip carries a display matrix"
    assert probe_video(src).display_matrix is not None
    dst = tmp_path / f"out{suffix}"
    result = up2.upscale_video(src, dst, preset="ultrafast")
    assert (result.width, result.height) == (64, 48), "pixels are stored unrotated; the player rotates"
    assert display_matrices(dst) == (rotation, matrix)


def test_video_without_rotation_gets_none(tmp_path, up2):
    src = make_video(tmp_path / "plain.mp4", audio=False)
    assert probe_video(src).display_matrix is None
    up2.upscale_video(src, tmp_path / "out.mp4", preset="ultrafast")
    assert display_matrices(tmp_path / "out.mp4") == (0, None)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_disk_full_stops_the_job_within_a_batch_and_leaves_nothing(tmp_path, up2, monkeypatch, suffix):
    n = 60
    src = make_video(tmp_path / f"in{suffix}", pts=[40 * i for i in range(n)])
    dst = tmp_path / f"out{suffix}"
    processed, at_failure = [], []
    run = up2._run

    def counting_run(lr, *args, **kwargs):  # the frames the model computes
        processed.append(lr.shape[0])
        return run(lr, *args, **kwargs)

    mux, video_packets = VideoWriter._mux, []

    def full_after_four_frames(self, packet):
        if packet.stream.type == "video":
            video_packets.append(packet)
            if len(video_packets) > 4:
                at_failure.append(sum(processed))
                raise OSError(errno.ENOSPC, "No space left on device")
        mux(self, packet)

    monkeypatch.setattr(up2, "_run", counting_run)
    monkeypatch.setattr(VideoWriter, "_mux", full_after_four_frames)
    with pytest.raises(VideoError) as e:
        up2.upscale_video(src, dst, preset="ultrafast")  # ultrafast: a packet per frame, no lookahead
    monkeypatch.undo()
    message = str(e.value)
    assert str(dst) in message and "no space left" in message.lower(), message
    assert len(at_failure) == 1, "the encoder stops at the first failed write"
    assert sum(processed) - at_failure[0] <= up2.batch, (
        f"{sum(processed)} frames computed, {at_failure[0]} when the disk filled: the job went on")
    assert sum(processed) < n
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"in{suffix}"], "no partial file is left"


WRITE_LIMIT_SCRIPT = """
import resource, signal, sys
from sr_runtime.errors import VideoError
from sr_runtime.upscaler import Upscaler
src, dst, model, limit = sys.argv[1:5]
done = [0]
def progress(n, total):
    done[0] = n
with Upscaler(model, device="cpu", batch=1) as up:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.RLIM_INFINITY))
    try:
        up.upscale_video(src, dst, preset="ultrafast", progress=progress)
    except VideoError as e:
        print("ERROR", e)
print("FRAMES", done[0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE write errors are Linux behaviour")
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_real_write_error_mid_video_stops_the_job_early(tmp_path, ckpts, suffix):
    """The kernel refuses writes past RLIMIT_FSIZE (EFBIG), as a full disk does (ENOSPC): the error must
    reach the job while it runs, not be held in FFmpeg's I/O buffer, a Matroska cluster or the muxer's
    wait for the (ended) audio until the close, after every frame."""
    n = 200  # 8 s at 25 fps; the audio ends after 0.5 s
    src = make_video(tmp_path / f"in{suffix}", width=64, height=64, pts=[40 * i for i in range(n)])
    dst = tmp_path / f"out{suffix}"
    root = str(Path(sr_runtime.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    limit = 40_000  # bytes: the output of 200 such frames is ~400 kB
    run = subprocess.run([sys.executable, "-c", WRITE_LIMIT_SCRIPT, str(src), str(dst), str(ckpts[2]), str(limit)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    error = [line for line in run.stdout.splitlines() if line.startswith("ERROR")]
    assert error and str(dst) in error[0] and "too large" in error[0], run.stdout + run.stderr[-2000:]
    frames = int(run.stdout.split("FRAMES")[-1])
    assert frames <= n // 2, f"{frames} of {n} frames computed before the write error stopped the job"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"in{suffix}"], "no partial file is left"
