"""Parsing and validating prediction request bodies into the items a batch carries.

A numeric input becomes a 1-d numpy array of the app's dtype; bytes, strings and JSON
inputs become the bytes that travel on the wire. Every failure is an ``InputError``
whose message says what to send instead: among them a body nested deeper than
``MAX_JSON_DEPTH`` (``management_frontend.state.nesting``), and a number that does not
fit the app's type (an integer past 64 bits for ``ints``, a number past the float32 range
for ``floats``, which would otherwise become infinity).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
import orjson

from management_frontend.state import rules
from management_frontend.state.errors import InvalidValue
from management_frontend.state.nesting import depth_over, too_deep
from model_container.protocol import InputType
from query_frontend.queries import Item

_NUMERIC_KINDS: dict[InputType, str] = {
    InputType.INTS: "iu",
    InputType.FLOATS: "iuf",
    InputType.DOUBLES: "iuf",
}
_INT64_MAX = np.iinfo(np.int64).max
_INT64_END = 2.0**63  # the first float past int64 (the float of _INT64_MAX rounds to it)

#: The largest finite value of each float dtype, and the size of an input checked with
#: Python floats rather than numpy ufuncs (each costs ~1 µs however small the array).
_FLOAT_MAX: dict[np.dtype[Any], float] = {}
_SMALL = 256

_SHAPE_HINT = '{"input": ...} or {"input_batch": [...]}'
_TOO_DEEP = too_deep()


class InputError(ValueError):
    """The request body cannot be turned into inputs for the app."""


class TooManyItemsError(InputError):
    """An input_batch longer than the frontend accepts in one request."""


def parse_body(
    body: bytes, input_type: InputType, max_items: int = 10_000
) -> tuple[list[Item], bool]:
    """Return the inputs of a request body and whether it was a batch request."""
    return items_of(load_object(body), input_type, max_items)


def parse_request(
    body: bytes, input_type: InputType, max_items: int = 10_000
) -> tuple[list[Item], bool, str | None, str | None]:
    """The inputs of a predict request body, whether it was a batch request, its
    optional uid (``user_id``) and its optional version pin (``version_pin``)."""
    doc = load_object(body)
    items, is_batch = items_of(doc, input_type, max_items)
    if len(doc) == 1:  # the usual body, "input" alone: neither a uid nor a pin to look for
        return items, is_batch, None, None
    return items, is_batch, user_id(doc), version_pin(doc)


def load_object(body: bytes, hint: str = _SHAPE_HINT) -> dict[str, Any]:
    """The request body as a JSON object."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own, past 1024 levels
            raise InputError(_TOO_DEEP) from None
        raise InputError(f"request body is not valid JSON ({exc}); send {hint}") from None
    if depth_over(body):
        raise InputError(_TOO_DEEP)
    if not isinstance(doc, dict):
        raise InputError(f"request body must be a JSON object: {hint}")
    return doc


def user_id(doc: dict[str, Any]) -> str | None:
    """The optional "uid" of a request: whose policy state applies."""
    if "uid" not in doc:
        return None
    try:
        return rules.check_user_id(doc["uid"])
    except InvalidValue as exc:
        raise InputError(str(exc)) from None


#: The longest version a pin may name (a version's own limit: ``state.rules``).
MAX_VERSION_LENGTH = rules.MAX_NAME_LENGTH


def version_pin(doc: dict[str, Any]) -> str | None:
    """The optional "version" of a predict request: the version of the app's model that
    must answer (Clipper sends it as a string or an integer)."""
    value = doc.get("version")
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_VERSION_LENGTH:
        return value
    raise InputError(
        f'"version" must be a version of the app\'s model, as a string or an integer '
        f"(got {str(value)[:40]!r}); leave it out to let the app choose"
    )


def items_of(
    doc: dict[str, Any], input_type: InputType, max_items: int = 10_000
) -> tuple[list[Item], bool]:
    """The inputs of a predict request and whether it was a batch request."""
    has_input, has_batch = "input" in doc, "input_batch" in doc
    if has_input and has_batch:
        raise InputError('send either "input" or "input_batch", not both')
    if has_input:
        return [convert(doc["input"], input_type, "input")], False
    if has_batch:
        batch = doc["input_batch"]
        if not isinstance(batch, list) or not batch:
            raise InputError('"input_batch" must be a non-empty JSON list of inputs')
        if len(batch) > max_items:
            raise TooManyItemsError(
                f'"input_batch" holds {len(batch)} inputs, over the limit of {max_items} '
                "per request: split it into smaller requests"
            )
        return [convert(v, input_type, f"input_batch[{i}]") for i, v in enumerate(batch)], True
    raise InputError(f'request body has no "input" or "input_batch" field: send {_SHAPE_HINT}')


