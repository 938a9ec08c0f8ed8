"""An Open Inference Protocol inference request, read into the queries of an app.

The request (``parse_infer``) is a JSON header, ``{"id"?, "parameters"?, "inputs": [one
tensor], "outputs"?: [one]}``, followed, with the binary tensor data extension, by the
input's bytes (the header's length in ``Inference-Header-Content-Length``). An app has
one input, so a request has one input tensor: of shape ``[N, ...]``, it is N queries.
For a numeric app each query is its row of the other dimensions, flattened (``[N]``:
one number each); for ``strings``, ``bytes`` and ``json`` apps the tensor is ``BYTES``
with one element per query (``[N]`` or ``[N, 1]``): a string's UTF-8, the bytes as
they are, a JSON text.

Which datatypes an app takes (``TAKES``) is what converts to its input type without
loss: every integer type for ``ints`` (a ``UINT64`` value past int64 is refused);
``FP32``, ``FP16`` and ``BF16`` for ``floats``; those and ``FP64`` for ``doubles``;
``BYTES`` for the rest. ``FP16`` and ``BF16`` are widened exactly. Anything else is an
``InputError`` naming the app's type and the datatypes it takes.

A version pin comes from the URL (``/versions/{v}/``) or, failing that, from the
request's ``parameters.version``; it means what a predict request's ``"version"`` does.
"""

from __future__ import annotations

import math
import struct
from typing import Any, NamedTuple

import numpy as np
import orjson

from management_frontend.state.nesting import depth_over, too_deep
from model_container.protocol import InputType
from query_frontend.http.inputs import InputError, TooManyItemsError, load_object, version_pin
from query_frontend.queries import Item

__all__ = ["TAKES", "InferShape", "datatype_of", "parse_infer"]

_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
#: The datatypes each input type takes, the one it is named by first.
TAKES: dict[InputType, tuple[str, ...]] = {
    InputType.INTS: ("INT64", *(t for t in _INTS if t != "INT64")),
    InputType.FLOATS: ("FP32", "FP16", "BF16"),
    InputType.DOUBLES: ("FP64", "FP32", "FP16", "BF16"),
    InputType.STRINGS: ("BYTES",),
    InputType.BYTES: ("BYTES",),
    InputType.JSON: ("BYTES",),
}
#: Each fixed-size datatype's little-endian element as numpy reads it (BF16: its bits).
_DTYPES: dict[str, np.dtype[Any]] = {
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<u2"),
}
_KNOWN = {*_DTYPES, "BYTES", "BOOL"}
_HINT = '{"inputs": [{"name": "input", "shape": [N, ...], "datatype": "...", "data": [...]}]}'
_INT64_MAX = np.iinfo(np.int64).max
_TOO_DEEP = too_deep()


class InferShape(NamedTuple):
    """What the response needs of the request: its id, the output's name, and whether
    the output goes as binary data."""

    request_id: str | None
    output_name: str
    binary: bool


def datatype_of(input_type: InputType) -> str:
    """The datatype an app's input is described by (its metadata)."""
    return TAKES[input_type][0]


def parse_infer(
    body: bytes,
    input_type: InputType,
    max_items: int,
    header_length: int | None = None,
    pin: str | None = None,
) -> tuple[list[Item], InferShape, None, str | None]:
    """The queries of an inference request for an app of ``input_type``, what its
    response needs, no uid, and the version pin (``pin``, from the URL; else the
    request's ``parameters.version``). ``header_length``: the
    ``Inference-Header-Content-Length`` (``None``: the body is all JSON; ``0``: the body
    is the input's bytes alone, one query). ``InputError`` saying what to send."""
    if header_length == 0:
        items = [_raw_item(body, input_type)]
        return items, InferShape(None, "output", True), None, pin
    if header_length is not None and not 0 < header_length <= len(body):
        raise InputError(
            f"Inference-Header-Content-Length is {header_length}, but the body has "
            f"{len(body)} bytes: it must give the JSON header's length in bytes"
        )
    head = body if header_length is None else body[:header_length]
    doc = load_object(head, _HINT)
    tensor = _one(doc, "inputs", "input tensor", required=True)
    binary = body[header_length:] if header_length is not None else b""
    items = _items(tensor, input_type, max_items, binary)
    params = _parameters(doc, "the request")
    binary_out = params.get("binary_data_output") is True
    name = "output"
    wanted = _one(doc, "outputs", "output tensor", required=False)
    if wanted is not None:
        name = _string(wanted, "name", "the requested output")
        given = _parameters(wanted, f"output '{name}'").get("binary_data")
        if given is not None:
            binary_out = given is True
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError('"id" must be a string: it is echoed in the response')
    if pin is None and "version" in params:
        pin = version_pin(params)
    return items, InferShape(request_id, name, binary_out), None, pin


