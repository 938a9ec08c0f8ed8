"""The serving loop of a model replica: register with every frontend, dispatch batches.

``ModelContainer.run`` owns one thread (the I/O thread) and every socket on it: one
``sessions.FrontendSession`` per query frontend (a DEALER, its monitor, its heartbeat
and registration state), the inproc PAIR on which the ``worker.ModelWorker`` hands
back answers, and a socketpair that signals, ``stop()`` and DNS discovery write to. It
blocks only in one poll whose timeout is the earliest heartbeat or HELLO deadline of
any session (``heartbeat``), so it never sleeps and never spins.

``--frontend`` names one frontend, a list, or a DNS name whose every address is a
frontend (``discovery``); with a name, a ``discovery.DnsWatcher`` thread re-resolves it
every ``discovery_interval_s`` and the loop reconciles: a new address gets a session
(connect + HELLO), a vanished one says GOODBYE and is closed, its queued batches
dropped and its running batch's answer discarded.

The model is loaded once and runs one batch at a time, whichever frontend sent it:
sessions take turns (``sessions.RoundRobin``), FIFO within one, and each answer goes
back on the connection of the session that sent the batch — unless that connection was
replaced meanwhile (the session's epoch moved on). Each session registers, heartbeats
and reconnects on its own, with the same replica id, so one frontend going away leaves
the others undisturbed. SIGTERM/SIGINT (or ``stop()``) sends GOODBYE to every frontend
and returns.

With ``metrics_port`` set, ``run`` also serves ``GET /metrics`` (``metrics``) on a
thread of its own for as long as it runs.
"""

from __future__ import annotations

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

from model_container.bundle import PredictFunction
from model_container.connection import Context
from model_container.discovery import (
    DEFAULT_DISCOVERY_INTERVAL_S,
    AddressBook,
    DnsWatcher,
    Resolver,
    parse_frontends,
    reconcile,
    resolve_host,
)
from model_container.metrics import ContainerMetrics, MetricsServer
from model_container.protocol import EXIT_MEMORY_LIMIT, EXIT_RESTART_REQUESTED, InputType
from model_container.rpc_keys import ClientKeys, warn_insecure
from model_container.sessions import FrontendSession, RoundRobin, SessionSettings
from model_container.worker import ModelWorker

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """Everything a replica needs to know to serve, built once by the entry point."""

    # The frontends' ROUTER addresses: "tcp://127.0.0.1:7000", a comma-separated list of
    # such, and/or "dns+tcp://NAME:PORT" entries (``discovery.parse_frontends``).
    frontend: str
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
    discovery_interval_s: float = DEFAULT_DISCOVERY_INTERVAL_S  # re-resolve dns+tcp names
    secrets_dir: str | None = None  # the replica's credentials (``credentials``)
    # Plain ZeroMQ instead of CURVE (``rpc_keys``): only to measure what CURVE costs.
    insecure_rpc: bool = False
    # Arm a watchdog (``worker.watchdog_s``) around each batch that carries a timeout.
    batch_watchdog: bool = True


