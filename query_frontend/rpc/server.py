"""The frontend end of the RPC protocol: a ZeroMQ ROUTER that model replicas connect to.

It decodes frames, keeps replicas alive with heartbeats, and hands registrations,
results and errors to the Dispatcher. Framing lives in ``model_container.protocol``;
queueing and batching in ``batching.dispatch``; the rules for silent and stuck replicas
in ``rpc.liveness``.

The ROUTER is a plain ZeroMQ socket served from the event loop's file-descriptor
callback (``rpc.loop_socket``), not a ``zmq.asyncio`` one: a message is handled in the
callback that reads it, and a send is one non-blocking call.

The ROUTER is a CURVE server (``rpc.auth``): only a replica holding the cluster's
client key completes the handshake, so a message that reaches ``_receive`` comes from
one. With ``keys=None`` (``--insecure-rpc``, for measuring only) it is plain ZeroMQ.

A replica whose connection closes is removed at once, not after heartbeats go missing.
The ROUTER's socket monitor reports every closed connection with its file descriptor,
and each replica's descriptor is known from its HELLO (``ZMQ_SRCFD``). Descriptors are
reused, and the monitor's report races with the messages, so the report only names
suspects: the ROUTER is ``ZMQ_ROUTER_MANDATORY``, so a send to an identity whose
connection it has dropped fails with EHOSTUNREACH, and that failure, on any send, is what
removes a replica. A suspect is probed with a heartbeat at once and again after 1, 2, 4,
... ms (the ROUTER drops the connection a moment after the monitor reports it), until
the probe fails or a heartbeat interval has passed (then it was a reused descriptor).

With ``unix_path``, the same server also listens on a unix socket for the replicas on
this host (``rpc.unix_listener``, ``docs/wire-protocol.md`` §1.3): no ZeroMQ, and no
CURVE (only this user may connect, checked by ``SO_PEERCRED``). A message from there
takes the same path as one from the ROUTER (``_receive_frames``, in the callback that
read it), and ``send`` routes by identity: a unix identity to its connection, any other
to the ROUTER. A unix connection that closes removes its replica at once, with no
probing: the listener knows which connection it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from model_container import protocol
from model_container.protocol import (
    Error,
    ErrorKind,
    Goodbye,
    Heartbeat,
    Hello,
    InputType,
    ProtocolError,
    Reject,
    Result,
    Welcome,
)
from model_container.rpc_keys import ServerKeys
from query_frontend.batching.dispatch import Dispatcher
from query_frontend.batching.replicas import Replica
from query_frontend.rpc.auth import RefusalLog, RpcAuthenticator
from query_frontend.rpc.liveness import Liveness
from query_frontend.rpc.loop_socket import LoopSocket
from query_frontend.rpc.unix_listener import UNIX_IDENTITY_PREFIX, UnixListener

logger = logging.getLogger(__name__)

# Probes of a replica whose connection may have closed: the first this long after the
# report, each next one twice as long after the last, until a heartbeat interval.
FIRST_PROBE_DELAY_S = 0.001
# A handshake that failed before ZAP was asked (a client without CURVE, or one that
# does not know the server's key: libzmq cannot tell them apart from garbage).
_HANDSHAKE_FAILED_WITHOUT_ZAP = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
_HANDSHAKE_FAILED = _HANDSHAKE_FAILED_WITHOUT_ZAP
# The liveness check never runs more often than this fraction of a heartbeat interval.
MIN_CHECK_FRACTION = 1 / 50


class RpcServer:
    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        bind_address: str,
        dispatcher: Dispatcher,
        heartbeat_ms: int,
        keys: ServerKeys | None,
        extra_binds: tuple[str, ...] = (),
        unix_path: str = "",
    ) -> None:
        """``extra_binds``: more endpoints the same ROUTER binds (``ipc://`` beside TCP
        for the replicas on this host); every one is a CURVE server alike.
        ``unix_path``: also serve replicas on this unix socket (the direct transport);
        its directory must be ours with mode 0700 (``UnixSocketError`` otherwise)."""
        self._ctx = ctx
        self._keys = keys
        self._auth: RpcAuthenticator | None = None
        self._refusals = RefusalLog()
        self._bind_address = bind_address
        self._extra_binds = extra_binds
        self._dispatcher = dispatcher
        self._heartbeat_s = heartbeat_ms / 1000
        self._heartbeat_ms = heartbeat_ms
        self._sock: zmq.Socket[bytes] | None = None
        self._io: LoopSocket | None = None
        self._monitor: zmq.asyncio.Socket | None = None
        self._unix: UnixListener | None = None
        if unix_path:
            self._unix = UnixListener(
                unix_path, self._receive_frames, self._connection_closed, self._refusals
            )
        self._heartbeat_frames = protocol.encode(Heartbeat())
        self.liveness = Liveness(dispatcher, self._heartbeat_s)
        # Set when a batch may time out before the liveness check planned next.
        self._check_sooner = asyncio.Event()
        dispatcher.check_sooner = self._check_sooner.set
        # Which input type a registered model version takes; a replica must agree.
        self.expected_input_types: dict[tuple[str, str], InputType] = {}

    def open(self) -> None:
        """Bind the ROUTER (and, with keys, start the ZAP handler first); call from the
        running event loop."""
        if self._keys is not None:
            self._auth = RpcAuthenticator(self._ctx, self._keys, self._refusals)
            self._auth.start()
        # A plain socket on the same libzmq context (the ZAP handler is an inproc
        # endpoint of that context).
        sock: zmq.Socket[bytes] = zmq.Context.shadow(self._ctx.underlying).socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        # A send to an identity without a connection fails (EHOSTUNREACH) rather than
        # vanishing: that is how a closed connection is confirmed.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if self._keys is not None:
            self._keys.apply(sock)
        # The monitor reports rarely: an asyncio PAIR is simple enough for it.
        monitor_address = f"inproc://monitor.rpc-{id(self):x}"
        sock.monitor(monitor_address, zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED)
        self._monitor = self._ctx.socket(zmq.PAIR)
        self._monitor.setsockopt(zmq.LINGER, 0)
        self._monitor.connect(monitor_address)
        self._sock = sock
        try:
            for address in (self._bind_address, *self._extra_binds):
                sock.bind(address)
            if self._unix is not None:
                self._unix.bind()
        except Exception:
            self.close()
            raise
        self._io = LoopSocket(sock, self._on_message, self._unreachable)
        self._dispatcher.bind(self.send)
        unix = (f"unix://{self._unix.path}",) if self._unix is not None else ()
        logger.info(
            "RPC server listening on %s",
            ", ".join((self._bind_address, *self._extra_binds, *unix)),
        )

    def close(self) -> None:
        if self._unix is not None:
            self._unix.close()
        if self._io is not None:
            self._io.stop()
            self._io = None
        if self._monitor is not None:
            if self._sock is not None:
                with contextlib.suppress(zmq.ZMQError):
                    self._sock.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def unix_refusals(self) -> dict[str, int]:
        """Peers the unix socket refused since start, by reason (``UnixListener.refused``);
        empty without ``unix_path``."""
        return dict(self._unix.refused) if self._unix is not None else {}

    def send(self, identity: bytes, frames: list[protocol.Frame]) -> None:
        if identity[:5] == UNIX_IDENTITY_PREFIX:
            # A connection gone is what EHOSTUNREACH is on the ROUTER.
            if self._unix is None or not self._unix.send(identity, frames):
                self._unreachable(identity)
            return
        assert self._io is not None
        self._io.send(identity, frames)

    def _unreachable(self, identity: bytes) -> None:
        """A send found the identity's connection gone (``ZMQ_ROUTER_MANDATORY``)."""
        if identity in self._dispatcher.by_identity:
            # Not now: this send may be part of a dispatch still under way.
            asyncio.get_running_loop().call_soon(self._connection_closed, identity)

    def _connection_closed(self, identity: bytes) -> None:
        reason = "disconnected: its connection closed"
        self._dispatcher.remove_replica(identity, reason, crashed=True)

    async def serve(self) -> None:
        """Receive and handle messages, and watch connections close, until cancelled."""
        watcher = asyncio.ensure_future(self._watch_connections())
        try:
            await self._receive()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _receive(self) -> None:
        assert self._io is not None
        self._io.start()
        if self._unix is not None:
            # (Replicas that connected since ``open`` waited in the listen backlog.)
            await self._unix.start()
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        finally:
            if self._io is not None:
                self._io.stop()

    def _on_message(self, frames: list[zmq.Frame]) -> None:
        if len(frames) < 2:
            return
        self._receive_frames(frames[0].bytes, [frame.buffer for frame in frames[1:]], frames[1])

    def _receive_frames(
        self,
        identity: bytes,
        body: Sequence[protocol.Frame],
        first: zmq.Frame | None = None,
    ) -> None:
        """Handle one message from either transport; ``first``: its first ZeroMQ frame
        (which knows the connection's descriptor), None from the unix socket."""
        try:
            msg = protocol.decode(body)
        except ProtocolError as exc:
            logger.warning("dropping a malformed message: %s", exc)
            self.send(identity, protocol.encode(Reject(f"protocol error: {exc}")))
            return
        try:
            self._handle(identity, msg, asyncio.get_running_loop().time())
            if first is not None and isinstance(msg, Hello):
                self._note_fd(identity, _source_fd(first))
        except Exception:
            # One bad message must not stop the loop every replica depends on: drop
            # the sender (its queries go to another replica) and make it re-register.
            logger.exception("dropping replica after a message it sent could not be handled")
            self._dispatcher.remove_replica(identity, "sent a message that broke the protocol")
            self.send(identity, protocol.encode(Reject("message could not be handled")))

    def _read_up_to(self, now: float) -> float:
        """A moment by which every message that had arrived has been handled.

        The reader runs in this event loop: if it has fallen behind (the loop was busy),
        messages wait unread in the socket, and silence is judged as of when it last
        found the socket empty rather than now. (Unix connections are read by the loop's
        own I/O poll, which runs before ``heartbeat`` judges: it yields first.)
        """
        assert self._io is not None
        if self._io.unread():
            return self._io.drained_at
        return now

    def _note_fd(self, identity: bytes, fd: int) -> None:
        replica = self._dispatcher.by_identity.get(identity)
        if replica is not None:
            replica.fd = fd

    async def _watch_connections(self) -> None:
        """Probe the replicas whose connection the monitor reports closed."""
        assert self._monitor is not None
        monitor = self._monitor
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._connection_dropped(int(event["value"]))
            elif event["event"] & _HANDSHAKE_FAILED_WITHOUT_ZAP:
                # (A key ZAP refused is logged by the authenticator.)
                self._refusals.refused("a failed handshake: no CURVE, or not our server key")

    def _connection_dropped(self, fd: int) -> None:
        for identity, replica in list(self._dispatcher.by_identity.items()):
            if replica.fd in (fd, -1) and identity[:5] != UNIX_IDENTITY_PREFIX:
                self._probe(identity, replica, FIRST_PROBE_DELAY_S)

    def _probe(self, identity: bytes, replica: Replica, next_delay: float) -> None:
        """Send a heartbeat: if the connection is gone, the send fails and removes it."""
        if self._sock is None or self._dispatcher.by_identity.get(identity) is not replica:
            return
        self.send(identity, self._heartbeat_frames)
        if next_delay < self._heartbeat_s:
            asyncio.get_running_loop().call_later(
                next_delay, self._probe, identity, replica, next_delay * 2
            )

    def _handle(self, identity: bytes, msg: protocol.Message, now: float) -> None:
        replica = self._dispatcher.by_identity.get(identity)
        if replica is not None:
            self._dispatcher.heard_from(replica, now)
        match msg:
            case Result():
                self._dispatcher.on_result(identity, msg)
            case Error() if msg.kind is ErrorKind.NOT_READY:
                # It has not seen our WELCOME: register it afresh before it gets more work.
                self._dispatcher.remove_replica(identity, "answered not_ready")
                self.send(identity, protocol.encode(Reject("not registered: send HELLO")))
            case Error():
                self._dispatcher.on_error(identity, msg)
            case Heartbeat():
                if replica is None:
                    self._reject_unknown(identity)
            case Hello():
                self._on_hello(identity, msg, now)
            case Goodbye():
                self._dispatcher.remove_replica(identity, f"said goodbye ({msg.reason})")
            case _:
                logger.warning("unexpected %s from a replica", type(msg).__name__)
        if replica is None and isinstance(msg, Result | Error):
            self._reject_unknown(identity)

    def _on_hello(self, identity: bytes, hello: Hello, now: float) -> None:
        key = (hello.model_name, hello.model_version)
        expected = self.expected_input_types.get(key)
        if expected is not None and expected != hello.input_type:
            reason = (
                f"model '{key[0]}' version '{key[1]}' is registered with input type "
                f"'{expected}' but this replica declares '{hello.input_type}'"
            )
            logger.warning("refusing replica %s: %s", hello.replica_id, reason)
            self.send(identity, protocol.encode(Reject(reason)))
            return
        known = self._dispatcher.by_identity.get(identity)
        welcome = protocol.encode(Welcome(self._heartbeat_ms))
        if known is not None and known.replica_id == hello.replica_id and known.key == key:
            # A HELLO repeated while our WELCOME was on its way: keep its work in flight.
            self.send(identity, welcome)
            return
        if known is not None:
            self._dispatcher.remove_replica(identity, "registered again as another replica")
        # WELCOME first, so that any batch sent on registration finds it ready.
        self.send(identity, welcome)
        self._dispatcher.add_replica(identity, hello, now)

    def _reject_unknown(self, identity: bytes) -> None:
        self.send(identity, protocol.encode(Reject("unknown replica: send HELLO to register")))

    async def heartbeat(self) -> None:
        """Send heartbeats every interval and apply the liveness rules, until cancelled.

        The rules are checked when a verdict may change (a replica's silence or a batch
        reaching its limit), not only on the heartbeat tick, so that a replica leaves
        rotation within one interval of going quiet; a batch sent with a timeout due
        before the next check brings that check forward (``Dispatcher.check_sooner``).
        """
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self._heartbeat_s
        min_sleep = self._heartbeat_s * MIN_CHECK_FRACTION
        while True:
            now = loop.time()
            if now >= next_beat:
                for identity in list(self._dispatcher.by_identity):
                    self.send(identity, self._heartbeat_frames)
                next_beat = max(next_beat + self._heartbeat_s, now + self._heartbeat_s / 2)
            # Let the reader handle what arrived while this task slept before judging.
            await asyncio.sleep(0)
            next_check = self.liveness.check(self._read_up_to(loop.time()))
            wake = min(next_beat, next_check)
            self._dispatcher.check_by = wake
            self._check_sooner.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._check_sooner.wait(), max(wake - loop.time(), min_sleep)
                )


def _source_fd(frame: zmq.Frame) -> int:
    """The frontend's file descriptor of the connection a message came on; -1 unknown."""
    try:
        return int(frame.get(zmq.SRCFD))
    except (zmq.ZMQError, AttributeError, TypeError, ValueError):
        return -1
