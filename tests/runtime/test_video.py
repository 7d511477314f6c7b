"""Video: frame count, timestamps (VFR too), copied audio, colour metadata, 10-bit, odd sizes, encoder
checks, nothing half-written on failure, damaged packets skipped. Tiny synthetic clips made with PyAV."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from sr_runtime.archs import build, resolve_hparams
from sr_runtime.checkpoint import save_checkpoint
from sr_runtime.errors import VideoError
from sr_runtime.upscaler import Upscaler
from sr_runtime.video import VideoReader, check_encoder, probe_video

VFR_PTS = [0, 40, 80, 200, 240, 300, 333, 400, 440, 480]
"""Milliseconds: irregular on purpose (variable frame rate)."""


def make_video(path: Path, *, width=32, height=24, pts=VFR_PTS, codec="libx264", pix_fmt="yuv420p",
               audio=True, color=None) -> Path:
    rng = np.random.default_rng(0)
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=25)
        v.width, v.height, v.pix_fmt = width, height, pix_fmt
        v.time_base = v.codec_context.time_base = tb
        for key, value in (color or {}).items():
            setattr(v.codec_context, key, value)
        a = out.add_stream("aac", rate=8000, layout="mono") if audio else None
        for p in pts:
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), format="rgb24")
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
        info["audio"] = [bytes(p) for p in c.demux(*audio) if p.size] if audio else []
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


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_frames_timestamps_and_audio_survive(tmp_path, up2, suffix):
    src = make_video(tmp_path / f"in{suffix}")
    dst = tmp_path / f"out{suffix}"
    calls = []
    result = up2.upscale_video(src, dst, preset="ultrafast", progress=lambda d, t: calls.append(d))
    a, b = describe(src), describe(dst)
    assert result.frames == len(VFR_PTS) == len(b["pts"])
    assert b["pts"] == a["pts"], "every output frame keeps its input timestamp"
    assert b["size"] == (64, 48)
    assert b["audio_codec"] == a["audio_codec"] == ["aac"]
    assert b["audio"] == a["audio"] and len(a["audio"]) > 0, "audio packets are copied byte for byte"
    assert calls[-1] == len(VFR_PTS)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="NVENC may work on a machine with an NVIDIA GPU")
def test_unavailable_encoder_fails_before_any_output(tmp_path, up2):
    src = make_video(tmp_path / "in.mp4", audio=False)
    before = set(tmp_path.iterdir())
    with pytest.raises(VideoError, match="NVENC needs an NVIDIA GPU"):
        up2.upscale_video(src, tmp_path / "out.mp4", codec="h264_nvenc")
    with pytest.raises(VideoError, match="no video encoder"):
        up2.upscale_video(src, tmp_path / "out.mp4", codec="not_a_codec")
    with pytest.raises(VideoError, match="pixel format"):
        check_encoder("libx264", width=64, height=48, pix_fmt="rgb48le")
    assert set(tmp_path.iterdir()) == before


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
