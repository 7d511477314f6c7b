"""Segmented, resumable video jobs: a crash, a reboot or a ``kill -9`` costs at most one segment.

A video is cut into segments of about ``segment_seconds`` (:func:`plan_segments`): each starts at a
keyframe where one lies near the cut (else at the exact frame, decoded from the keyframe before it),
is upscaled on its own (:func:`sr_runtime.video.pipeline.upscale_segment`) into ``seg_NNNNN<suffix>``
in the job folder ``.NAME.srjob/`` beside the output, and is recorded with its sha256 in
``manifest.json`` (written atomically after each segment). The manifest also holds what the job
depends on: the source's size and sha256, the model file's sha256, the scale and the backend and
encoder options. The source is read once before the first frame (:func:`sr_runtime.video.probe.scan_video`:
its header, its packets' timestamps and its hash in one pass). When every segment is done they are
joined by stream copy into the output (:func:`sr_runtime.video.join.join_segments`), which gets the
source's audio and subtitles, metadata, chapters and display rotation once; the folder is removed.

Running the same command again resumes at the first unfinished segment, trusting a finished one
only if its file still has the recorded hash; a changed source, model or option discards the old
job with a message naming what changed (``restart=True`` always starts afresh). A lock file keeps a
second process off a job that is running. Segments are independent, so a runner
(:mod:`sr_runtime.video.runners`) can do them in several processes or on a Ray cluster; the job
folder must then be on storage every worker can write.

The single pass (:func:`sr_runtime.video.pipeline.upscale_video`) stays for what segments cannot
serve: a video whose packets carry no timestamps (some AVI and raw streams), output containers
other than MP4/MOV/MKV/WebM, and videos shorter than two segments. :func:`run_video` picks one.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sr_runtime.atomic import atomic_write_text
from sr_runtime.errors import InputError, SRError, VideoError
from sr_runtime.video.join import join_segments
from sr_runtime.video.pipeline import log_expected_time, upscale_segment, upscale_video
from sr_runtime.video.probe import PacketIndex, VideoInfo, probe_video, scan_video
from sr_runtime.video.runners import LocalRunner
from sr_runtime.video.writer import Encoding

__all__ = ["SEGMENT_SUFFIXES", "JobInterrupted", "Segment", "SegmentTask", "VideoJob", "job_dir_for",
           "plan_segments", "run_segment", "run_video"]

log = logging.getLogger(__name__)

SEGMENT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm")
"""Output containers whose segments join by stream copy with every timestamp kept."""
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
KEYFRAME_SLACK = 0.25
"""A cut moves to a keyframe within this fraction of a segment's length of its target; a last
segment shorter than this fraction is merged into the one before."""
CRASH_ENV = "SR_RUNTIME_TEST_CRASH_SEGMENT"
"""Fault injection for the tests: ``"K:MARKER"`` makes the process that runs segment K exit hard
(``os._exit``) after its first frames, once (while the MARKER file does not exist)."""


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C during a segmented job; the message says where the finished segments are kept."""


@dataclass(frozen=True)
class Segment:
    """Frames ``start_pts <= pts < end_pts`` (``end_pts`` None: to the end), decoded from ``seek_pts``."""

    index: int
    start_pts: int
    end_pts: int | None
    seek_pts: int | None
    first_frame: int
    frames: int


@dataclass(frozen=True)
class SegmentTask:
    """Everything a worker needs to produce one segment file (picklable)."""

    segment: Segment
    src: str
    part: str
    info: VideoInfo
    encoding: Encoding


def job_dir_for(dst: str | os.PathLike) -> Path:
    """The job folder of output ``dst``: ``.NAME.srjob`` beside it."""
    dst = Path(dst)
    return dst.with_name(f".{dst.name}.srjob")


