"""One request and its response on a connection of ``http.protocol.FrontendProtocol``:
the ASGI ``receive`` and ``send`` the handlers are given.

The protocol feeds the request's body in (``feed``, ``end``); ``receive`` hands it out
(everything that has arrived, in one message: the usual body arrives with its headers,
so the handler's first ``receive`` returns at once). ``send`` turns the handler's
``http.response.start`` and ``http.response.body`` into bytes: a response whose body
comes in one message (every response of the query frontend) is written with one
``write``; a streamed one, with its ``content-length`` as given, else chunked
(HTTP/1.1) or delimited by closing the connection (HTTP/1.0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from query_frontend.http.asgi import Message, Reply

__all__ = ["STATUS_LINES", "Exchange", "ResponseError"]

STATUS_LINES = {
    int(s): b"HTTP/1.1 %d %b\r\n" % (int(s), s.phrase.encode("latin-1")) for s in HTTPStatus
}

#: Body bytes a handler may leave unread before the connection stops reading.
READ_AHEAD = 64 * 1024

_DISCONNECT: Message = {"type": "http.disconnect"}
_JSON_TYPE = b"content-type: application/json\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class ResponseError(RuntimeError):
    """A handler sent ASGI messages out of order."""


class Exchange:
    """A request being received and answered (see the module). ``on_done(exchange)`` is
    called once the response's last byte is written (or the client is gone)."""

    __slots__ = (
        "_chunks",
        "_ended",
        "_head",
        "_length_given",
        "_paused",
        "_streaming",
        "_waiter",
        "body_done",
        "connection",
        "disconnected",
        "expect_continue",
        "head_done",
        "head_only",
        "headers",
        "keep_alive",
        "method",
        "on_done",
        "response_done",
        "response_started",
        "unread",
        "url",
        "version",
    )

    def __init__(self, connection: Any, on_done: Callable[[Exchange], None]) -> None:
        self.connection = connection  # the protocol: its transport, loop, reading switch
        self.on_done = on_done
        self.method = b""
        self.url = b""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.body_done = False
        self.keep_alive = True
        self.head_only = False  # HEAD: no body in the response
        self.expect_continue = False
        self.disconnected = False
        self.response_started = False
        self.response_done = False
        self.unread = 0  # body bytes received and not yet handed out
        self._chunks: list[bytes] = []
        self._ended = False  # the body's last message handed out
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._head: bytes = b""
        self._streaming = False
        self._length_given = False

    # The protocol's side: the request's body as it arrives.

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self.unread += len(chunk)
        if self.unread > READ_AHEAD and not self._paused:
            self._paused = True
            self.connection.pause_reading()
        self._wake()

    def end(self) -> None:
        self.body_done = True
        self._wake()

    def lost(self) -> None:
        """The connection closed: a handler waiting for the body sees http.disconnect,
        and what it sends is dropped."""
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # The handler's side: ASGI.

    async def receive(self) -> Message:
        while True:
            if self._chunks:
                chunks = self._chunks
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._chunks = []
                self.unread = 0
                self._ended = self.body_done
                if self._paused:
                    self._paused = False
                    self.connection.resume_reading()
                return {"type": "http.request", "body": body, "more_body": not self.body_done}
            if self.disconnected or self.response_done:
                return _DISCONNECT
            if self.body_done and not self._ended:  # the end of a body (or an empty one)
                self._ended = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if not self.body_done and self.expect_continue:
                self.expect_continue = False
                self.connection.write(_CONTINUE)
            # The body still to come; or, all of it read, the client's going away.
            waiter = self._waiter = self.connection.loop.create_future()
            await waiter

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.response_started:
                raise ResponseError("http.response.start sent twice")
            self.response_started = True
            self._head = self._head_lines(message["status"], message.get("headers", ()))
            return
        if kind != "http.response.body":
            raise ResponseError(f"unexpected ASGI message {kind!r}")
        if not self.response_started or self.response_done:
            raise ResponseError("http.response.body before http.response.start or after the end")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self.disconnected:
            if not more:
                self._finish()
            return
        write = self.connection.write
        head = self._head
        if head:  # the first body message: the head goes with it
            self._head = b""
            head = self._end_head(head, None if more else len(body))
            if self.head_only:
                body = b""
            if self._streaming and body:
                body = b"%x\r\n%b\r\n" % (len(body), body)
            write(head + body if body else head)
        elif body and not self.head_only:
            write(b"%x\r\n%b\r\n" % (len(body), body) if self._streaming else body)
        if not more:
            if self._streaming and not self.head_only:
                write(b"0\r\n\r\n")
            self._finish()

    def respond(self, reply: Reply) -> None:
        """Send ``reply`` (a hot-path handler's answer), whole, in one write."""
        if self.response_started:
            raise ResponseError("a response was sent already")
        self.response_started = True
        if not self.disconnected:
            status, body, extra = reply
            if extra:  # its own content-type first, if it has one (asgi.Reply)
                head = _status_line(status)
                if extra[0][0] != b"content-type":
                    head += _JSON_TYPE
                for name, value in extra:
                    head += b"%b: %b\r\n" % (name, value)
            else:
                head = _status_line(status) + _JSON_TYPE
            head = self._end_head(head + self.connection.default_headers(), len(body))
            self.connection.write(head if self.head_only else head + body)
        self._finish()

    def give_up(self) -> None:
        """No response will be sent (the client left, or the handler failed): the
        connection is done with this request."""
        self.keep_alive = False
        self._finish()

    def _finish(self) -> None:
        if not self.response_done:
            self.response_done = True
            self._chunks = []  # a body not read is not kept; what is still to come, dropped
            if self._paused:
                self._paused = False
                self.connection.resume_reading()
            self._wake()
            self.on_done(self)

    def _head_lines(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        """The status line and the handler's headers (``connection: close`` noted, not
        copied: ``_end_head`` adds it)."""
        parts = [_status_line(status)]
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                self._length_given = True
            elif lower == b"connection":
                if value.lower() == b"close":
                    self.keep_alive = False
                continue
            _check_header(name, value)
            parts.append(b"%b: %b\r\n" % (name, value))
        parts.append(self.connection.default_headers())
        return b"".join(parts)

    def _end_head(self, head: bytes, length: int | None) -> bytes:
        """``head`` completed: the body's framing (``length``: a body sent whole) and
        whether the connection stays open, read now (a drain may have begun)."""
        if self.expect_continue and not self.body_done:
            # Refused before its client sent the body it announced: whether it sends
            # it anyway cannot be known, so the connection cannot go on.
            self.keep_alive = False
        if not self._length_given:
            if length is not None:
                head += b"content-length: %d\r\n" % length
            elif self.version == "1.0" or self.head_only:  # no chunked encoding: the close ends it
                self.keep_alive = False
            else:
                self._streaming = True
                head += b"transfer-encoding: chunked\r\n"
        if not self.keep_alive:
            return head + b"connection: close\r\n\r\n"
        return head + b"\r\n"


def _status_line(status: int) -> bytes:
    return STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status


def _check_header(name: bytes, value: bytes) -> None:
    """A header a handler set must not split the response (CR or LF in it)."""
    if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value or b":" in name:
        raise ResponseError(f"invalid response header {name!r}")
