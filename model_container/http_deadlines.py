"""Slow clients cannot hold an HTTP server's connections: deadlines for a request's
headers and for its body, mixed into uvicorn's HTTP protocol by both frontends.

uvicorn closes a connection that idles between requests (``timeout_keep_alive``) but
arms nothing while a request is arriving: a client that opens a connection and never
finishes its headers holds it for ever, and a few hundred such clients hold the server's
file descriptors (slowloris). ``deadline_protocol(HttpToolsProtocol, ...)`` makes a
protocol that closes a connection whose request headers have not all arrived
``header_timeout_s`` after the request began (after the connection opened, for its first
request), answering 408; and one whose body has not all arrived ``body_timeout_s`` after
its headers did (the request's handler sees the client gone).

The hot path pays next to nothing: after each chunk, what the connection waits for is
read off uvicorn's own state (a few attribute reads); a request whose headers and body
arrive in the chunk that starts it (the usual case) arms no timer and cancels none. A
connection arms one timer when it opens; a request that arrives in pieces arms one per
phase, never one per chunk, so a client trickling a byte at a time cannot push its
deadline back.

It lives here, the one package both frontends may import, and imports no uvicorn (this
package goes into every model image): the frontends pass uvicorn's protocol class in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger(__name__)

HEADERS, BODY, NOTHING = "headers", "body", ""
_WHY = b"the request headers did not all arrive in time\n"
#: The answer to a request whose headers came too late (the query frontend sends it too).
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\n%b\r\n%b" % (
    b"content-type: text/plain\r\ncontent-length: %d\r\nconnection: close\r\n" % len(_WHY),
    _WHY,
)


class RequestDeadlines:
    """Deadlines for headers and body (see the module), for a subclass of uvicorn's
    ``HttpToolsProtocol``: it reads that protocol's ``scope``, ``cycle``, ``transport``,
    ``loop`` and ``client`` and extends its asyncio callbacks."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0
    # What uvicorn's protocol provides.
    scope: Any
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timed = NOTHING  # what the running timer waits for
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._retime(HEADERS)

    def connection_lost(self, exc: Exception | None) -> None:
        self._retime(NOTHING)
        super().connection_lost(exc)  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
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
            self.transport.write(TIMED_OUT)
        self.transport.close()  # a handler reading the body sees http.disconnect


def deadline_protocol(base: type[Any], header_timeout_s: float, body_timeout_s: float) -> type[Any]:
    """The protocol class to give uvicorn (``http=``): ``base`` (uvicorn's
    ``HttpToolsProtocol``) with these deadlines."""
    return type(
        f"Deadline{base.__name__}",
        (RequestDeadlines, base),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )
