"""The frame pipeline: decoded frames through an Upscaler into the encoder, in batches.

:func:`upscale_video` upscales a whole video (audio and subtitles copied, display matrix kept);
:func:`upscale_segment` a range of its frames into a video-only file, the unit of work of a job
(:mod:`sr_runtime.video.job`). Decoding (:class:`~sr_runtime.video.reader.VideoReader`) and encoding
(:class:`~sr_runtime.video.writer.VideoWriter`) run in their own threads with bounded queues;
:class:`_FramePipeline` uploads each batch of frames (through pinned host buffers on CUDA), runs it
tiled through :meth:`~sr_runtime.upscaler.Upscaler.run_tiled`, quantizes it on the device and hands
it to the encoder thread.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sr_runtime.errors import InputError
from sr_runtime.tiling import ProgressFn
from sr_runtime.upscaler import VideoResult
from sr_runtime.video.probe import VideoInfo, probe_video
from sr_runtime.video.reader import VideoReader
from sr_runtime.video.writer import Encoding, VideoWriter, default_pix_fmt

if TYPE_CHECKING:
    from sr_runtime.upscaler import Upscaler

__all__ = ["estimate_frame_seconds", "log_expected_time", "upscale_segment", "upscale_video"]

SLOW_VIDEO_SECONDS = 600.0
"""Inference alone expected to take longer than this (on a CPU) earns the faster-model hint."""

log = logging.getLogger(__name__)


def estimate_frame_seconds(up: Upscaler, height: int, width: int, *, side: int = 96) -> float:
    """Seconds of inference for one HxW frame on ``up``'s backend: one timed call on a small frame
    (after an untimed one), scaled by the pixel count. Convolutions cost in proportion to their pixels,
    and a small call carries more fixed overhead per pixel, so the estimate errs long."""
    h, w = min(height, side), min(width, side)
    frame = np.zeros((h, w, 3), np.uint8)
    up.upscale(frame)
    started = time.perf_counter()
    up.upscale(frame)
    return (time.perf_counter() - started) * (height * width) / (h * w)


def log_expected_time(up: Upscaler, info: VideoInfo) -> float | None:
    """On a CPU, log the expected inference time of the whole video before it starts, and how to pick a
    faster model when that is long. Returns the estimate in seconds (None on a GPU: not estimated)."""
    if up.device.type != "cpu":
        return None
    per_frame = estimate_frame_seconds(up, info.height, info.width)
    total = per_frame * max(info.frames, 1)
    what = (f"video: {info.frames} frames of {info.width}x{info.height} -> about {_duration(total)} of "
            f"inference on the CPU ({per_frame:.2f} s per frame, {up.backend.describe()}), encoding beside it")
    if total > SLOW_VIDEO_SECONDS:
        name = up.describe_model().get("name") or "this model"
        log.warning("%s. For a faster model: --model fsrcnn (or espcn), a few times faster than %s at some "
                    "quality; or run on a GPU", what, name)
    else:
        log.info("%s", what)
    return total


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def upscale_video(
    up: Upscaler,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    info: VideoInfo | None = None,
    encoding: Encoding | None = None,
    progress: ProgressFn | None = None,
) -> VideoResult:
    """Upscale every frame of ``src`` with ``up`` (an :class:`~sr_runtime.upscaler.Upscaler`) into
    ``dst``, as :meth:`~sr_runtime.upscaler.Upscaler.upscale_video` documents; ``info``:
    :func:`~sr_runtime.video.probe.probe_video` of ``src`` when the caller has it (else it is probed);
    ``encoding`` None: the defaults of :class:`~sr_runtime.video.writer.Encoding`. Raises InputError,
    VideoError."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise InputError(f"{dst}: the output would overwrite the input; choose another name")
    if info is None:
        info = probe_video(src)
    return _run(up, src, dst, info, encoding or Encoding(), progress, whole=True)


def upscale_segment(
    up: Upscaler,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    info: VideoInfo,
    *,
    start_pts: int,
    end_pts: int | None,
    seek_pts: int | None,
    first_index: int = 0,
    encoding: Encoding | None = None,
    progress: ProgressFn | None = None,
) -> VideoResult:
    """Upscale the frames of ``src`` with ``start_pts <= pts < end_pts`` (``end_pts`` None: to the
    end) into a video-only ``dst``, decoding from the keyframe at ``seek_pts``; ``info`` is
    :func:`~sr_runtime.video.probe.probe_video` of ``src``. The pieces of a segmented job
    (:mod:`sr_runtime.video.job`), joined by :func:`~sr_runtime.video.join.join_segments`, which adds
    the audio and the display matrix. Written atomically, as :func:`upscale_video`."""
    return _run(
        up, Path(src), Path(dst), info, encoding or Encoding(), progress, whole=False,
        reader_range={"start_pts": start_pts, "end_pts": end_pts, "seek_pts": seek_pts, "first_index": first_index},
    )


