"""Who runs the serving loop while the model computes: the serving thread lends it.

The serving loop runs each batch on its own thread, the one that owns the frontend
sockets, so that a PREDICT is read, computed and answered without a hand-off between
threads. A batch that runs long must not silence the replica, though: the frontend
benches a replica it has heard nothing from for one heartbeat interval, RESTART must be
obeyed while the model hangs, and SIGTERM must still say GOODBYE.

So whoever runs the loop holds ``StandIn.lock``. The serving thread holds it except
while a batch computes (``lent``). A ``StandIn`` thread wakes every ``tick_s``; when it
finds a batch that has been running for at least ``tick_s``, it takes the lock and runs
the loop (``stand_in``: read, heartbeat, reconnect, obey RESTART and stop; never start a
batch) until the batch is over. The serving thread then asks for the lock back
(``wake``, which makes the stand-in's poll return) and carries on. A ZeroMQ socket may
move between threads with a full memory barrier, which the lock is.

A batch shorter than ``tick_s`` (any quick model's) costs two uncontended lock
operations and no thread switch; only a long one pays a hand-back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

logger = logging.getLogger(__name__)

# The longest the stand-in sleeps between looks, and the shortest batch it takes over.
MAX_TICK_S = 0.05


class StandIn:
    """Stands in for the serving thread while it runs a long batch.

    ``stand_in(done)`` runs the serving loop (holding ``lock``) until ``done()`` is
    true; ``wake()`` makes that loop's poll return.
    """

    def __init__(
        self, stand_in: Callable[[Callable[[], bool]], None], wake: Callable[[], None]
    ) -> None:
        self._stand_in = stand_in
        self._wake = wake
        self.lock = threading.Lock()
        self.tick_s = MAX_TICK_S  # the serving loop shortens it for short heartbeats
        self._batch_started: float | None = None
        self._batch_over = False
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serving-stand-in", daemon=True)

    @property
    def batch_over(self) -> bool:
        """Whether the batch the lock was lent for has ended (or none is running)."""
        return self._batch_over or self._batch_started is None

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the thread; called by the serving thread, which holds ``lock``, so the
        stand-in is not serving and ends within a tick."""
        self._closing.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    @contextlib.contextmanager
    def lent(self) -> Iterator[None]:
        """Lend the loop while the body (a batch) runs; the caller holds ``lock``."""
        self._batch_started = time.monotonic()
        self.lock.release()
        try:
            yield
        finally:
            self._batch_started = None
            if not self.lock.acquire(blocking=False):
                # The stand-in runs the loop: tell it to stop, then wait for the lock.
                self._batch_over = True
                self._wake()
                self.lock.acquire()
            self._batch_over = False

    def _run(self) -> None:
        while not self._closing.is_set():
            delay = self.tick_s
            started = self._batch_started
            if started is not None:
                running = time.monotonic() - started
                if running < delay:
                    delay -= running
                elif self.lock.acquire(blocking=False):
                    try:
                        if not self.batch_over:
                            self._stand_in(lambda: self.batch_over)
                    except Exception:  # the loop must go on when the batch ends
                        logger.exception("the stand-in serving loop failed")
                    finally:
                        self.lock.release()
            self._closing.wait(delay)
