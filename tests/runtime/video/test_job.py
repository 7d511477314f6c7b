"""Segmented, resumable video jobs: the segments' join equals the single pass (frames, timestamps, audio),
a kill -9 costs at most one segment, stale jobs are discarded, a full disk keeps the finished segments,
rotation survives the join. Clips from :mod:`tests.runtime.video.clips`."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from sr_runtime.errors import InputError, VideoError
from sr_runtime.upscaler import Upscaler
from sr_runtime.video.job import MANIFEST, JobInterrupted, VideoJob, job_dir_for, plan_segments, run_video
from sr_runtime.video.probe import scan_video
from sr_runtime.video.runners import LocalRunner
from sr_runtime.video.writer import Encoding, VideoWriter
from tests.runtime.video.clips import COMMON, audio_packets, check_output, make_clip, rotation_of, sr_run, video_frames


@pytest.fixture(scope="module")
def up():
    with Upscaler("fsrcnn", scale=2, backend="torch", device="cpu") as up:
        yield up


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


def plan(path: Path, seconds: float):
    return plan_segments(scan_video(path).packets, seconds)


def lossless(**kw):
    return {"codec": "libx264", "crf": 0, "preset": "ultrafast", **kw}


# --- planning ---------------------------------------------------------------------------------------


def test_segments_start_at_keyframes_and_cover_every_frame_once(clip):
    segments = plan(clip, 0.5)
    assert [s.first_frame for s in segments] == [0, 12, 24, 36]  # the keyframes
    assert all(s.seek_pts == s.start_pts for s in segments), "each starts at its keyframe"
    assert [s.end_pts for s in segments] == [s.start_pts for s in segments[1:]] + [None]
    assert [s.frames for s in segments] == [12, 12, 12, 12]


def test_without_keyframes_near_the_cut_segments_cut_at_the_frame_and_seek_back(tmp_path):
    src = make_clip(tmp_path / "one_gop.mp4", frames=38, gop=1000, audio=False)
    segments = plan(src, 0.5)
    assert [s.first_frame for s in segments] == [0, 12, 24]  # the tail 36, 37 (< a quarter) joins the last
    assert all(s.seek_pts == 0 for s in segments), "decoded from the only keyframe"
    assert [s.frames for s in segments] == [12, 12, 14]


def test_a_cut_moves_to_a_keyframe_within_a_quarter_segment(tmp_path):
    src = make_clip(tmp_path / "gop10.mp4", frames=60, gop=10, audio=False)
    assert [s.first_frame for s in plan(src, 0.5)] == [0, 10, 20, 30, 40, 50]
    assert [s.first_frame for s in plan(src, 1.0)] == [0, 20, 40]


# --- the join equals the single pass ----------------------------------------------------------------


@pytest.mark.parametrize("preset", ["ultrafast", None], ids=["no-bframes", "bframes"])
def test_segmented_output_equals_the_single_pass(tmp_path, up, clip, preset, caplog):
    caplog.set_level(logging.INFO)
    single, segmented = tmp_path / "single.mp4", tmp_path / "segmented.mp4"
    up.upscale_video(clip, single, **lossless(preset=preset))
    frames, _ = run_video(up, clip, segmented, segment_seconds=0.5, quiet=True, **lossless(preset=preset))
    assert "4 segments joined" in caplog.text
    assert frames == 48
    pts_1, rgb_1 = video_frames(single)
    pts_2, rgb_2 = video_frames(segmented)
    src_pts, _ = video_frames(clip)
    assert pts_2 == pts_1 and np.allclose(pts_2, src_pts, atol=1e-3)
    assert len(rgb_2) == 48 and rgb_2 == rgb_1, "lossless encodes: every decoded frame identical"
    assert audio_packets(segmented) == audio_packets(single) == audio_packets(clip)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segmented.mp4", "single.mp4"], "job folder removed"


def test_default_crf_join_is_close_to_the_single_pass(tmp_path, up, clip):
    single, segmented = tmp_path / "single.mkv", tmp_path / "segmented.mkv"
    up.upscale_video(clip, single, preset="ultrafast")
    run_video(up, clip, segmented, segment_seconds=0.5, quiet=True, preset="ultrafast")
    pts_1, rgb_1 = video_frames(single)
    pts_2, rgb_2 = video_frames(segmented)
    assert pts_1 == pts_2 and len(rgb_2) == 48
    a = np.frombuffer(b"".join(rgb_1), np.uint8).astype(np.float64)
    b = np.frombuffer(b"".join(rgb_2), np.uint8).astype(np.float64)
    assert 10 * np.log10(255**2 / np.mean((a - b) ** 2)) >= 40


def test_rotation_survives_the_join(tmp_path, up):
    src = make_clip(tmp_path / "phone.mp4", rotation=90)
    assert rotation_of(src) == 90
    run_video(up, src, tmp_path / "out.mp4", segment_seconds=0.5, quiet=True, **lossless())
    assert rotation_of(tmp_path / "out.mp4") == 90


def test_short_videos_and_other_containers_take_the_single_pass(tmp_path, up, clip, caplog):
    caplog.set_level(logging.INFO)
    job = VideoJob(clip, tmp_path / "out.mp4", identity={}, segment_seconds=10)
    assert job.prepare() is None and not job.dir.exists(), "one segment: nothing to resume"
    assert VideoJob(clip, tmp_path / "out.avi", identity={}, segment_seconds=0.5).prepare() is None
    assert "one pass" in caplog.text


# --- resume, stale jobs, lock -----------------------------------------------------------------------


class StopAfter(LocalRunner):
    """Ctrl-C after ``n`` segments."""

    def __init__(self, up, n):
        super().__init__(up)
        self.n = n

    def map(self, fn, items, progress=None):
        for k, result in enumerate(super().map(fn, items, progress)):
            yield result
            if k + 1 == self.n:
                raise KeyboardInterrupt


def start_and_interrupt(up, src, dst, n, identity):
    job = VideoJob(src, dst, identity=identity, segment_seconds=0.5)
    job.prepare()
    with pytest.raises(JobInterrupted, match=r"2 of 4 segments are kept in .*run the same command again"):
        job.run(StopAfter(up, n), Encoding(**lossless(pix_fmt=None)))
    assert not dst.exists() and job.dir.is_dir()
    return job


def test_ctrl_c_keeps_segments_and_the_next_run_resumes(tmp_path, up, clip, caplog):
    dst = tmp_path / "out.mp4"
    start_and_interrupt(up, clip, dst, 2, {"crf": 0})
    caplog.set_level(logging.INFO)
    job = VideoJob(clip, dst, identity={"crf": 0}, segment_seconds=0.5)
    job.prepare()
    job.run(LocalRunner(up), Encoding(**lossless(pix_fmt=None)))
    assert "resuming out.mp4: 2 of 4 segments done (24 of 48 frames); continuing at segment 2" in caplog.text
    assert job.computed_frames == 24
    assert len(video_frames(dst)[0]) == 48 and not job.dir.exists()


def test_changed_options_discard_the_stale_job(tmp_path, up, clip, caplog):
    dst = tmp_path / "out.mp4"
    start_and_interrupt(up, clip, dst, 2, {"crf": 0})
    job = VideoJob(clip, dst, identity={"crf": 20}, segment_seconds=0.5)
    job.prepare()
    assert "discarding the unfinished job" in caplog.text and "the crf changed" in caplog.text
    assert job.done == {} and sorted(p.name for p in job.dir.iterdir()) == ["lock", MANIFEST]
    job._lock.release()


def test_changed_source_or_restart_discards_the_job(tmp_path, up, clip, caplog):
    src = tmp_path / "clip.mp4"
    src.write_bytes(clip.read_bytes())
    dst = tmp_path / "out.mp4"
    start_and_interrupt(up, src, dst, 2, {})
    job = VideoJob(src, dst, identity={}, segment_seconds=0.5, restart=True)
    job.prepare()
    assert "--restart was given" in caplog.text and job.done == {}
    job._lock.release()
    start_and_interrupt(up, src, dst, 2, {})
    with open(src, "ab") as f:
        f.write(b"\0")  # a changed file (one byte appended)
    job = VideoJob(src, dst, identity={}, segment_seconds=0.5)
    job.prepare()
    assert "the source clip.mp4 changed" in caplog.text and job.done == {}
    job._lock.release()


def test_a_damaged_finished_segment_is_done_again(tmp_path, up, clip, caplog):
    dst = tmp_path / "out.mp4"
    job = start_and_interrupt(up, clip, dst, 2, {})
    part = job.part(1)
    part.write_bytes(part.read_bytes()[:-100])
    job = VideoJob(clip, dst, identity={}, segment_seconds=0.5)
    job.prepare()
    assert sorted(job.done) == [0] and "segment 1's file is missing or damaged" in caplog.text
    job.run(LocalRunner(up), Encoding(**lossless(pix_fmt=None)))
    assert job.computed_frames == 36 and len(video_frames(dst)[0]) == 48


def test_a_second_process_on_the_same_output_is_refused(tmp_path, up, clip):
    import fcntl

    dst = tmp_path / "out.mp4"
    job_dir_for(dst).mkdir()
    with open(job_dir_for(dst) / "lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another sr-run is working on this output"):
            VideoJob(clip, dst, identity={}, segment_seconds=0.5).prepare()


# --- a full disk ------------------------------------------------------------------------------------


def test_disk_full_in_a_segment_stops_at_once_and_keeps_the_finished_ones(tmp_path, up, clip, monkeypatch):
    dst = tmp_path / "out.mp4"
    real_mux = VideoWriter._mux
    failed = []  # the writer whose disk filled
    computed_after_failure = []

    def full_in_segment_2(self, packet):
        if self.dst.name == "seg_00002.mp4" and self.frames_written >= 2:
            failed.append(self)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_mux(self, packet)

    monkeypatch.setattr(VideoWriter, "_mux", full_in_segment_2)
    real_run = up._run

    def run(lr, *a, **k):
        if failed and failed[0]._error is not None:  # the error is there for the producer to see
            computed_after_failure.append(len(lr))
        return real_run(lr, *a, **k)

    monkeypatch.setattr(up, "_run", run)
    job = VideoJob(clip, dst, identity={}, segment_seconds=0.5)
    job.prepare()
    with pytest.raises(VideoError, match=r"no space left on the device.*2 of 4 segments are kept"):
        job.run(LocalRunner(up), Encoding(**lossless(pix_fmt=None)))
    # Frames already computed and queued for the encoder when the disk filled are lost, however
    # many the load let pile up; what must not happen is more model work once the error is known:
    # at most the batch that was starting as the encode thread failed.
    assert sum(computed_after_failure) <= up.batch, "stopped at once after the write error"
    assert sorted(p.name for p in job.dir.iterdir()) == ["lock", MANIFEST, "seg_00000.mp4", "seg_00001.mp4"]
    assert sorted(json.loads((job.dir / MANIFEST).read_text())["done"]) == ["0", "1"]
    assert not dst.exists()
    monkeypatch.setattr(VideoWriter, "_mux", real_mux)
    job = VideoJob(clip, dst, identity={}, segment_seconds=0.5)
    job.prepare()
    job.run(LocalRunner(up), Encoding(**lossless(pix_fmt=None)))
    assert job.computed_frames == 24 and len(video_frames(dst)[0]) == 48


# --- kill -9: a real process ------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_then_the_same_command_resumes(tmp_path):
    src = make_clip(tmp_path / "clip.mp4", frames=120, width=96, height=64)
    dst = tmp_path / "clip_x2.mp4"
    cmd, env = sr_run(src, *COMMON)
    manifest = job_dir_for(dst) / MANIFEST
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done: dict = {}
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            done = json.loads(manifest.read_text())["done"]
        except (OSError, ValueError, KeyError):
            done = {}
        if len(done) >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(done) >= 3 and not dst.exists(), "killed mid-job, after 3 of 10 segments"
    finished = sum(v["frames"] for v in done.values())
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"resuming clip_x2.mp4: {len(done)} of 10 segments done" in run.stderr or "resuming clip_x2.mp4" in run.stderr
    computed = int(run.stderr.split("computed ")[1].split(" of ")[0])
    assert computed <= 120 - finished + 12, "at most the unfinished segments plus one"
    check_output(dst, src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip_x2.mp4"], "nothing else is left"


def test_cuts_between_keyframes_decode_from_the_keyframe_before_and_drop_its_frames(tmp_path, up):
    """One keyframe only: every segment after the first seeks back to frame 0 and must drop the frames
    before its start, or they would appear twice in the output."""
    src = make_clip(tmp_path / "one_gop.mp4", frames=38, gop=1000)
    assert all(s.seek_pts == 0 for s in plan(src, 0.5))
    single, segmented = tmp_path / "single.mp4", tmp_path / "segmented.mp4"
    up.upscale_video(src, single, **lossless())
    run_video(up, src, segmented, segment_seconds=0.5, quiet=True, **lossless())
    pts_1, rgb_1 = video_frames(single)
    pts_2, rgb_2 = video_frames(segmented)
    assert pts_2 == pts_1 and len(rgb_2) == 38 and rgb_2 == rgb_1
    assert audio_packets(segmented) == audio_packets(src)


# --- the expected time, said before the first frame ---------------------------------------------------


@pytest.mark.parametrize("per_frame, slow", [(30.0, True), (0.001, False)], ids=["slow", "fast"])
def test_the_log_gives_the_expected_time_before_the_first_frame_and_a_faster_model_when_slow(
        tmp_path, up, clip, caplog, monkeypatch, per_frame, slow):
    from sr_runtime.video import pipeline

    order = []
    monkeypatch.setattr(pipeline, "estimate_frame_seconds", lambda *a, **k: order.append("estimate") or per_frame)
    real = pipeline.upscale_segment
    monkeypatch.setattr("sr_runtime.video.job.upscale_segment", lambda *a, **k: order.append("frames") or real(*a, **k))
    caplog.set_level(logging.INFO, logger="sr_runtime")
    run_video(up, clip, tmp_path / "out.mp4", segment_seconds=0.5, quiet=True, preset="ultrafast")
    assert order[0] == "estimate" and order.count("frames") == 4  # said before the first of 4 segments
    line = next(r for r in caplog.records if "frames of" in r.getMessage())
    assert "video: 48 frames of" in line.getMessage() and "s per frame" in line.getMessage()
    assert ("--model fsrcnn" in line.getMessage()) == slow
    assert (line.levelno == logging.WARNING) == slow


def test_the_frame_estimate_scales_a_small_timed_call_by_the_pixels():
    from sr_runtime.video.pipeline import estimate_frame_seconds

    class Slow:
        calls = []

        def upscale(self, frame):
            self.calls.append(frame.shape)
            time.sleep(0.02)

    slow = Slow()
    assert estimate_frame_seconds(slow, 192, 384, side=96) >= 0.02 * 8  # 8x the pixels of the timed 96x96 call
    assert slow.calls == [(96, 96, 3), (96, 96, 3)]
