"""When the frontend gives up on a query: early enough that the default is in time.

A query's answer must reach the client within the app's objective. Answering with the
default at exactly ``arrival + slo`` is too late: the timer fires when the event loop
gets to it, and the response then waits its turn to be written. Under saturation those
waits are milliseconds. So the frontend gives up a margin before the objective: a fixed
part (1 ms, or a tenth of a small objective) plus how late its deadline timers have
recently been firing, capped at a quarter of the objective so a stalled loop never turns
every query into a default.

``DeadlineWatch`` keeps every query's deadline on one loop timer.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Generic, TypeVar

from query_frontend.queries import Query

C = TypeVar("C")

# Observed lateness halves every this many seconds without a new observation.
LAG_HALF_LIFE_S = 1.0
MAX_MARGIN_FRACTION = 0.25
# ``DeadlineWatch`` rebuilds its heap without answered queries past this many entries.
MIN_COMPACT = 4096


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


class DeadlineWatch(Generic[C]):
    """Every query's deadline on one loop timer, armed for the earliest of them.

    A heap of (deadline, sequence, query, context), where a timer per query made and
    cancelled one ``TimerHandle`` per query: at thousands of queries a second, a tenth
    of the time the frontend spends submitting one. A query answered before its deadline
    stays in the heap until then and is skipped (its future is done); when answered
    entries pile up (a long objective under load), the heap is rebuilt without them.
    ``expire(query, context)`` is called for each query still waiting at its deadline.
    """

    __slots__ = ("_armed_at", "_compact_at", "_expire", "_heap", "_seq", "_timer")

    def __init__(self, expire: Callable[[Query, C], None]) -> None:
        self._expire = expire
        self._heap: list[tuple[float, int, Query, C]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf
        self._compact_at = MIN_COMPACT

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, query: Query, context: C, loop: asyncio.AbstractEventLoop) -> None:
        """Watch ``query``: ``expire(query, context)`` at ``query.deadline`` unless it is
        answered first."""
        heap = self._heap
        deadline = query.deadline
        heapq.heappush(heap, (deadline, next(self._seq), query, context))
        if deadline < self._armed_at:
            self._arm(loop, deadline)
        if len(heap) > self._compact_at:
            self._compact()

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = at
        self._timer = loop.call_at(at, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        due = max(loop.time(), self._armed_at)  # what the timer was armed for is due
        self._timer, self._armed_at = None, math.inf
        heap = self._heap
        while heap and heap[0][0] <= due:
            _, _, query, context = heapq.heappop(heap)
            if not query.future.done():
                self._expire(query, context)
        while heap and heap[0][2].future.done():
            heapq.heappop(heap)
        if heap and self._timer is None:  # (an expiry may have armed it already)
            self._arm(loop, heap[0][0])

    def _compact(self) -> None:
        """Drop the answered queries; the next rebuild when the heap has doubled again."""
        heap = [entry for entry in self._heap if not entry[2].future.done()]
        heapq.heapify(heap)
        self._heap = heap
        self._compact_at = max(MIN_COMPACT, 2 * len(heap))
