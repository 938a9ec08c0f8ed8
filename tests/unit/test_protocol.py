"""Property tests of the wire protocol codec (model_container.protocol)."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from model_container import protocol
from model_container.protocol import (
    PROTOCOL_VERSION,
    Error,
    ErrorKind,
    Goodbye,
    Heartbeat,
    Hello,
    InputType,
    Message,
    MsgType,
    Predict,
    ProtocolError,
    Reject,
    Restart,
    Result,
    Welcome,
)

NUMERIC = [InputType.INTS, InputType.FLOATS, InputType.DOUBLES]

int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
uint32 = st.integers(min_value=0, max_value=2**32 - 1)
names = st.text(max_size=40)


@st.composite
def payloads(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A well-formed (lengths, data) pair of arbitrary byte items."""
    items = draw(st.lists(st.binary(max_size=20), max_size=8))
    return protocol.pack_items(items)


def _predict(
    batch_id: int, input_type: InputType, payload: tuple[bytes, bytes], timeout_ms: int = 0
) -> Predict:
    return Predict(batch_id, input_type, *payload, timeout_ms=timeout_ms)


def _result(batch_id: int, payload: tuple[bytes, bytes], micros: int) -> Result:
    return Result(batch_id, *payload, model_micros=micros)


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        Hello,
        model_name=names,
        model_version=names,
        input_type=st.sampled_from(InputType),
        replica_id=names,
        runtime=st.dictionaries(names, names, max_size=4),
        pid=st.integers(min_value=0, max_value=2**31),
        heartbeat_ms=st.integers(min_value=0, max_value=10**6),
        caps=st.lists(names, max_size=3).map(tuple),
        started_ms=st.integers(min_value=0, max_value=2**50),
    ),
    st.builds(Welcome, heartbeat_ms=st.integers(min_value=1, max_value=10**6)),
    st.builds(Reject, reason=names),
    st.just(Heartbeat()),
    st.builds(
        _predict,
        int64,
        st.sampled_from(InputType),
        payloads(),
        st.integers(min_value=0, max_value=2**40),
    ),
    st.builds(_result, int64, payloads(), st.integers(min_value=0, max_value=2**40)),
    st.builds(
        Error,
        batch_id=int64,
        kind=st.sampled_from(ErrorKind),
        message=names,
        exc_type=st.just("") | names,
    ),
    st.builds(Goodbye, reason=names),
    st.builds(Restart, reason=names),
)


def _wire(frames: list[Any]) -> list[bytes]:
    """What a peer receives: every frame as bytes."""
    return [bytes(memoryview(f).cast("B")) for f in frames]


@given(messages)
def test_decode_inverts_encode(msg: Message) -> None:
    assert protocol.decode(_wire(protocol.encode(msg))) == msg


@given(messages)
def test_decode_accepts_memoryviews(msg: Message) -> None:
    frames = [memoryview(f) for f in _wire(protocol.encode(msg))]
    assert protocol.decode(frames) == msg


def test_header_layout_is_msgpack_with_version_and_type() -> None:
    head = msgpack.unpackb(protocol.encode(Welcome(250))[0])
    assert head == {"v": PROTOCOL_VERSION, "t": int(MsgType.WELCOME), "hb_ms": 250}


def test_an_error_without_exc_from_an_older_container_decodes_with_no_type() -> None:
    head = msgpack.packb({"v": 1, "t": 7, "id": 3, "kind": "model_raised", "msg": "E: x"})
    assert protocol.decode([head]) == Error(3, ErrorKind.MODEL_RAISED, "E: x", "")
    # ... and one with no exception behind it is sent without the field, as before.
    sent = msgpack.unpackb(protocol.encode(Error(3, ErrorKind.BAD_INPUT, "no"))[0])
    assert "exc" not in sent


def test_fields_added_for_restarts_are_optional_and_absent_when_unused() -> None:
    # From an older frontend or container: no "to_ms", no "caps".
    head = msgpack.packb({"v": 1, "t": 5, "id": 3, "it": "bytes", "n": 0})
    assert protocol.decode([head, b"", b""]) == Predict(3, InputType.BYTES, b"", b"", 0)
    hello = msgpack.packb({"v": 1, "t": 1, "model": "m", "version": "1", "it": "ints",
                           "replica": "r"})  # fmt: skip
    assert protocol.decode([hello]).caps == ()  # type: ignore[union-attr]
    sent = msgpack.unpackb(protocol.encode(Predict(3, InputType.BYTES, b"", b""))[0])
    assert "to_ms" not in sent
    restart = msgpack.unpackb(protocol.encode(Restart("batch timeout"))[0])
    assert restart == {"v": 1, "t": 9, "reason": "batch timeout"}


def test_a_negative_timeout_is_malformed() -> None:
    head = msgpack.packb({"v": 1, "t": 5, "id": 3, "it": "bytes", "n": 0, "to_ms": -1})
    with pytest.raises(ProtocolError, match="timeout"):
        protocol.decode([head, b"", b""])


