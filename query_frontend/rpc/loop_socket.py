"""Where the RPC ROUTER meets the event loop: its file descriptor, read on the loop's
own callback, and sends that never wait.

``zmq.asyncio`` makes a Future for every send and every receive, and wakes a task to
take each message: on the c=1 path that is a Future, a task step and an extra
``ZMQ_EVENTS`` read per hop. Here the loop calls ``_drain`` when the socket's
``ZMQ_FD`` turns readable, and ``_drain`` takes every waiting message with
``zmq.NOBLOCK`` and hands it to ``on_message`` in the same callback.

``ZMQ_FD`` is edge-triggered, and not by the arrival of a message but by libzmq
processing its commands, which any call on the socket may do, a send included: once a
send has swallowed the edge, the descriptor stays quiet although messages wait. So
``_drain`` reads until ``ZMQ_EVENTS`` says nothing waits, and a send made outside
``_drain`` (a batch dispatched from an HTTP request) asks ``ZMQ_EVENTS`` at once
(``unread``): if a message waits, one more ``_drain`` is planned for the next turn of
the loop (coalesced: one per turn, however many sends); if not, the edge is not spent,
and the next message raises it. ``_drain`` takes at most
``MAX_PER_TURN`` messages before letting the loop run other callbacks, then continues
on the next turn.

Sends use ``zmq.NOBLOCK``: the ROUTER has no high-water mark, so a send never waits; a
send to an identity whose connection is gone fails at once with EHOSTUNREACH
(``ZMQ_ROUTER_MANDATORY``), which the caller is told about through ``on_unreachable``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable, Sequence
from typing import Final, cast

import zmq

logger = logging.getLogger(__name__)

# Messages taken in one callback before the loop runs its other callbacks.
MAX_PER_TURN: Final = 256

OnMessage = Callable[[list[zmq.Frame]], None]


class LoopSocket:
    """A plain (not ``zmq.asyncio``) socket served from ``loop.add_reader``."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        on_message: OnMessage,
        on_unreachable: Callable[[bytes], None],
    ) -> None:
        self.sock = sock
        self._on_message = on_message
        self._on_unreachable = on_unreachable
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._draining = False
        self._drain_planned = False
        # When _drain last found no message waiting (``RpcServer._read_up_to``).
        self.drained_at = -float("inf")

    def start(self) -> None:
        """Watch the descriptor; call from the running event loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._fd = cast(int, self.sock.get(zmq.FD))
        loop.add_reader(self._fd, self._drain)
        # Messages that arrived before the reader was added raised no edge.
        self._plan_drain()

    def stop(self) -> None:
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
        self._loop = None
        self._fd = -1

    def send(self, identity: bytes, frames: Sequence[zmq.Frame | bytes | memoryview]) -> None:
        """Send one message to ``identity`` now; report EHOSTUNREACH, log other failures."""
        try:
            self.sock.send_multipart([identity, *frames], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:
                self._on_unreachable(identity)
            else:
                logger.warning("RPC send failed: %s", exc)
        if not self._draining:
            self.unread()

    def unread(self) -> bool:
        """Whether messages wait unread. Reading ``ZMQ_EVENTS`` may spend the edge that
        announced them, so a drain is planned for them here."""
        if not cast(int, self.sock.get(zmq.EVENTS)) & zmq.POLLIN:
            return False
        if not self._draining:
            self._plan_drain()
        return True

    def _plan_drain(self) -> None:
        if not self._drain_planned and self._loop is not None:
            self._drain_planned = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_planned = False
        if self._loop is None:
            return
        sock = self.sock
        self._draining = True
        try:
            for _ in range(MAX_PER_TURN):
                # Asked first: a receive that finds nothing raises, and an exception
                # costs more than the question.
                if not cast(int, sock.get(zmq.EVENTS)) & zmq.POLLIN:
                    self.drained_at = self._loop.time()
                    return
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    self.drained_at = self._loop.time()
                    return
                self._on_message(frames)
            # More may wait, and the edge that announced them is spent: come back.
            self._plan_drain()
        finally:
            self._draining = False
