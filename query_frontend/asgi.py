"""The bare-ASGI plumbing the hot-path handlers share: reading a body, sending JSON.

``predict`` and ``update`` are served without a web framework (see ``predict.py`` for
why); this is the little of one they need.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON_HEADERS = ((b"content-type", b"application/json"),)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    extra = tuple((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
    return Reply(status, orjson.dumps({"error": code, "message": message}), extra)


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(reply.body)), *reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


class BodyTooLargeError(Exception):
    pass


class ClientGoneError(Exception):
    pass


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body; ``BodyTooLargeError`` past ``limit`` bytes, ``ClientGoneError``
    if the client disconnected."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise BodyTooLargeError
            break
    message = await receive()
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError
            chunks.append(chunk)
        body = b"".join(chunks)
    if message["type"] == "http.disconnect":
        raise ClientGoneError
    if len(body) > limit:
        raise BodyTooLargeError
    return body
