"""The deadline rule: give up early enough that the default reaches the client in time."""

import asyncio

import numpy as np
import pytest

from query_frontend.batching.deadlines import (
    MAX_MARGIN_FRACTION,
    MIN_COMPACT,
    DeadlineWatch,
    LagTracker,
    answer_by,
)
from query_frontend.queries import Expired, Query


def test_a_quiet_loop_gives_up_one_millisecond_before_the_objective():
    assert answer_by(10.0, 0.020, 0.0) == pytest.approx(10.019)
    assert answer_by(10.0, 0.002, 0.0) == pytest.approx(10.0018)  # a tenth of a tiny SLO


def test_late_timers_move_the_deadline_earlier_but_never_by_more_than_a_quarter():
    assert answer_by(10.0, 0.020, 0.003) == pytest.approx(10.016)
    assert answer_by(10.0, 0.020, 5.0) == pytest.approx(10.0 + 0.020 * (1 - MAX_MARGIN_FRACTION))


def test_lag_is_the_worst_recent_lateness_and_fades_when_the_loop_recovers():
    lag = LagTracker()
    assert lag.lag(0.0) == 0.0
    lag.observe(0.004, now=1.0)
    lag.observe(0.001, now=1.0)  # a smaller one does not hide the worst
    assert lag.lag(1.0) == pytest.approx(0.004)
    assert lag.lag(2.0) == pytest.approx(0.002)  # halves each second
    assert lag.lag(11.0) < 0.00001
    lag.observe(0.003, now=2.0)  # bigger than what is left of the old one
    assert lag.lag(2.0) == pytest.approx(0.003)


def _query(loop: asyncio.AbstractEventLoop, deadline: float) -> Query:
    return Query(0, np.zeros(1), deadline, loop.create_future())


def test_every_query_still_waiting_is_expired_at_its_deadline_in_order() -> None:
    async def run() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        expired: list[tuple[str, float]] = []
        watch: DeadlineWatch[str] = DeadlineWatch(
            lambda q, ctx: (expired.append((ctx, q.deadline)), q.resolve(Expired(ctx)))
        )
        now = loop.time()
        # Added out of order: a later query with an earlier deadline re-arms the timer.
        for ctx, after in (("c", 0.03), ("a", 0.01), ("b", 0.02)):
            watch.add(_query(loop, now + after), ctx, loop)
        await asyncio.sleep(0.06)
        return expired

    expired = asyncio.run(run())
    assert [ctx for ctx, _ in expired] == ["a", "b", "c"]


def test_a_query_answered_first_is_never_expired_and_leaves_the_heap() -> None:
    async def run() -> tuple[list[str], Query, int]:
        loop = asyncio.get_running_loop()
        expired: list[str] = []
        watch: DeadlineWatch[str] = DeadlineWatch(lambda q, ctx: expired.append(ctx))
        now = loop.time()
        answered, late = _query(loop, now + 0.01), _query(loop, now + 0.02)
        watch.add(answered, "answered", loop)
        watch.add(late, "late", loop)
        answered.resolve(b"1")
        await asyncio.sleep(0.05)
        return expired, answered, len(watch)

    expired, answered, left = asyncio.run(run())
    assert expired == ["late"]
    assert answered.future.result() == b"1"
    assert left == 0


def test_answered_queries_do_not_pile_up_under_a_long_objective() -> None:
    """At thousands of queries a second and an objective of minutes, the heap must not
    keep every answered query until its deadline."""

    async def run() -> int:
        loop = asyncio.get_running_loop()
        watch: DeadlineWatch[str] = DeadlineWatch(lambda q, ctx: None)
        far = loop.time() + 600.0
        for _ in range(20 * MIN_COMPACT):
            query = _query(loop, far)
            watch.add(query, "x", loop)
            query.resolve(b"0")
        return len(watch)

    assert asyncio.run(run()) <= 2 * MIN_COMPACT