def plan_segments(packets: PacketIndex, seconds: float) -> list[Segment]:
    """Cut a video stream whose packets are ``packets`` (:func:`sr_runtime.video.probe.scan_video`)
    into segments of about ``seconds``."""
    if seconds <= 0:
        raise InputError(f"segment length must be > 0 seconds, got {seconds}")
    pts, keys = packets.pts, packets.keyframes
    step = seconds / float(packets.time_base)
    slack = KEYFRAME_SLACK * step
    cuts = [0]
    target = pts[0] + step
    while target < pts[-1]:
        lo, hi = bisect.bisect_left(keys, target - slack), bisect.bisect_right(keys, target + slack)
        near = [k for k in keys[lo:hi] if k > pts[cuts[-1]]]
        cut_pts = min(near, key=lambda k: abs(k - target)) if near else pts[bisect.bisect_left(pts, target)]
        if pts[-1] - cut_pts < slack:  # a short tail joins the last segment
            break
        cut = bisect.bisect_left(pts, cut_pts)
        if cut > cuts[-1]:
            cuts.append(cut)
        target = cut_pts + step
    segments = []
    for n, cut in enumerate(cuts):
        end = cuts[n + 1] if n + 1 < len(cuts) else len(pts)
        k = bisect.bisect_right(keys, pts[cut]) - 1
        seek = keys[k] if k >= 0 else None
        segments.append(Segment(n, pts[cut], pts[end] if end < len(pts) else None, seek, cut, end - cut))
    return segments


def _crash_hook(index: int) -> Callable[[int, int], None] | None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return None
    k, _, marker = spec.partition(":")
    if int(k) != index or not marker or Path(marker).exists():
        return None

    def crash(done: int, total: int) -> None:
        if done >= 2:
            Path(marker).touch()
            os._exit(17)

    return crash


