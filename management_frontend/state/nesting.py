"""How deeply a JSON request body nests, measured on its bytes without parsing it.

A request body of either API may nest at most ``MAX_JSON_DEPTH`` (32) arrays and
objects: the management API checks before parsing (a parser recurses: a million ``[``
would break it first), the query frontend after orjson accepted the body (orjson parses
up to 1024 levels but encodes only 254, and a JSON input is encoded again for the wire:
without a limit, a body nested 255 to 1024 deep was accepted and then failed as a 500).
``too_deep(limit)`` is the sentence both answer with.

The check runs on every request, at C speed and without walking a document (a few
milliseconds for a 10 MB body, a fifth of parsing it; a microsecond for a small one).
On the bytes: escaped backslashes and quotes are dropped, so that every quote left
opens or closes a string; ``bytes.translate`` drops everything but quotes and brackets;
a body left with no more marks than the limit cannot nest deeper; else the depth is the
running sum of the brackets outside strings, in numpy.
"""

from __future__ import annotations

import numpy as np

from management_frontend.state.rules import MAX_JSON_DEPTH

__all__ = ["MAX_JSON_DEPTH", "depth_over", "nesting_depth", "too_deep"]

_DROP = bytes(c for c in range(256) if c not in b'"[]{}')
_STEP = np.zeros(256, dtype=np.int32)  # +1 opens, -1 closes, 0 a quote
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


def too_deep(limit: int = MAX_JSON_DEPTH) -> str:
    """What a body nested deeper than ``limit`` is told."""
    return (
        f"the request body is nested deeper than {limit} levels: nest lists and objects at "
        f"most {limit} deep"
    )


def depth_over(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``body`` nests arrays and objects deeper than ``limit``
    levels (``{"a": [1]}`` is 2 deep). Brackets inside strings do not count; a text that
    is not JSON gets an answer the parser will overrule."""
    if body.count(b"[") + body.count(b"{") <= limit:  # the usual body: too few to nest
        return False
    marks = _marks(body)
    return len(marks) > limit and _deepest(marks) > limit


def nesting_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in the valid JSON document ``body``."""
    return _deepest(_marks(body))


def _marks(body: bytes) -> bytes:
    """The quotes and brackets of ``body``, without the escaped quotes of its strings."""
    if b"\\" in body:  # only inside strings: pairs first, then what escapes a quote
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    return body.translate(None, _DROP)


def _deepest(found: bytes) -> int:
    marks = np.frombuffer(found, dtype=np.uint8)
    if b'"' in found:  # keep the brackets after an even number of quotes
        quotes = marks == ord('"')
        marks = marks[(np.cumsum(quotes, dtype=np.int32) & 1 == 0) & ~quotes]
    if not marks.size:
        return 0
    return int(np.cumsum(_STEP[marks]).max())
