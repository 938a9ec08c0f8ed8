"""The serving loop of a model replica: register, heartbeat, dispatch batches, reconnect.

``ModelContainer.run`` owns one thread (the I/O thread) and every socket on it: the
DEALER to the frontend (``connection.FrontendLink``), the inproc PAIR on which the
``worker.ModelWorker`` hands back answers, and a socketpair that signals and ``stop()``
write to. It blocks only in one poll whose timeout is the next heartbeat or HELLO
deadline (``heartbeat``), so it never sleeps and never spins.

Lifecycle of a connection::

    REGISTERING --WELCOME--> READY --(REJECT | disconnect | 3 intervals of silence)-->
        close socket (linger 0), drop queued batches, new socket, REGISTERING

While REGISTERING, HELLO goes out as soon as a connection completes its handshake and
again at each retry (every 0.5 s at start-up; after a lost connection from 0.1 s
backing off to 1 s). While READY, PREDICTs queue up and run one at a time, in order; a
HEARTBEAT goes out three times per interval the WELCOME set. SIGTERM/SIGINT (or ``stop()``) sends
GOODBYE and returns.

With ``metrics_port`` set, ``run`` also serves ``GET /metrics`` (``metrics``) on a
thread of its own for as long as it runs.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import zmq

from model_container import protocol
from model_container.bundle import PredictFunction, runtime_versions
from model_container.connection import Context, FrontendLink, LinkEvent
from model_container.heartbeat import Backoff, Heartbeat
from model_container.metrics import ContainerMetrics, MetricsServer
from model_container.protocol import (
    Error,
    ErrorKind,
    Goodbye,
    Hello,
    InputType,
    Predict,
    Reject,
    Welcome,
)
from model_container.worker import ModelWorker

logger = logging.getLogger(__name__)

# Messages read per wake-up before timers get a turn (the poll is level-triggered).
_MAX_READS_PER_POLL = 256


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """Everything a replica needs to know to serve, built once by the entry point."""

    frontend: str  # the frontend's ROUTER address, e.g. "tcp://127.0.0.1:7000"
    model_name: str
    model_version: str
    input_type: InputType
    replica_id: str
    heartbeat_ms: int = 0  # interval requested in HELLO; the frontend's WELCOME decides
    hello_interval_s: float = 0.5  # HELLO retry interval until the first WELCOME
    reconnect_initial_s: float = 0.1  # first HELLO retry after a lost connection ...
    reconnect_max_s: float = 1.0  # ... backing off to this
    goodbye_linger_ms: int = 1000  # how long GOODBYE may take to leave at shutdown
    stop_timeout_s: float = 5.0  # how long shutdown waits for a running batch
    metrics_host: str = "127.0.0.1"  # where GET /metrics listens ...
    metrics_port: int = 0  # ... and on which port; 0: no metrics endpoint


class ModelContainer:
    """Serves one model function to a query frontend until stopped."""

    def __init__(self, config: ContainerConfig, predict: PredictFunction) -> None:
        self.config = config
        self._predict = predict
        self._stopping = False
        self._stop_reason = "stopped"
        self._wake_w: socket.socket | None = None
        # Per-connection state, reset on every (re)registration.
        self._link: FrontendLink | None = None
        self._heartbeat: Heartbeat | None = None  # None while REGISTERING
        self._backoff = Backoff(config.hello_interval_s, config.hello_interval_s)
        self._hello_due = 0.0
        self._last_reject = ""
        self._epoch = 0  # which connection queued batches belong to
        self._pending: collections.deque[Predict] = collections.deque()
        self._inflight_epoch: int | None = None  # epoch of the batch the worker runs
        # Recorded whether or not they are served: an embedding program may read them.
        self.metrics = ContainerMetrics(
            config.model_name, config.model_version, config.input_type, config.replica_id
        )
        self.metrics.track_queue(lambda: len(self._pending) + (self._inflight_epoch is not None))
        self.metrics_server: MetricsServer | None = None

    @property
    def registered(self) -> bool:
        return self._heartbeat is not None

    def stop(self, reason: str = "stopped") -> None:
        """Ask ``run`` to say GOODBYE and return; safe from any thread or signal handler."""
        self._stop_reason = reason
        self._stopping = True
        if self._wake_w is not None:
            with contextlib.suppress(OSError):  # buffer full: a wake-up is already pending
                self._wake_w.send(b"\0")

    def run(self, install_signal_handlers: bool = True) -> None:
        """Serve until ``stop()`` or SIGTERM/SIGINT (signals only on the main thread).

        Raises ``MetricsServerError``, before anything else, when a metrics port is
        configured and cannot be opened.
        """
        if self.config.metrics_port:
            self.metrics_server = MetricsServer(
                self.metrics.registry, self.config.metrics_host, self.config.metrics_port
            )
            logger.info("serving metrics at %s", self.metrics_server.url)
        try:
            self._run(install_signal_handlers)
        finally:
            if self.metrics_server is not None:
                self.metrics_server.close()
                self.metrics_server = None

    def _run(self, install_signal_handlers: bool) -> None:
        context: Context = zmq.Context()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        self._wake_w = wake_w
        answers = context.socket(zmq.PAIR)
        answers.setsockopt(zmq.LINGER, 0)
        address = f"inproc://model-worker-{id(self):x}"
        answers.bind(address)
        worker = ModelWorker(context, address, self._predict, self.config.input_type, self.metrics)
        worker.start()
        restore = self._install_signal_handlers(wake_w) if install_signal_handlers else None
        # The model and the libraries it loaded live as long as the process: spare every
        # full collection from walking them again (a pause in the middle of a batch).
        gc.freeze()
        finished = False
        try:
            self._serve(context, worker, answers, wake_r)
        finally:
            if restore is not None:
                restore()
            if self._link is not None:
                self._link.close()
            finished = worker.stop(self.config.stop_timeout_s)
            answers.close()
            self._wake_w = None
            wake_r.close()
            wake_w.close()
            if finished:
                context.term()  # waits (up to goodbye_linger_ms) for GOODBYE to leave
            else:
                # The model is still computing; its thread holds a socket, so term()
                # would hang. The process is exiting anyway.
                logger.warning("a batch was still running at shutdown; not waiting for it")

    def _install_signal_handlers(self, wake_w: socket.socket) -> Callable[[], None] | None:
        """Route SIGTERM/SIGINT to ``stop()``; returns the function that undoes it."""
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not on the main thread: not installing signal handlers")
            return None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stop(f"received {signal.Signals(signum).name}")

        # The wakeup fd makes the poll return even when the signal lands on another thread.
        old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_fd)

        return restore

    # ---------------------------------------------------------------------- the loop

    def _serve(
        self, context: Context, worker: ModelWorker, answers: zmq.Socket[bytes], wake: socket.socket
    ) -> None:
        poller = zmq.Poller()
        poller.register(answers, zmq.POLLIN)
        poller.register(wake.fileno(), zmq.POLLIN)
        logger.info(
            "serving %s:%s (%s) as replica %s; registering with %s",
            self.config.model_name,
            self.config.model_version,
            self.config.input_type,
            self.config.replica_id,
            self.config.frontend,
        )
        self._open_link(context, poller, time.monotonic())
        while not self._stopping:
            timeout_ms = max(0, math.ceil((self._next_deadline() - time.monotonic()) * 1000))
            ready = dict(poller.poll(timeout_ms))
            now = time.monotonic()
            if wake.fileno() in ready:
                _drain(wake)
            if answers in ready:
                self._on_answer(answers.recv_multipart(copy=False))
            link = self._link
            assert link is not None
            if link.monitor in ready:
                for event in link.events():
                    self._on_link_event(context, poller, event, now)
            if self._link is link and link.socket in ready:
                for _ in range(_MAX_READS_PER_POLL):
                    frames = link.recv()
                    if frames is None:
                        break
                    self._on_frames(context, poller, frames, now)
                    if self._link is not link:
                        break
            self._on_timers(context, poller, now)
            self._dispatch(worker)
        logger.info("%s: leaving", self._stop_reason)
        self.metrics.set_connected(False)
        if self._link is not None:
            # Even before WELCOME: the frontend may have registered the HELLO already.
            self._link.send(Goodbye(self._stop_reason))
            self._link.close(linger_ms=self.config.goodbye_linger_ms)

    def _next_deadline(self) -> float:
        if self._heartbeat is None:
            return self._hello_due
        return self._heartbeat.next_deadline()

    def _on_timers(self, context: Context, poller: zmq.Poller, now: float) -> None:
        assert self._link is not None
        if self._heartbeat is None:
            if now >= self._hello_due:
                self._send_hello(now)
        elif self._heartbeat.expired(now):
            silent = now - self._heartbeat.last_received
            self._reconnect(context, poller, now, f"no message from the frontend for {silent:.2f}s")
        elif self._heartbeat.send_due(now):
            self._link.send(protocol.Heartbeat())

    def _on_link_event(
        self, context: Context, poller: zmq.Poller, event: LinkEvent, now: float
    ) -> None:
        logger.debug("connection to %s: %s", self.config.frontend, event.value)
        if event is LinkEvent.CONNECTED and not self.registered:
            self._send_hello(now)
        elif event is LinkEvent.DISCONNECTED and self.registered:
            self._reconnect(context, poller, now, "the connection dropped")

    def _on_frames(
        self, context: Context, poller: zmq.Poller, frames: list[memoryview], now: float
    ) -> None:
        assert self._link is not None
        if self._heartbeat is not None:
            self._heartbeat.received(now)
        try:
            msg = protocol.decode(frames)
        except protocol.ProtocolError as exc:
            batch_id = protocol.predict_batch_id(frames)
            logger.warning("malformed message from the frontend: %s", exc)
            if batch_id is not None:
                self._link.send(Error(batch_id, ErrorKind.BAD_INPUT, f"cannot decode: {exc}"))
                self.metrics.batch_refused(ErrorKind.BAD_INPUT)
            return
        match msg:
            case Predict():
                if self.registered:
                    self._pending.append(msg)
                else:
                    reason = "replica is not registered yet (no WELCOME)"
                    self._link.send(Error(msg.batch_id, ErrorKind.NOT_READY, reason))
                    self.metrics.batch_refused(ErrorKind.NOT_READY)
            case protocol.Heartbeat():
                pass
            case Welcome():
                self._on_welcome(msg, now)
            case Reject():
                self._on_reject(context, poller, msg, now)
            case _:
                logger.warning("ignoring unexpected %s from the frontend", type(msg).__name__)

    def _on_welcome(self, msg: Welcome, now: float) -> None:
        if self._heartbeat is not None:
            if self._heartbeat.interval_s * 1000 != msg.heartbeat_ms:
                self._heartbeat = Heartbeat(msg.heartbeat_ms / 1000, now)
            return
        self._heartbeat = Heartbeat(msg.heartbeat_ms / 1000, now)
        self._last_reject = ""
        self.metrics.set_connected(True)
        logger.info(
            "registered with %s (heartbeat every %d ms)", self.config.frontend, msg.heartbeat_ms
        )

    def _on_reject(self, context: Context, poller: zmq.Poller, msg: Reject, now: float) -> None:
        if self.registered:
            self._reconnect(context, poller, now, f"the frontend rejected us: {msg.reason}")
        elif msg.reason != self._last_reject:
            # Keep retrying: the frontend may learn about this model later.
            logger.warning("the frontend refused registration: %s (will retry)", msg.reason)
            self._last_reject = msg.reason
        else:
            logger.debug("the frontend refused registration again: %s", msg.reason)

    def _send_hello(self, now: float) -> None:
        assert self._link is not None
        hello = Hello(
            model_name=self.config.model_name,
            model_version=self.config.model_version,
            input_type=self.config.input_type,
            replica_id=self.config.replica_id,
            runtime=runtime_versions(),
            pid=os.getpid(),
            heartbeat_ms=self.config.heartbeat_ms,
        )
        if not self._link.send(hello):
            logger.debug("no connection to %s yet; HELLO not sent", self.config.frontend)
        self._hello_due = now + self._backoff.next_delay()

    def _open_link(self, context: Context, poller: zmq.Poller, now: float) -> None:
        link = FrontendLink(context, self.config.frontend)
        poller.register(link.socket, zmq.POLLIN)
        poller.register(link.monitor, zmq.POLLIN)
        self._link = link
        self._heartbeat = None
        self.metrics.set_connected(False)
        self._hello_due = now  # try at once; the handshake event also triggers a HELLO

    def _reconnect(self, context: Context, poller: zmq.Poller, now: float, reason: str) -> None:
        assert self._link is not None
        dropped = len(self._pending) + (self._inflight_epoch == self._epoch)
        logger.warning(
            "lost the frontend at %s (%s); re-registering, dropping %d batches",
            self.config.frontend,
            reason,
            dropped,
        )
        self._pending.clear()
        self._epoch += 1
        self.metrics.reconnected(dropped)
        poller.unregister(self._link.socket)
        poller.unregister(self._link.monitor)
        self._link.close(linger_ms=0)
        self._backoff = Backoff(
            self.config.reconnect_initial_s, self.config.reconnect_max_s, jitter=0.2
        )
        self._open_link(context, poller, now)

    # ---------------------------------------------------------------------- batches

    def _dispatch(self, worker: ModelWorker) -> None:
        if self._inflight_epoch is None and self._pending:
            worker.submit(self._pending.popleft())
            self._inflight_epoch = self._epoch

    def _on_answer(self, frames: list[zmq.Frame]) -> None:
        epoch, self._inflight_epoch = self._inflight_epoch, None
        if epoch != self._epoch or self._link is None or not self.registered:
            logger.debug("dropping the answer to a batch of a lost connection")
        elif not self._link.send_frames(frames):
            logger.warning("could not send an answer: no connection to the frontend")


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass


def serve(config: ContainerConfig, predict: PredictFunction) -> None:
    """Serve ``predict`` as configured until SIGTERM/SIGINT."""
    ModelContainer(config, predict).run()
