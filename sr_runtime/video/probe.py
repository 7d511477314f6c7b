"""What a video file holds, read before any frame is: the first step of a frame's path.

:func:`probe_video` reads the header of a file (size, pixel format, timing, colour metadata, the
audio and subtitle streams to copy) and the display matrix of its first frame into a
:class:`VideoInfo`. :func:`scan_video` does the same and, in the same pass over the file, lists the
timestamps of every video packet (a :class:`PacketIndex`, from which a job cuts segments) and
hashes the file's bytes as the demuxer reads them, so that a resumable job reads its source once
before the first frame. Knows nothing about models.

Decisions: a missing file is an InputError; a container that cannot be read (truncated MP4 without
its index) or has no video stream is a VideoError.

Side data: PyAV 18 reads the display matrix (the rotation of phone videos) from decoded frames
(``frame.side_data``; streams expose no side data). HDR mastering-display and content-light side
data have no writer in PyAV 18 and are not carried.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from sr_runtime.errors import InputError, VideoError

__all__ = ["VIDEO_SUFFIXES", "PacketIndex", "SourceScan", "VideoInfo", "is_video", "probe_video", "scan_video"]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts", ".wmv", ".flv", ".mpg", ".mpeg")
_SWS_COLORSPACES = {1: 1, 4: 4, 5: 5, 6: 6, 7: 7, 9: 9, 10: 9}
"""AVColorSpace -> swscale colourspace (BT.709, FCC, BT.601 (470BG/170M), SMPTE 240M, BT.2020)."""
_COLOR_RANGES = (1, 2)
"""AVCOL_RANGE_MPEG (limited) and AVCOL_RANGE_JPEG (full)."""
_MATRIX_PACKETS = 64
"""Packets read in search of the first decoded frame, which carries the display matrix."""
_HASH_CHUNK = 1 << 20


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


@dataclass(frozen=True)
class PacketIndex:
    """The timestamps of a video stream's packets, read without decoding."""

    pts: tuple[int, ...]
    """Presentation timestamps of every packet, sorted."""
    keyframes: tuple[int, ...]
    """Those of the keyframes, sorted."""
    time_base: Fraction


@dataclass(frozen=True)
class SourceScan:
    """What one pass over a video file found (see :func:`scan_video`)."""

    info: VideoInfo
    packets: PacketIndex | None
    """None when a packet has no timestamp, or there is none: segments could not be told apart."""
    sha256: str | None
    """Of the whole file, as :func:`sr_runtime.atomic.sha256_file` gives it; None when ``packets`` is."""


def _check_input(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")


def _open_input(path: Path, file=None):
    """Open ``path`` for demuxing, through ``file`` (a binary file object of it) when given."""
    av = _av()
    if file is None:
        _check_input(path)
    try:
        container = av.open(str(path) if file is None else file)
    except av.FFmpegError as e:
        raise VideoError(f"{path}: cannot open as video ({e}); the file is damaged, truncated or not a video") from e
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    return container


class _HashingReader:
    """Reads binary ``file`` and hashes its bytes as they are read in order: bytes ``[0, hashed)`` are
    in the digest; a read that reaches past ``hashed`` from at or before it extends it (the demuxer's
    seeks elsewhere leave it alone). :meth:`sha256` reads whatever was not hashed that way."""

    def __init__(self, file, name: str) -> None:
        self.name = name  # FFmpeg guesses the container from the name, as with a path
        self._file = file
        self._digest = hashlib.sha256()
        self._hashed = 0

    def read(self, size: int = -1) -> bytes:
        start = self._file.tell()
        data = self._file.read(size)
        if start <= self._hashed < start + len(data):
            self._digest.update(memoryview(data)[self._hashed - start :])
            self._hashed = start + len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return True

    def sha256(self) -> str:
        """The digest of the whole file (reads the bytes the demuxer did not read in order)."""
        self._file.seek(self._hashed)
        for chunk in iter(lambda: self._file.read(_HASH_CHUNK), b""):
            self._digest.update(chunk)
            self._hashed += len(chunk)
        return self._digest.hexdigest()


def _bit_depth(pix_fmt: str) -> int:
    av = _av()
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except (ValueError, TypeError):
        return 8


def _color_of(obj) -> dict[str, int]:
    return {k: int(getattr(obj, k, 0) or 0) for k in ("color_range", "colorspace", "color_primaries", "color_trc")}


def _header(path: Path, container) -> VideoInfo:
    """The header of ``container``'s first video stream, without its display matrix."""
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
    )


