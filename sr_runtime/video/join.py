"""Join a job's segment files into one video by stream copy, with the source's other streams.

:func:`join_segments` takes the video-only segments a job wrote (each by
:class:`~sr_runtime.video.writer.VideoWriter`, with the same encoder settings) and muxes their
packets, unchanged, one segment after another into the output, with the source's audio and
subtitle streams, metadata and chapters copied once and its display matrix set. Knows nothing
about models.
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
