"""Small synthetic clips made with PyAV (24 fps, a keyframe every 12 frames, AAC audio), what the
video tests read back from outputs, and ``sr-run`` as a subprocess."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import av
import numpy as np

import sr_runtime

RATE = 24
ROOT = str(Path(sr_runtime.__file__).resolve().parents[1])


def make_clip(path: Path, *, frames=48, width=48, height=32, gop=12, audio=True, rotation=None) -> Path:
    """A clip whose frames all differ (moving ramps), keyframes every ``gop`` frames, B-frames, mono AAC."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=RATE)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        if rotation is not None:
            vs.set_display_rotation(rotation)
        aus = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        yy, xx = np.mgrid[0:height, 0:width]
        samples = 0
        for i in range(frames):
            rgb = np.stack([(xx * 5 + i * 9) % 256, (yy * 7 + i * 5) % 256, ((xx + yy) * 3 + i * 11) % 256], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            frame.pts = i
            for packet in vs.encode(frame):
                out.mux(packet)
            while aus is not None and samples < (i + 1) * 16000 / RATE:
                tone = (0.3 * np.sin((np.arange(1024) + samples) / 7.0)).astype(np.float32)[None]
                af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                af.sample_rate, af.pts = 16000, samples
                for packet in aus.encode(af):
                    out.mux(packet)
                samples += 1024
        for packet in vs.encode():
            out.mux(packet)
        if aus is not None:
            for packet in aus.encode():
                out.mux(packet)
    return path


def video_frames(path: Path) -> tuple[list[float], list[bytes]]:
    """Presentation times (s) and rgb24 bytes of every frame; decoding raises on a damaged file."""
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.video[0]))
        return [float(f.pts * f.time_base) for f in frames], [f.to_ndarray(format="rgb24").tobytes() for f in frames]


def audio_packets(path: Path) -> list[tuple[bytes, int | None]]:
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts) for p in c.demux(*c.streams.audio) if p.size] if c.streams.audio else []


def rotation_of(path: Path) -> int:
    with av.open(str(path)) as c:
        return next(c.decode(c.streams.video[0])).rotation


def sr_run(*args, env=None, **kw):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]), **(env or {})}
    return [sys.executable, "-m", "sr_runtime.cli", *map(str, args)], env


COMMON = ["--scale", "2", "--backend", "torch", "--segment-seconds", "0.5", "--crf", "0", "--preset", "ultrafast"]


def check_output(dst: Path, src: Path) -> None:
    src_pts, _ = video_frames(src)
    pts, _ = video_frames(dst)
    assert len(pts) == len(src_pts) and np.allclose(pts, src_pts, atol=1e-3)
    assert audio_packets(dst) == audio_packets(src)