def test_unknown_header_fields_are_ignored() -> None:
    head = msgpack.packb({"v": 1, "t": 4, "later": [1, 2]})
    assert protocol.decode([head]) == Heartbeat()


# ------------------------------------------------------------------- numeric payloads


@st.composite
def numeric_batches(draw: st.DrawFn, uniform: bool) -> tuple[InputType, list[np.ndarray[Any, Any]]]:
    input_type = draw(st.sampled_from(NUMERIC))
    dtype = input_type.dtype
    assert dtype is not None
    n = draw(st.integers(min_value=1, max_value=6))
    if uniform:
        sizes = [draw(st.integers(min_value=0, max_value=5))] * n
    else:
        sizes = draw(st.lists(st.integers(0, 5), min_size=2, max_size=6).filter(_ragged))
    arrays = [draw(hnp.arrays(dtype, size)) for size in sizes]
    return input_type, arrays


def _ragged(sizes: list[int]) -> bool:
    return len(set(sizes)) > 1


@given(numeric_batches(uniform=True))
def test_uniform_numeric_batch_round_trips_as_2d_array(
    batch: tuple[InputType, list[np.ndarray[Any, Any]]],
) -> None:
    input_type, arrays = batch
    assert input_type.dtype is not None
    lengths, data = protocol.pack_arrays(arrays, input_type.dtype)
    out = protocol.unpack_inputs(input_type, *_wire([lengths, data]))
    assert isinstance(out, np.ndarray)
    assert out.shape == (len(arrays), arrays[0].shape[0])
    assert out.dtype == input_type.dtype
    assert out.tobytes() == b"".join(a.tobytes() for a in arrays)


@given(numeric_batches(uniform=False))
def test_ragged_numeric_batch_round_trips_as_list(
    batch: tuple[InputType, list[np.ndarray[Any, Any]]],
) -> None:
    input_type, arrays = batch
    assert input_type.dtype is not None
    lengths, data = protocol.pack_arrays(arrays, input_type.dtype)
    out = protocol.unpack_inputs(input_type, *_wire([lengths, data]))
    assert isinstance(out, list)
    assert [a.tobytes() for a in out] == [a.tobytes() for a in arrays]


@given(st.sampled_from(NUMERIC))
def test_empty_numeric_batch(input_type: InputType) -> None:
    assert input_type.dtype is not None
    lengths, data = protocol.pack_arrays([], input_type.dtype)
    assert len(protocol.unpack_inputs(input_type, lengths, data.tobytes())) == 0


def test_pack_arrays_converts_to_little_endian_wire_dtype() -> None:
    arrays = [np.array([1, 2], dtype=">i4"), np.array([3], dtype=">i4")]
    lengths, data = protocol.pack_arrays(arrays, np.dtype("<i8"))
    assert lengths == b"\x02\x00\x00\x00\x01\x00\x00\x00"
    assert data.tobytes() == np.array([1, 2, 3], dtype="<i8").tobytes()


# --------------------------------------------------------------- byte-like payloads

json_values = st.recursive(
    st.none()
    | st.booleans()
    | int64
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)


@given(st.lists(st.text(), max_size=8))
def test_strings_round_trip(items: list[str]) -> None:
    packed = protocol.pack_items([s.encode() for s in items])
    assert protocol.unpack_inputs(InputType.STRINGS, *packed) == items


@given(st.lists(st.binary(), max_size=8))
def test_bytes_round_trip(items: list[bytes]) -> None:
    assert protocol.unpack_inputs(InputType.BYTES, *protocol.pack_items(items)) == items


@given(st.lists(json_values, max_size=8))
def test_json_inputs_round_trip(items: list[Any]) -> None:
    packed = protocol.pack_items([orjson.dumps(i) for i in items])
    assert protocol.unpack_inputs(InputType.JSON, *packed) == items


@given(st.lists(json_values, max_size=8))
def test_outputs_round_trip_one_json_document_each(outputs: list[Any]) -> None:
    lengths, data = protocol.pack_outputs(outputs)
    items = protocol.split_items(lengths, data)
    assert [orjson.loads(i) for i in items] == outputs


def test_numpy_outputs_serialise() -> None:
    fortran = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    outputs = [np.float32(1.5), np.arange(3), fortran[0], np.float16(0.5), np.str_("x")]
    lengths, data = protocol.pack_outputs(outputs)
    decoded = [orjson.loads(i) for i in protocol.split_items(lengths, data)]
    assert decoded == [1.5, [0, 1, 2], [0.0, 1.0, 2.0], 0.5, "x"]


def test_unserialisable_output_raises_type_error() -> None:
    with pytest.raises(TypeError):
        protocol.pack_outputs([{1, 2}])


