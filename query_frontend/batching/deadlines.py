"""When the frontend gives up on a query: early enough that the default is in time.

A query's answer must reach the client within the app's objective. Answering with the
default at exactly ``arrival + slo`` is too late: the timer fires when the event loop
gets to it, and the response then waits its turn to be written. Under saturation those
waits are milliseconds. So the frontend gives up a margin before the objective: a fixed
part (1 ms, or a tenth of a small objective) plus how late its deadline timers have
recently been firing, capped at a quarter of the objective so a stalled loop never turns
every query into a default.
"""

from __future__ import annotations

# Observed lateness halves every this many seconds without a new observation.
LAG_HALF_LIFE_S = 1.0
MAX_MARGIN_FRACTION = 0.25


class LagTracker:
    """A decaying maximum of how late deadline timers fired."""

    __slots__ = ("_at", "_lag")

    def __init__(self) -> None:
        self._lag = 0.0
        self._at = 0.0

    def observe(self, late_s: float, now: float) -> None:
        """A timer due at ``now - late_s`` ran at ``now``."""
        current = self.lag(now)
        if late_s > current:
            self._lag, self._at = late_s, now

    def lag(self, now: float) -> float:
        if self._lag == 0.0:
            return 0.0
        decay: float = 0.5 ** ((now - self._at) / LAG_HALF_LIFE_S)
        return self._lag * decay


def answer_by(arrival: float, slo_s: float, lag_s: float) -> float:
    """The deadline of a query that arrived at ``arrival`` (loop time, seconds)."""
    margin = min(0.001, 0.1 * slo_s) + lag_s
    return arrival + slo_s - min(margin, MAX_MARGIN_FRACTION * slo_s)
