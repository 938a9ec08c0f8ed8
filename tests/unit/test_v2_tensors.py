"""The Open Inference Protocol's tensors: a request read into queries (JSON and binary
tensor data), and the answers written as one output tensor."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from management_frontend.state.records import App
from model_container.protocol import InputType
from query_frontend.http.inputs import InputError, TooManyItemsError
from query_frontend.http.v2.encode import one_model_reply, output_tensor
from query_frontend.http.v2.tensors import InferShape, parse_infer
from query_frontend.queries import Expired, Failure
from query_frontend.routing.table import Route


def request(datatype: str, shape: list[int], data: Any = None, **extra: Any) -> bytes:
    tensor: dict[str, Any] = {"name": "input", "datatype": datatype, "shape": shape}
    if data is not None:
        tensor["data"] = data
    return orjson.dumps({"inputs": [tensor], **extra})


def binary_request(
    datatype: str, shape: list[int], payload: bytes, **extra: Any
) -> tuple[bytes, int]:
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": len(payload)},
                }
            ],
            **extra,
        }
    )
    return head + payload, len(head)


def rows(items: list[Any]) -> list[list[Any]]:
    return [item.tolist() for item in items]


def test_n_rows_are_n_queries_of_the_apps_dtype() -> None:
    body = request("FP64", [2, 3], [[1, 2, 3], [4, 5, 6]])
    items, shape, uid, pin = parse_infer(body, InputType.DOUBLES, 100)
    assert rows(items) == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert all(item.dtype == np.float64 for item in items)
    assert shape == InferShape(None, "output", False) and uid is None and pin is None
    flat, *_ = parse_infer(request("FP64", [2, 3], [1, 2, 3, 4, 5, 6]), InputType.DOUBLES, 100)
    assert rows(flat) == rows(items)
    # [N]: one number each; more dimensions are flattened into the row.
    one, *_ = parse_infer(request("INT32", [3], [7, 8, 9]), InputType.INTS, 100)
    assert rows(one) == [[7], [8], [9]]
    deep, *_ = parse_infer(request("INT64", [1, 2, 2], [1, 2, 3, 4]), InputType.INTS, 100)
    assert rows(deep) == [[1, 2, 3, 4]]


@pytest.mark.parametrize(
    ("datatype", "input_type", "values"),
    [
        ("INT8", InputType.INTS, [-128, 127]),
        ("UINT16", InputType.INTS, [0, 65535]),
        ("INT64", InputType.INTS, [-(2**63), 2**63 - 1]),
        ("FP32", InputType.FLOATS, [1.5, -2.25]),
        ("FP16", InputType.FLOATS, [0.5, 1024.0]),
        ("FP32", InputType.DOUBLES, [0.1, 3.0]),
        ("FP64", InputType.DOUBLES, [0.1, 1e300]),
    ],
)
def test_binary_tensor_data_is_read_as_json_would_be(
    datatype: str, input_type: InputType, values: list[Any]
) -> None:
    np_type = {"INT8": "<i1", "UINT16": "<u2", "INT64": "<i8", "FP16": "<f2", "FP32": "<f4"}
    arr = np.array(values, dtype=np_type.get(datatype, "<f8"))
    body, length = binary_request(datatype, [2], arr.tobytes())
    items, *_ = parse_infer(body, input_type, 100, header_length=length)
    assert rows(items) == [[v] for v in arr.astype(input_type.dtype).tolist()]
    json_items, *_ = parse_infer(request(datatype, [2], arr.tolist()), input_type, 100)
    assert rows(json_items) == rows(items)


def test_bf16_is_widened_exactly() -> None:
    as_f32 = np.array([1.5, -3.0], dtype="<f4")
    bf16 = (as_f32.view("<u4") >> 16).astype("<u2")
    body, length = binary_request("BF16", [1, 2], bf16.tobytes())
    items, *_ = parse_infer(body, InputType.FLOATS, 100, header_length=length)
    assert rows(items) == [[1.5, -3.0]]


def test_bytes_elements_by_input_type() -> None:
    payload = b"".join(struct.pack("<I", len(e)) + e for e in (b"h\xc3\xa9", b"", b"\xff"))
    body, length = binary_request("BYTES", [3], payload)
    items, *_ = parse_infer(body, InputType.BYTES, 100, header_length=length)
    assert items == [b"h\xc3\xa9", b"", b"\xff"]
    with pytest.raises(InputError, match="element 2 is not UTF-8"):
        parse_infer(body, InputType.STRINGS, 100, header_length=length)
    strings, *_ = parse_infer(request("BYTES", [2, 1], [["a"], ["é"]]), InputType.STRINGS, 100)
    assert strings == [b"a", "é".encode()]
    docs, *_ = parse_infer(request("BYTES", [2], ['{"a": [1]}', "3"]), InputType.JSON, 100)
    assert docs == [b'{"a":[1]}', b"3"]
    with pytest.raises(InputError, match="not a JSON text"):
        parse_infer(request("BYTES", [1], ["{"]), InputType.JSON, 100)


def test_the_request_says_id_output_binary_and_pin() -> None:
    body = request(
        "FP64",
        [1, 1],
        [1.0],
        id="abc",
        outputs=[{"name": "scores", "parameters": {"binary_data": True}}],
        parameters={"version": 3},
    )
    _, shape, _, pin = parse_infer(body, InputType.DOUBLES, 100)
    assert shape == InferShape("abc", "scores", True) and pin == "3"
    everything = request("FP64", [1, 1], [1.0], parameters={"binary_data_output": True})
    assert parse_infer(everything, InputType.DOUBLES, 100)[1].binary
    # The URL's version wins over none in the body.
    assert parse_infer(everything, InputType.DOUBLES, 100, pin="2")[3] == "2"


def test_a_raw_binary_body_is_one_query() -> None:
    arr = np.array([1.0, 2.0], dtype="<f8")
    items, shape, *_ = parse_infer(arr.tobytes(), InputType.DOUBLES, 100, header_length=0)
    assert rows(items) == [[1.0, 2.0]] and shape.binary
    with pytest.raises(InputError, match="whole number of FP64"):
        parse_infer(b"123", InputType.DOUBLES, 100, header_length=0)


@pytest.mark.parametrize(
    ("body", "input_type", "message"),
    [
        (request("INT32", [1, 2], [1, 2]), InputType.DOUBLES, "'doubles' takes FP64, FP32"),
        (request("FP64", [1, 2], [1, 2]), InputType.INTS, "'ints' takes INT64, INT8"),
        (request("BOOL", [1], [True]), InputType.INTS, "is BOOL"),
        (request("FP8", [1], [1]), InputType.FLOATS, "not a datatype of the protocol"),
        (request("FP64", [1, 3], [1.0, 2.0]), InputType.DOUBLES, "has 3 elements"),
        (request("FP64", [0, 3], []), InputType.DOUBLES, "at least 1 query"),
        (request("FP64", [], [1.0]), InputType.DOUBLES, "shape"),
        (request("FP64", [1, -1], [1.0]), InputType.DOUBLES, "shape"),
        (request("FP64", [1, 2**63, 2**63], [1.0]), InputType.DOUBLES, "has 85070591"),
        (request("BYTES", [1, 2**63, 2**63], ["a"]), InputType.BYTES, r"\[N\] or \[N, 1\]"),
        (request("INT64", [1, 2], [1, 2.5]), InputType.INTS, "non-integer numbers"),
        (request("INT8", [1], [300]), InputType.INTS, "outside the range of INT8"),
        (request("UINT64", [1], [2**64 - 1]), InputType.INTS, "past the 64-bit range"),
        (request("FP64", [1], [1e300]), InputType.FLOATS, "takes FP32"),
        (request("FP32", [1], [1e300]), InputType.FLOATS, "outside the range of 'floats'"),
        (request("FP64", [1], ["x"]), InputType.DOUBLES, "strings"),
        (request("FP64", [1, 2], [[1.0], [2.0, 3.0]]), InputType.DOUBLES, "numbers in the"),
        (request("BYTES", [1, 2], ["a", "b"]), InputType.STRINGS, r"\[N\] or \[N, 1\]"),
        (request("BYTES", [2], ["a", 1]), InputType.STRINGS, "must be strings"),
        (request("FP64", [1]), InputType.DOUBLES, 'no "data"'),
        (b'{"inputs": [', InputType.DOUBLES, "not valid JSON"),
        (b"[]", InputType.DOUBLES, "must be a JSON object"),
        (b"{}", InputType.DOUBLES, '"inputs" must be a list of one input tensor'),
        (
            orjson.dumps({"inputs": [{"name": "a"}, {"name": "b"}]}),
            InputType.DOUBLES,
            "an app has one input tensor",
        ),
        (
            request("FP64", [1], [1.0], outputs=[{"name": "a"}, {"name": "b"}]),
            InputType.DOUBLES,
            "an app has one output tensor",
        ),
        (request("FP64", [1], [1.0], id=5), InputType.DOUBLES, '"id" must be a string'),
        (
            request("FP64", [1], [1.0], parameters={"version": [1]}),
            InputType.DOUBLES,
            '"version" must be',
        ),
    ],
)
def test_what_is_refused_says_what_to_send(
    body: bytes, input_type: InputType, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        parse_infer(body, input_type, 100)


def test_binary_sizes_must_add_up() -> None:
    body, length = binary_request("FP64", [1, 2], b"\x00" * 8)
    with pytest.raises(InputError, match="is 16 bytes, but 8 were sent"):
        parse_infer(body, InputType.DOUBLES, 100, header_length=length)
    with pytest.raises(InputError, match="binary_data_size 8, but 9 bytes follow"):
        parse_infer(body + b"x", InputType.DOUBLES, 100, header_length=length)
    huge, length = binary_request("FP64", [1, 2**62, 2**62], b"\x00" * 8)
    with pytest.raises(InputError, match="but 8 were sent"):
        parse_infer(huge, InputType.DOUBLES, 100, header_length=length)
    with pytest.raises(InputError, match="Inference-Header-Content-Length is 999"):
        parse_infer(body, InputType.DOUBLES, 100, header_length=999)
    short = struct.pack("<I", 10) + b"abc"
    body, length = binary_request("BYTES", [1], short)
    with pytest.raises(InputError, match="past the data's end"):
        parse_infer(body, InputType.BYTES, 100, header_length=length)


def test_more_queries_than_a_request_may_hold() -> None:
    with pytest.raises(TooManyItemsError, match="holds 11 queries, over the limit of 10"):
        parse_infer(request("FP64", [11], [1.0] * 11), InputType.DOUBLES, 10)


@pytest.mark.parametrize(
    ("values", "datatype", "shape"),
    [
        ([1, 2, 3], "INT64", [3]),
        ([1, 2.5], "FP64", [2]),
        ([[1, 2], [3, 4]], "INT64", [2, 2]),
        ([[1.5, 2], [3, 4]], "FP64", [2, 2]),
        (["a", "é"], "BYTES", [2]),
        ([{"a": 1}, [1, [2]]], "BYTES", [2]),
        ([True, False], "BYTES", [2]),
        ([1, "x"], "BYTES", [2]),
        ([[1, 2], [3]], "BYTES", [2]),
        ([2**63], "BYTES", [1]),
    ],
)
def test_the_output_tensors_datatype_follows_the_outputs(
    values: list[Any], datatype: str, shape: list[int]
) -> None:
    got, dims, data = output_tensor(values)
    assert (got, dims) == (datatype, shape)
    if datatype == "BYTES" and not all(isinstance(v, str) for v in values):
        assert [orjson.loads(e) for e in data] == values  # type: ignore[union-attr]


def route(default: Any = -1) -> Route:
    app = App(name="a", input_type=InputType.DOUBLES, default_output=default, slo_micros=1000)
    return Route(app, ("m", "2"), models_json=b'["m:2"]')


def test_a_reply_flags_defaults_and_echoes_the_id() -> None:
    shape = InferShape("r1", "output", False)
    reply = one_model_reply([4, 5], [b"1.5", Expired("too slow")], route(), shape)
    doc = orjson.loads(reply.body)
    assert doc == {
        "model_name": "a",
        "model_version": "2",
        "id": "r1",
        "parameters": {
            "query_ids": [4, 5],
            "default": [False, True],
            "models": [["m:2"], []],
            "default_explanation": ["", "too slow"],
        },
        "outputs": [{"name": "output", "datatype": "FP64", "shape": [2], "data": [1.5, -1.0]}],
    }
    failed = one_model_reply([6], [Failure("model 'm' raised ValueError")], route(), shape)
    assert failed.status == 500


def test_a_binary_reply_puts_the_data_after_the_header() -> None:
    reply = one_model_reply([1, 2], [b'"x"', b'"yz"'], route(), InferShape(None, "out", True))
    headers = dict(reply.headers)
    assert headers[b"content-type"] == b"application/octet-stream"
    length = int(headers[b"inference-header-content-length"])
    doc = orjson.loads(reply.body[:length])
    assert doc["outputs"] == [
        {"name": "out", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 11}}
    ]
    assert reply.body[length:] == b"\x01\x00\x00\x00x\x02\x00\x00\x00yz"


@given(
    st.lists(
        st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=4),
        min_size=1,
        max_size=5,
    ).filter(lambda rs: len({len(r) for r in rs}) == 1)
)
def test_binary_rows_round_trip(rows_in: list[list[float]]) -> None:
    arr = np.array(rows_in, dtype="<f8")
    body, length = binary_request("FP64", list(arr.shape), arr.tobytes())
    items, *_ = parse_infer(body, InputType.DOUBLES, 100, header_length=length)
    assert rows(items) == arr.tolist()
    datatype, dims, data = output_tensor(rows(items))
    assert (datatype, dims) == ("FP64", list(arr.shape))
    assert np.asarray(data).reshape(arr.shape).tolist() == arr.tolist()