def convert(value: Any, input_type: InputType, where: str) -> Item:
    """Convert one JSON input value to its wire item, checking it fits the input type."""
    dtype = input_type.dtype
    if dtype is not None:
        return _numeric(value, input_type, dtype, where)
    if input_type is InputType.STRINGS:
        if not isinstance(value, str):
            raise InputError(f"{where} must be a JSON string for input type 'strings'")
        return value.encode("utf-8")
    if input_type is InputType.BYTES:
        if not isinstance(value, str):
            raise InputError(f"{where} must be a base64 string for input type 'bytes'")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"{where} is not valid base64 (input type 'bytes')") from None
    return orjson.dumps(value)


def from_output(output: bytes, input_type: InputType) -> Item:
    """A model's output (its JSON text) as an input of ``input_type``: what a client's
    ``"input"`` of that value would be (a pipeline's stage feeding the next).
    ``InputError`` says why it cannot be."""
    if input_type is InputType.JSON:
        return output  # already the JSON text a json input travels as
    try:
        value = orjson.loads(output)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"it is not JSON ({exc})") from None
    return convert(value, input_type, "the output")


def _integral_beyond_int64(arr: np.ndarray[Any, Any]) -> bool:
    # Integers past 64 bits arrive as Python ints (object arrays) or, from orjson, as floats.
    if arr.dtype.kind == "O":
        return all(isinstance(v, int) and not isinstance(v, bool) for v in arr.tolist())
    if arr.dtype.kind == "f":
        return bool(np.all(np.mod(arr, 1) == 0) and np.any(np.abs(arr) >= _INT64_END))
    return False


def _numeric(value: Any, input_type: InputType, dtype: np.dtype[Any], where: str) -> Item:
    noun = "integers" if input_type is InputType.INTS else "numbers"
    if not isinstance(value, list) or not value:
        raise InputError(f"{where} must be a non-empty JSON list of {noun} for '{input_type}'")
    try:
        arr = np.array(value)
    except (ValueError, OverflowError):
        raise InputError(f"{where} must be a flat list of {noun} for '{input_type}'") from None
    if arr.ndim != 1:
        raise InputError(f"{where} must be a flat list of {noun}, not nested lists")
    kind = arr.dtype.kind
    if kind not in _NUMERIC_KINDS[input_type]:
        if input_type is InputType.INTS and _integral_beyond_int64(arr):
            raise InputError(f"{where} has an integer outside the 64-bit range of 'ints'")
        found = {"b": "booleans", "f": "non-integer numbers", "U": "strings"}.get(kind, "values")
        raise InputError(f"{where} must be a list of {noun} for '{input_type}', found {found}")
    if kind == "u" and input_type is InputType.INTS and int(arr.max()) > _INT64_MAX:
        raise InputError(f"{where} has an integer outside the 64-bit range of 'ints'")
    if kind == "f":
        _check_range(arr, value, input_type, dtype, where)
    return arr.astype(dtype, copy=False)


def _check_range(
    arr: np.ndarray[Any, Any], values: list[Any], input_type: InputType, dtype: Any, where: str
) -> None:
    """Refuse a number that would not be finite as ``dtype`` (past float32 for 'floats';
    NaN or infinity, should a parser ever let one through). ``values``: ``arr``'s JSON
    numbers, as parsed."""
    limit = _FLOAT_MAX.get(dtype)
    if limit is None:
        limit = _FLOAT_MAX[dtype] = float(np.finfo(dtype).max)
    if arr.size <= _SMALL and sum(map(abs, values)) <= limit:
        # The usual query, a few numbers: a sum of Python floats costs a fraction of the
        # ufuncs below. Enough (every value's magnitude is at most the sum); a NaN, an
        # infinity or a sum past the limit falls through to the exact check.
        return
    fits = np.abs(arr) <= limit  # False for NaN too
    if fits.all():
        return
    i = int(np.argmin(fits))
    raise InputError(
        f"{where}[{i}] is {float(arr[i])!r}, outside the range of '{input_type}' "
        f"({dtype.itemsize * 8}-bit floats): send numbers between {-limit:.8g} and {limit:.8g}"
    )
