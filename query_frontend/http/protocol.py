"""The query frontend's HTTP/1.1 connections: our own protocol on httptools, served by
uvicorn's server.

Why not uvicorn's protocol: at c=64 the query frontend is bound by its event loop's CPU
per request, and uvicorn's ``HttpToolsProtocol`` spends about 15 µs of it per request
on things this frontend does not need (a full ASGI scope and an ``asyncio.Event`` per
request, per-header regular expressions on every response, a keep-alive timer armed and
cancelled per request); a protocol doing the same HTTP work leaner answered a constant
2.2 times as fast on this machine (docs/performance.md). uvicorn still runs the server: the
listeners (``SO_REUSEPORT``), TLS, signals, the lifespan and the graceful shutdown,
which calls ``shutdown`` on every connection.

What a connection does:

- **Routes** ``POST /{app}/predict`` and ``POST /{app}/update`` to their handlers
  (``query_frontend.app.HANDLERS``), and, when no verb matched, ``POST /v2/...`` (the
  Open Inference Protocol's inference) to its own, given the headers and ASGI's
  ``receive``; each
  returns a ``Reply``, written with one ``write``. The handler's coroutine is run
  without a Task (``_drive``): most requests end in its first step (a cache hit, a
  refusal) or second (the model's answer). Everything else goes to the ASGI app
  (``FrontDoor``: health, status, metrics, 405s) with a full ASGI scope, as a Task.
- **Keep-alive and pipelining**: requests are answered one at a time, in order; a
  request that arrives while another is answered waits, and the connection stops
  reading until it is its turn. ``Connection: close``, HTTP/1.0 without keep-alive, an
  upgrade request and a response sent before its request's body was all read end the
  connection after the response.
- **Deadlines** (slowloris): a request's headers must all arrive ``header_timeout_s``
  after it began (after the connection opened, for the first: else 408 and close), its
  body ``body_timeout_s`` after its headers did; an idle keep-alive connection closes
  after ``keep_alive_s``. One timer per connection, re-armed only when it fires: a
  request costs no timer.
- **Limits**: headers (with the request line) past ``MAX_HEAD_BYTES`` get 431; a
  malformed request 400; both close the connection. A body the handler does not read is
  not buffered past ``exchange.READ_AHEAD`` (reading pauses); the handlers enforce the
  body limits (413) as before.
- **Draining**: on shutdown a busy connection closes after its response (which says
  ``Connection: close``); an idle one stays open ``DRAIN_GRACE_S`` for a request its
  client may already have sent, answered with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from typing import Any, Protocol

import httptools

from model_container.http_deadlines import TIMED_OUT
from query_frontend.http.asgi import Headers, Receive, Reply, Scope, Send
from query_frontend.http.exchange import Exchange
from query_frontend.http.state import FrontendState

__all__ = ["DRAIN_GRACE_S", "MAX_HEAD_BYTES", "FrontendProtocol", "frontend_protocol"]

logger = logging.getLogger(__name__)

#: How long an idle keep-alive connection stays open once a drain begins.
DRAIN_GRACE_S = 2.0
#: Bytes of a request line and headers past which a request is refused (431).
MAX_HEAD_BYTES = 64 * 1024


class Door(Protocol):
    """What the protocol serves: ``FrontDoor`` (``query_frontend.app``)."""

    state: FrontendState | None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


#: A hot-path handler: the reply to ``POST /{app}/{verb}`` (``None``: the client left).
Handler = Callable[[FrontendState, str, Headers, Receive], Coroutine[Any, Any, Reply | None]]


def _plain(status: bytes, why: bytes) -> bytes:
    return b"HTTP/1.1 %b\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n%b%b" % (
        status,
        len(why),
        b"connection: close\r\n\r\n",
        why,
    )


_BAD_REQUEST = _plain(b"400 Bad Request", b"malformed HTTP request\n")
_TOO_LARGE_HEAD = _plain(
    b"431 Request Header Fields Too Large",
    b"the request line and headers are over %d bytes\n" % MAX_HEAD_BYTES,
)


class _HeadTooLargeError(Exception):
    pass


_SERVER_ERROR = _plain(b"500 Internal Server Error", b"internal server error\n")


class FrontendProtocol(asyncio.Protocol):
    """One HTTP connection of the query frontend (see the module). Built by uvicorn's
    server: ``frontend_protocol`` makes the class with the door, handlers and timeouts."""

    door: Door
    handlers: Mapping[bytes, Handler]
    by_prefix: Mapping[bytes, Handler] = {}  # set by frontend_protocol
    header_timeout_s = 10.0
    body_timeout_s = 30.0
    drain_grace_s = DRAIN_GRACE_S

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.loop = _loop or asyncio.get_event_loop()
        self.keep_alive_s: float = config.timeout_keep_alive
        self.root_path: str = config.root_path
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.app_state = app_state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: Exchange | None = None  # the request being received
        self.active: Exchange | None = None  # the request being answered
        self.ready: Exchange | None = None  # headers in, to answer once this chunk is parsed
        self.waiting: deque[Exchange] = deque()  # received (pipelined), to answer next
        self.head_size = 0  # bytes of the request line and headers parsed so far
        self.partial_head = 0  # bytes read since, the head still unfinished
        self.refusal: bytes | None = None  # the last answer, once a request is refused
        self.advancing = False
        self.heads = 0  # request heads parsed on this connection
        self.began = 0.0  # when the request being received began
        self.head_at = 0.0  # when its headers were complete
        self.idle_since = 0.0
        self.closing_after = False  # close once the responses under way are out
        self.read_paused = False
        self.write_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self._default_headers: Any = None
        self._default_bytes = b""

    _peer: str | None = None
    _peer_address: Any = None

    def peer(self) -> str | None:
        """The client's ``host:port`` (the access log's ``client``). Its address is read
        once, when the connection is made: uvloop asks the kernel each time, and cannot
        once the connection is closed (a client gone before its answer is logged too)."""
        if self._peer is None:
            address = self._peer_address
            ok = isinstance(address, tuple | list) and len(address) >= 2
            self._peer = f"{address[0]}:{address[1]}" if ok else ""
        return self._peer or None

    # asyncio's callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's: not a subclass
        self._peer_address = transport.get_extra_info("peername")
        self.connections.add(self)
        self.began = self.idle_since = self.loop.time()
        self._arm(min(self.header_timeout_s, self.keep_alive_s))

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for exchange in (self.active, self.ready, self.parsing, *self.waiting):
            if exchange is not None:
                exchange.lost()
        self.waiting.clear()
        self.parsing = self.ready = None

    def eof_received(self) -> bool | None:
        # The client sent all it will: answer what it asked, then close.
        self.closing_after = True
        busy = self.active is not None or self.ready is not None or self.waiting
        return True if busy else None

    def data_received(self, data: bytes) -> None:
        if self.refusal is not None:
            return  # what follows a refused request is not read
        current = self.parsing
        in_head = current is not None and not current.head_done
        heads = self.heads
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol upgrades here: the request is answered in HTTP/1.1, and what
            # follows it is not read as another request.
            self.closing_after = True
            if self.parsing is not None:
                self._refuse(_BAD_REQUEST)
        except httptools.HttpParserError as exc:
            too_large = isinstance(exc.__context__, _HeadTooLargeError)
            self._refuse(_TOO_LARGE_HEAD if too_large else _BAD_REQUEST)
        else:
            # Bytes of an unfinished head that the parser holds, uncounted until its
            # header is complete: a read wholly inside one head (one that continued it,
            # or began it at a request's boundary with no other head in it). Only a read
            # a head begins in after other requests is not counted: at most one read
            # more than the limit is ever held.
            parsing = self.parsing
            unfinished = parsing is not None and not parsing.head_done
            whole = (in_head and parsing is current) or (current is None and heads == self.heads)
            if unfinished and whole:
                self.partial_head += len(data)
                if self.head_size + self.partial_head > MAX_HEAD_BYTES:
                    self._refuse(_TOO_LARGE_HEAD)
        ready = self.ready
        if ready is not None:  # started now, with whatever of its body came with it
            self.ready = None
            self._start(ready)

    def pause_writing(self) -> None:
        # The client does not read its responses: stop reading its requests.
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.read_paused and self.refusal is None:
            self.transport.resume_reading()

    # httptools' callbacks

    def on_message_begin(self) -> None:
        self.began = self.loop.time()
        self.head_size = self.partial_head = 0
        self.parsing = Exchange(self, self._answered)

    def on_url(self, url: bytes) -> None:
        self.parsing.url += url  # type: ignore[union-attr]  # a message has begun
        self.head_size += len(url)
        self.partial_head = 0  # counted here now

    def on_header(self, name: bytes, value: bytes) -> None:
        self.parsing.headers.append((name.lower(), value.rstrip(b" \t")))  # type: ignore[union-attr]
        self.head_size += len(name) + len(value) + 4
        self.partial_head = 0

    def on_headers_complete(self) -> None:
        exchange = self.parsing
        assert exchange is not None
        if self.head_size > MAX_HEAD_BYTES:
            raise _HeadTooLargeError  # feed_data raises it on: answered 431
        self.heads += 1
        self.head_at = self.loop.time()
        exchange.head_done = True
        parser = self.parser
        exchange.method = method = parser.get_method()
        exchange.version = version = parser.get_http_version()
        exchange.keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        exchange.head_only = method == b"HEAD"
        if version != "1.0":  # HTTP/1.0 clients know no 100 Continue
            for name, value in exchange.headers:
                if name == b"expect" and value.lower() == b"100-continue":
                    exchange.expect_continue = True
        if self.active is None and self.ready is None:
            # Started once this chunk is parsed: the usual request's body is in it, and
            # its handler then runs in one go, without waiting for the body.
            self.ready = exchange
        else:  # pipelined: answered once the responses before it are out
            self.waiting.append(exchange)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None and not exchange.response_done:
            exchange.feed(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self.parsing = None
        if exchange is not None:
            exchange.end()

    # Requests and responses

    def _start(self, exchange: Exchange) -> None:
        """Answer ``exchange``: a hot-path request by its handler, the rest by the door."""
        self.active = exchange
        state = self.door.state
        if state is not None and state.draining:
            exchange.keep_alive = False
        url = exchange.url
        if exchange.method == b"POST" and state is not None and b"?" not in url and b"%" not in url:
            name, _, verb = url[1:].partition(b"/")
            handler = self.handlers.get(verb)
            if handler is not None and name:
                app_name = name.decode("utf-8", "replace")
                self._drive(exchange, handler(state, app_name, exchange.headers, exchange.receive))
                return
            handler = self.by_prefix.get(name)  # POST /v2/...: looked for only on a miss
            if handler is not None:
                rest = verb.decode("utf-8", "replace")
                self._drive(exchange, handler(state, rest, exchange.headers, exchange.receive))
                return
        scope = self._scope(exchange)
        task = self.loop.create_task(self.door(scope, exchange.receive, exchange.send))
        self.tasks.add(task)
        task.add_done_callback(partial(self._ran, exchange))

    def _drive(self, exchange: Exchange, coro: Coroutine[Any, Any, Reply | None]) -> None:
        """Run a hot-path handler's coroutine as a Task would, without one: each step
        runs when the future it awaits is done. Handlers must not need
        ``asyncio.current_task()`` (``asyncio.timeout``, ``TaskGroup``)."""
        try:
            awaited = coro.send(None)
        except StopIteration as done:
            reply = done.value
            if reply is None:  # the client left
                exchange.give_up()
            else:
                exchange.respond(reply)
            return
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # one request's failure, not the server's
            self._failed(exchange, exc)
            return
        if getattr(awaited, "_asyncio_future_blocking", None):
            awaited._asyncio_future_blocking = False
            awaited.add_done_callback(partial(self._resume, exchange, coro))
        elif awaited is None:  # a bare yield (asyncio.sleep(0))
            self.loop.call_soon(self._drive, exchange, coro)
        else:
            coro.close()
            self._failed(exchange, RuntimeError(f"a handler awaited {awaited!r}, not a future"))

    def _resume(
        self, exchange: Exchange, coro: Coroutine[Any, Any, Reply | None], _: object
    ) -> None:
        self._drive(exchange, coro)

    def _failed(self, exchange: Exchange, exc: BaseException) -> None:
        if not isinstance(exc, asyncio.CancelledError):
            logger.error("request handler failed", exc_info=exc)
        if not exchange.response_started:
            self.write(_SERVER_ERROR)
        self.transport.close()
        exchange.give_up()

    def _scope(self, exchange: Exchange) -> Scope:
        """The ASGI scope of a request for the door."""
        parsed = httptools.parse_url(exchange.url)
        raw_path: bytes = parsed.path
        path = raw_path.decode("utf-8", "replace")
        if "%" in path:
            path = urllib.parse.unquote(path)
        transport = self.transport
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": exchange.version,
            "method": exchange.method.decode("ascii", "replace"),
            "scheme": "https" if transport.get_extra_info("sslcontext") else "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": parsed.query or b"",
            "root_path": self.root_path,
            "headers": exchange.headers,
            "server": _address(transport.get_extra_info("sockname")),
            "client": _address(transport.get_extra_info("peername")),
            "state": self.app_state.copy(),
        }

    def _ran(self, exchange: Exchange, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            exc: BaseException | None = asyncio.CancelledError()
        else:
            exc = task.exception()
        if exc is not None:
            self._failed(exchange, exc)
        elif not exchange.response_done:  # the app ended without finishing its response
            self.transport.close()
            exchange.give_up()

    def _answered(self, exchange: Exchange) -> None:
        """``exchange``'s response is out: the next request's turn, or idle time."""
        if exchange is not self.active:
            return
        self.active = None
        # A body the handler did not read is read on and dropped (its client would not
        # see the response if the connection closed with it unread); the body deadline
        # bounds how long that takes.
        if not exchange.keep_alive or self.transport.is_closing():
            self.transport.close()
            return
        if self.waiting:
            self._next()
            return
        if self.closing_after:  # all answered: a refusal is the last word, if any
            if self.refusal is not None:
                self.write(self.refusal)
            self.transport.close()
            return
        self.idle_since = self.loop.time()

    def _next(self) -> None:
        """Answer the pipelined requests in turn: in a loop, not by recursion (each one
        answered at once, from the cache, would start the next from inside itself)."""
        if self.advancing:
            return
        self.advancing = True
        try:
            while self.active is None and self.waiting:
                self._start(self.waiting.popleft())
        finally:
            self.advancing = False
        if not self.waiting:
            self.resume_reading()

    def write(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    def default_headers(self) -> bytes:
        """uvicorn's default headers (``date``), as bytes, rebuilt when uvicorn renews them
        (each second)."""
        headers = self.server_state.default_headers
        if headers is not self._default_headers:
            self._default_headers = headers
            self._default_bytes = b"".join(b"%b: %b\r\n" % (n, v) for n, v in headers)
        return self._default_bytes

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self.write_paused and self.refusal is None:
                self.transport.resume_reading()

    def _refuse(self, response: bytes) -> None:
        """Stop reading; answer ``response`` (it says ``Connection: close``) after the
        requests received before it, and close."""
        self.parsing = None
        self.refusal = response
        self.closing_after = True
        self.transport.pause_reading()
        if self.active is None and self.ready is None and not self.waiting:
            self.write(response)
            self.transport.close()

    # Deadlines and draining

    def _arm(self, delay: float) -> None:
        self.timer = self.loop.call_later(max(delay, 0.0), self._check)

    def _check(self) -> None:
        """The connection's one timer (see the module): close it if what it waits for
        from its client is late, else sleep until the next time it could be."""
        self.timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        parsing = self.parsing
        if parsing is not None and not parsing.head_done:
            due = self.began + self.header_timeout_s
            late = TIMED_OUT
        elif parsing is not None and not parsing.body_done:
            due, late = self.head_at + self.body_timeout_s, b""
        elif self.active is not None or self.waiting:
            self._arm(self.header_timeout_s)  # our turn, not the client's
            return
        elif self.heads == 0:  # the first request has not begun
            due, late = self.began + self.header_timeout_s, TIMED_OUT
        else:
            due, late = self.idle_since + self.keep_alive_s, b""
        if now < due:
            self._arm(due - now)
            return
        peer = self.transport.get_extra_info("peername")
        logger.debug("closing %s: its client was too slow", peer)
        if late and (self.active is None or self.active.response_done):
            self.write(late)
        self.transport.close()  # a handler reading the body sees http.disconnect

    def shutdown(self) -> None:
        """uvicorn's server drains: close after the response under way, or after a grace
        for a request an idle connection's client may already have sent."""
        self.closing_after = True
        if self.active is None and self.parsing is None:
            self.loop.call_later(self.drain_grace_s, self._close_if_idle)
        elif self.active is not None:
            self.active.keep_alive = False

    def _close_if_idle(self) -> None:
        if self.active is None and self.parsing is None and not self.transport.is_closing():
            self.transport.close()


def _address(info: Any) -> tuple[str, int] | None:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


def frontend_protocol(
    door: Door,
    handlers: Mapping[bytes, Handler],
    header_timeout_s: float,
    body_timeout_s: float,
    by_prefix: Mapping[bytes, Handler] | None = None,
) -> type[FrontendProtocol]:
    """The protocol class to give uvicorn (``http=``): ``handlers`` by the verb of
    ``POST /{app}/{verb}``; ``by_prefix``, by the first segment of a POST no verb
    matched, given the rest of the path as their second argument."""
    return type(
        "QueryFrontendProtocol",
        (FrontendProtocol,),
        {
            "door": door,
            "handlers": handlers,
            "by_prefix": by_prefix or {},
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
        },
    )