def _display_matrix(packets: Iterable, name: str) -> tuple[int, ...] | None:
    """The display matrix of the first frame decoded from ``packets`` (a video stream's, from its
    start): PyAV 18 has no reader for stream side data, and FFmpeg copies it onto every decoded
    frame. None when absent or undecodable."""
    av = _av()
    try:
        for n, packet in enumerate(packets):
            for frame in packet.decode():
                for sd in frame.side_data:
                    if sd.type.name == "DISPLAYMATRIX":
                        matrix = tuple(int(v) for v in np.frombuffer(bytes(sd), dtype="<i4"))
                        return matrix if len(matrix) == 9 else None
                return None
            if n >= _MATRIX_PACKETS:
                return None
    except (av.FFmpegError, ValueError) as e:
        log.debug("%s: no display matrix read (%s)", name, e)
    return None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read the header of ``path``; raises InputError (missing) or VideoError (unreadable)."""
    path = Path(path)
    container = _open_input(path)
    try:
        info = _header(path, container)
        matrix = _display_matrix(container.demux(container.streams.video[0]), container.name)
        return dataclasses.replace(info, display_matrix=matrix)
    finally:
        container.close()


class _PacketLog:
    """Passes a video stream's packets through, noting their timestamps; stops at the first packet
    without one (``complete`` False then), and keeps a demuxing error for :meth:`index` to raise."""

    def __init__(self, path: Path, container) -> None:
        self.path, self._container = path, container
        self._stream = container.streams.video[0]
        self.pts: list[int] = []
        self.keyframes: list[int] = []
        self.complete = True
        self._error: BaseException | None = None

    def __iter__(self) -> Iterator:
        av = _av()
        try:
            for packet in self._container.demux(self._stream):
                if packet.size:  # the demuxer's flush packet has none, and no timestamp
                    if packet.pts is None:
                        self.complete = False
                        return
                    self.pts.append(packet.pts)
                    if packet.is_keyframe:
                        self.keyframes.append(packet.pts)
                yield packet
        except av.FFmpegError as e:
            self._error = e

    def index(self) -> PacketIndex | None:
        if self._error is not None:
            last = self.pts[-1] if self.pts else None
            raise VideoError(
                f"{self.path}: cannot read the packets after pts {last} ({self._error}); the file is damaged or truncated"
            ) from self._error
        if not self.complete or not self.pts:
            return None
        return PacketIndex(tuple(sorted(self.pts)), tuple(sorted(self.keyframes)), self._stream.time_base)


def scan_video(path: str | os.PathLike) -> SourceScan:
    """:func:`probe_video`, the timestamps of every video packet and the file's sha256, in one pass.

    Only the first frame is decoded (for the display matrix). The hash grows as the demuxer reads
    the file; where it read out of order (an index at the end, a seek), the bytes it skipped are
    read again at the end, so containers laid out in demuxing order are read once. Stops at the
    first packet without a timestamp (then ``packets`` and ``sha256`` are None: nothing to cut or
    resume). Raises InputError (missing) or VideoError (unreadable, damaged).
    """
    path = Path(path)
    _check_input(path)
    with open(path, "rb") as file:
        reader = _HashingReader(file, str(path))
        container = _open_input(path, reader)
        try:
            info = _header(path, container)
            packets = _PacketLog(path, container)
            scanned = iter(packets)
            matrix = _display_matrix(scanned, str(path))
            for _ in scanned:  # the rest of the stream, undecoded
                pass
            index = packets.index()
        finally:
            container.close()
        sha256 = reader.sha256() if index is not None else None
    return SourceScan(dataclasses.replace(info, display_matrix=matrix), index, sha256)
