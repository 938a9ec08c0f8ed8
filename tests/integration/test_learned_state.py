"""What one query frontend learned reaches the others, through the real Redis.

Two ``PolicyStates`` stand for the learned-state copies of two query frontends sharing
one Redis. Feedback recorded through one is stored by the Lua script; the other's
periodic refresh (one pipelined read of every tracked app) brings it in, for every
app it tracks. Feedback for an epoch the app has left is refused and stored nowhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from polling import eventually_async

from management_frontend.state.keys import Keys
from management_frontend.state.policy import RECORDED, STALE, ArmFeedback
from query_frontend.selection.learned import PolicyStates

KEYS = Keys("learned-test")
APPS = {"shop": "e1", "news": "e7"}  # app -> its policy_epoch


@pytest_asyncio.fixture
async def other_frontend(async_redis: aioredis.Redis) -> AsyncIterator[PolicyStates]:
    """The second frontend's copy, refreshing every 10 ms, tracking both apps."""
    for app, epoch in APPS.items():
        await async_redis.hset(KEYS.app(app), mapping={"name": app, "policy_epoch": epoch})
    states = PolicyStates(async_redis, KEYS, refresh_s=0.01)
    states.tracked = lambda: list(APPS.items())
    refreshing = asyncio.create_task(states.run())
    try:
        yield states
    finally:
        refreshing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await refreshing
        await states.close()


async def test_feedback_recorded_by_one_frontend_reaches_the_other(
    async_redis: aioredis.Redis, other_frontend: PolicyStates
) -> None:
    this_frontend = PolicyStates(async_redis, KEYS)

    def learned(app: str) -> dict[str, tuple[float, int, float]]:
        state = other_frontend.app_state(app, APPS[app])
        return {a: (s.log_weight, s.updates, s.loss_sum) for a, s in state.arms.items()}

    # The other copy first reads each app when it is first asked for it ...
    assert await this_frontend.record("shop", "e1", None, {"m:1": ArmFeedback(-0.5, 1.0)}) == (
        RECORDED
    )
    await eventually_async(lambda: learned("shop") == {"m:1": (-0.5, 1, 1.0)}, "first read")
    assert learned("news") == {}
    # ... and what is learned afterwards, for any tracked app, comes with the refresh.
    lesson = {"m:1": ArmFeedback(log_weight=-0.25, loss=0.5), "m:2": ArmFeedback(0.0, 0.0)}
    assert await this_frontend.record("shop", "e1", None, lesson) == RECORDED
    assert await this_frontend.record("news", "e7", None, {"m:3": ArmFeedback(-2.0, 4.0)}) == (
        RECORDED
    )
    await eventually_async(
        lambda: (
            learned("shop") == {"m:1": (-0.75, 2, 1.5), "m:2": (0.0, 1, 0.0)}
            and learned("news") == {"m:3": (-2.0, 1, 4.0)}
        ),
        what="the other frontend's copy to hold both apps' later feedback",
    )
    assert other_frontend.app_state("shop", "e1").updates == 2
    await this_frontend.close()


async def test_feedback_for_an_epoch_the_app_left_is_not_counted_or_shown(
    async_redis: aioredis.Redis, other_frontend: PolicyStates
) -> None:
    await async_redis.hset(KEYS.app("shop"), "policy_epoch", "e2")  # a reset, say
    this_frontend = PolicyStates(async_redis, KEYS)
    stale = await this_frontend.record("shop", "e1", None, {"m:1": ArmFeedback(-1.0, 1.0)})
    assert stale == STALE
    assert await async_redis.exists(KEYS.policy_state("shop", "e1")) == 0
    await this_frontend.close()
