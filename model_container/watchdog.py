"""The batch watchdog: ends the process when a batch runs far past its timeout.

A batch that carries a timeout (PREDICT's ``to_ms``) must not run forever even when the
model holds the GIL and no Python thread can act on RESTART: ``faulthandler``'s timer,
which runs in a C thread of its own, writes every thread's traceback to stderr and
exits with status 1 (``docs/wire-protocol.md`` §5.1).

Arming that timer starts a new OS thread and cancelling it joins that thread: about
150 µs of CPU and two thread switches, more than a quick model's whole batch. So the
timer is not armed per batch; ``BatchWatchdog.cover`` arms it only when the timer armed
last does not already fire within the window the batch needs, between ``watchdog_s``
and ``1 + SLACK`` times that after the batch starts, and the serving loop, when idle,
disarms it shortly before it would fire (``disarm_if_due``). At any sustained rate it is
armed at most once per ``SLACK * watchdog_s`` (a quarter of a second or more).
"""

from __future__ import annotations

import faulthandler
import logging

logger = logging.getLogger(__name__)

# How much later than ``watchdog_s`` the watchdog may fire, as a fraction of it.
SLACK = 0.25


def watchdog_s(timeout_ms: int) -> float:
    """When the watchdog of a batch with this timeout fires, at the earliest: well after
    the frontend should have sent RESTART (it counts from sending, this from starting
    the batch), so that it only acts when no Python thread can (the model holds the
    GIL)."""
    return 1.5 * timeout_ms / 1000 + 1.0


class BatchWatchdog:
    """faulthandler's exit timer, armed only when it must be; used by one thread."""

    def __init__(self) -> None:
        self._fires_at: float | None = None  # monotonic time at which the timer fires
        self._margin_s = 0.0  # how long before that the idle loop disarms it

    @property
    def fires_at(self) -> float | None:
        return self._fires_at

    def cover(self, timeout_ms: int, now: float) -> bool:
        """Make sure the timer fires between ``watchdog_s(timeout_ms)`` and ``1 + SLACK``
        times that from ``now`` (a batch starts); False if it cannot be armed."""
        earliest = watchdog_s(timeout_ms)
        fires = self._fires_at
        if fires is not None and now + earliest <= fires <= now + earliest * (1 + SLACK):
            return True
        delay = earliest * (1 + SLACK)
        try:
            faulthandler.dump_traceback_later(delay, exit=True)
        except (RuntimeError, ValueError, OSError) as exc:  # no usable stderr
            logger.warning("cannot arm the batch watchdog: %s", exc)
            self._fires_at = None
            return False
        self._fires_at = now + delay
        self._margin_s = earliest * SLACK / 2
        return True

    def disarm_at(self) -> float | None:
        """When the idle serving loop must disarm the timer (None: not armed)."""
        if self._fires_at is None:
            return None
        return self._fires_at - self._margin_s

    def disarm_if_due(self, now: float) -> None:
        """Called when no batch runs: disarm the timer if it fires soon."""
        at = self.disarm_at()
        if at is not None and now >= at:
            self.disarm()

    def disarm(self) -> None:
        if self._fires_at is not None:
            self._fires_at = None
            faulthandler.cancel_dump_traceback_later()
