"""The direct unix-socket transport: a replica's link to a frontend at ``unix://PATH``.

``UnixLink`` does for a frontend on the same host what ``connection.FrontendLink`` does
over ZeroMQ, without libzmq's I/O threads: one non-blocking ``AF_UNIX`` ``SOCK_STREAM``
socket, read and written by whichever thread runs the serving loop, each RPC message
framed by ``framing`` (``docs/wire-protocol.md`` §1.3). The session uses it through the
same interface (``connection.Link``).

* **Connect** happens on a send (the session's HELLO, at the HELLO backoff), not in the
  background: while nobody listens at PATH (ENOENT, ECONNREFUSED: the frontend is not up
  yet or restarting) ``send`` returns False and nothing is queued, like a DEALER with
  ``ZMQ_IMMEDIATE``; the link logs that once per outage. Once connected, the listener's
  uid (``SO_PEERCRED``) must be this process's, else the link closes the socket and
  reports ``LinkEvent.REFUSED`` (no CURVE here: the kernel carries the bytes between two
  processes of one user; the socket file's directory has mode 0700 besides). There is
  no CONNECTED event: the HELLO that dialled is the first message on the socket. A link
  connects once: after its connection ends it stays closed and the session opens a
  new one (as a new DEALER gets a new identity at the frontend).
* **Sends** are tried at once; whatever the kernel does not take waits, in order, in the
  link's own buffer, flushed when the poll reports POLLOUT (the fd is registered for
  POLLOUT only while something waits). A send never blocks the serving thread, except
  ``close(linger_ms)`` at shutdown, which gives a buffered GOODBYE that long to leave.
  Above ``max_buffered`` bytes waiting, a send is refused (False), as a DEALER at its
  high-water mark drops the message: a frontend that stops reading is found by its
  heartbeats' silence.
* **Reads** take what the socket holds into a buffer and hand complete messages one by
  one (``recv``); messages read but not yet handed out keep ``backlog`` > 0, and the
  session makes the loop's poll return at once while they do.
* EOF, ECONNRESET, EPIPE or a stream that breaks the framing (``FramingError``, logged
  without its bytes) end the connection: ``LinkEvent.DISCONNECTED``, and the session
  replaces the link as after a ZeroMQ disconnect.

Threads: the serving thread and the stand-in (``standin``) touch a link only while
holding ``StandIn.lock``, so the link's buffers and socket need no lock of their own.
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import select
import socket
import time
from collections.abc import Sequence
from typing import Final

import zmq

from model_container import framing, protocol
from model_container.connection import LinkEvent
from model_container.framing import peer_uid
from model_container.protocol import Message

logger = logging.getLogger(__name__)

SCHEME: Final = "unix://"
READ_SIZE: Final = 256 * 1024  # bytes taken from the socket per read
DEFAULT_MAX_BUFFERED: Final = 64 * 1024 * 1024  # bytes waiting to be sent, at most
# The peer is gone (or the stream is unusable): the connection is over.
_GONE: Final = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ESHUTDOWN})


class UnixLink:
    """A link to the frontend listening at ``address`` (``unix://PATH``)."""

    dials_on_send = True  # connects on a send: the HELLO backoff paces the attempts

    def __init__(self, address: str, max_buffered: int = DEFAULT_MAX_BUFFERED) -> None:
        if not address.startswith(SCHEME):
            raise ValueError(f"not a unix:// address: {address!r}")
        self.address = address
        self.path = address[len(SCHEME) :]
        self.refusal = ""  # why the last connection was refused
        self.closed = False
        self._max_buffered = max_buffered
        self._sock: socket.socket | None = None
        self._fd = -1
        self._poller: zmq.Poller | None = None
        self._writing = False  # registered for POLLOUT
        self._out = bytearray()  # bytes the kernel has not taken yet
        self._reader = framing.MessageReader()
        self._inbox: collections.deque[list[bytes]] = collections.deque()
        self._chunk = bytearray(READ_SIZE)
        self._view = memoryview(self._chunk)
        self._events: list[LinkEvent] = []
        # The poll said there is input, and no read since came back short: reading again
        # would only fail with EAGAIN (the poll is level-triggered: it says so again).
        self._may_read = False
        self._unreachable_logged = False  # said the frontend is not there, this outage
        self._ended = False  # a connection was made and is over: the link is spent
        self._full_logged = False  # said the send buffer is full

    # ------------------------------------------------------------------ the poller

    def attach(self, poller: zmq.Poller) -> None:
        """Poll this link with ``poller`` (the serving loop's) from now on."""
        self._poller = poller
        if self._sock is not None:
            poller.register(self._fd, zmq.POLLIN)

    def detach(self) -> None:
        if self._poller is not None and self._sock is not None:
            self._poller.unregister(self._fd)
        self._poller = None
        self._writing = False

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def backlog(self) -> int:
        """Messages read from the socket and not yet handed out by ``recv``, and events
        not yet collected (a send that found the connection over): the loop must not
        sleep on them."""
        return len(self._inbox) + len(self._events)

    @property
    def buffered(self) -> int:
        """Bytes sent that the kernel has not taken yet."""
        return len(self._out)

    def ready(self, ready: dict[zmq.Socket[bytes] | int, int]) -> bool:
        """Act on what the poll reported (flush on POLLOUT); whether ``recv`` may have a
        message."""
        if self._sock is None:
            return False
        flags = ready.get(self._fd, 0)
        if flags & zmq.POLLOUT:
            self._flush()
        if flags & (zmq.POLLIN | zmq.POLLERR):
            self._may_read = True
        return self._may_read or bool(self._inbox)

    def events(self, ready: dict[zmq.Socket[bytes] | int, int]) -> list[LinkEvent]:
        """The connection events since the last call."""
        if not self._events:
            return []
        out, self._events = self._events, []
        return out

    # ------------------------------------------------------------------ sending

    def send(self, msg: Message) -> bool:
        """Send a message; False (and nothing queued) if no connection can take it now."""
        return self.send_frames(protocol.encode(msg))

    def send_frames(self, frames: Sequence[protocol.Frame | zmq.Frame]) -> bool:
        if self._sock is None and not self._dial():
            return False
        views = [f.buffer if isinstance(f, zmq.Frame) else f for f in frames]
        pieces = framing.encode_message(views)
        if self._out:
            if len(self._out) + sum(_nbytes(p) for p in pieces) > self._max_buffered:
                if not self._full_logged:  # once until the buffer drains
                    self._full_logged = True
                    logger.warning(
                        "the frontend at %s does not read: %d bytes wait; dropping messages",
                        self.address,
                        len(self._out),
                    )
                return False
            for piece in pieces:
                self._out += piece
            return True
        assert self._sock is not None
        try:
            sent = self._sock.sendmsg(pieces)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(exc)
            return False
        self._keep_unsent(pieces, sent)
        return True

    def _keep_unsent(self, pieces: Sequence[bytes | memoryview], sent: int) -> None:
        """Buffer what follows the first ``sent`` bytes of ``pieces`` (a copy: the
        caller's buffers may change once we return)."""
        for piece in pieces:
            size = _nbytes(piece)
            if sent >= size:
                sent -= size
                continue
            if sent:
                view = memoryview(piece)
                if view.format != "B" or view.ndim != 1:
                    view = view.cast("B")  # slice bytes, not items
                self._out += view[sent:]
            else:
                self._out += piece
            sent = 0
        if self._out:
            self._want_write(True)

    def _flush(self) -> None:
        sock = self._sock
        if sock is None or not self._out:
            self._want_write(False)
            return
        try:
            sent = sock.send(self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(exc)
            return
        del self._out[:sent]
        if not self._out:
            self._full_logged = False
            self._want_write(False)

    def _want_write(self, on: bool) -> None:
        if on == self._writing or self._poller is None or self._sock is None:
            return
        self._writing = on
        self._poller.register(self._fd, zmq.POLLIN | (zmq.POLLOUT if on else 0))

    # ------------------------------------------------------------------ receiving

    def recv(self) -> list[bytes] | None:
        """The frames of the next complete message, or None if none has arrived."""
        if not self._inbox and self._may_read and self._sock is not None:
            self._read()
        if self._inbox:
            return self._inbox.popleft()
        return None

    def _read(self) -> None:
        assert self._sock is not None
        try:
            n = self._sock.recv_into(self._chunk)
        except BlockingIOError:
            self._may_read = False
            return
        except OSError as exc:
            self._lost(exc)
            return
        if n == 0:
            self._lost(None)
            return
        self._may_read = n == READ_SIZE  # a short read took all there was
        try:
            self._inbox.extend(self._reader.feed(self._view[:n]))
        except framing.FramingError as exc:
            # The stream is out of step: nothing after this can be trusted. The error
            # says what the prefix announced, never the bytes.
            logger.warning("the frontend at %s broke the message framing: %s", self.address, exc)
            self._lost(None)

    # ------------------------------------------------------------------ lifecycle

    def _dial(self) -> bool:
        """Connect now; False (logged once per outage) if nobody listens, or if the
        listener is not of this uid (``LinkEvent.REFUSED``)."""
        if self.closed or self._ended:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.connect(self.path)
            uid = peer_uid(sock)
        except OSError as exc:
            sock.close()
            self._unreachable(exc)
            return False
        if uid != os.getuid():
            sock.close()
            self.refusal = (
                f"the socket at {self.path} is served by uid {uid}, not this replica's "
                f"uid {os.getuid()}: not a frontend of this cluster"
            )
            self._events.append(LinkEvent.REFUSED)
            return False
        if self._unreachable_logged:
            logger.info("connected to the frontend at %s", self.address)
        self._sock = sock
        self._fd = sock.fileno()
        if self._poller is not None:
            self._poller.register(self._fd, zmq.POLLIN)
        # No CONNECTED event: the HELLO that dialled is the first message on the socket.
        return True

    def _unreachable(self, exc: OSError) -> None:
        # ENOENT, ECONNREFUSED: not up yet, or restarting. EAGAIN: its backlog is full.
        if self._unreachable_logged:
            logger.debug("cannot connect to %s yet: %s", self.address, exc)
            return
        self._unreachable_logged = True
        logger.warning(
            "cannot connect to the frontend at %s (%s); retrying",
            self.address,
            exc.strerror or exc,
        )

    def _lost(self, exc: OSError | None) -> None:
        """The connection is over (``exc`` None: EOF or bad framing)."""
        if exc is not None and exc.errno not in _GONE:
            logger.warning("the connection to %s failed: %s", self.address, exc)
        else:
            logger.debug("the connection to %s ended: %s", self.address, exc or "EOF")
        self._drop_socket()
        self._ended = True
        self._events.append(LinkEvent.DISCONNECTED)

    def _drop_socket(self) -> None:
        sock = self._sock
        if sock is None:
            return
        if self._poller is not None:
            self._poller.unregister(self._fd)
        self._writing = False
        self._sock = None
        self._fd = -1
        self._out.clear()
        self._inbox.clear()
        self._may_read = False
        sock.close()

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket; ``linger_ms`` > 0 gives buffered bytes (a GOODBYE) that long
        to leave, blocking (only at shutdown)."""
        if self.closed:
            return
        self.closed = True
        if linger_ms > 0 and self._out and self._sock is not None:
            self._linger(linger_ms / 1000)
        self.detach()
        self._drop_socket()

    def _linger(self, budget_s: float) -> None:
        deadline = time.monotonic() + budget_s
        sock = self._sock
        if sock is None:
            return
        poll = select.poll()
        poll.register(self._fd, select.POLLOUT)
        while self._out:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if poll.poll(max(1, int(remaining * 1000))):
                try:
                    sent = sock.send(self._out)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                del self._out[:sent]


def _nbytes(piece: bytes | memoryview) -> int:
    return piece.nbytes if isinstance(piece, memoryview) else len(piece)