class ModelContainer:
    """Serves one model function to one or several query frontends until stopped.

    ``resolver`` (for tests) replaces ``socket.getaddrinfo`` for ``dns+tcp://`` names:
    it maps (name, port) to IP address strings, raising ``OSError`` when it cannot.
    ``exit`` ends the process when the replica must start afresh (a frontend sent
    RESTART: status ``EXIT_RESTART_REQUESTED``; the model raised MemoryError:
    ``EXIT_MEMORY_LIMIT``), after GOODBYE to every frontend; tests running a container
    on a thread replace it (``run`` returns after calling it).
    Raises ``ValueError`` if ``config.frontend`` is not a valid frontend address, and
    ``credentials.CredentialError`` if the RPC keys are not in ``config.secrets_dir``
    (unless ``config.insecure_rpc``).
    """

    def __init__(
        self,
        config: ContainerConfig,
        predict: PredictFunction,
        *,
        resolver: Resolver = resolve_host,
        exit: Callable[[int], object] = os._exit,
    ) -> None:
        self.config = config
        self._exit = exit
        self.exit_code = 0  # set when it must exit for its manager to restart it
        self._predict = predict
        self._targets = parse_frontends(config.frontend)
        keys: ClientKeys | None = None
        if config.insecure_rpc:
            warn_insecure()
        else:
            keys = ClientKeys.load(config.secrets_dir)
        self._resolver = resolver
        self._stopping = False
        self._stop_reason = "stopped"
        self._wake_w: socket.socket | None = None
        self._settings = SessionSettings.for_replica(
            config.model_name,
            config.model_version,
            config.input_type,
            config.replica_id,
            config.heartbeat_ms,
            config.hello_interval_s,
            config.reconnect_initial_s,
            config.reconnect_max_s,
            keys,
        )
        self._sessions: dict[str, FrontendSession] = {}  # by endpoint
        self._turns = RoundRobin()
        self._inflight: FrontendSession | None = None  # whose batch is running
        # Recorded whether or not they are served: an embedding program may read them.
        self.metrics = ContainerMetrics(
            config.model_name, config.model_version, config.input_type, config.replica_id
        )
        self.metrics.track_queue(self._queue_depth)
        self.metrics.track_frontends(self._registered_count, lambda: len(self._sessions))
        self.metrics_server: MetricsServer | None = None

    @property
    def registered(self) -> bool:
        """Whether the replica is registered with at least one frontend."""
        return any(s.registered for s in list(self._sessions.values()))

    @property
    def frontends(self) -> dict[str, bool]:
        """Each frontend endpoint served now, and whether it is registered there."""
        return {address: s.registered for address, s in list(self._sessions.items())}

    # The gauges read these at scrape time, on the metrics server's thread.

    def _queue_depth(self) -> int:
        queued = sum(len(s.pending) for s in self._sessions_now())
        return queued + (self._inflight is not None)

    def _registered_count(self) -> int:
        return sum(s.registered for s in self._sessions_now())

    def _sessions_now(self) -> list[FrontendSession]:
        """A copy of the sessions, safe to take on another thread than the loop's: should
        the loop add or remove one during the copy (which then raises), copy again."""
        while True:
            try:
                return list(self._sessions.values())
            except RuntimeError:  # dictionary changed size during iteration
                continue

    def stop(self, reason: str = "stopped") -> None:
        """Ask ``run`` to say GOODBYE and return; safe from any thread or signal handler."""
        self._stop_reason = reason
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        wake_w = self._wake_w
        if wake_w is not None:
            with contextlib.suppress(OSError):  # buffer full: a wake-up is already pending
                wake_w.send(b"\0")

    def run(self, install_signal_handlers: bool = True) -> None:
        """Serve until ``stop()`` or SIGTERM/SIGINT (signals only on the main thread).

        Raises ``MetricsServerError``, before anything else, when a metrics port is
        configured and cannot be opened.
        """
        if self.config.metrics_port:
            self.metrics_server = MetricsServer(
                self.metrics.registry,
                self.config.metrics_host,
                self.config.metrics_port,
                self.config.secrets_dir,
            )
            logger.info("serving metrics at %s", self.metrics_server.url)
        try:
            self._run(install_signal_handlers)
        finally:
            if self.metrics_server is not None:
                self.metrics_server.close()
                self.metrics_server = None
        if self.exit_code:
            logging.shutdown()  # os._exit flushes nothing
            self._exit(self.exit_code)

    def _must_exit(self, code: int, reason: str) -> None:
        """Leave every frontend (GOODBYE says why) and end the process with ``code``."""
        if self.exit_code:
            return
        logger.error("exiting with status %d for a fresh start: %s", code, reason)
        self.exit_code = code
        self.stop(reason)

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
        worker = ModelWorker(
            context,
            address,
            self._predict,
            self.config.input_type,
            self.metrics,
            watchdog=self.config.batch_watchdog,
        )
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
            for session in self._sessions.values():
                session.link.close()
            # Told to restart, the running batch is what hung: do not wait for it.
            finished = worker.stop(0.0 if self.exit_code else self.config.stop_timeout_s)
            answers.close()
            self._wake_w = None
            wake_r.close()
            wake_w.close()
            if finished:
                context.term()  # waits (up to goodbye_linger_ms) for GOODBYEs to leave
            else:
                # The model is still computing; its thread holds a socket, so term()
                # would hang. The process is exiting anyway.
                logger.warning("a batch was still running at shutdown; not waiting for it")
                if self.exit_code:
                    _flush_goodbyes(context, self.config.goodbye_linger_ms / 1000)

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
            self._targets.describe(),
        )
        watcher: DnsWatcher | None = None
        if self._targets.discovers:
            book = AddressBook(self._targets, self._resolver)
            watcher = DnsWatcher(book, self.config.discovery_interval_s, self._wake, time.monotonic)
            watcher.start()
        self._apply(context, poller, frozenset(self._targets.static), time.monotonic())
        try:
            self._loop(context, poller, worker, answers, wake, watcher)
        finally:
            if watcher is not None:
                watcher.stop()
        logger.info("%s: leaving", self._stop_reason)
        for session in self._sessions.values():
            session.leave(self._stop_reason, self.config.goodbye_linger_ms)

    def _loop(
        self,
        context: Context,
        poller: zmq.Poller,
        worker: ModelWorker,
        answers: zmq.Socket[bytes],
        wake: socket.socket,
        watcher: DnsWatcher | None,
    ) -> None:
        while not self._stopping:
            ready = dict(poller.poll(self._timeout_ms()))
            now = time.monotonic()
            if wake.fileno() in ready:
                _drain(wake)
            if watcher is not None and (wanted := watcher.take()) is not None:
                self._apply(context, poller, wanted, now)
            if answers in ready:
                self._on_answer(answers.recv_multipart(copy=False))
                if worker.fatal:
                    self._must_exit(EXIT_MEMORY_LIMIT, worker.fatal)
            for session in list(self._sessions.values()):
                session.on_ready(ready, now)
                session.on_timers(now)
                self._turns.mark(session)
                if session.restart_requested:
                    reason = f"restart requested by {session.address}: {session.restart_requested}"
                    self._must_exit(EXIT_RESTART_REQUESTED, reason)
            if not self._stopping:
                self._dispatch(worker)

    def _timeout_ms(self) -> int | None:
        """Until the earliest session deadline; None (no timeout) with no session."""
        if not self._sessions:
            return None
        deadline = min(s.next_deadline() for s in self._sessions.values())
        return max(0, math.ceil((deadline - time.monotonic()) * 1000))

    def _apply(
        self, context: Context, poller: zmq.Poller, wanted: frozenset[str], now: float
    ) -> None:
        """Open a session for each new endpoint and close those no longer wanted."""
        to_open, to_close = reconcile(self._sessions, wanted)
        for address in to_close:
            session = self._sessions.pop(address)
            dropped = session.leave("frontend no longer discovered", self.config.goodbye_linger_ms)
            self.metrics.dropped(dropped)
            logger.info("leaving the frontend at %s (no longer resolved)", address)
        for address in to_open:
            if self._targets.discovers:
                logger.info("discovered a frontend at %s", address)
            self._sessions[address] = FrontendSession(
                address, self._settings, self.metrics, context, poller, now
            )

    # ---------------------------------------------------------------------- batches

    def _dispatch(self, worker: ModelWorker) -> None:
        if self._inflight is not None:
            return
        turn = self._turns.next()
        if turn is not None:
            session, batch = turn
            worker.submit(batch)
            session.inflight_epoch = session.epoch
            self._inflight = session

    def _on_answer(self, frames: list[zmq.Frame]) -> None:
        session, self._inflight = self._inflight, None
        if session is None:
            logger.warning("an answer arrived for no batch; dropping it")
            return
        session.answer(frames)


def _flush_goodbyes(context: Context, budget_s: float) -> None:
    """Give the GOODBYEs up to ``budget_s`` to leave: ``term()`` sends what lingering
    sockets hold, but never returns while the stuck worker's socket is open, so it runs
    on a thread of its own that the process leaves behind."""
    flusher = threading.Thread(target=context.term, name="flush-goodbyes", daemon=True)
    flusher.start()
    flusher.join(budget_s)


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass


def serve(config: ContainerConfig, predict: PredictFunction) -> None:
    """Serve ``predict`` as configured until SIGTERM/SIGINT."""
    ModelContainer(config, predict).run()
