"""Joining segments: packets copied in order with increasing decode timestamps (B-frames too), every
frame and the source's audio kept; segments encoded differently, or none, are refused and leave nothing."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from sr_runtime.errors import VideoError
from sr_runtime.video.join import join_segments
from sr_runtime.video.reader import FrameInfo
from sr_runtime.video.writer import VideoWriter
from tests.runtime.video.clips import RATE, audio_packets, make_clip, video_frames

TIME_BASE = Fraction(1, RATE)


def write_segment(path, first, count, *, width=48, height=32, preset=None):
    """Frames ``first`` to ``first + count - 1`` as a video-only segment: each a different flat grey,
    with noise in the right half so that the encoder uses B-frames (unless ``preset`` is ultrafast)."""
    with VideoWriter(path, width=width, height=height, rate=Fraction(RATE), time_base=TIME_BASE,
                     preset=preset) as writer:
        for i in range(first, first + count):
            rgb = np.full((height, width, 3), 10 * i, np.uint8)
            rgb[:, width // 2 :] = np.random.default_rng(i).integers(0, 256, (height, width - width // 2, 3))
            writer.write([rgb], [FrameInfo(i, i, TIME_BASE)])
        writer.close()
    return path


def decode_timestamps(path):
    with av.open(str(path)) as c:
        return [p.dts for p in c.demux(c.streams.video[0]) if p.size]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
@pytest.mark.parametrize("preset", ["ultrafast", None], ids=["no-bframes", "bframes"])
def test_segments_join_in_order_with_the_source_audio(tmp_path, preset, suffix):
    source = make_clip(tmp_path / "source.mp4", frames=24)
    parts = [write_segment(tmp_path / f"seg_{n}{suffix}", 12 * n, 12, preset=preset) for n in range(2)]
    if preset is None:
        assert None in decode_timestamps(parts[1]) or suffix == ".mp4", "Matroska stores no decode timestamps"
    dst = tmp_path / f"joined{suffix}"
    assert join_segments(parts, dst, source=source) == 24
    pts, rgb = video_frames(dst)
    expected = video_frames(parts[0])[0] + video_frames(parts[1])[0]
    # Matroska shifts every stream by the AAC priming delay (the audio starts before 0), as in the single pass
    assert np.allclose(np.subtract(pts, pts[0]), expected, atol=1e-3), "every frame keeps its timestamp"
    greys = [np.frombuffer(frame, np.uint8).reshape(32, 48, 3)[:, :20].mean() for frame in rgb]
    assert [round(g / 10) for g in greys] == list(range(24)), "every frame, in order"
    assert [data for data, _ in audio_packets(dst)] == [data for data, _ in audio_packets(source)], "audio copied"
    if suffix == ".mp4":  # same time base as the source: the timestamps compare as they are
        assert audio_packets(dst) == audio_packets(source)


def test_segments_encoded_differently_are_refused_and_leave_nothing(tmp_path):
    parts = [write_segment(tmp_path / "seg_0.mp4", 0, 12), write_segment(tmp_path / "seg_1.mp4", 12, 12, width=64)]
    dst = tmp_path / "joined.mp4"
    with pytest.raises(VideoError, match="segment 1 was encoded with other settings than segment 0"):
        join_segments(parts, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg_0.mp4", "seg_1.mp4"], "no output, no partial file"
    with pytest.raises(VideoError, match="no segments to join"):
        join_segments([], dst)
