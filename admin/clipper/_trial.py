"""What ``ClipperConnection.test_predict_function`` passes a function: exactly the batch a
replica would, built from a query body's JSON inputs by the wire protocol's own packing
(``model_container.protocol``), or ``None`` when an input does not have the elements of
its input type (Clipper answered those with a message string)."""

from __future__ import annotations

from typing import Any

import numpy as np

from admin._names import check_input_type
from model_container import protocol

__all__ = ["batch_of"]

_ELEMENT_TYPES: dict[str, type | tuple[type, ...]] = {
    "ints": int,
    "floats": float,
    "doubles": float,
    "bytes": bytes,
    "strings": str,
}


def batch_of(inputs: list[Any], input_type: str) -> Any:
    """What a replica's function receives for these inputs (``protocol.unpack_inputs``),
    or ``None`` if an input does not have the type's elements."""
    kind = protocol.InputType(check_input_type(input_type))
    if kind is protocol.InputType.JSON:
        items = [protocol.dump_output(x) for x in inputs]
        return protocol.unpack_inputs(kind, *protocol.pack_items(items))
    element = _ELEMENT_TYPES[str(kind)]
    if kind.dtype is not None:
        if not all(isinstance(x, list) and all(_is(e, element) for e in x) for x in inputs):
            return None
        arrays = [np.asarray(x, dtype=kind.dtype) for x in inputs]
        lengths, data = protocol.pack_arrays(arrays, kind.dtype)
        return protocol.unpack_inputs(kind, lengths, data.tobytes())
    if not all(isinstance(x, element) for x in inputs):
        return None
    items = [x.encode() if isinstance(x, str) else bytes(x) for x in inputs]
    return protocol.unpack_inputs(kind, *protocol.pack_items(items))


def _is(value: object, element: type | tuple[type, ...]) -> bool:
    return isinstance(value, element) and not isinstance(value, bool)
