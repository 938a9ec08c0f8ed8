"""Clipper's rule for string outputs: a string that is a JSON document is answered as
that JSON value (``"1"`` as ``1``, ``"[1, 2]"`` as a list), any other string as itself.

Clipper's query frontend applied the rule to every answer, defaults included. Schooner's
frontends answer with what the model returned, so the drop-in applies the rule where
its models and apps are made: ``json_outputs`` wraps a closure before it is pickled,
and ``default_value`` turns an app's default output into the value Clipper would show.
The native API (``admin.deployers``) leaves outputs as the model returns them.

The wrapper runs in the model container, where ``admin`` is not installed: it is a
function defined inside ``json_outputs``, which cloudpickle always pickles by value,
and it refers to nothing of this package (it imports ``json`` when called).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["default_value", "json_outputs", "json_value"]


def json_value(text: str) -> Any:
    """``text`` as the JSON value it spells, or ``text`` itself if it spells none.

    ``NaN`` and ``Infinity`` are not JSON (an answer cannot carry them): they stay text.
    """
    try:
        value = json.loads(text)
        json.dumps(value, allow_nan=False)  # ValueError for a NaN or an infinity in it
    except (ValueError, RecursionError):
        return text
    return value


def default_value(default_output: Any) -> Any:
    """An app's default output as Clipper answers it: a string that is JSON, as its value."""
    return json_value(default_output) if isinstance(default_output, str) else default_output


def json_outputs(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``func`` whose string outputs that are JSON documents become their JSON values.

    A numpy array of strings (or objects) counts as a list of its elements; outputs of
    other types, and a result that is not a list, tuple or such an array (numbers in an
    array, or what the model container refuses with its own message), pass through
    unchanged.
    """

    def clipper_outputs(inputs: Any) -> Any:
        import json as _json

        def value(out: Any) -> Any:
            if not isinstance(out, str):
                return out
            try:
                parsed = _json.loads(out)
                _json.dumps(parsed, allow_nan=False)  # NaN and infinities are not JSON
            except (ValueError, RecursionError):
                return out
            return parsed

        outputs = func(inputs)
        kind = getattr(getattr(outputs, "dtype", None), "kind", "")
        if kind in ("U", "O") and hasattr(outputs, "tolist"):  # a numpy array of strings
            outputs = outputs.tolist()
        if isinstance(outputs, list | tuple):
            return [value(out) for out in outputs]
        return outputs

    clipper_outputs.__doc__ = getattr(func, "__doc__", None)
    return clipper_outputs
