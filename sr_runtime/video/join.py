"""Join a job's segment files into one video by stream copy, with the source's other streams.

:func:`join_segments` takes the video-only segments a job wrote (each by
:class:`~sr_runtime.video.writer.VideoWriter`, with the same encoder settings) and muxes their
packets, unchanged, one segment after another into the output, with the source's audio and
subtitle streams, metadata and chapters copied once (:class:`~sr_runtime.video.writer._StreamCopier`)
and its display matrix set. Each part has its own reason to change: setting up the output, checking
that the segments match, keeping decode timestamps increasing across them, turning a failure into
one message. Knows nothing about models.
"""

from __future__ import annotations

import os
from pathlib import Path

from sr_runtime.errors import VideoError
from sr_runtime.video.probe import _av, _open_input
from sr_runtime.video.writer import (
    _WRITE_ERRORS,
    _close_quietly,
    _open_output,
    _partial_name,
    _StreamCopier,
    _write_failure,
)

__all__ = ["join_segments"]


def join_segments(
    parts: list[Path],
    dst: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
    display_matrix: tuple[int, ...] | None = None,
) -> int:
    """Join video-only segment files (each written by :class:`~sr_runtime.video.writer.VideoWriter`
    with the same encoder settings, in order) into ``dst`` by stream copy, with ``source``'s audio and
    subtitle streams, metadata and chapters copied once and ``display_matrix`` set on the video stream.

    Packets keep their timestamps. Where a segment's first decode timestamps fall at or before the
    previous segment's last (the encoder's B-frame delay restarts at each segment), or are missing
    (Matroska stores none), they are set one tick after it, which leaves every presentation timestamp
    as it was. Written to a temporary file and renamed; returns the number of video packets. Raises
    VideoError (segments encoded differently, or a write error such as a full disk).
    """
    dst = Path(dst)
    if not parts:
        raise VideoError(f"{dst}: no segments to join")
    tmp = _partial_name(dst)
    out = copier = None
    try:
        out = _open_output(tmp, dst)
        stream, settings = _add_video_stream(out, parts[0], display_matrix)
        if source is not None:
            copier = _StreamCopier(Path(source), out, dst, out.mux)
        muxer = _SegmentMuxer(out, stream, settings, copier)
        for n, part in enumerate(parts):
            muxer.add(part, n)
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
        failure = _join_failure(dst, e)
        if failure is None:
            raise
        raise failure from e
    return muxer.written


def _settings(stream) -> tuple:
    """What must be equal for segments to join: codec, its extradata, size, time base."""
    ctx = stream.codec_context
    return ctx.name, ctx.extradata, stream.width, stream.height, stream.time_base


def _add_video_stream(out, first: Path, display_matrix: tuple[int, ...] | None):
    """The output's video stream, made from segment ``first``'s, and that segment's settings."""
    container = _open_input(first)
    try:
        template = container.streams.video[0]
        settings = _settings(template)
        stream = out.add_stream_from_template(template)
        stream.time_base = template.time_base
    finally:
        container.close()
    if display_matrix is not None:
        stream.set_display_matrix(display_matrix)
    return stream, settings


class _SegmentMuxer:
    """Muxes the video packets of segments, one after another, into ``stream`` of ``out``, keeping
    decode timestamps increasing and interleaving the streams ``copier`` copies."""

    def __init__(self, out, stream, settings: tuple, copier: _StreamCopier | None) -> None:
        self.out, self.stream, self.settings, self.copier = out, stream, settings, copier
        self.last_dts: int | None = None
        self.written = 0

    def add(self, part: Path, n: int) -> None:
        """Mux every packet of segment ``n``, file ``part``."""
        container = _open_input(part)
        try:
            vs = container.streams.video[0]
            got = _settings(vs)
            if got != self.settings:
                raise VideoError(
                    f"{part.name}: segment {n} was encoded with other settings than segment 0 "
                    f"({got[0]} {got[2]}x{got[3]} vs {self.settings[0]} {self.settings[2]}x{self.settings[3]}); "
                    "run again with --restart"
                )
            for packet in container.demux(vs):
                if packet.size:  # not the demuxer's flush packet
                    self._keep_decode_order(packet, part, n)
                    self._mux(packet)
        finally:
            container.close()

    def _keep_decode_order(self, packet, part: Path, n: int) -> None:
        if packet.dts is None and self.last_dts is not None:
            # Matroska stores no decode timestamps: its demuxer leaves them out for the packets a
            # B-frame delay puts first, and the muxer would derive ones that go back in time here.
            packet.dts = self.last_dts
        if packet.dts is not None and self.last_dts is not None and packet.dts <= self.last_dts:
            moved = self.last_dts + 1
            if packet.pts is not None and moved > packet.pts:
                raise VideoError(
                    f"{part.name}: segment {n} overlaps the one before it in time "
                    f"(pts {packet.pts} <= {self.last_dts}); run again with --restart"
                )
            packet.dts = moved
        if packet.dts is not None:
            self.last_dts = packet.dts

    def _mux(self, packet) -> None:
        if self.copier is not None:
            ts = packet.dts if packet.dts is not None else packet.pts
            if ts is not None:
                self.copier.copy_until(float(ts * packet.time_base))
        packet.stream = self.stream
        self.out.mux(packet)
        self.written += 1


def _join_failure(dst: Path, e: BaseException) -> VideoError | None:
    """The VideoError to raise for ``e``, which stopped a join (None: raise ``e`` itself)."""
    av = _av()
    if isinstance(e, OSError) and not isinstance(e, av.FFmpegError) or getattr(e, "errno", None) in _WRITE_ERRORS:
        return _write_failure(dst, e, "while joining the segments (they are kept)")
    if isinstance(e, av.FFmpegError):
        return VideoError(f"{dst}: joining the segments failed ({e})")
    return None