def _one(doc: dict[str, Any], field: str, what: str, *, required: bool) -> Any:
    """The one tensor of ``doc[field]`` (an app has one input and one output)."""
    tensors = doc.get(field)
    if tensors is None and not required:
        return None
    if not isinstance(tensors, list) or not tensors:
        raise InputError(f'"{field}" must be a list of one {what}: send {_HINT}')
    if len(tensors) != 1:
        raise InputError(f'"{field}" has {len(tensors)} tensors: an app has one {what}, send one')
    tensor = tensors[0]
    if not isinstance(tensor, dict):
        raise InputError(f'"{field}"[0] must be a JSON object: send {_HINT}')
    return tensor


def _parameters(doc: dict[str, Any], where: str) -> dict[str, Any]:
    params = doc.get("parameters", {})
    if not isinstance(params, dict):
        raise InputError(f'"parameters" of {where} must be a JSON object')
    return params


def _string(doc: dict[str, Any], field: str, where: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str):
        raise InputError(f'{where} needs "{field}" as a string')
    return value


def _items(
    tensor: dict[str, Any], input_type: InputType, max_items: int, binary: bytes
) -> list[Item]:
    name = _string(tensor, "name", "the input tensor")
    datatype = _string(tensor, "datatype", f"input '{name}'")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise InputError(f"input '{name}' needs \"shape\" as a list of sizes, [N, ...]: N queries")
    takes = TAKES[input_type]
    if datatype not in takes:
        known = "" if datatype in _KNOWN else " (not a datatype of the protocol)"
        raise InputError(
            f"input '{name}' is {datatype}{known}; an app of input type '{input_type}' "
            f"takes {', '.join(takes)}"
        )
    n = shape[0]
    if n == 0:
        raise InputError(f"input '{name}' has shape {shape}: N must be at least 1 query")
    if n > max_items:
        raise TooManyItemsError(
            f"input '{name}' holds {n} queries, over the limit of {max_items} per request: "
            "split it into smaller requests"
        )
    count = math.prod(shape)  # exact: a huge size just fails to match the data below
    per = count // n
    if datatype != "BYTES" and per == 0:
        raise InputError(f"input '{name}' has shape {shape}: each query needs a number")
    if datatype == "BYTES" and per != 1:
        raise InputError(
            f"input '{name}' has shape {shape}: a BYTES input is one element per query, "
            "shape [N] or [N, 1]"
        )
    params = _parameters(tensor, f"input '{name}'")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
            raise InputError(
                f"input '{name}' says binary_data_size {size!r}, but {len(binary)} bytes "
                "follow the JSON header"
            )
        if datatype == "BYTES":
            elements = _binary_bytes(binary, n, name)
        else:
            return _binary_numbers(binary, datatype, input_type, shape, n, name)
    else:
        if binary:
            raise InputError(
                f"{len(binary)} bytes follow the JSON header, but input '{name}' has no "
                "binary_data_size parameter"
            )
        if "data" not in tensor:
            raise InputError(f"input '{name}' has no \"data\" (nor binary_data_size)")
        if datatype == "BYTES":
            elements = _json_strings(tensor["data"], n, name)
        else:
            return _json_numbers(tensor["data"], datatype, input_type, shape, n, name)
    return [_element(e, input_type, name, i) for i, e in enumerate(elements)]


def _rows(arr: np.ndarray[Any, Any], n: int, input_type: InputType) -> list[Item]:
    dtype = input_type.dtype
    assert dtype is not None
    flat = arr.astype(dtype, copy=False).reshape(n, -1)
    return list(flat)


def _binary_numbers(
    binary: bytes, datatype: str, input_type: InputType, shape: list[int], n: int, name: str
) -> list[Item]:
    dtype = _DTYPES[datatype]
    count = math.prod(shape)
    if len(binary) != count * dtype.itemsize:
        raise InputError(
            f"input '{name}' of shape {shape} as {datatype} is {count * dtype.itemsize} "
            f"bytes, but {len(binary)} were sent"
        )
    arr = np.frombuffer(binary, dtype)
    if datatype == "BF16":  # the top half of a float32: widened exactly
        arr = (arr.astype("<u4") << 16).view("<f4")
    return _checked(arr, datatype, input_type, n, name)


