"""Joining segments: packets copied in order with increasing decode timestamps (B-frames too), every
frame and the source's audio kept; segments encoded differently, or none, are refused and leave nothing."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from sr_runtime.errors import VideoError
from sr_runtime.video.join import join_segments
from sr_runtime.video.reader import FrameInfo
from sr_runtime.video.writer import VideoWriter
from tests.runtime.video.clips import RATE, audio_packets, make_clip, video_frames

TIME_BASE = Fraction(1, RATE)


def write_segment(path, first, count, *, width=48, height=32, preset=None):
    """Frames ``first`` to ``first + count - 1`` (each a different flat grey) as a video-only segment."""
    with VideoWriter(path, width=width, height=height, rate=Fraction(RATE), time_base=TIME_BASE,
                     preset=preset, crf=0) as writer:
        for i in range(first, first + count):
            writer.write([np.full((height, width, 3), 8 * i, np.uint8)], [FrameInfo(i, i, TIME_BASE)])
        writer.close()
    return path


@pytest.mark.parametrize("preset", ["ultrafast", None], ids=["no-bframes", "bframes"])
def test_segments_join_in_order_with_the_source_audio(tmp_path, preset):
    source = make_clip(tmp_path / "source.mp4", frames=24)
    parts = [write_segment(tmp_path / f"seg_{n}.mp4", 12 * n, 12, preset=preset) for n in range(2)]
    dst = tmp_path / "joined.mp4"
    assert join_segments(parts, dst, source=source) == 24
    pts, rgb = video_frames(dst)
    assert np.allclose(pts, [i / RATE for i in range(24)], atol=1e-3)
    assert [round(frame[0] / 8) for frame in rgb] == list(range(24)), "every frame, in order"
    assert audio_packets(dst) == audio_packets(source)


def test_segments_encoded_differently_are_refused_and_leave_nothing(tmp_path):
    parts = [write_segment(tmp_path / "seg_0.mp4", 0, 12), write_segment(tmp_path / "seg_1.mp4", 12, 12, width=64)]
    dst = tmp_path / "joined.mp4"
    with pytest.raises(VideoError, match="segment 1 was encoded with other settings than segment 0"):
        join_segments(parts, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg_0.mp4", "seg_1.mp4"], "no output, no partial file"
    with pytest.raises(VideoError, match="no segments to join"):
        join_segments([], dst)
