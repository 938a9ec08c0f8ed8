"""One registration with one query frontend, and fair turns among several.

A ``FrontendSession`` is everything the serving loop keeps per frontend: its link
(``connection.Link``: a ZeroMQ ``FrontendLink``, socket + monitor, or for a
``unix://PATH`` address a ``unix_link.UnixLink``), its ``Heartbeat`` (None while REGISTERING), HELLO
``Backoff`` and due time, the last REJECT reason, its queue of PREDICTs, and an
``epoch`` that changes whenever the link is replaced, so that an answer computed for a
lost connection is never sent on its successor. It speaks the protocol of one
connection (``docs/wire-protocol.md`` §5) and knows nothing of other sessions: the
``server`` owns the sessions, the poller and the model worker.

Lifecycle of a session's connection::

    REGISTERING --WELCOME--> READY --(REJECT | disconnect | 3 intervals of silence)-->
        close socket (linger 0), drop queued batches, new socket, REGISTERING
    REGISTERING --disconnect--> new socket (unread frames discarded), REGISTERING

``RoundRobin`` decides whose batch runs next: one batch per session per turn, FIFO
within a session, so a busy frontend cannot starve a quiet one.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from collections.abc import Sequence

import zmq

from model_container import protocol
from model_container.bundle import runtime_versions
from model_container.connection import Context, FrontendLink, Link, LinkEvent, Ready
from model_container.heartbeat import Backoff, Heartbeat
from model_container.metrics import ContainerMetrics
from model_container.protocol import (
    CAP_RESTART,
    Error,
    ErrorKind,
    Goodbye,
    Hello,
    Predict,
    Reject,
    Restart,
    Welcome,
)
from model_container.rpc_keys import ClientKeys
from model_container.unix_link import SCHEME as UNIX_SCHEME
from model_container.unix_link import UnixLink

logger = logging.getLogger(__name__)

# When this process started, as HELLO says (``Hello.started_ms``).
_STARTED_MS = time.time_ns() // 1_000_000
# Messages read per wake-up before timers get a turn (the poll is level-triggered).
MAX_READS_PER_POLL = 256
_LONG_AGO = 0.0  # a deadline that has passed (on the time.monotonic() clock)


class SessionSettings:
    """What every session of one replica shares: its HELLO, its timing rules and its RPC
    keys (None: plain ZeroMQ, ``--insecure-rpc``)."""

    def __init__(
        self,
        hello: Hello,
        hello_interval_s: float,
        reconnect_initial_s: float,
        reconnect_max_s: float,
        keys: ClientKeys | None,
    ) -> None:
        self.hello = hello
        self.keys = keys
        self.hello_interval_s = hello_interval_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s

    @classmethod
    def for_replica(
        cls,
        model_name: str,
        model_version: str,
        input_type: protocol.InputType,
        replica_id: str,
        heartbeat_ms: int,
        hello_interval_s: float,
        reconnect_initial_s: float,
        reconnect_max_s: float,
        keys: ClientKeys | None,
    ) -> SessionSettings:
        hello = Hello(
            model_name=model_name,
            model_version=model_version,
            input_type=input_type,
            replica_id=replica_id,
            runtime=runtime_versions(),
            pid=os.getpid(),
            heartbeat_ms=heartbeat_ms,
            caps=(CAP_RESTART,),
            started_ms=_STARTED_MS,
        )
        return cls(hello, hello_interval_s, reconnect_initial_s, reconnect_max_s, keys)


class FrontendSession:
    """The registration of this replica with the frontend at ``address``."""

    def __init__(
        self,
        address: str,
        settings: SessionSettings,
        metrics: ContainerMetrics,
        context: Context,
        poller: zmq.Poller,
        now: float,
    ) -> None:
        self.address = address
        self._settings = settings
        self._metrics = metrics
        self._context = context
        self._poller = poller
        self.heartbeat: Heartbeat | None = None  # None while REGISTERING
        self.backoff = Backoff(settings.hello_interval_s, settings.hello_interval_s)
        self.hello_due = now
        self.last_reject = ""
        self.epoch = 0  # which connection queued batches belong to
        self.pending: collections.deque[Predict] = collections.deque()
        self.inflight_epoch: int | None = None  # epoch of this session's running batch
        self.closed = False
        # Why the frontend sent RESTART ("" if it did not): the server exits on it.
        self.restart_requested = ""
        self._refusal_logged = False  # said why the handshake fails, until a WELCOME
        self.link = self._open_link(now)

    @property
    def registered(self) -> bool:
        return self.heartbeat is not None

    def next_deadline(self) -> float:
        if self.link.backlog:
            return _LONG_AGO  # messages read and not handled yet: no sleeping
        if self.heartbeat is None:
            return self.hello_due
        return self.heartbeat.next_deadline()

    # ------------------------------------------------------------------ input

    def on_ready(self, ready: Ready, now: float) -> None:
        """Handle what the poll reported for this session's sockets."""
        link = self.link
        readable = link.ready(ready)
        self._on_link_events(link, ready, now)
        if self.link is link and readable:
            for _ in range(MAX_READS_PER_POLL):
                frames = link.recv()
                if frames is None:
                    break
                self._on_frames(frames, now)
                if self.link is not link:
                    break
            if self.link is link and link.dials_on_send:
                # A read or a send in this turn may have found the connection over.
                self._on_link_events(link, ready, now)

    def _on_link_events(self, link: Link, ready: Ready, now: float) -> None:
        for event in link.events(ready):
            self._on_link_event(event, now)
            if self.link is not link:
                break  # the rest happened on the closed socket

    def on_timers(self, now: float) -> None:
        if self.heartbeat is None:
            if now >= self.hello_due:
                self._send_hello(now)
        elif self.heartbeat.expired(now):
            silent = now - self.heartbeat.last_received
            self._reconnect(now, f"no message from the frontend for {silent:.2f}s")
        elif self.heartbeat.send_due(now):
            self.link.send(protocol.Heartbeat())

    def _on_link_event(self, event: LinkEvent, now: float) -> None:
        logger.debug("connection to %s: %s", self.address, event.value)
        if event is LinkEvent.CONNECTED and not self.registered:
            self._send_hello(now)
        elif event is LinkEvent.DISCONNECTED and self.registered:
            self._reconnect(now, "the connection dropped")
        elif event is LinkEvent.REFUSED:
            # The link retries by itself (a unix link at the next HELLO); say once why.
            if not self._refusal_logged:
                self._refusal_logged = True
                logger.warning(
                    "the RPC handshake with %s failed: %s; retrying",
                    self.address,
                    self.link.refusal,
                )
        elif event is LinkEvent.DISCONNECTED:
            # Dropped while REGISTERING. A WELCOME the dead peer sent may still wait unread
            # in the socket; read later, it would register us with whoever listens next on
            # the address, which never saw our HELLO. A new socket holds nothing stale.
            due = self.hello_due
            self._replace_link(now)
            if self.link.dials_on_send:
                # It connects on the next HELLO: not before the backoff says (a frontend
                # that closes every connection at once must not make this a busy loop).
                self.hello_due = due

    def _on_frames(self, frames: Sequence[protocol.Frame], now: float) -> None:
        if self.heartbeat is not None:
            self.heartbeat.received(now)
        try:
            msg = protocol.decode(frames)
        except protocol.ProtocolError as exc:
            batch_id = protocol.predict_batch_id(frames)
            logger.warning("malformed message from the frontend at %s: %s", self.address, exc)
            if batch_id is not None:
                self.link.send(Error(batch_id, ErrorKind.BAD_INPUT, f"cannot decode: {exc}"))
                self._metrics.batch_refused(ErrorKind.BAD_INPUT)
            return
        match msg:
            case Predict():
                if self.registered:
                    self.pending.append(msg)
                else:
                    reason = "replica is not registered yet (no WELCOME)"
                    self.link.send(Error(msg.batch_id, ErrorKind.NOT_READY, reason))
                    self._metrics.batch_refused(ErrorKind.NOT_READY)
            case protocol.Heartbeat():
                pass
            case Welcome():
                self._on_welcome(msg, now)
            case Reject():
                self._on_reject(msg, now)
            case Restart():
                logger.error("the frontend at %s asked for a restart: %s", self.address, msg.reason)
                self.restart_requested = msg.reason or "no reason given"
            case _:
                logger.warning(
                    "ignoring unexpected %s from the frontend at %s",
                    type(msg).__name__,
                    self.address,
                )

    def _on_welcome(self, msg: Welcome, now: float) -> None:
        if self.heartbeat is not None:
            if self.heartbeat.interval_s * 1000 != msg.heartbeat_ms:
                self.heartbeat = Heartbeat(msg.heartbeat_ms / 1000, now)
            return
        self.heartbeat = Heartbeat(msg.heartbeat_ms / 1000, now)
        self.last_reject = ""
        self._refusal_logged = False
        logger.info("registered with %s (heartbeat every %d ms)", self.address, msg.heartbeat_ms)

    def _on_reject(self, msg: Reject, now: float) -> None:
        if self.registered:
            self._reconnect(now, f"the frontend rejected us: {msg.reason}")
        elif msg.reason != self.last_reject:
            # Keep retrying: the frontend may learn about this model later.
            logger.warning(
                "the frontend at %s refused registration: %s (will retry)", self.address, msg.reason
            )
            self.last_reject = msg.reason
        else:
            logger.debug(
                "the frontend at %s refused registration again: %s", self.address, msg.reason
            )

    # ------------------------------------------------------------------ output

    def answer(self, frames: Sequence[protocol.Frame]) -> None:
        """Send the answer to this session's running batch, if the connection it was
        queued on still is; the batch is no longer running."""
        epoch, self.inflight_epoch = self.inflight_epoch, None
        if self.closed or epoch != self.epoch or not self.registered:
            logger.debug("dropping the answer to a batch of a lost connection to %s", self.address)
        elif not self.link.send_frames(frames):
            logger.warning("could not send an answer: no connection to %s", self.address)

    def _send_hello(self, now: float) -> None:
        if not self.link.send(self._settings.hello):
            logger.debug("no connection to %s yet; HELLO not sent", self.address)
        self.hello_due = now + self.backoff.next_delay()

    # ------------------------------------------------------------------ lifecycle

    def _open_link(self, now: float) -> Link:
        link = open_link(self._context, self.address, self._settings.keys)
        link.attach(self._poller)
        self.heartbeat = None
        # Try at once; over ZeroMQ the handshake event also triggers a HELLO, a unix link
        # connects on this HELLO.
        self.hello_due = now
        return link

    def _close_link(self, linger_ms: int) -> None:
        self.link.detach()
        self.link.close(linger_ms=linger_ms)

    def _drop_batches(self) -> int:
        """Forget queued batches and the running one's answer; how many were dropped."""
        dropped = len(self.pending) + (self.inflight_epoch == self.epoch)
        self.pending.clear()
        self.epoch += 1
        return dropped

    def _replace_link(self, now: float) -> int:
        """Close the link (linger 0), drop what was queued on it, open a new one; how
        many batches were dropped."""
        dropped = self._drop_batches()
        self._close_link(linger_ms=0)
        self.link = self._open_link(now)
        return dropped

    def _reconnect(self, now: float, reason: str) -> None:
        dropped = self._replace_link(now)
        logger.warning(
            "lost the frontend at %s (%s); re-registering, dropping %d batches",
            self.address,
            reason,
            dropped,
        )
        self._metrics.reconnected(dropped)
        self.backoff = Backoff(
            self._settings.reconnect_initial_s, self._settings.reconnect_max_s, jitter=0.2
        )

    def leave(self, reason: str, linger_ms: int) -> int:
        """Say GOODBYE (even before WELCOME: the frontend may have registered the HELLO
        already) and close; returns how many batches were dropped."""
        if self.closed:
            return 0
        dropped = self._drop_batches()
        self.closed = True
        self.heartbeat = None
        self.link.send(Goodbye(reason))
        self._close_link(linger_ms)
        return dropped


