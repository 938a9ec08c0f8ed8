"""One DEALER connection from a replica to the query frontend's ROUTER.

A ``FrontendLink`` is a socket and its connection-event monitor, used only by the
serving loop's thread. Sends never block: the socket has ``ZMQ_IMMEDIATE`` set, so while
no connection is up a send fails at once (``send`` returns False) instead of queueing
stale HELLOs and heartbeats for a frontend that may come back with no memory of them.
The monitor reports when a connection completes its handshake (send HELLO now, rather
than at the next retry) and when it drops (the frontend is gone: re-register).

A link is never reused across registrations: when the frontend is lost the serving
loop closes it with linger 0, dropping whatever was queued, and opens a new one, which
also gives the replica a fresh ZeroMQ identity at the frontend.

``Link`` is what a session needs of a link, whatever the transport: ``FrontendLink``
here, ``unix_link.UnixLink`` for a frontend at ``unix://PATH``; ``open_link`` picks one
by the address.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from typing import Protocol

import zmq
from zmq.utils.monitor import recv_monitor_message

from model_container import protocol
from model_container.protocol import Message
from model_container.rpc_keys import ClientKeys

logger = logging.getLogger(__name__)

Context = zmq.Context[zmq.Socket[bytes]]


class LinkEvent(enum.Enum):
    CONNECTED = "connected"  # a connection completed its ZMTP handshake
    DISCONNECTED = "disconnected"  # an established connection dropped
    REFUSED = "refused"  # the handshake failed: the peer refused our keys, or we its


_EVENTS: dict[int, LinkEvent] = {
    int(zmq.EVENT_HANDSHAKE_SUCCEEDED): LinkEvent.CONNECTED,
    int(zmq.EVENT_DISCONNECTED): LinkEvent.DISCONNECTED,
    int(zmq.EVENT_HANDSHAKE_FAILED_AUTH): LinkEvent.REFUSED,
    int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL): LinkEvent.REFUSED,
    int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL): LinkEvent.REFUSED,
}
_MONITORED = 0
for _event in _EVENTS:
    _MONITORED |= _event


Ready = dict[zmq.Socket[bytes] | int, int]  # what ``zmq.Poller.poll`` reported


class Link(Protocol):
    """One connection (attempt) to a frontend, used by the thread running the loop."""

    address: str
    # Why the last handshake was refused (logged once by the session on REFUSED).
    refusal: str

    @property
    def dials_on_send(self) -> bool:
        """True if the link connects on a send (HELLO) rather than in the background."""
        ...

    @property
    def backlog(self) -> int:
        """Messages received and waiting for ``recv``: the poll must not sleep."""
        ...

    def attach(self, poller: zmq.Poller) -> None: ...

    def detach(self) -> None: ...

    def ready(self, ready: Ready) -> bool:
        """Act on the poll's report; whether ``recv`` may have a message."""
        ...

    def events(self, ready: Ready) -> list[LinkEvent]: ...

    def send(self, msg: Message) -> bool: ...

    def send_frames(self, frames: Sequence[protocol.Frame | zmq.Frame]) -> bool: ...

    def recv(self) -> Sequence[protocol.Frame] | None: ...

    def close(self, linger_ms: int = 0) -> None: ...


class FrontendLink:
    """A connected DEALER socket to ``address`` plus its event monitor; with ``keys`` a
    CURVE client of the frontend (``rpc_keys``), without them plain ZeroMQ."""

    dials_on_send = False  # libzmq connects (and reconnects) in the background
    backlog = 0  # libzmq holds what arrived; the poll reports it
    refusal = (
        "the frontend refused this replica's keys or this replica the frontend's (are "
        "both from the same cluster's secrets directory, and both with or both without "
        "--insecure-rpc?)"
    )

    def __init__(self, context: Context, address: str, keys: ClientKeys | None) -> None:
        self.address = address
        self.socket: zmq.Socket[bytes] = context.socket(zmq.DEALER)
        try:
            self.socket.setsockopt(zmq.LINGER, 0)
            self.socket.setsockopt(zmq.IMMEDIATE, 1)
            if keys is not None:
                keys.apply(self.socket)
            if address.startswith("tcp://["):
                # An IPv6 literal (DNS discovery yields them): without this option libzmq
                # never connects to it. Host names keep resolving to IPv4, as before.
                self.socket.setsockopt(zmq.IPV6, 1)
            self.monitor: zmq.Socket[bytes] = self.socket.get_monitor_socket(_MONITORED)
            self.monitor.setsockopt(zmq.LINGER, 0)
            self.socket.connect(address)
        except BaseException:
            self.socket.close(linger=0)
            raise
        self.closed = False
        self._poller: zmq.Poller | None = None

    def attach(self, poller: zmq.Poller) -> None:
        self._poller = poller
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)

    def detach(self) -> None:
        if self._poller is not None:
            self._poller.unregister(self.socket)
            self._poller.unregister(self.monitor)
            self._poller = None

    def ready(self, ready: Ready) -> bool:
        return self.socket in ready

    def send(self, msg: Message) -> bool:
        """Send a message; False (and nothing queued) if no connection can take it now."""
        return self.send_frames(protocol.encode(msg))

    def send_frames(self, frames: Sequence[protocol.Frame | zmq.Frame]) -> bool:
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def recv(self) -> list[memoryview] | None:
        """The frames of the next waiting message, or None if there is none."""
        try:
            frames = self.socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        return [frame.buffer for frame in frames]

    def events(self, ready: Ready | None = None) -> list[LinkEvent]:
        """Drain the monitor (if the poll reported it): the connection events since the
        last call."""
        if ready is not None and self.monitor not in ready:
            return []
        out: list[LinkEvent] = []
        while True:
            try:
                event = recv_monitor_message(self.monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                return out
            kind = _EVENTS.get(int(event["event"]))
            if kind is not None:
                out.append(kind)

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; ``linger_ms`` > 0 lets already-sent messages (GOODBYE) out."""
        if self.closed:
            return
        self.closed = True
        try:
            self.socket.disable_monitor()
        except zmq.ZMQError as exc:  # already stopped; nothing to undo
            logger.debug("disable_monitor: %s", exc)
        self.monitor.close(linger=0)
        self.socket.close(linger=linger_ms)
