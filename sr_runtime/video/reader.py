"""Decode a video's frames in a background thread: the second step of a frame's path.

:class:`VideoReader` yields RGB frames (HWC uint8, or uint16 for more than 8 bits) with their
timestamps (:class:`FrameInfo`, carried to the encoder unchanged, so variable frame rate and the
exact frame count survive) from a decode thread through a bounded queue; it can read a range of
the video (a job's segment), decoding from the keyframe before it. Knows nothing about models.

Decisions: the colour matrix and range of each frame are honoured in the conversion to RGB. A
packet the decoder rejects is logged and skipped; a stream that cannot be read past some frame is
a VideoError.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from sr_runtime.errors import VideoError
from sr_runtime.video.probe import _COLOR_RANGES, _SWS_COLORSPACES, _av, _open_input

__all__ = ["FrameInfo", "VideoReader"]

log = logging.getLogger(__name__)

_END = object()


@dataclass(frozen=True)
class FrameInfo:
    """Timing of one decoded frame, carried to the encoder unchanged."""

    index: int
    pts: int | None
    time_base: Fraction | None


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
