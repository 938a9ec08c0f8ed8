"""Length-prefixed frames (``benchmarks.frames``): whole, cut anywhere, and too large."""

from __future__ import annotations

import pytest

from benchmarks.frames import HEADER, FrameReader, FrameTooLargeError, frame


def test_a_framed_message_round_trips() -> None:
    reader = FrameReader()
    assert reader.feed(frame(b"hello")) == [b"hello"]
    assert reader.feed(frame(b"")) == [b""]
    assert reader.buffered == 0


def test_several_frames_in_one_read_come_out_in_order() -> None:
    reader = FrameReader()
    assert reader.feed(frame(b"a") + frame(b"bc") + frame(b"def")) == [b"a", b"bc", b"def"]


def test_a_short_read_waits_for_the_rest_wherever_the_cut_falls() -> None:
    data = frame(b"x" * 120) + frame(b"y" * 40)
    for cut in range(len(data) + 1):
        reader = FrameReader()
        got = reader.feed(data[:cut]) + reader.feed(memoryview(data)[cut:])
        assert got == [b"x" * 120, b"y" * 40], cut
        assert reader.buffered == 0


def test_a_frame_over_the_limit_is_refused_before_its_body_arrives() -> None:
    reader = FrameReader(max_frame=100)
    assert reader.feed(frame(b"z" * 100)) == [b"z" * 100]
    with pytest.raises(FrameTooLargeError):
        reader.feed(HEADER.pack(101))
