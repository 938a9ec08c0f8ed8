"""Messages of several frames on a byte stream (the unix-socket RPC's framing)."""

import pytest

from model_container.framing import (
    MAX_FRAMES,
    U32,
    FramingError,
    MessageReader,
    encode_message,
)


def _wire(frames: list[bytes]) -> bytes:
    return b"".join(bytes(p) for p in encode_message(frames))


def test_a_message_round_trips_with_its_frames_kept_apart() -> None:
    frames = [b"header", b"", b"\x00" * 80]
    assert MessageReader().feed(_wire(frames)) == [frames]


def test_every_cut_of_the_stream_gives_the_same_messages() -> None:
    a, b = [b"one", b"two"], [b"three"]
    data = _wire(a) + _wire(b)
    for cut in range(len(data) + 1):
        reader = MessageReader()
        got = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert got == [a, b], cut
        assert reader.buffered == 0


def test_a_message_over_the_limit_is_refused_before_its_body_arrives() -> None:
    reader = MessageReader(max_message=100)
    prefix = U32.pack(1) + U32.pack(101)
    with pytest.raises(FramingError, match="101 bytes"):
        reader.feed(prefix)


def test_a_frame_count_out_of_range_is_refused() -> None:
    for n in (0, MAX_FRAMES + 1):
        with pytest.raises(FramingError, match="frames"):
            MessageReader().feed(U32.pack(n))
    with pytest.raises(FramingError):
        encode_message([])
