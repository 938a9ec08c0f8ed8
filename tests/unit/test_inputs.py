"""Request-body parsing: every input type, and a message that says what to fix."""

import base64

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model_container.protocol import InputType
from query_frontend.http.inputs import InputError, TooManyItemsError, parse_body


def body(doc: object) -> bytes:
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("input_type", "value", "expected"),
    [
        (InputType.DOUBLES, [1.0, 2, 3.5], np.array([1.0, 2.0, 3.5])),
        (InputType.FLOATS, [1.5, 2], np.array([1.5, 2.0], dtype=np.float32)),
        (InputType.INTS, [1, -2, 2**62], np.array([1, -2, 2**62], dtype=np.int64)),
    ],
)
def test_numeric_inputs_become_arrays_of_the_app_dtype(input_type, value, expected):
    items, is_batch = parse_body(body({"input": value}), input_type)
    assert not is_batch
    assert items[0].dtype == input_type.dtype
    np.testing.assert_array_equal(items[0], expected)


def test_bytes_strings_and_json_become_wire_bytes():
    raw = b"\x00\xffpng"
    items, _ = parse_body(body({"input": base64.b64encode(raw).decode()}), InputType.BYTES)
    assert items == [raw]
    items, _ = parse_body(body({"input": "héllo"}), InputType.STRINGS)
    assert items == ["héllo".encode()]
    items, _ = parse_body(body({"input": {"a": [1, 2]}}), InputType.JSON)
    assert orjson.loads(items[0]) == {"a": [1, 2]}


def test_input_batch_gives_one_item_per_element():
    items, is_batch = parse_body(body({"input_batch": [[1.0], [2.0, 3.0]]}), InputType.DOUBLES)
    assert is_batch
    assert [list(i) for i in items] == [[1.0], [2.0, 3.0]]


@pytest.mark.parametrize(
    ("raw", "input_type", "fragment"),
    [
        (b"{not json", InputType.DOUBLES, "not valid JSON"),
        (b"[1, 2]", InputType.DOUBLES, "must be a JSON object"),
        (b'{"inputs": [1]}', InputType.DOUBLES, 'no "input" or "input_batch"'),
        (b'{"input": [1], "input_batch": [[1]]}', InputType.DOUBLES, "not both"),
        (b'{"input_batch": []}', InputType.DOUBLES, "non-empty JSON list"),
        (b'{"input": []}', InputType.DOUBLES, "non-empty JSON list of numbers"),
        (b'{"input": 3.0}', InputType.DOUBLES, "non-empty JSON list of numbers"),
        (b'{"input": [[1.0, 2.0]]}', InputType.DOUBLES, "not nested lists"),
        (b'{"input": ["a", "b"]}', InputType.DOUBLES, "found strings"),
        (b'{"input": [true, false]}', InputType.DOUBLES, "found booleans"),
        (b'{"input": [1.5]}', InputType.INTS, "found non-integer numbers"),
        (b'{"input": [1, 2.5]}', InputType.INTS, "found non-integer numbers"),
        (b'{"input": [100000000000000000000]}', InputType.INTS, "64-bit range"),
        (b'{"input": [18446744073709551615]}', InputType.INTS, "64-bit range"),
        (b'{"input": 5}', InputType.STRINGS, "must be a JSON string"),
        (b'{"input": "@@not base64@@"}', InputType.BYTES, "not valid base64"),
        (b'{"input": [1, 2]}', InputType.BYTES, "base64 string"),
        (b'{"input_batch": [[1.0], "x"]}', InputType.DOUBLES, "input_batch[1]"),
    ],
)
def test_bad_bodies_are_refused_with_a_specific_message(raw, input_type, fragment):
    with pytest.raises(InputError, match=None) as info:
        parse_body(raw, input_type)
    assert fragment in str(info.value)


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_any_list_of_finite_floats_round_trips_as_doubles(values):
    items, _ = parse_body(body({"input": values}), InputType.DOUBLES)
    assert items[0].tolist() == values


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=50))
def test_any_list_of_int64_round_trips_as_ints(values):
    items, _ = parse_body(body({"input": values}), InputType.INTS)
    assert items[0].tolist() == values


def test_a_batch_over_the_per_request_limit_is_refused_before_conversion():
    with pytest.raises(TooManyItemsError, match="over the limit of 3"):
        parse_body(body({"input_batch": [[1.0]] * 4}), InputType.DOUBLES, max_items=3)