def _run(
    up: Upscaler, src: Path, dst: Path, info: VideoInfo, encoding: Encoding, progress: ProgressFn | None, *,
    whole: bool, reader_range: dict | None = None,
) -> VideoResult:
    """Decode, upscale and encode ``src`` (or a range of it) into ``dst``; ``whole``: the entire
    video with its audio/subtitles and display matrix, else a video-only segment."""
    start = time.perf_counter()
    s = up.scale
    codec = encoding.codec
    pix_fmt = encoding.pix_fmt or default_pix_fmt(codec, info.pix_fmt)
    total = info.frames if whole else 0
    with VideoWriter(
        dst,
        width=info.width * s,
        height=info.height * s,
        rate=info.rate,
        time_base=info.time_base,
        source=src if whole else None,
        codec=codec,
        pix_fmt=pix_fmt,
        crf=encoding.crf,
        preset=encoding.preset,
        color=info.color,
        display_matrix=info.display_matrix if whole else None,
    ) as writer, VideoReader(
        src, high_bit_depth=info.bit_depth > 8, queue_size=2 * up.batch + 2, **(reader_range or {})
    ) as reader:
        log.log(
            logging.INFO if whole else logging.DEBUG,
            "video: %s %dx%d %s, %d frames -> %s %dx%d %s %s",
            src.name, info.width, info.height, info.pix_fmt, info.frames, dst.name, writer.width,
            writer.height, codec, pix_fmt,
        )
        out_dtype = torch.uint16 if writer.high_bit_depth else torch.uint8
        in_dtype = torch.uint16 if info.bit_depth > 8 else torch.uint8
        pipeline = _FramePipeline(up, writer, (info.height, info.width), in_dtype, out_dtype)
        done = 0
        for frames, infos in reader.batches(up.batch):
            writer.check()  # a write error (disk full) stops the job before the model's next batch
            pipeline.process(frames, infos)
            done += len(frames)
            if progress is not None:
                progress(done, total)
        writer.close()
        skipped = reader.skipped_packets
    if skipped:
        log.warning("%s: %d damaged packet(s) skipped", src.name, skipped)
    return VideoResult(dst, writer.frames_written, skipped, time.perf_counter() - start, writer.width, writer.height)


class _PinnedPool:
    """Page-locked host buffers reused across batches; a buffer comes back only after the copy that
    used it (``event``) has completed."""

    def __init__(self, count: int, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self._free: queue.Queue = queue.Queue()
        for _ in range(count):
            self._free.put((torch.empty(shape, dtype=dtype, pin_memory=True), None))

    def get(self, check: Callable[[], None] | None = None) -> torch.Tensor:
        while True:
            if check is not None:
                check()
            try:
                buf, event = self._free.get(timeout=0.1)
            except queue.Empty:
                continue
            if event is not None:
                event.synchronize()
            return buf

    def put(self, buf: torch.Tensor, event: torch.cuda.Event | None = None) -> None:
        self._free.put((buf, event))


class _FramePipeline:
    """Upload a batch of frames, run it, quantize on the device, hand it to the encoder thread."""

    def __init__(self, up: Upscaler, writer, hw: tuple[int, int], in_dtype: torch.dtype, out_dtype: torch.dtype):
        self.up, self.writer = up, writer
        self.in_peak = 255.0 if in_dtype == torch.uint8 else 65535.0
        self.out_peak = 255.0 if out_dtype == torch.uint8 else 65535.0
        self.out_dtype = out_dtype
        h, w = hw
        s, n = up.scale, up.batch
        self.cuda = up.device.type == "cuda"
        if self.cuda:
            self.uploads = _PinnedPool(2, (n, h, w, 3), in_dtype)
            self.downloads = _PinnedPool(4, (n, h * s, w * s, 3), out_dtype)

    def process(self, frames: list[np.ndarray], infos) -> None:
        up, n = self.up, len(frames)
        if self.cuda:
            host = self.uploads.get()
            staging = host[:n].numpy()
            for i, frame in enumerate(frames):  # straight into pinned memory: no intermediate np.stack copy
                staging[i] = frame
            lr = host[:n].to(up.device, non_blocking=True)
            uploaded = torch.cuda.Event()
            uploaded.record(torch.cuda.current_stream(up.device))
            self.uploads.put(host, uploaded)
        else:
            lr = torch.from_numpy(np.stack(frames))
        _, h, w, _ = lr.shape
        out = torch.empty((n, h * up.scale, w * up.scale, 3), dtype=self.out_dtype, device=up.device)
        peak = self.out_peak

        def write(index, box, crop):
            y0, y1, x0, x1 = box
            if not self.cuda:
                _quantize_hwc(crop, out[index, y0:y1, x0:x1, :].numpy(), peak)
                return
            q = crop.to(torch.float32).mul(peak).clamp_(0, peak).round_()
            out[index, y0:y1, x0:x1, :] = q.permute(1, 2, 0)

        up.run_tiled(lr.permute(0, 3, 1, 2), write, peak=self.in_peak)
        if not self.cuda:
            self.writer.write(out.numpy(), infos)
            return
        host = self.downloads.get(check=self.writer.check)
        host[:n].copy_(out, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(torch.cuda.current_stream(up.device))
        self.writer.write(
            host[:n].numpy(), infos, wait=copied.synchronize, release=lambda: self.downloads.put(host)
        )


_QUANTIZE_ROWS = 16
"""Rows per band in :func:`_quantize_hwc`: a band's float32 buffer (16 x 2560 x 3 x 4 B = 480 KiB at
1440p) stays in L2 through all four passes."""


def _quantize_hwc(crop: torch.Tensor, out: np.ndarray, peak: float) -> None:
    """``clamp(crop, 0, 1) * peak`` rounded half to even, (C, h, w) float CPU tensor into (h, w, C)
    ``out``, band by band in numpy (single-threaded, no torch thread pool to wake): a third of the
    CPU time of the whole-frame torch ops at 1440p, where each pass went through main memory."""
    src = crop.detach().to(torch.float32).numpy()
    rows = _QUANTIZE_ROWS
    buf = np.empty((rows, src.shape[2], src.shape[0]), np.float32)
    for y in range(0, src.shape[1], rows):
        band = src[:, y : y + rows].transpose(1, 2, 0)
        tmp = buf[: band.shape[0]]
        np.multiply(band, peak, out=tmp)
        np.clip(tmp, 0.0, peak, out=tmp)
        np.rint(tmp, out=tmp)
        out[y : y + rows] = tmp