# ----------------------------------------------------------------- malformed frames

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | int64
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | st.sampled_from([t.value for t in InputType] + [k.value for k in ErrorKind]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
header_keys = st.sampled_from(
    [
        *["v", "t", "id", "n", "it", "us", "kind", "msg", "hb_ms"],
        *["model", "version", "replica", "runtime", "pid", "reason"],
    ]
)


@st.composite
def near_miss_frames(draw: st.DrawFn) -> list[bytes]:
    """Frames that look like protocol messages but may be wrong anywhere."""
    head: dict[str, Any] = draw(st.dictionaries(header_keys, msgpack_values, max_size=8))
    if draw(st.booleans()):
        head["v"] = PROTOCOL_VERSION
    if draw(st.booleans()):
        head["t"] = draw(st.integers(min_value=0, max_value=9))
    extra = draw(st.lists(st.binary(max_size=24), max_size=3))
    return [msgpack.packb(head), *extra]


@st.composite
def corrupted_messages(draw: st.DrawFn) -> list[bytes]:
    """A valid encoding with one frame truncated, extended or bit-flipped."""
    frames = _wire(protocol.encode(draw(messages)))
    index = draw(st.integers(min_value=0, max_value=len(frames) - 1))
    frame = bytearray(frames[index])
    how = draw(st.sampled_from(["truncate", "extend", "flip"]))
    if how == "truncate" or not frame:
        frame = frame[: draw(st.integers(min_value=0, max_value=max(0, len(frame) - 1)))]
    elif how == "extend":
        frame += draw(st.binary(min_size=1, max_size=5))
    else:
        pos = draw(st.integers(min_value=0, max_value=len(frame) - 1))
        frame[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
    frames[index] = bytes(frame)
    return frames


def _decode_all_the_way(frames: list[bytes]) -> None:
    """Decode a message and, for a PREDICT, its inputs: what a container does."""
    msg = protocol.decode(frames)
    if isinstance(msg, Predict):
        protocol.unpack_inputs(msg.input_type, msg.lengths, msg.data)
    if isinstance(msg, Result):
        protocol.split_items(msg.lengths, msg.data)


@settings(max_examples=300)
@given(st.one_of(near_miss_frames(), corrupted_messages(), st.lists(st.binary(), max_size=4)))
def test_malformed_frames_raise_protocol_error_only(frames: list[bytes]) -> None:
    with contextlib.suppress(ProtocolError):
        _decode_all_the_way(frames)


@pytest.mark.parametrize(
    "frames",
    [
        [],
        [b"\xc1"],
        [msgpack.packb([1, 4])],
        [msgpack.packb({"v": 2, "t": 4})],
        [msgpack.packb({"v": 1, "t": 99})],
        [msgpack.packb({"v": 1, "t": 2, "hb_ms": 0})],
        [msgpack.packb({"v": 1, "t": 2, "hb_ms": float("inf")})],
        [msgpack.packb({"v": 1, "t": 5, "id": 1, "it": "doubles", "n": 1}), b"\0\0\0\0"],
        [msgpack.packb({"v": 1, "t": 5, "id": 1, "it": "doubles", "n": 2}), b"\0" * 4, b""],
        [msgpack.packb({"v": 1, "t": 7, "id": 1, "kind": "exploded", "msg": ""})],
    ],
)
def test_examples_of_malformed_messages(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        protocol.decode(frames)


@pytest.mark.parametrize(
    ("input_type", "lengths", "data"),
    [
        (InputType.DOUBLES, b"\x02\0\0\0", b"\0" * 12),  # not whole doubles
        (InputType.DOUBLES, b"\x02\0\0\0", b"\0" * 8),  # lengths sum past the data
        (InputType.INTS, b"\x01\0\0", b"\0" * 8),  # lengths not whole uint32s
        (InputType.STRINGS, b"\x01\0\0\0", b"\xff"),  # not UTF-8
        (InputType.JSON, b"\x01\0\0\0", b"{"),  # not JSON
        (InputType.BYTES, b"\x05\0\0\0", b"abc"),
    ],
)
def test_undecodable_payloads_raise_protocol_error(
    input_type: InputType, lengths: bytes, data: bytes
) -> None:
    with pytest.raises(ProtocolError):
        protocol.unpack_inputs(input_type, lengths, data)


def test_predict_batch_id_survives_a_bad_payload() -> None:
    head = msgpack.packb({"v": 1, "t": 5, "id": 17, "it": "doubles", "n": 3})
    frames = [head, b"\0"]
    with pytest.raises(ProtocolError):
        protocol.decode(frames)
    assert protocol.predict_batch_id(frames) == 17
    assert protocol.predict_batch_id([b"junk"]) is None
    assert protocol.predict_batch_id(_wire(protocol.encode(Heartbeat()))) is None


def test_predict_size_counts_items_not_bytes_of_a_typed_buffer() -> None:
    lengths = np.array([1, 1, 1], dtype="<u4")
    msg = Predict(1, InputType.INTS, lengths.data, np.zeros(3, "<i8").data)
    assert msg.size == 3
    assert msgpack.unpackb(protocol.encode(msg)[0])["n"] == 3
