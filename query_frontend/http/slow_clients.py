"""Slow clients cannot hold the query frontend's connections: uvicorn's HTTP protocol
with a deadline for a request's headers and one for its body.

uvicorn closes a connection that idles between requests (``timeout_keep_alive``) but
arms nothing while a request is arriving: a client that opens a connection and never
finishes its headers holds it for ever, and a few hundred such clients hold the server's
file descriptors (slowloris). This protocol closes a connection whose request headers
have not all arrived ``header_timeout_s`` after the request began (after the connection
opened, for its first request), answering 408; and one whose body has not all arrived
``body_timeout_s`` after its headers did (the request's handler sees the client gone).

The hot path pays next to nothing: after each chunk, what the connection waits for is
read off uvicorn's own state (a few attribute reads); a request whose headers and body
arrive in the chunk that starts it (the usual case) arms no timer and cancels none. A
connection arms one timer when it opens; a request that arrives in pieces arms one per
phase, never one per chunk, so a client trickling a byte at a time cannot push its
deadline back.

The management frontend has the same protocol (``management_frontend/api/slow_clients.py``):
the two frontends share no module that may import uvicorn, so each keeps its copy; keep
them in step.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

HEADERS, BODY, NOTHING = "headers", "body", ""
_WHY = b"the request headers did not all arrive in time\n"
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\n%b\r\n%b" % (
    b"content-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n" % len(_WHY),
    _WHY,
)


class DeadlineProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with deadlines for headers and body (see the module)."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timed = NOTHING  # what the running timer waits for
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._retime(HEADERS)

    def connection_lost(self, exc: Exception | None) -> None:
        self._retime(NOTHING)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        awaiting = self._awaiting()
        if awaiting != self._timed:
            self._retime(awaiting)

    def _awaiting(self) -> str:
        """What the connection waits for from its client, read from the parser's state:
        ``on_message_begin`` starts a scope, ``on_headers_complete`` gives it a method
        and starts a cycle, ``on_message_complete`` ends the cycle's body."""
        scope = self.scope
        if scope is None or "method" not in scope:
            return HEADERS
        cycle = self.cycle
        return BODY if cycle is not None and cycle.scope is scope and cycle.more_body else NOTHING

    def _retime(self, awaiting: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timed = awaiting
        if awaiting == NOTHING or self.transport.is_closing():
            return
        timeout = self.header_timeout_s if awaiting == HEADERS else self.body_timeout_s
        self._timer = self.loop.call_later(timeout, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        # Debug only: a flood of these is what an attack looks like, not news.
        logger.debug("closing %s: its request %s did not arrive in time", self.client, self._timed)
        if self._timed == HEADERS:  # no response has begun: say why before closing
            self.transport.write(_TIMED_OUT)
        self.transport.close()  # a handler reading the body sees http.disconnect


def deadline_protocol(header_timeout_s: float, body_timeout_s: float) -> type[DeadlineProtocol]:
    """The protocol class to give uvicorn (``http=``), with these deadlines."""
    return type(
        "DeadlineProtocol",
        (DeadlineProtocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )
