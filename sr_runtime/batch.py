"""One input file to one output file: the unit of work of ``sr-run`` for folders, here or on workers.

:func:`process_file` takes a :class:`FileTask` and an :class:`~sr_runtime.upscaler.Upscaler`; the
runners of :mod:`sr_runtime.video.runners` map it over the files of a folder (``sr-run DIR --ray``),
one file per task, and report each file's error on its own line as a local run does. A video is
done as a segmented, resumable job (:func:`sr_runtime.video.job.run_video`) on the worker it lands on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sr_runtime.errors import InputError, SRError

__all__ = ["FileTask", "process_file"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileTask:
    src: str
    dst: str
    quality: int | None = None
    video: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of :func:`sr_runtime.video.job.run_video` (codec, crf, segment_seconds...)."""


def process_file(up, task: FileTask, progress=None) -> str:
    """Upscale ``task.src`` into ``task.dst``; returns a one-line summary. Raises SRError (an
    unforeseen OSError/RuntimeError/ValueError of this file is raised as one, naming the file)."""
    from sr_runtime.video import is_video

    src, dst = Path(task.src), Path(task.dst)
    try:
        if src.resolve() == dst.resolve():
            raise InputError(f"{src}: the output would overwrite the input; use -o")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if is_video(src):
            from sr_runtime.video.job import run_video

            frames, seconds = run_video(up, src, dst, **task.video)
            return f"{src} -> {dst}: {frames} frames in {seconds:.1f} s ({frames / max(seconds, 1e-9):.2f} fps)"
        up.upscale_file(src, dst, quality=task.quality)
        return f"{src} -> {dst}"
    except SRError:
        raise
    except (OSError, RuntimeError, ValueError) as e:  # an unforeseen failure of one file
        raise SRError(f"{src}: {type(e).__name__}: {e}") from e
