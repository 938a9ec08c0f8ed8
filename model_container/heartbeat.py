"""Timekeeping for a replica's connection: heartbeats, liveness and registration retries.

Pure logic over a monotonic clock, so that the serving loop can ask "how long may I
block?" and "what is due now?" without sleeping, and so that the rules can be tested
without sockets.

* ``Heartbeat``: after WELCOME, send a HEARTBEAT ``SENDS_PER_INTERVAL`` times per
  interval (the frontend takes a replica it has heard nothing from for one interval out
  of rotation, so one late or lost heartbeat must not reach that); the frontend is dead
  when nothing at all has arrived from it for ``LIVENESS_INTERVALS`` intervals.
* ``Backoff``: delays between HELLOs until a WELCOME arrives, growing from ``initial``
  to ``cap`` (bounded, so that a restarted frontend gets its replicas back quickly).
"""

from __future__ import annotations

import random

# The frontend is presumed dead after this many heartbeat intervals of silence.
LIVENESS_INTERVALS = 3
# Heartbeats sent per interval: the frontend benches a replica silent for one interval.
SENDS_PER_INTERVAL = 3


class Heartbeat:
    """Heartbeat and liveness deadlines of one registered connection."""

    def __init__(self, interval_s: float, now: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"heartbeat interval must be positive, got {interval_s}")
        self.interval_s = interval_s
        self.send_every_s = interval_s / SENDS_PER_INTERVAL
        self.last_received = now
        self.next_send = now + self.send_every_s

    @property
    def timeout_s(self) -> float:
        return LIVENESS_INTERVALS * self.interval_s

    def received(self, now: float) -> None:
        """Anything arrived from the frontend."""
        self.last_received = now

    def send_due(self, now: float) -> bool:
        """Whether a HEARTBEAT is due; if so, schedules the next one."""
        if now < self.next_send:
            return False
        # Skip missed beats rather than sending a burst after a stall.
        self.next_send = max(self.next_send + self.send_every_s, now + self.send_every_s / 2)
        return True

    def expired(self, now: float) -> bool:
        """Whether the frontend has been silent for too long."""
        return now - self.last_received > self.timeout_s

    def next_deadline(self) -> float:
        """The next moment at which ``send_due`` or ``expired`` may change."""
        return min(self.next_send, self.last_received + self.timeout_s)


class Backoff:
    """Bounded exponential backoff with optional jitter: initial, initial*factor, ... cap."""

    def __init__(
        self,
        initial_s: float,
        cap_s: float,
        factor: float = 2.0,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial_s <= cap_s:
            raise ValueError(f"need 0 < initial ({initial_s}) <= cap ({cap_s})")
        if factor < 1 or not 0 <= jitter < 1:
            raise ValueError(f"need factor >= 1 and 0 <= jitter < 1, got {factor}, {jitter}")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._current = initial_s

    def next_delay(self) -> float:
        """The delay before the next attempt; each call grows the following one."""
        delay = self._current
        self._current = min(self._current * self.factor, self.cap_s)
        if self.jitter:
            # Spread the replicas of a restarted frontend so that they do not re-register
            # in lockstep; never above the cap.
            delay *= 1 - self.jitter * self._rng.random()
        return delay

    def reset(self) -> None:
        self._current = self.initial_s
