"""The frontend end of the RPC protocol: a ZeroMQ ROUTER that model replicas connect to.

It decodes frames, keeps replicas alive with heartbeats, and hands registrations,
results and errors to the Dispatcher. Framing lives in ``model_container.protocol``;
queueing and batching in ``dispatch``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import zmq
import zmq.asyncio

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
from query_frontend.dispatch import Dispatcher

logger = logging.getLogger(__name__)

# A replica silent for this many heartbeat intervals is taken out of rotation.
MISSED_HEARTBEATS = 3


class RpcServer:
    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        bind_address: str,
        dispatcher: Dispatcher,
        heartbeat_ms: int,
    ) -> None:
        self._ctx = ctx
        self._bind_address = bind_address
        self._dispatcher = dispatcher
        self._heartbeat_s = heartbeat_ms / 1000
        self._heartbeat_ms = heartbeat_ms
        self._sock: zmq.asyncio.Socket | None = None
        self._heartbeat_frames = protocol.encode(Heartbeat())
        # Which input type a registered model version takes; a replica must agree.
        self.expected_input_types: dict[tuple[str, str], InputType] = {}

    def open(self) -> None:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.bind(self._bind_address)
        self._sock = sock
        self._dispatcher.bind(self.send)
        logger.info("RPC server listening on %s", self._bind_address)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def send(self, identity: bytes, frames: list[protocol.Frame]) -> None:
        assert self._sock is not None
        fut = asyncio.ensure_future(self._sock.send_multipart([identity, *frames], copy=False))
        fut.add_done_callback(_log_send_failure)

    async def serve(self) -> None:
        """Receive and handle messages until cancelled."""
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            frames = await self._sock.recv_multipart(copy=True)
            if len(frames) < 2:
                continue
            identity = frames[0]
            try:
                msg = protocol.decode(frames[1:])
            except ProtocolError as exc:
                logger.warning("dropping a malformed message: %s", exc)
                self.send(identity, protocol.encode(Reject(f"protocol error: {exc}")))
                continue
            try:
                self._handle(identity, msg, loop.time())
            except Exception:
                # One bad message must not stop the loop every replica depends on: drop
                # the sender (its queries go to another replica) and make it re-register.
                logger.exception("dropping replica after a message it sent could not be handled")
                self._dispatcher.remove_replica(identity, "sent a message that broke the protocol")
                self.send(identity, protocol.encode(Reject("message could not be handled")))

    def _handle(self, identity: bytes, msg: protocol.Message, now: float) -> None:
        replica = self._dispatcher.by_identity.get(identity)
        if replica is not None:
            replica.last_seen = now
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
        """Send heartbeats and take silent replicas out of rotation, until cancelled."""
        loop = asyncio.get_running_loop()
        limit = MISSED_HEARTBEATS * self._heartbeat_s
        while True:
            await asyncio.sleep(self._heartbeat_s)
            now = loop.time()
            for identity, replica in list(self._dispatcher.by_identity.items()):
                if now - replica.last_seen > limit:
                    self._dispatcher.remove_replica(
                        identity, f"no message for {now - replica.last_seen:.2f} s"
                    )
                else:
                    self.send(identity, self._heartbeat_frames)


def _log_send_failure(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        logger.warning("RPC send failed: %s", fut.exception())
