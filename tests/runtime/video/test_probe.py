"""Probing: one pass over the source gives the header (as probe_video), every video packet's timestamp
and the file's sha256 (as sha256_file), reading the file about once; a job reads its source once
before the first frame. Clips from :mod:`tests.runtime.video.clips`."""

from __future__ import annotations

import av
import pytest

from sr_runtime.atomic import sha256_file
from sr_runtime.video import probe
from sr_runtime.video.job import VideoJob
from sr_runtime.video.probe import probe_video, scan_video
from tests.runtime.video.clips import make_clip


@pytest.mark.parametrize("suffix, rotation", [(".mp4", 90), (".mkv", None), (".mov", -90)])
def test_scan_finds_the_header_every_packet_and_the_hash(tmp_path, suffix, rotation):
    src = make_clip(tmp_path / f"clip{suffix}", frames=30, gop=10, rotation=rotation)
    scan = scan_video(src)
    assert scan.info == probe_video(src)
    assert (scan.info.display_matrix is None) == (rotation is None)
    assert scan.sha256 == sha256_file(src)
    with av.open(str(src)) as c:
        packets = [p for p in c.demux(c.streams.video[0]) if p.size]
        assert scan.packets.pts == tuple(sorted(p.pts for p in packets))
        assert scan.packets.keyframes == tuple(sorted(p.pts for p in packets if p.is_keyframe))
        assert scan.packets.time_base == c.streams.video[0].time_base
    assert len(scan.packets.keyframes) == 3


class CountingFile:
    def __init__(self, file):
        self.file, self.bytes = file, 0

    def read(self, size=-1):
        data = self.file.read(size)
        self.bytes += len(data)
        return data

    def seek(self, *args):
        return self.file.seek(*args)

    def tell(self):
        return self.file.tell()


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_scan_reads_the_source_about_once(tmp_path, monkeypatch, suffix):
    src = make_clip(tmp_path / f"big{suffix}", frames=96, width=256, height=192, audio=False)
    size = src.stat().st_size
    assert size > 100_000, "larger than a few of the demuxer's 32 KiB buffers"
    files = []
    init = probe._HashingReader.__init__

    def counting(self, file, name):
        files.append(CountingFile(file))
        init(self, files[-1], name)

    monkeypatch.setattr(probe._HashingReader, "__init__", counting)
    scan = scan_video(src)
    assert scan.sha256 == sha256_file(src)
    assert size <= files[0].bytes <= size + 70_000, f"{files[0].bytes} bytes read for a {size}-byte file"


def test_a_job_opens_its_source_once_before_the_first_frame(tmp_path, monkeypatch):
    src = make_clip(tmp_path / "clip.mp4", frames=48)
    opened, hashed = [], []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda file, *a, **k: (opened.append(getattr(file, "name", file)),
                                                            real_open(file, *a, **k))[1])
    monkeypatch.setattr("sr_runtime.atomic.sha256_file", lambda path: hashed.append(path))
    job = VideoJob(src, tmp_path / "out.mp4", identity={}, segment_seconds=0.5)
    assert len(job.prepare()) == 4
    job._lock.release()
    assert opened == [str(src)] and hashed == [], "one pass: header, packets and hash"
    monkeypatch.undo()
    assert job.info == probe_video(src)
    assert job._record["source"]["sha256"] == sha256_file(src)
