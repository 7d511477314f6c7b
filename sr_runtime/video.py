"""Decode and encode video frames with PyAV, each in its own thread; knows nothing about models.

:class:`VideoReader` yields RGB frames (HWC uint8, or uint16 for more than 8 bits) with their
timestamps from a decode thread through a bounded queue. :class:`VideoWriter` encodes RGB frames
in an encode thread (bounded queue), gives each output frame the input frame's ``pts`` and
``time_base`` (so variable frame rate and the exact frame count survive), tags the colour
metadata of the input (range, matrix, primaries, transfer) and its display matrix (the rotation of
phone videos), and copies every audio and subtitle stream packet for packet (no re-encoding). It writes to a temporary file beside the destination
and renames it at the end; on any error or Ctrl-C the temporary file is deleted.

Decisions: output pixel format defaults to the input's when the encoder takes it (so 10-bit stays
10-bit), else ``yuv420p``. Chroma-subsampled formats need even sides: an odd output side is cropped
by one pixel (last row/column), with a warning. A packet the decoder rejects is logged and
skipped; a container that cannot be read (truncated MP4 without its index) is a VideoError.

Write errors (disk full, permission, quota) surface at the packet that hits them: the output is
opened with ``flush_packets`` (no 256 KiB avio buffer hiding the error) and Matroska clusters are
closed every second (they are otherwise held in memory for 5 s); the encode thread records the error
and the producer's next :meth:`VideoWriter.check` or :meth:`VideoWriter.write` raises it.

Side data: PyAV 18 reads the display matrix from decoded frames (``frame.side_data``; streams expose
no side data) and writes it with ``VideoStream.set_display_matrix``, its only stream side-data
writer. HDR mastering-display and content-light side data have no writer in PyAV 18 and are not
carried.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import secrets
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from sr_runtime.errors import InputError, VideoError

__all__ = [
    "VIDEO_SUFFIXES",
    "VideoInfo",
    "FrameInfo",
    "probe_video",
    "check_encoder",
    "default_pix_fmt",
    "VideoReader",
    "VideoWriter",
    "is_video",
    "join_segments",
]

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts", ".wmv", ".flv", ".mpg", ".mpeg")
_END = object()
_SWS_COLORSPACES = {1: 1, 4: 4, 5: 5, 6: 6, 7: 7, 9: 9, 10: 9}
"""AVColorSpace -> swscale colourspace (BT.709, FCC, BT.601 (470BG/170M), SMPTE 240M, BT.2020)."""
_COLOR_RANGES = (1, 2)
"""AVCOL_RANGE_MPEG (limited) and AVCOL_RANGE_JPEG (full)."""
_MKV_CLUSTER_MS = 1000
"""Matroska cluster length: a cluster is written (and a write error seen) at least this often."""
_INTERLEAVE_US = 1_000_000
"""Longest the muxer holds packets waiting for another stream (FFmpeg's default is 10 s): once the
audio ends, or between sparse subtitles, it would otherwise keep seconds of video in memory, unwritten."""
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for this file system or limit",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.EIO: "input/output error on the device",
}


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
class FrameInfo:
    """Timing of one decoded frame, carried to the encoder unchanged."""

    index: int
    pts: int | None
    time_base: Fraction | None


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


def _subsampling(pix_fmt: str) -> tuple[bool, bool]:
    """(horizontal, vertical) chroma subsampling of ``pix_fmt``."""
    av = _av()
    comps = av.VideoFormat(pix_fmt, 8, 8).components
    return any(c.width < 8 for c in comps), any(c.height < 8 for c in comps)


def _encoder_options(codec: str, crf: int | None, preset: str | None) -> dict[str, str]:
    options: dict[str, str] = {}
    if crf is not None:
        options["cq" if "nvenc" in codec else "crf"] = str(crf)
    if preset is not None:
        options["preset"] = preset
    if codec == "libx265":
        options["x265-params"] = "log-level=error"
    return options


def default_pix_fmt(codec: str, input_pix_fmt: str | None) -> str:
    """The input's pixel format when ``codec`` encodes it, else ``yuv420p``."""
    av = _av()
    try:
        supported = [f.name for f in (av.Codec(codec, "w").video_formats or [])]
    except ValueError:  # unknown codec: check_encoder reports it with the alternatives
        return "yuv420p"
    if input_pix_fmt and input_pix_fmt in supported:
        return input_pix_fmt
    return "yuv420p"


def check_encoder(
    codec: str, *, width: int, height: int, pix_fmt: str, crf: int | None = None, preset: str | None = None
) -> None:
    """Open ``codec`` once with these settings, so that an unusable encoder is an error before any
    output exists: unknown codec, NVENC without an NVIDIA GPU, a pixel format or preset the encoder
    does not take. Raises VideoError naming what is available."""
    av = _av()
    software = [c for c in ("libx264", "libx265", "libsvtav1", "libvpx-vp9", "mpeg4") if c in av.codecs_available]
    try:
        encoder = av.Codec(codec, "w")
    except (ValueError, av.FFmpegError) as e:
        raise VideoError(f"no video encoder {codec!r} in this FFmpeg build; available: {', '.join(software)}") from e
    if encoder.type != "video":
        raise VideoError(f"{codec!r} is a {encoder.type} encoder, not a video one; use e.g. {', '.join(software)}")
    formats = [f.name for f in (encoder.video_formats or [])]
    if formats and pix_fmt not in formats:
        raise VideoError(f"encoder {codec} does not take pixel format {pix_fmt!r}; it takes: {', '.join(formats)}")
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base = Fraction(1, 25)
    ctx.framerate = Fraction(25)
    ctx.options = _encoder_options(codec, crf, preset)
    try:
        ctx.open()
    except av.FFmpegError as e:
        hint = (
            "NVENC needs an NVIDIA GPU with its driver; use --codec libx264 or libx265"
            if "nvenc" in codec
            else "check --crf, --preset and --pix-fmt"
        )
        raise VideoError(
            f"encoder {codec} cannot be opened for {width}x{height} {pix_fmt} ({e}); {hint}. "
            f"Software encoders here: {', '.join(software)}"
        ) from e


class VideoReader:
    """Decode ``path`` in a background thread; iterate to get ``(rgb_hwc, FrameInfo)``.

    Frames are uint8 RGB, or uint16 (``rgb48le``) when ``high_bit_depth``. The colour matrix and
    range of each frame are honoured in the conversion to RGB. A packet the decoder rejects is
    logged and skipped (``skipped_packets`` counts them). Use as a context manager (stops the thread).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        high_bit_depth: bool = False,
        queue_size: int = 8,
        start_pts: int | None = None,
        end_pts: int | None = None,
        seek_pts: int | None = None,
        first_index: int = 0,
    ) -> None:
        self.path = Path(path)
        self._container = _open_input(self.path)
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._start_pts, self._end_pts, self._first_index = start_pts, end_pts, first_index
        if seek_pts is not None and seek_pts > (self._stream.start_time or 0):
            self._seek(seek_pts)
        self._format = "rgb48le" if high_bit_depth else "rgb24"
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self.skipped_packets = 0
        self._thread = threading.Thread(target=self._decode, name="sr-video-decode", daemon=True)
        self._thread.start()

    def _seek(self, pts: int) -> None:
        """Seek to the keyframe at or before ``pts``; if the demuxer lands after ``start_pts`` (an
        index that does not list that keyframe), read from the beginning instead: slower, never wrong."""
        av = _av()
        try:
            self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
        except av.FFmpegError as e:
            log.debug("%s: seek to pts %d failed (%s); reading from the start", self.path.name, pts, e)
            self._rewind()
            return
        first = next((p for p in self._container.demux(self._stream) if p.pts is not None), None)
        if first is None or (self._start_pts is not None and first.pts > self._start_pts):
            log.debug("%s: seek to pts %d landed at %s; reading from the start", self.path.name, pts, first and first.pts)
            self._rewind()
            return
        self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)

    def _rewind(self) -> None:
        self._container.close()
        self._container = _open_input(self.path)
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _to_rgb(self, frame) -> np.ndarray:
        kwargs: dict[str, Any] = {}
        space = _SWS_COLORSPACES.get(int(frame.colorspace or 0))
        if space is not None:
            kwargs["src_colorspace"] = space
        if int(frame.color_range or 0) in _COLOR_RANGES:
            kwargs["src_color_range"] = int(frame.color_range)
        return frame.to_ndarray(format=self._format, **kwargs)

    def _decode(self) -> None:
        av = _av()
        index = 0
        last_pts: int | None = None
        try:
            for packet in self._container.demux(self._stream):
                if self._stop.is_set():
                    return
                try:
                    frames = packet.decode()
                except av.FFmpegError as e:
                    self.skipped_packets += 1
                    log.warning("%s: damaged packet at pts %s skipped (%s)", self.path.name, packet.pts, e)
                    continue
                for frame in frames:
                    pts = frame.pts
                    if pts is None and last_pts is not None and self._stream.average_rate:
                        step = 1 / (self._stream.average_rate * self._stream.time_base)
                        pts = int(last_pts + step)
                    last_pts = pts
                    if pts is not None and self._start_pts is not None and pts < self._start_pts:
                        continue  # decoded from the keyframe before the range: context only
                    if pts is not None and self._end_pts is not None and pts >= self._end_pts:
                        self._put(_END)
                        return
                    info = FrameInfo(self._first_index + index, pts, frame.time_base or self._stream.time_base)
                    if not self._put((self._to_rgb(frame), info)):
                        return
                    index += 1
        except av.FFmpegError as e:
            self._put(VideoError(f"{self.path}: cannot read past frame {index} ({e}); the file is damaged or truncated"))
            return
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(e)
            return
        self._put(_END)

    def __iter__(self) -> Iterator[tuple[np.ndarray, FrameInfo]]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def batches(self, size: int) -> Iterator[tuple[list[np.ndarray], list[FrameInfo]]]:
        """Frames grouped ``size`` at a time (the last group may be smaller)."""
        frames: list[np.ndarray] = []
        infos: list[FrameInfo] = []
        for frame, info in self:
            frames.append(frame)
            infos.append(info)
            if len(frames) == size:
                yield frames, infos
                frames, infos = [], []
        if frames:
            yield frames, infos

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_output(tmp: Path, dst: Path):
    """Open ``tmp`` for writing in the container of ``dst``'s suffix.

    ``flush_packets``: each packet reaches the file when muxed, so a full disk fails that mux call
    instead of the close, after every frame has been computed."""
    av = _av()
    options = {"flush_packets": "1", "max_interleave_delta": str(_INTERLEAVE_US)}
    if dst.suffix.lower() in (".mkv", ".webm"):
        options["cluster_time_limit"] = str(_MKV_CLUSTER_MS)
    return av.open(str(tmp), "w", container_options=options)


def _partial_name(dst: Path) -> Path:
    """A hidden temporary name beside ``dst``, same folder (atomic rename), real suffix last."""
    return dst.with_name(f".{dst.stem}.{secrets.token_hex(4)}.partial{dst.suffix}")


def _write_failure(dst: Path, e: BaseException, when: str) -> VideoError:
    code = getattr(e, "errno", None)
    if isinstance(e, OSError) and code in _WRITE_ERRORS:
        return VideoError(
            f"{dst}: cannot write the output: {_WRITE_ERRORS[code]} ({os.strerror(code)}, in "
            f"{dst.parent}) {when}; stopped, no partial file is kept"
        )
    return VideoError(f"{dst}: writing failed ({e})")


def _close_quietly(container) -> None:
    if container is None:
        return
    try:
        container.close()
    except Exception as e:  # closing a half-written container can fail; the file goes anyway
        log.debug("closing %s after a failure: %s", container, e)


_DROPPED_METADATA = ("encoder", "creation_time", "major_brand", "minor_version", "compatible_brands")
"""Container tags that describe the file written, not the content: the muxer writes its own."""


class _StreamCopier:
    """Copies ``source``'s audio and subtitle streams packet for packet into ``out`` (no
    re-encoding), with the container's metadata and chapters; :meth:`copy_until` keeps the output
    interleaved with the video being written."""

    def __init__(self, source: Path, out, dst: Path, mux: Callable[[Any], None]) -> None:
        self._source = _open_input(source)
        self._mux = mux
        self._pairs: list = []
        self._pending = None
        supported = out.supported_codecs
        for in_stream in self._source.streams:
            if in_stream.type not in ("audio", "subtitle"):
                continue
            name = in_stream.codec_context.name
            if supported and name not in supported:
                self.close()
                raise VideoError(
                    f"{source.name}: {in_stream.type} stream #{in_stream.index} ({name}) cannot be stored in a "
                    f"{dst.suffix} file without re-encoding; write to .mkv instead (-o out.mkv)"
                )
            out_stream = out.add_stream_from_template(in_stream)
            for key, value in (in_stream.metadata or {}).items():
                out_stream.metadata[key] = value
            self._pairs.append((in_stream, out_stream))
        for key, value in (self._source.metadata or {}).items():
            if key.lower() not in _DROPPED_METADATA:
                out.metadata[key] = value
        chapters = self._source.chapters() if hasattr(self._source, "chapters") else []
        if chapters and hasattr(out, "set_chapters"):
            out.set_chapters(chapters)
        if self._pairs:
            self._packets = self._source.demux(*[s for s, _ in self._pairs])
            self._out_of = {id(s): o for s, o in self._pairs}
            log.info("copying %d audio/subtitle stream(s) without re-encoding", len(self._pairs))

    def copy_until(self, seconds: float | None) -> None:
        """Mux copied packets up to ``seconds`` (all of them when None)."""
        if not self._pairs:
            return
        while True:
            packet = self._pending
            if packet is None:
                packet = next(self._packets, None)
                if packet is None:
                    self._pairs = []
                    return
            if packet.size == 0:  # demuxer flush packet: nothing to copy
                self._pending = None
                continue
            ts = packet.dts if packet.dts is not None else packet.pts
            if seconds is not None and ts is not None and float(ts * packet.time_base) > seconds:
                self._pending = packet
                return
            self._pending = None
            packet.stream = self._out_of[id(packet.stream)]
            self._mux(packet)

    def close(self) -> None:
        _close_quietly(self._source)


@dataclass
class _Batch:
    frames: np.ndarray | list[np.ndarray]
    infos: list[FrameInfo]
    wait: Callable[[], None] | None
    release: Callable[[], None] | None


class VideoWriter:
    """Encode RGB frames to ``dst`` in a background thread, copying ``source``'s audio and subtitles.

    ``width`` x ``height``: the size of the frames you will write (an odd side is cropped by one
    pixel for chroma-subsampled ``pix_fmt``, with a warning). ``rate``/``time_base``: of the input
    video stream; each frame keeps the ``pts``/``time_base`` of its FrameInfo. ``color``: the input's
    ``color_range``/``colorspace``/``color_primaries``/``color_trc`` (see :class:`VideoInfo`).
    ``display_matrix``: the input's (:attr:`VideoInfo.display_matrix`), written on the output stream.
    A write error (disk full, permission) stops encoding at the packet that meets it; the next
    :meth:`check`, :meth:`write` or :meth:`close` raises a VideoError naming ``dst`` and the cause.
    Checks the encoder and the output container before creating any file; raises VideoError.
    Call :meth:`close` to finish (rename into place); leaving the ``with`` block on an exception,
    or :meth:`abort`, deletes the temporary file.
    """

    def __init__(
        self,
        dst: str | os.PathLike,
        *,
        width: int,
        height: int,
        rate: Fraction | None,
        time_base: Fraction,
        source: str | os.PathLike | None = None,
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
        crf: int | None = None,
        preset: str | None = None,
        color: dict[str, int] | None = None,
        display_matrix: tuple[int, ...] | None = None,
        queue_size: int = 4,
    ) -> None:
        av = _av()
        self.dst = Path(dst)
        if not self.dst.parent.is_dir():
            raise InputError(f"{self.dst.parent}: output folder does not exist")
        h_sub, v_sub = _subsampling(pix_fmt)
        self.width = width - (width % 2 if h_sub else 0)
        self.height = height - (height % 2 if v_sub else 0)
        if (self.width, self.height) != (width, height):
            log.warning(
                "%s needs even sides: cropping the %dx%d output to %dx%d (one pixel off the last %s)",
                pix_fmt, width, height, self.width, self.height,
                "row and column" if width != self.width and height != self.height
                else ("column" if width != self.width else "row"),
            )
        check_encoder(codec, width=self.width, height=self.height, pix_fmt=pix_fmt, crf=crf, preset=preset)
        self.high_bit_depth = _bit_depth(pix_fmt) > 8
        self._rgb_format = "rgb48le" if self.high_bit_depth else "rgb24"
        self.color = {k: v for k, v in (color or {}).items() if v}
        self.pix_fmt = pix_fmt
        self.frames_written = 0

        # Not mkstemp: FFmpeg creates the file, with the usual permissions. Same folder, so the
        # final rename is atomic; the real suffix last, so FFmpeg picks the container from it.
        self._tmp = _partial_name(self.dst)
        self._copier: _StreamCopier | None = None
        self._closed = False
        try:
            self._out = _open_output(self._tmp, self.dst)
            stream = self._out.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = self.width, self.height, pix_fmt
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            stream.options = _encoder_options(codec, crf, preset)
            ctx = stream.codec_context
            for key in ("color_range", "colorspace", "color_primaries", "color_trc"):
                if key in self.color:
                    setattr(ctx, key, self.color[key])
            if display_matrix is not None:
                stream.set_display_matrix(display_matrix)
            self._stream = stream
            if source is not None:
                self._copier = _StreamCopier(Path(source), self._out, self.dst, self._mux)
        except BaseException as e:
            self._discard()
            if isinstance(e, av.FFmpegError):
                raise VideoError(f"{self.dst}: cannot set up the output ({e})") from e
            raise
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._encode_loop, name="sr-video-encode", daemon=True)
        self._thread.start()

    def write(
        self,
        frames: np.ndarray | list[np.ndarray],
        infos: list[FrameInfo],
        *,
        wait: Callable[[], None] | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        """Queue RGB frames (N x H x W x 3 uint8, or uint16 for >8-bit pixel formats) for encoding.

        ``wait`` is called in the encode thread before the frames are read (e.g. to synchronise a
        device-to-host copy), ``release`` after (e.g. to return a pinned buffer to its pool).
        Blocks while the queue is full; raises the error of the encode thread (see :meth:`check`).
        """
        if len(frames) != len(infos):
            raise InputError(f"{len(frames)} frames but {len(infos)} frame infos")
        item = _Batch(frames, infos, wait, release)
        while True:
            self.check()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def check(self) -> None:
        """Raise the error that stopped the encode thread, if any: call it before computing the
        next frames, so that a full disk stops the job at once rather than after the model's work."""
        if self._error is not None:
            raise self._failure(self._error) from self._error

    def _failure(self, e: BaseException) -> VideoError:
        return _write_failure(self.dst, e, f"after encoding {self.frames_written} frames")

    def _mux(self, packet) -> None:
        self._out.mux(packet)

    def _encode_loop(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                if item is None:  # abort
                    return
                try:
                    if item.wait is not None:
                        item.wait()
                    for rgb, info in zip(item.frames, item.infos):
                        self._encode(rgb, info)
                finally:
                    if item.release is not None:
                        item.release()
            for packet in self._stream.encode():
                self._mux(packet)
            if self._copier is not None:
                self._copier.copy_until(None)
        except BaseException as e:
            self._error = e
            while True:  # unblock a producer waiting on a full queue, hand back its buffers
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, _Batch) and item.release is not None:
                    item.release()

    def _encode(self, rgb: np.ndarray, info: FrameInfo) -> None:
        av = _av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.height, : self.width]), format=self._rgb_format)
        kwargs: dict[str, Any] = {"format": self.pix_fmt}
        space = _SWS_COLORSPACES.get(self.color.get("colorspace", 0))
        if space is not None:
            kwargs["dst_colorspace"] = space
        if self.color.get("color_range") in _COLOR_RANGES:
            kwargs["dst_color_range"] = self.color["color_range"]
        frame = frame.reformat(**kwargs)
        for key in ("color_range", "colorspace", "color_primaries", "color_trc"):
            if key in self.color:
                setattr(frame, key, self.color[key])
        frame.pts = info.pts
        if info.time_base is not None:
            frame.time_base = info.time_base
        if self._copier is not None and info.pts is not None and info.time_base is not None:
            self._copier.copy_until(float(info.pts * info.time_base))
        for packet in self._stream.encode(frame):
            self._mux(packet)
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, copy the remaining audio/subtitle packets, rename into place; returns ``dst``."""
        if self._closed:
            return self.dst
        while True:
            self.check()
            try:
                self._queue.put(_END, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join()
        try:
            self.check()
            try:
                self._out.close()  # the trailer and the last buffered bytes: a full disk can show here
            except OSError as e:
                raise self._failure(e) from e
            if self._copier is not None:
                self._copier.close()
            if self.frames_written == 0:
                raise VideoError(f"{self.dst}: no frame was decoded from the input; nothing written")
            os.replace(self._tmp, self.dst)
        except BaseException:
            self._discard()
            raise
        self._closed = True
        return self.dst

    def _discard(self) -> None:
        self._closed = True
        if self._copier is not None:
            self._copier.close()
        _close_quietly(getattr(self, "_out", None))
        self._tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        """Stop encoding and delete the temporary file; ``dst`` is not touched."""
        if self._closed:
            return
        thread = getattr(self, "_thread", None)
        if thread is not None and thread.is_alive():
            while True:
                try:
                    self._queue.put_nowait(None)
                    break
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        pass
            thread.join(timeout=30)
        self._discard()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


def join_segments(
    parts: list[Path],
    dst: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    display_matrix: tuple[int, ...] | None = None,
) -> int:
    """Join video-only segment files (each written by :class:`VideoWriter` with the same encoder
    settings, in order) into ``dst`` by stream copy, with ``source``'s audio and subtitle streams,
    metadata and chapters copied once and ``display_matrix`` set on the video stream.

    Packets keep their timestamps. Where a segment's first decode timestamps fall at or before the
    previous segment's last (the encoder's B-frame delay restarts at each segment), they are moved
    up by one tick each, which leaves every presentation timestamp as it was. Written to a temporary
    file and renamed; returns the number of video packets. Raises VideoError (segments encoded
    differently, or a write error such as a full disk).
    """
    av = _av()
    dst = Path(dst)
    if not parts:
        raise VideoError(f"{dst}: no segments to join")
    tmp = _partial_name(dst)
    out = copier = None
    written = 0
    try:
        out = _open_output(tmp, dst)
        first = _open_input(parts[0])
        try:
            template = first.streams.video[0]
            reference = (template.codec_context.name, template.codec_context.extradata, template.width,
                         template.height, template.time_base)
            stream = out.add_stream_from_template(template)
            stream.time_base = template.time_base
        finally:
            first.close()
        if display_matrix is not None:
            stream.set_display_matrix(display_matrix)
        if source is not None:
            copier = _StreamCopier(Path(source), out, dst, out.mux)
        last_dts: int | None = None
        for n, part in enumerate(parts):
            container = _open_input(part)
            try:
                vs = container.streams.video[0]
                got = (vs.codec_context.name, vs.codec_context.extradata, vs.width, vs.height, vs.time_base)
                if got != reference:
                    raise VideoError(
                        f"{part.name}: segment {n} was encoded with other settings than segment 0 "
                        f"({got[0]} {got[2]}x{got[3]} vs {reference[0]} {reference[2]}x{reference[3]}); "
                        "run again with --restart"
                    )
                for packet in container.demux(vs):
                    if packet.size == 0:
                        continue
                    if packet.dts is not None and last_dts is not None and packet.dts <= last_dts:
                        moved = last_dts + 1
                        if packet.pts is not None and moved > packet.pts:
                            raise VideoError(
                                f"{part.name}: segment {n} overlaps the one before it in time "
                                f"(pts {packet.pts} <= {last_dts}); run again with --restart"
                            )
                        packet.dts = moved
                    if packet.dts is not None:
                        last_dts = packet.dts
                    if copier is not None:
                        ts = packet.dts if packet.dts is not None else packet.pts
                        if ts is not None:
                            copier.copy_until(float(ts * packet.time_base))
                    packet.stream = stream
                    out.mux(packet)
                    written += 1
            finally:
                container.close()
        if copier is not None:
            copier.copy_until(None)
            copier.close()
        out.close()
        os.replace(tmp, dst)
    except BaseException as e:
        if copier is not None:
            copier.close()
        _close_quietly(out)
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, av.FFmpegError) or getattr(e, "errno", None) in _WRITE_ERRORS:
            raise _write_failure(dst, e, "while joining the segments (they are kept)") from e
        if isinstance(e, av.FFmpegError):
            raise VideoError(f"{dst}: joining the segments failed ({e})") from e
        raise
    return written
