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
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence

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


class FrontendLink:
    """A connected DEALER socket to ``address`` plus its event monitor; with ``keys`` a
    CURVE client of the frontend (``rpc_keys``), without them plain ZeroMQ."""

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

    def events(self) -> list[LinkEvent]:
        """Drain the monitor: the connection events since the last call."""
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
