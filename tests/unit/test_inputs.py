"""Request-body parsing: every input type, and a message that says what to fix."""

import base64

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from management_frontend.state.nesting import MAX_JSON_DEPTH, depth_over, nesting_depth
from model_container.protocol import InputType
from query_frontend.http.inputs import InputError, TooManyItemsError, convert, parse_body


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


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("input_type", list(InputType))
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 255, 1023, 1024, 1025, 5000])
def test_a_body_nested_past_the_limit_is_refused_for_every_input_type(input_type, depth):
    """Row 6 of issue 12: 255 to 1023 levels passed orjson's parse and failed as a 500
    when a JSON input was encoded again for the wire."""
    for raw in (
        b'{"input": %b}' % nested(depth),
        b'{"input_batch": [%b]}' % nested(depth),
        b'{"input": [1], "label": %b}' % nested(depth),
        b'{"input": [1], "ignored": {"a": %b}}' % nested(depth),
    ):
        with pytest.raises(InputError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
            parse_body(raw, input_type)


def test_a_json_input_at_the_limit_is_taken_whole():
    raw = b'{"input": %b}' % nested(MAX_JSON_DEPTH - 1)  # the body's object is one more level
    items, _ = parse_body(raw, InputType.JSON)
    assert items == [nested(MAX_JSON_DEPTH - 1)]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    # Strings full of what could fool a scanner: brackets, quotes, backslashes.
    | st.text(alphabet='[]{}"\\ab\n'),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{"\\k'), inner, max_size=4)
    ),
    max_leaves=60,
)


def depth_of(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@given(json_values)
def test_the_nesting_measured_on_the_bytes_is_the_documents(value):
    assert nesting_depth(orjson.dumps(value)) == depth_of(value)
    assert depth_over(orjson.dumps(value), 3) == (depth_of(value) > 3)


@pytest.mark.parametrize(
    ("input_type", "raw", "fragment"),
    [
        # Row 12 of issue 12: 1e308 became inf in float32 and was answered with a 200.
        (InputType.FLOATS, b'{"input": [1e308, 1]}', "input[0] is 1e+308, outside the range"),
        (InputType.FLOATS, b'{"input": [1, -3.5e38]}', "input[1] is -3.5e+38"),
        (InputType.FLOATS, b'{"input_batch": [[1], [2, 1e39]]}', "input_batch[1][1] is 1e+39"),
        (InputType.INTS, b'{"input": [9223372036854775808, -1]}', "64-bit range"),
        (InputType.INTS, b'{"input": [-9223372036854775809]}', "64-bit range"),
        (InputType.INTS, b'{"input": [1e19]}', "64-bit range"),
    ],
)
def test_a_number_that_does_not_fit_the_type_is_refused_with_its_place(input_type, raw, fragment):
    with pytest.raises(InputError) as info:
        parse_body(raw, input_type)
    assert fragment in str(info.value)
    if input_type is InputType.FLOATS:
        assert "between -3.4028235e+38 and 3.4028235e+38" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("input_type", [InputType.FLOATS, InputType.DOUBLES])
def test_non_finite_numbers_are_refused_should_a_parser_let_them_through(value, input_type):
    with pytest.raises(InputError, match=r"input\[1\] is .*outside the range"):
        convert([1.0, value], input_type, "input")


def test_the_largest_float32_is_taken():
    items, _ = parse_body(b'{"input": [3.4028234e38, -3.4028234e38]}', InputType.FLOATS)
    assert np.isfinite(items[0]).all()


@pytest.mark.parametrize(
    ("input_type", "values"),
    [
        # Every value fits, their magnitudes add up past the limit: still taken.
        (InputType.FLOATS, [3e38, -3e38, 3e38]),
        (InputType.DOUBLES, [1.7e308, -1.7e308]),
        # Past the size checked with Python floats: numpy checks it.
        (InputType.FLOATS, [1.5] * 1000),
    ],
)
def test_numbers_that_each_fit_are_taken_however_large_their_sum(input_type, values):
    item = convert(values, input_type, "input")
    assert np.isfinite(item).all()


def test_a_number_past_float32_in_a_long_input_is_refused_with_its_place():
    values = [1.0] * 999 + [1e39]
    with pytest.raises(InputError, match=r"input\[999\] is 1e\+39, outside the range"):
        convert(values, InputType.FLOATS, "input")
