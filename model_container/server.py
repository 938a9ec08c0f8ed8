"""The serving loop of a model replica: register with every frontend, dispatch batches.

``ModelContainer.run`` runs the loop on the thread that calls it (the serving thread),
which owns every socket: one ``sessions.FrontendSession`` per query frontend (its link:
a DEALER and its monitor, or for ``unix://PATH`` a plain unix socket, ``unix_link``; its
heartbeat and registration state) and a socketpair that signals,
``stop()`` and DNS discovery write to. It blocks only in one poll whose timeout is the
earliest heartbeat or HELLO deadline of any session (``heartbeat``), so it never
sleeps and never spins.

It runs each batch itself (``worker.BatchRunner``) and sends the answer: a PREDICT is
read, computed and answered on one thread, with no hand-off between threads (each a GIL
hand-off and a wake-up). While a batch runs long, a ``standin.StandIn`` thread takes the
loop over (the serving thread lends it for the batch): it heartbeats, reads, obeys
RESTART and stop, and never starts a batch; the serving thread takes the loop back when
the batch ends. Stopped (or told to restart) during a batch, the stand-in says GOODBYE
at once, then ends the process with the exit status unless the batch ends within
``stop_timeout_s`` (no wait at all for a restart: the batch is what hung); a container
embedded on another thread than the main one is not ended, and ``run`` returns when the
batch does.

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
and returns. The batch watchdog (``watchdog``) stays armed between batches, and the idle
loop disarms it before it would fire.

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

from model_container import protocol
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
from model_container.standin import MAX_TICK_S, StandIn
from model_container.watchdog import BatchWatchdog
from model_container.worker import BatchRunner

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ContainerConfig:
    """Everything a replica needs to know to serve, built once by the entry point."""

    # The frontends' addresses: "tcp://127.0.0.1:7000" (or ipc://PATH, or unix://PATH for
    # the direct unix-socket transport), a comma-separated list of such, and/or
    # "dns+tcp://NAME:PORT" entries (``discovery.parse_frontends``).
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
    # Arm a watchdog (``watchdog``) around each batch that carries a timeout.
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
        self._watcher: DnsWatcher | None = None
        self._watchdog: BatchWatchdog | None = None
        self._context: Context | None = None
        self._on_main_thread = False
        self._signal_handlers = False  # SIGTERM/SIGINT routed to stop() and the wake-up fd
        self._ended = False  # the stand-in ended the process (``exit`` called)
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
        if self.exit_code and not self._ended:
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
        self._context = context
        self._ended = False
        self._on_main_thread = threading.current_thread() is threading.main_thread()
        runner = BatchRunner(
            self._predict, self.config.input_type, self.metrics, watchdog=self.config.batch_watchdog
        )
        poller = zmq.Poller()
        poller.register(wake_r.fileno(), zmq.POLLIN)
        standin = StandIn(lambda done: self._stand_in(poller, wake_r, done), self._wake)
        restore = self._install_signal_handlers(wake_w) if install_signal_handlers else None
        # The model and the libraries it loaded live as long as the process: spare every
        # full collection from walking them again (a pause in the middle of a batch).
        gc.freeze()
        standin.lock.acquire()  # this thread runs the loop, except while it lends it
        standin.start()
        self._watchdog = runner.watchdog
        try:
            self._serve(poller, runner, standin, wake_r)
        finally:
            standin.close()
            if runner.watchdog is not None and self._inflight is None:
                runner.watchdog.disarm()
            if restore is not None:
                restore()
            for session in self._sessions.values():
                session.link.close()
            self._wake_w = None
            wake_r.close()
            wake_w.close()
            if not self._ended:
                context.term()  # waits (up to goodbye_linger_ms) for GOODBYEs to leave

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

        self._signal_handlers = True

        def restore() -> None:
            self._signal_handlers = False
            for sig, handler in old.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_fd)

        return restore

    # ---------------------------------------------------------------------- the loop

    def _serve(
        self, poller: zmq.Poller, runner: BatchRunner, standin: StandIn, wake: socket.socket
    ) -> None:
        logger.info(
            "serving %s:%s (%s) as replica %s; registering with %s",
            self.config.model_name,
            self.config.model_version,
            self.config.input_type,
            self.config.replica_id,
            self._targets.describe(),
        )
        if self._targets.discovers:
            book = AddressBook(self._targets, self._resolver)
            self._watcher = DnsWatcher(
                book, self.config.discovery_interval_s, self._wake, time.monotonic
            )
            self._watcher.start()
        self._apply(poller, frozenset(self._targets.static), time.monotonic())
        try:
            while not self._stopping:
                self._turn(poller, wake, self._timeout_ms())
                if not self._stopping:
                    self._run_next(runner, standin)
        finally:
            if self._watcher is not None:
                self._watcher.stop()
        self._leave_all()

    def _turn(self, poller: zmq.Poller, wake: socket.socket, timeout_ms: int | None) -> None:
        """One round of the loop but batches: wait for input or a deadline, then read
        every session's messages, heartbeat, reconnect, apply discovered addresses."""
        ready = dict(poller.poll(timeout_ms))
        now = time.monotonic()
        if self._watchdog is not None and self._inflight is None:
            self._watchdog.disarm_if_due(now)  # idle: not before it would fire
        if wake.fileno() in ready:
            self._drain(wake)
        watcher = self._watcher
        if watcher is not None and (wanted := watcher.take()) is not None:
            self._apply(poller, wanted, now)
        for session in list(self._sessions.values()):
            session.on_ready(ready, now)
            session.on_timers(now)
            self._turns.mark(session)
            if session.restart_requested:
                reason = f"restart requested by {session.address}: {session.restart_requested}"
                self._must_exit(EXIT_RESTART_REQUESTED, reason)

    def _leave_all(self) -> None:
        """GOODBYE to every frontend (once: a session that left already stays silent)."""
        if not any(not s.closed for s in self._sessions.values()):
            return
        logger.info("%s: leaving", self._stop_reason)
        for session in self._sessions.values():
            session.leave(self._stop_reason, self.config.goodbye_linger_ms)

    def _timeout_ms(self, batches: bool = True) -> int | None:
        """Until the earliest session deadline (0 if a batch waits and ``batches``);
        None (no timeout) with no session."""
        if batches and self._turns.waiting:
            return 0
        deadlines = [s.next_deadline() for s in self._sessions.values()]
        if batches and self._watchdog is not None:
            disarm_at = self._watchdog.disarm_at()
            if disarm_at is not None:
                deadlines.append(disarm_at)
        if not deadlines:
            return None
        return max(0, math.ceil((min(deadlines) - time.monotonic()) * 1000))

    def _apply(self, poller: zmq.Poller, wanted: frozenset[str], now: float) -> None:
        """Open a session for each new endpoint and close those no longer wanted."""
        context = self._context
        assert context is not None, "only while running"
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

    def _drain(self, wake: socket.socket) -> None:
        """Empty the wake-up socket. A signal's number in it is a stop: the stand-in
        acts on it even while the model keeps the main thread (where Python runs signal
        handlers) in C code."""
        try:
            while data := wake.recv(4096):
                if self._signal_handlers and data.strip(b"\0"):
                    for signum in (signal.SIGTERM, signal.SIGINT):
                        if signum in data:
                            self.stop(f"received {signal.Signals(signum).name}")
        except BlockingIOError:
            pass

    # ---------------------------------------------------------------------- batches

    def _run_next(self, runner: BatchRunner, standin: StandIn) -> None:
        """Run the next batch here, on the thread that owns the sockets, and answer it;
        the stand-in keeps the connections alive meanwhile if it runs long."""
        turn = self._turns.next()
        if turn is None:
            return
        session, batch = turn
        session.inflight_epoch = session.epoch
        self._inflight = session
        standin.tick_s = self._standin_tick()
        started = time.perf_counter()
        with standin.lent():
            outcome = runner.run(batch)
        self._inflight = None
        session.answer(protocol.encode(outcome))
        runner.record(batch, time.perf_counter() - started, outcome)  # after the answer
        if runner.fatal:
            self._must_exit(EXIT_MEMORY_LIMIT, runner.fatal)

    def _standin_tick(self) -> float:
        """How soon the stand-in takes over a running batch: within half the shortest
        heartbeat period, so that a long batch never silences the replica for one
        heartbeat interval (the frontend would bench it)."""
        tick = MAX_TICK_S
        for session in self._sessions.values():
            if session.heartbeat is not None:
                tick = min(tick, session.heartbeat.send_every_s / 2)
        return tick

    def _stand_in(self, poller: zmq.Poller, wake: socket.socket, done: Callable[[], bool]) -> None:
        """The loop, on the stand-in's thread, while a long batch runs: everything but
        starting batches, until ``done()``. Told to stop meanwhile, it says GOODBYE at
        once and ends the process if the batch does not end in time."""
        logger.debug("a batch runs long; the stand-in serves the connections meanwhile")
        while not done() and not self._stopping:
            self._turn(poller, wake, self._timeout_ms(batches=False))
        if self._stopping and not done():
            self._leave_while_computing(done)

    def _leave_while_computing(self, done: Callable[[], bool]) -> None:
        self._leave_all()
        if not self.exit_code:
            deadline = time.monotonic() + self.config.stop_timeout_s
            while not done() and time.monotonic() < deadline:
                time.sleep(0.01)
            if done():
                return  # the serving thread finishes the shutdown
            logger.warning("a batch was still running at shutdown; not waiting for it")
            if not self._on_main_thread:
                return  # embedded in a program: ``run`` returns when the batch does
        else:
            # Told to restart, the running batch is what hung: do not wait for it.
            logger.warning("a batch is still running; exiting without waiting for it")
        self._ended = True
        assert self._context is not None, "only while running"
        _flush_goodbyes(self._context, self.config.goodbye_linger_ms / 1000)
        logging.shutdown()  # os._exit flushes nothing
        self._exit(self.exit_code)


def _flush_goodbyes(context: Context, budget_s: float) -> None:
    """Give the GOODBYEs up to ``budget_s`` to leave: ``term()`` sends what lingering
    sockets hold; it runs on a thread of its own, which the process may leave behind."""
    flusher = threading.Thread(target=context.term, name="flush-goodbyes", daemon=True)
    flusher.start()
    flusher.join(budget_s)


def serve(config: ContainerConfig, predict: PredictFunction) -> None:
    """Serve ``predict`` as configured until SIGTERM/SIGINT."""
    ModelContainer(config, predict).run()