def open_link(context: Context, address: str, keys: ClientKeys | None) -> Link:
    """A link to the frontend at ``address``: direct for ``unix://PATH`` (no CURVE: the
    kernel vouches for the peer's uid), else a ZeroMQ DEALER."""
    if address.startswith(UNIX_SCHEME):
        return UnixLink(address)
    return FrontendLink(context, address, keys)


class RoundRobin:
    """Whose batch runs next: sessions take turns, one batch each, FIFO within one."""

    def __init__(self) -> None:
        self._ring: collections.deque[FrontendSession] = collections.deque()
        self._queued: set[int] = set()  # id() of the sessions in the ring

    def mark(self, session: FrontendSession) -> None:
        """``session`` may have batches waiting; give it a turn if it has none yet."""
        if session.pending and id(session) not in self._queued:
            self._queued.add(id(session))
            self._ring.append(session)

    @property
    def waiting(self) -> bool:
        """Whether some session may have a batch waiting."""
        return bool(self._ring)

    def next(self) -> tuple[FrontendSession, Predict] | None:
        """The next batch to run and its session, or None if nothing waits."""
        while self._ring:
            session = self._ring.popleft()
            if session.closed or not session.pending:
                self._queued.discard(id(session))  # lost its batches meanwhile
                continue
            batch = session.pending.popleft()
            if session.pending:
                self._ring.append(session)  # to the back of the line
            else:
                self._queued.discard(id(session))
            return session, batch
        return None
