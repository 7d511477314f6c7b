"""Video: the modules follow a frame's path, and each job has one owner.

::

    probe      what the source holds (header, packet timestamps, hash: one read before the first frame)
    reader     decoding frames (a thread, a bounded queue; a range for a segment)
    pipeline   frames through the Upscaler in batches, into the writer (a whole video, or a segment)
    writer     encoding, and copying the audio and subtitle streams packet for packet
    join       a job's segments into one file by stream copy
    job        segments, manifest, resume: what ``sr-run in.mp4`` runs (:func:`run_video`)
    runners    where segments (or a folder's files) run: here, in processes, on Ray

A frame goes one way: ``sr-run`` -> :func:`~sr_runtime.video.job.run_video` -> probe (scan) -> job ->
runner -> pipeline (reader -> Upscaler -> writer) -> job -> join. :meth:`Upscaler.upscale_video
<sr_runtime.upscaler.Upscaler.upscale_video>` is the single pass: probe -> pipeline.
"""

from sr_runtime.video.job import JobInterrupted, VideoJob, run_video
from sr_runtime.video.join import join_segments
from sr_runtime.video.pipeline import upscale_segment, upscale_video
from sr_runtime.video.probe import VIDEO_SUFFIXES, VideoInfo, is_video, probe_video, scan_video
from sr_runtime.video.reader import FrameInfo, VideoReader
from sr_runtime.video.runners import LocalRunner, ProcessRunner, RayRunner
from sr_runtime.video.writer import Encoding, VideoWriter, check_encoder, default_pix_fmt

__all__ = [
    "VIDEO_SUFFIXES",
    "Encoding",
    "FrameInfo",
    "JobInterrupted",
    "LocalRunner",
    "ProcessRunner",
    "RayRunner",
    "VideoInfo",
    "VideoJob",
    "VideoReader",
    "VideoWriter",
    "check_encoder",
    "default_pix_fmt",
    "is_video",
    "join_segments",
    "probe_video",
    "run_video",
    "scan_video",
    "upscale_segment",
    "upscale_video",
]
