"""Encode upscaled frames and copy the source's other streams: the last step of a frame's path.

:class:`VideoWriter` encodes RGB frames in an encode thread (bounded queue), gives each output
frame the input frame's ``pts`` and ``time_base`` (so variable frame rate and the exact frame count
survive), tags the colour metadata of the input (range, matrix, primaries, transfer) and its
display matrix (the rotation of phone videos), and copies every audio and subtitle stream packet
for packet (no re-encoding; :class:`_StreamCopier`, which the join uses too). It writes to a
temporary file beside the destination and renames it at the end; on any error or Ctrl-C the
temporary file is deleted. Knows nothing about models.

Decisions: output pixel format defaults to the input's when the encoder takes it (so 10-bit stays
10-bit), else ``yuv420p``. Chroma-subsampled formats need even sides: an odd output side is cropped
by one pixel (last row/column), with a warning.

Write errors (disk full, permission, quota) surface at the packet that hits them: the output is
opened with ``flush_packets`` (no 256 KiB avio buffer hiding the error) and Matroska clusters are
closed every second (they are otherwise held in memory for 5 s); the encode thread records the error
and the producer's next :meth:`VideoWriter.check` or :meth:`VideoWriter.write` raises it.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from sr_runtime.errors import InputError, VideoError
from sr_runtime.video.probe import _COLOR_RANGES, _SWS_COLORSPACES, _av, _bit_depth, _open_input
from sr_runtime.video.reader import FrameInfo

__all__ = ["Encoding", "VideoWriter", "check_encoder", "default_pix_fmt"]

log = logging.getLogger(__name__)

_END = object()
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



@dataclass(frozen=True)
class Encoding:
    """The encoder settings of an output video (what ``sr-run --codec --crf --preset --pix-fmt`` set)."""

    codec: str = "libx264"
    """``libx264``, ``libx265``, ``h264_nvenc``, ``hevc_nvenc``... (checked before anything is written)."""
    crf: int | None = 18
    """Constant rate factor (NVENC: cq); None for the encoder's default."""
    preset: str | None = None
    pix_fmt: str | None = None
    """None: the input's when the encoder takes it, else ``yuv420p`` (:func:`default_pix_fmt`)."""


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
        self._put(_Batch(frames, infos, wait, release))

    def _put(self, item) -> None:
        """Queue ``item`` for the encode thread, raising its error while the queue is full."""
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
        self._put(_END)
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
