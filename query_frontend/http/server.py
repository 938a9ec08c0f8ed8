"""The query frontend's HTTP server: uvicorn's, serving our protocol (``http.protocol``)
on a port it may share with other query frontends (SO_REUSEPORT), draining gracefully
on SIGTERM.

Sharing a port: ``listeners(host, port)`` binds the port with ``SO_REUSEPORT``, and every
frontend process that does the same (same user) listens on it too; the kernel spreads
new connections over them. A frontend that dies or drains stops getting new connections
and the others keep answering.

Draining: uvicorn's own shutdown does most of it, and this builds on it. On SIGTERM it
closes the listener at once (new connections are refused, or go to the frontends still
sharing the port), lets every request already accepted finish — the queries waiting in
batching included, since the RPC side and the batchers live in the lifespan, which
shuts down only after — and calls each connection's ``shutdown``: a busy one says
``Connection: close`` with its response, an idle one stays open
``http.protocol.DRAIN_GRACE_S`` for a request its client may already have sent (under
load it often has), answered with ``Connection: close``. It waits for them up to
``timeout_graceful_shutdown`` (``--drain-timeout``), then cancels what is left. What
this module adds:

- ``DrainingServer``: the listeners close at the signal, on the loop's next turn (not
  at uvicorn's next tick, up to 0.1 s on), and only then do responses say
  ``Connection: close``: a client told so connects again at once, and that connection
  must reach a frontend that still serves, not sit in this listener's queue until it
  closes (see below). ``/healthz`` answers 503 "draining" from then on (for a
  readiness probe on a connection still open), and a drain started by SIGTERM ends in
  exit status 0: uvicorn would raise the signal again once done, and the process would
  die of it (status -15), which a supervisor cannot tell from a crash.

Connections that were in the kernel's accept queue, not yet accepted, when the listener
closes are reset: with several frontends on one port, Linux can hand them to another
listener instead (``sysctl net.ipv4.tcp_migrate_req=1``, Linux 5.14+).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

__all__ = ["DrainingServer", "listeners"]

logger = logging.getLogger(__name__)


def listeners(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to ``port`` on every address ``host`` names, with ``SO_REUSEPORT``
    (and ``SO_REUSEADDR``): other processes may bind the same port the same way."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("this platform has no SO_REUSEPORT: run one query frontend per port")
    addresses = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in addresses:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class DrainingServer(uvicorn.Server):
    """uvicorn's server, closing its listeners and then calling ``on_drain`` as soon as
    a signal starts its shutdown, and exiting 0 after a drain started by SIGTERM (see
    the module)."""

    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_drain = on_drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listening: list[socket.socket] = []

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._listening = list(sockets or [])
        await super().startup(sockets=sockets)
        self._loop = asyncio.get_running_loop()  # listening now: a signal closes them

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            logger.info(
                "signal %d: draining (no new connections; answering the requests accepted, "
                "for up to %g s)",
                sig,
                self.config.timeout_graceful_shutdown or 0,
            )
            loop = self._loop
            if loop is None or loop.is_closed():  # not listening: uvicorn's shutdown closes
                self._on_drain()
            else:  # a signal handler: the loop does it, at its next turn
                loop.call_soon_threadsafe(self._stop_listening)
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:  # a completed drain is a clean exit, not death by signal
            with contextlib.suppress(AttributeError, ValueError):
                self._captured_signals.remove(sig)

    def _stop_listening(self) -> None:
        """Close the listeners, then say that the frontend drains: uvicorn would close
        them only at its next tick (up to 0.1 s on), and every response meanwhile says
        ``Connection: close`` (``on_drain``), so its client connects again, and, with
        frontends sharing the port, the kernel may queue that connection on this
        listener: reset at its close, its request lost. Closed first, it goes to a
        frontend that still serves."""
        for server in getattr(self, "servers", ()):
            server.close()
        for sock in self._listening:
            sock.close()
        self._on_drain()