def run_segment(up, task: SegmentTask, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Upscale one segment into its file with ``up`` (an :class:`~sr_runtime.upscaler.Upscaler`)."""
    seg = task.segment
    hook = _crash_hook(seg.index)

    def report(done: int, total: int) -> None:
        if hook is not None:
            hook(done, total)
        if progress is not None:
            progress(done)

    result = upscale_segment(
        up,
        task.src,
        task.part,
        task.info,
        start_pts=seg.start_pts,
        end_pts=seg.end_pts,
        seek_pts=seg.seek_pts,
        first_index=seg.first_frame,
        encoding=task.encoding,
        progress=report,
    )
    return {"index": seg.index, "frames": result.frames, "seconds": result.seconds}


class _Lock:
    """An exclusive, non-blocking lock on a job (POSIX flock; none where fcntl is missing)."""

    def __init__(self, path: Path, dst: Path) -> None:
        self.path, self.dst, self._handle = path, dst, None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory lock; two runs on one output are not caught
            return
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            handle.close()
            raise InputError(
                f"{self.dst}: another sr-run is working on this output (job folder {self.path.parent}); "
                "wait for it to finish or stop it first"
            ) from e
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class VideoJob:
    """A segmented upscale of ``src`` into ``dst``; see the module docstring.

    ``identity``: what the output depends on besides the source (model file hash, scale, backend
    and encoder options); a job made with another identity is discarded. Call :meth:`prepare`
    (which sets :attr:`info`), then :meth:`run` when it returned segments (None: use the single pass).
    """

    def __init__(
        self,
        src: str | os.PathLike,
        dst: str | os.PathLike,
        *,
        identity: dict[str, Any],
        segment_seconds: float = 6.0,
        restart: bool = False,
    ) -> None:
        self.src, self.dst = Path(src), Path(dst)
        self.identity = dict(identity)
        self.segment_seconds = float(segment_seconds)
        self.restart = restart
        self.dir = job_dir_for(self.dst)
        self.segments: list[Segment] = []
        self.done: dict[int, dict[str, Any]] = {}
        self.computed_frames = 0
        self.info: VideoInfo | None = None
        """The source's :class:`~sr_runtime.video.probe.VideoInfo`, once :meth:`prepare` has run."""
        self._lock = _Lock(self.dir / "lock", self.dst)
        self._record: dict[str, Any] = {}

    # --- setup ------------------------------------------------------------------------------------

    def prepare(self) -> list[Segment] | None:
        """Read the source (once: header, packet timestamps and hash), plan the segments and open (or
        resume, or discard) the job folder. None when this video is better done in a single pass
        (see the module docstring); nothing is created then. Raises InputError, VideoError."""
        if self.src.resolve() == self.dst.resolve():
            raise InputError(f"{self.dst}: the output would overwrite the input; choose another name")
        if self.dst.suffix.lower() not in SEGMENT_SUFFIXES:
            log.info("%s: %s output is written in one pass (segments need %s)",
                     self.dst.name, self.dst.suffix, "/".join(SEGMENT_SUFFIXES))
            self.info = probe_video(self.src)
            return None
        scan = scan_video(self.src)
        self.info = scan.info
        if scan.packets is None:
            log.info("%s: packets without timestamps; written in one pass (no resume)", self.src.name)
            return None
        segments = plan_segments(scan.packets, self.segment_seconds)
        if len(segments) < 2 and not self.dir.exists():
            return None
        source = {"name": self.src.name, "size": self.src.stat().st_size, "sha256": scan.sha256}
        record = {
            "version": MANIFEST_VERSION,
            "source": source,
            "identity": self.identity,
            "segment_seconds": self.segment_seconds,
            "segments": [asdict(s) for s in segments],
        }
        self.dir.mkdir(exist_ok=True)
        self._lock.acquire()
        try:
            old = self._read_manifest()
            if old is not None:
                why = "--restart was given" if self.restart else _stale_reason(old, record)
                if why:
                    log.warning("%s: discarding the unfinished job in %s: %s", self.dst.name, self.dir, why)
                    self._clear()
                else:
                    self.done = self._trusted(old.get("done", {}))
            self.segments = segments
            self._record = record
            self._write_manifest()
        except BaseException:
            self._lock.release()
            raise
        return segments

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.dir / MANIFEST
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable (%s); starting the job afresh", path, e)
            return {}

    def _trusted(self, done: dict[str, Any]) -> dict[int, dict[str, Any]]:
        from sr_runtime.atomic import sha256_file

        trusted = {}
        for key, entry in done.items():
            part = self.dir / entry.get("file", "")
            if part.is_file() and sha256_file(part) == entry.get("sha256"):
                trusted[int(key)] = entry
            else:
                log.warning("%s: segment %s's file is missing or damaged; it is done again", self.dst.name, key)
        return trusted

    def _clear(self) -> None:
        for child in self.dir.iterdir():
            if child.name != "lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        self.done = {}

    def _write_manifest(self) -> None:
        record = dict(self._record, done={str(k): v for k, v in sorted(self.done.items())})
        atomic_write_text(self.dir / MANIFEST, json.dumps(record, indent=1))

    def part(self, index: int) -> Path:
        return self.dir / f"seg_{index:05d}{self.dst.suffix}"

    # --- running ----------------------------------------------------------------------------------

    def run(self, runner, encoding: Encoding, *, progress=None) -> int:
        """Produce the missing segments with ``runner`` (one of :mod:`sr_runtime.video.runners`) and
        ``encoding`` (the one in the identity), join them into ``dst`` and remove the job folder; returns the output's frame count. ``progress``: a
        :class:`sr_runtime.progress.Progress` (frames). On an error or Ctrl-C the finished segments
        stay for a resume and the message says so."""
        from sr_runtime.atomic import sha256_file

        info = self.info
        assert info is not None, "VideoJob.run before prepare"
        try:
            for stray in self.dir.glob(".seg_*.partial*"):  # a segment being written when the last run died
                stray.unlink(missing_ok=True)
            total = sum(s.frames for s in self.segments)
            todo = [s for s in self.segments if s.index not in self.done]
            done_frames = sum(self.done[i]["frames"] for i in self.done)
            if self.done:
                log.info(
                    "resuming %s: %d of %d segments done (%d of %d frames); continuing at segment %d",
                    self.dst.name, len(self.done), len(self.segments), done_frames, total,
                    todo[0].index if todo else len(self.segments),
                )
            else:
                log.info("%s: %d segments of about %g s in %s", self.dst.name, len(self.segments),
                         self.segment_seconds, self.dir)
            if progress is not None:
                progress.set_total(total)
                progress.update_to(done_frames)
            tasks = [
                SegmentTask(s, str(self.src), str(self.part(s.index)), info, encoding) for s in todo
            ]
            running: dict[int, int] = {}

            def on_frames(task: SegmentTask, n: int) -> None:
                running[task.segment.index] = n
                if progress is not None:
                    progress.update_to(done_frames + sum(running.values()))

            start = time.perf_counter()
            for task, ok, value in runner.map(run_segment, tasks, progress=on_frames):
                if not ok:
                    raise value if isinstance(value, BaseException) else VideoError(str(value))
                index = task.segment.index
                running.pop(index, None)
                self.done[index] = {
                    "file": Path(task.part).name,
                    "frames": value["frames"],
                    "sha256": sha256_file(task.part),
                    "seconds": round(value["seconds"], 3),
                }
                self._write_manifest()
                done_frames += value["frames"]
                self.computed_frames += value["frames"]
                if progress is not None:
                    progress.update_to(done_frames + sum(running.values()))
                log.debug("segment %d done: %d frames in %.1f s", index, value["frames"], value["seconds"])
            elapsed = time.perf_counter() - start
            parts = [self.part(s.index) for s in self.segments]
            frames = sum(self.done[s.index]["frames"] for s in self.segments)
            join_segments(parts, self.dst, source=self.src, display_matrix=info.display_matrix)
        except KeyboardInterrupt as e:
            self._lock.release()
            raise JobInterrupted(self._kept_message("interrupted")) from e
        except SRError as e:
            self._lock.release()
            if self.done:
                raise type(e)(f"{e}; {self._kept_message('stopped')}") from e
            raise
        except BaseException:
            self._lock.release()
            raise
        self._lock.release()
        shutil.rmtree(self.dir, ignore_errors=True)
        log.info(
            "%s: computed %d of %d frames in this run (%.1f s), %d segments joined",
            self.dst.name, self.computed_frames, frames, elapsed, len(parts),
        )
        if frames != total:
            log.warning("%s: %d frames decoded where the container lists %d packets", self.src.name, frames, total)
        return frames

    def _kept_message(self, what: str) -> str:
        return (
            f"{what}: {len(self.done)} of {len(self.segments)} segments are kept in {self.dir}; "
            "run the same command again to resume (--restart to start afresh)"
        )


def _stale_reason(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What differs between an existing job and this run, in words; None when it can be resumed."""
    if old.get("version") != new["version"]:
        return "it was made by another version of sr-run"
    if old.get("source") != new["source"]:
        return f"the source {new['source']['name']} changed"
    old_id, new_id = old.get("identity", {}), new["identity"]
    changed = sorted(k for k in set(old_id) | set(new_id) if old_id.get(k) != new_id.get(k))
    if changed:
        return "the " + ", ".join("model" if k == "model_sha256" else k for k in changed) + " changed"
    if old.get("segments") != new["segments"] or old.get("segment_seconds") != new["segment_seconds"]:
        return "the segment length changed"
    return None


def run_video(
    up,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    runner=None,
    model_sha256: str | None = None,
    options: dict[str, Any] | None = None,
    segment_seconds: float = 6.0,
    restart: bool = False,
    codec: str = "libx264",
    crf: int | None = 18,
    preset: str | None = None,
    pix_fmt: str | None = None,
    quiet: bool = False,
):
    """Upscale a video as a segmented, resumable job (the single pass where segments cannot serve;
    ``segment_seconds`` 0 forces it), with progress on stderr. ``runner``: where the segments run
    (default: here, with ``up``); ``model_sha256`` and ``options`` (backend, precision, tile...)
    identify the job for a resume. Returns ``(frames, seconds)``."""
    from sr_runtime.progress import Progress

    src, dst = Path(src), Path(dst)
    start = time.perf_counter()
    encoding = Encoding(codec, crf, preset, pix_fmt)
    job = None
    if segment_seconds:
        identity = {"model_sha256": model_sha256, "scale": up.scale, **(options or {}), **asdict(encoding)}
        job = VideoJob(src, dst, identity=identity, segment_seconds=segment_seconds, restart=restart)
        segments = job.prepare()
        info = job.info
        if segments is None:
            job = None
    else:
        info = probe_video(src)
    log_expected_time(up, info)
    with Progress(src.name, info.frames, unit="frame", disable=quiet) as bar:
        if job is None:
            result = upscale_video(up, src, dst, info=info, encoding=encoding,
                                   progress=lambda done, total: bar.update_to(done))
            return result.frames, time.perf_counter() - start
        frames = job.run(runner or LocalRunner(up), encoding, progress=bar)
    return frames, time.perf_counter() - start
