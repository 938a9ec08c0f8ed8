"""The query frontend's request and response bodies, as the query client sends and reads
them: ``POST /{app}/predict`` and ``POST /{app}/update`` (README "Predicting").

Requests are encoded with orjson: numpy arrays and scalars travel as JSON numbers and
lists, ``bytes`` as base64 text (what input type ``bytes`` takes). Answers become frozen
``Prediction`` and ``UpdateResult`` values; each keeps the decoded body as ``raw``, so a
field this client does not know yet is still there to read. Nothing here does I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from admin._names import check_user_id, check_version
from admin.exceptions import InvalidRequestError, ManagementAPIError

JSONObject = dict[str, Any]


@dataclass(frozen=True)
class Prediction:
    """One answer of ``/{app}/predict``.

    ``output`` is the model's output, or the app's ``default_output`` when ``default`` is
    true; ``default_explanation`` then says why (no model linked, no replica, the
    latency objective passed, ...). ``models`` names the ``model:version`` whose answer
    this is (empty for a default). ``query_id`` is the frontend's id of the query, as in
    its logs. An ensemble that combined only some of its models' answers sets
    ``partial``, names the others in ``missing`` and says why in
    ``partial_explanation``. ``raw`` is the answer's JSON object as received.
    """

    output: Any
    default: bool = False
    default_explanation: str | None = None
    models: tuple[str, ...] = ()
    query_id: int | None = None
    partial: bool = False
    missing: tuple[str, ...] = ()
    partial_explanation: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class UpdateResult:
    """The answer of ``/{app}/update``: the feedback was stored and counts.

    ``models`` answered the input and were compared with the label, with ``losses`` by
    ``model:version``; ``missing`` did not answer in time. ``duplicate`` is true when a
    feedback with the same ``feedback_id`` had been counted before (this one was not
    counted again). ``raw`` is the answer's JSON object as received.
    """

    query_id: int | None
    models: tuple[str, ...] = ()
    losses: Mapping[str, float] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    duplicate: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


# ---------------------------------------------------------------------------- requests


def _encode_default(value: Any) -> Any:
    """What orjson cannot write itself: bytes (as base64), numpy arrays it refuses
    (non-contiguous, float16, ...) and numpy scalars."""
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(body: JSONObject) -> bytes:
    try:
        return orjson.dumps(body, default=_encode_default, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as exc:
        raise InvalidRequestError(
            f"the input is not JSON ({exc}): pass plain JSON values -- str, int, float, "
            "bool, None, lists and dicts of them -- numpy arrays, or bytes (sent as base64)"
        ) from exc


def _options(body: JSONObject, version: str | int | None, uid: str | int | None) -> JSONObject:
    if version is not None:
        body["version"] = check_version(version)
    if uid is not None:
        body["uid"] = check_user_id(uid)
    return body


def predict_body(x: Any, version: str | int | None, uid: str | int | None) -> bytes:
    return dumps(_options({"input": x}, version, uid))


def batch_body(xs: Any, version: str | int | None, uid: str | int | None) -> tuple[bytes, int]:
    """The body of a batch request, and how many inputs it holds."""
    if isinstance(xs, str | bytes | bytearray | Mapping) or not isinstance(
        xs, Sequence | np.ndarray
    ):
        raise InvalidRequestError(
            f"predict_batch takes a list of inputs, got {type(xs).__name__}: for one input "
            "call predict(app, x)"
        )
    if isinstance(xs, np.ndarray) and xs.ndim == 0:
        raise InvalidRequestError("predict_batch takes a list of inputs, got a numpy scalar")
    if len(xs) == 0:
        raise InvalidRequestError("predict_batch was given no inputs: pass at least one")
    items = xs if isinstance(xs, list | np.ndarray) else list(xs)
    return dumps(_options({"input_batch": items}, version, uid)), len(xs)


def update_body(x: Any, label: Any, uid: str | int | None, feedback_id: str | None) -> bytes:
    body = _options({"input": x, "label": label}, None, uid)
    if feedback_id is not None:
        if not isinstance(feedback_id, str) or not feedback_id:
            raise InvalidRequestError(
                f"feedback_id must be a non-empty string (an order id, a uuid4().hex), got "
                f"{feedback_id!r}: the frontend counts feedback with the same id once"
            )
        body["feedback_id"] = feedback_id
    return dumps(body)


# ---------------------------------------------------------------------------- answers


class NotAnAnswerError(ManagementAPIError):
    """A 2xx body that is not the answer asked for (raised as ``ManagementAPIError``)."""


def loads(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        raise NotAnAnswerError("the body is not JSON") from None


def _strings(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise NotAnAnswerError(f'"{name}" is not a list of strings')
    return tuple(value)


def _query_id(doc: Mapping[str, Any]) -> int | None:
    qid = doc.get("query_id")
    return qid if isinstance(qid, int) and not isinstance(qid, bool) else None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def prediction(doc: object) -> Prediction:
    if not isinstance(doc, dict) or "output" not in doc:
        raise NotAnAnswerError('it has no "output"')
    return Prediction(
        output=doc["output"],
        default=doc.get("default") is True,
        default_explanation=_text(doc.get("default_explanation")),
        models=_strings(doc.get("models"), "models"),
        query_id=_query_id(doc),
        partial=doc.get("partial") is True,
        missing=_strings(doc.get("missing"), "missing"),
        partial_explanation=_text(doc.get("partial_explanation")),
        raw=doc,
    )


def predictions(doc: object, count: int) -> list[Prediction]:
    """The answers of a batch request of ``count`` inputs, in the order of the inputs."""
    batch = doc.get("batch_predictions") if isinstance(doc, dict) else None
    if not isinstance(batch, list):
        raise NotAnAnswerError('it has no "batch_predictions" list')
    if len(batch) != count:
        raise NotAnAnswerError(f"it holds {len(batch)} answers for {count} inputs")
    return [prediction(item) for item in batch]


def update_result(doc: object) -> UpdateResult:
    if not isinstance(doc, dict) or "losses" not in doc:
        raise NotAnAnswerError('it has no "losses"')
    losses = doc["losses"]
    if not isinstance(losses, dict):
        raise NotAnAnswerError('"losses" is not an object')
    return UpdateResult(
        query_id=_query_id(doc),
        models=_strings(doc.get("models"), "models"),
        losses=losses,
        missing=_strings(doc.get("missing"), "missing"),
        duplicate=doc.get("duplicate") is True,
        raw=doc,
    )
