"""What a video file holds, read before any frame is: the first step of a frame's path.

:func:`probe_video` reads the header of a file (size, pixel format, timing, colour metadata, the
audio and subtitle streams to copy) and the display matrix of its first frame into a
:class:`VideoInfo`. Knows nothing about models.

Decisions: a missing file is an InputError; a container that cannot be read (truncated MP4 without
its index) or has no video stream is a VideoError.

Side data: PyAV 18 reads the display matrix (the rotation of phone videos) from decoded frames
(``frame.side_data``; streams expose no side data). HDR mastering-display and content-light side
data have no writer in PyAV 18 and are not carried.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from sr_runtime.errors import InputError, VideoError

__all__ = ["VIDEO_SUFFIXES", "VideoInfo", "is_video", "probe_video"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts", ".wmv", ".flv", ".mpg", ".mpeg")
_SWS_COLORSPACES = {1: 1, 4: 4, 5: 5, 6: 6, 7: 7, 9: 9, 10: 9}
"""AVColorSpace -> swscale colourspace (BT.709, FCC, BT.601 (470BG/170M), SMPTE 240M, BT.2020)."""
_COLOR_RANGES = (1, 2)
"""AVCOL_RANGE_MPEG (limited) and AVCOL_RANGE_JPEG (full)."""


def _av():
    try:
        import av
    except ImportError as e:
        raise VideoError("video needs PyAV: pip install av") from e
    return av


def is_video(path: str | os.PathLike) -> bool:
    """True when ``path`` has a video container suffix."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` finds in a file."""

    path: Path
    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    frames: int
    """Frame count from the container header (0 when unknown)."""
    time_base: Fraction
    rate: Fraction | None
    duration_s: float | None
    color: dict[str, int] = field(default_factory=dict)
    """``color_range``, ``colorspace``, ``color_primaries``, ``color_trc`` of the video stream."""
    copy_streams: tuple[str, ...] = ()
    """``"index:type:codec"`` of the audio and subtitle streams that will be copied."""
    display_matrix: tuple[int, ...] | None = None
    """The 9 int32 of FFmpeg's display matrix (rotation/flip for players), None when the video has none."""


def _open_input(path: Path):
    av = _av()
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise VideoError(f"{path}: cannot open as video ({e}); the file is damaged, truncated or not a video") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


def _bit_depth(pix_fmt: str) -> int:
    av = _av()
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, TypeError):
        return 8


def _color_of(obj) -> dict[str, int]:
    return {k: int(getattr(obj, k, 0) or 0) for k in ("color_range", "colorspace", "color_primaries", "color_trc")}


def _display_matrix(container, stream, max_packets: int = 64) -> tuple[int, ...] | None:
    """The display matrix of ``stream``, read from its first decoded frame (PyAV 18 has no reader for
    stream side data; FFmpeg copies it onto every decoded frame). None when absent or undecodable."""
    av = _av()
    try:
        for n, packet in enumerate(container.demux(stream)):
            for frame in packet.decode():
                for sd in frame.side_data:
                    if sd.type.name == "DISPLAYMATRIX":
                        matrix = tuple(int(v) for v in np.frombuffer(bytes(sd), dtype="<i4"))
                        return matrix if len(matrix) == 9 else None
                return None
            if n >= max_packets:
                return None
    except (av.FFmpegError, ValueError) as e:
        log.debug("%s: no display matrix read (%s)", container.name, e)
    return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read the header of ``path``; raises InputError (missing) or VideoError (unreadable)."""
    path = Path(path)
    container = _open_input(path)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if not ctx.width or not ctx.height or ctx.pix_fmt is None:
            raise VideoError(f"{path}: video stream has no size or pixel format (damaged header)")
        duration = float(container.duration) / 1_000_000 if container.duration else None
        copies = tuple(
            f"{s.index}:{s.type}:{s.codec_context.name}" for s in container.streams if s.type in ("audio", "subtitle")
        )
        return VideoInfo(
            path=path,
            width=ctx.width,
            height=ctx.height,
            pix_fmt=ctx.pix_fmt,
            bit_depth=_bit_depth(ctx.pix_fmt),
            frames=int(stream.frames or 0),
            time_base=stream.time_base,
            rate=stream.average_rate or stream.guessed_rate,
            duration_s=duration,
            color=_color_of(ctx),
            copy_streams=copies,
            display_matrix=_display_matrix(container, stream),
        )
    finally:
        container.close()