def _json_numbers(
    data: Any, datatype: str, input_type: InputType, shape: list[int], n: int, name: str
) -> list[Item]:
    if not isinstance(data, list):
        raise InputError(f"input '{name}' needs \"data\" as a list of numbers")
    try:
        arr = np.array(data)
    except (ValueError, OverflowError):
        raise InputError(
            f"input '{name}': \"data\" must be numbers in the tensor's shape"
        ) from None
    count = math.prod(shape)
    if arr.size != count:
        raise InputError(
            f"input '{name}' of shape {shape} has {count} elements, but \"data\" holds {arr.size}"
        )
    kind = arr.dtype.kind
    integral = datatype in _INTS
    if kind not in ("iu" if integral else "iuf"):
        if kind == "f" and integral:
            found = "non-integer numbers"
        elif kind == "O" and integral:
            found = "integers outside 64 bits, or values of mixed types"
        else:
            found = {"b": "booleans", "U": "strings"}.get(kind, "values of mixed types")
        raise InputError(f"input '{name}' is {datatype}, but its \"data\" holds {found}")
    if integral:
        info = np.iinfo(_DTYPES[datatype])
        if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
            raise InputError(f"input '{name}' has a value outside the range of {datatype}")
    return _checked(arr.reshape(-1), datatype, input_type, n, name)


def _checked(
    arr: np.ndarray[Any, Any], datatype: str, input_type: InputType, n: int, name: str
) -> list[Item]:
    """``arr``'s rows as the app's items, refusing a value its type cannot hold."""
    if input_type is InputType.INTS:
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > _INT64_MAX:
            raise InputError(
                f"input '{name}' has a {datatype} value past the 64-bit range of 'ints'"
            )
        return _rows(arr, n, input_type)
    dtype = input_type.dtype
    assert dtype is not None
    wide = arr.astype(np.float64, copy=False)
    limit = float(np.finfo(dtype).max)
    fits = np.abs(wide) <= limit  # False for NaN too
    if not fits.all():
        i = int(np.argmin(fits))
        raise InputError(
            f"input '{name}' element {i} is {float(wide[i])!r}, outside the range of "
            f"'{input_type}' ({dtype.itemsize * 8}-bit floats): send finite numbers"
        )
    return _rows(arr, n, input_type)


_LENGTH = struct.Struct("<I")


def _binary_bytes(binary: bytes, n: int, name: str) -> list[bytes]:
    """N BYTES elements, each a 4-byte little-endian length and that many bytes."""
    view = memoryview(binary)
    elements: list[bytes] = []
    at = 0
    for i in range(n):
        if at + 4 > len(binary):
            raise InputError(f"input '{name}': its binary data ends before element {i}")
        (length,) = _LENGTH.unpack_from(binary, at)
        at += 4
        if at + length > len(binary):
            raise InputError(
                f"input '{name}': element {i} says {length} bytes, past the data's end"
            )
        elements.append(bytes(view[at : at + length]))
        at += length
    if at != len(binary):
        raise InputError(
            f"input '{name}': {len(binary) - at} bytes left after its {n} BYTES elements"
        )
    return elements


def _json_strings(data: Any, n: int, name: str) -> list[bytes]:
    flat = data
    while isinstance(flat, list) and len(flat) == 1 and isinstance(flat[0], list):
        flat = flat[0]  # [[...]]: nested in its shape
    if isinstance(flat, list) and flat and all(isinstance(e, list) for e in flat):
        flat = [e[0] if len(e) == 1 else e for e in flat]  # shape [N, 1], nested
    if not isinstance(flat, list) or len(flat) != n:
        raise InputError(f"input '{name}' needs \"data\" as a list of {n} strings")
    if not all(isinstance(e, str) for e in flat):
        raise InputError(f"input '{name}' is BYTES: its \"data\" must be strings")
    return [e.encode("utf-8") for e in flat]


def _element(raw: bytes, input_type: InputType, name: str, i: int) -> Item:
    """One BYTES element as the app's item."""
    if input_type is InputType.BYTES:
        return raw
    if input_type is InputType.STRINGS:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(
                f"input '{name}' element {i} is not UTF-8: an app of input type 'strings' "
                "takes text"
            ) from None
        return raw
    try:  # json: checked as a predict request's input would be, and sent as orjson writes it
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(
            f"input '{name}' element {i} is not a JSON text ({exc}): an app of input type "
            "'json' takes one JSON value per element"
        ) from None
    if depth_over(raw):
        raise InputError(f"input '{name}' element {i}: {_TOO_DEEP}")
    return orjson.dumps(value)


def _raw_item(body: bytes, input_type: InputType) -> Item:
    """A raw binary request (``Inference-Header-Content-Length: 0``): the body is one
    query, the app's own datatype's bytes (numeric) or one element's bytes."""
    dtype = input_type.dtype
    if dtype is None:
        return _element(body, input_type, "input", 0)
    if not body or len(body) % dtype.itemsize:
        raise InputError(
            f"a raw binary body for an app of input type '{input_type}' is a whole number "
            f"of {datatype_of(input_type)} values ({dtype.itemsize} bytes each); got "
            f"{len(body)} bytes"
        )
    return _checked(np.frombuffer(body, dtype), datatype_of(input_type), input_type, 1, "input")[0]
