"""What the hot-path handlers share: reading a body through ASGI's ``receive``, the
``Reply`` they return (sent by ``http.protocol``, or through ASGI by ``send_reply``), a
query's deadline, and the replies to a request that is refused or that a model failed.

``predict`` and ``update`` are served without a web framework (see ``predict.py`` for
why); this is the little of one they need.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple

import orjson

from management_frontend.state.records import App
from query_frontend.batching.deadlines import answer_by
from query_frontend.batching.dispatch import OverloadedError, TooManyInputsError
from query_frontend.http.budget import BudgetFullError, Hold
from query_frontend.http.state import FrontendState
from query_frontend.queries import Failure

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: A request's headers, names in lower case (ASGI's ``scope["headers"]``).
Headers = list[tuple[bytes, bytes]]

_CONTENT_TYPE = (b"content-type", b"application/json")


class Reply(NamedTuple):
    """A response to send: a tuple, built in a fraction of a frozen dataclass's time.
    Its body is JSON unless its first extra header is a ``content-type``."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    extra = tuple((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
    return Reply(status, orjson.dumps({"error": code, "message": message}), extra)


async def send_reply(send: Send, reply: Reply) -> None:
    status, body, extra = reply
    length = (b"content-length", b"%d" % len(body))
    if extra and extra[0][0] == b"content-type":
        headers = (length, *extra)
    else:
        headers = (_CONTENT_TYPE, length, *extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def refused(
    exc: BodyTooLargeError | BudgetFullError | OverloadedError | TooManyInputsError,
) -> Reply:
    """The reply to a request too large to take (413), or that a model's queue or the
    frontend's budget of body bytes has no room for now (503: retry shortly)."""
    if isinstance(exc, OverloadedError):
        return error(503, "overloaded", f"{exc}; retry shortly", {"Retry-After": "1"})
    if isinstance(exc, BudgetFullError):
        return error(503, "overloaded", str(exc), {"Retry-After": "1"})
    return error(413, "too_large", str(exc))


def model_failed(qid: int, failure: Failure, app: App) -> Reply:
    """The 500 for a query its model failed: what an exception said only if ``app``
    sets ``expose_model_errors`` (else its type; the replica's log has the rest)."""
    return error(500, "model_error", f"query {qid}: {failure.told(app.expose_model_errors)}")


def deadline_for(state: FrontendState, app: App, arrival: float) -> float:
    """When the queries of a request to ``app`` that arrived at ``arrival`` (loop time)
    must be answered by (``batching.deadlines``)."""
    return answer_by(arrival, app.slo_micros / 1e6, state.dispatcher.timer_lag.lag(arrival))


class BodyTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is over the limit of {limit} bytes")


class ClientGoneError(Exception):
    pass


async def read_body(headers: Headers, receive: Receive, limit: int, hold: Hold) -> bytes:
    """The request body; ``BodyTooLargeError`` past ``limit`` bytes, ``BudgetFullError``
    if ``hold`` cannot take its bytes (its ``Content-Length`` before a byte of it is
    read; a body without one, chunk by chunk), ``ClientGoneError`` if the client
    disconnected. What ``hold`` took is the caller's to release."""
    declared = -1
    for name, value in headers:
        if name == b"content-length":
            if value.isdigit():
                declared = int(value)
                if declared > limit:
                    raise BodyTooLargeError(limit)
                hold.grow(declared)
            break
    message = await receive()
    body: bytes = message.get("body", b"")
    if declared < 0 and body:
        hold.grow(len(body))
    if message.get("more_body", False):
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(limit)
            if declared < 0:
                hold.grow(len(chunk))
            chunks.append(chunk)
        body = b"".join(chunks)  # once: adding chunk to chunk would copy the body again and again
    if message["type"] == "http.disconnect":
        raise ClientGoneError
    if len(body) > limit:
        raise BodyTooLargeError(limit)
    return body
