"""The query frontend's background loops stop when cancelled, whatever Redis call they
are in at that moment.

Each loop retries on Redis errors, and redis-py can turn a cancellation that lands
while a command waits for its reply into a ``ConnectionError`` (about one in five on a
busy loop). A loop that took it for an outage would run on, and the frontend's
shutdown would wait for it for ever. Here each loop is kept busy against the real
Redis and cancelled many times at arbitrary moments; every cancellation must end it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import redis.asyncio as aioredis

from management_frontend.state.keys import Keys
from model_container.protocol import Hello, InputType
from query_frontend.batching.controllers import FixedController
from query_frontend.batching.dispatch import Dispatcher
from query_frontend.batching.replicas import Replica
from query_frontend.caching.cache import PredictionCache
from query_frontend.metrics import Metrics
from query_frontend.routing.table import RoutingTable, follow
from query_frontend.rpc.registry import ReplicaRegistry
from query_frontend.selection.learned import PolicyStates
from query_frontend.telemetry import TelemetryPublisher, TickBuilder

KEYS = Keys("loops-test")
ROUNDS = 150  # at ~1 swallowed cancel in 5, a loop that swallows them fails here for sure
STOP_S = 5.0


async def cancel_many_times(start: Callable[[], Coroutine[Any, Any, None]]) -> None:
    rng = random.Random(7)
    for round_ in range(ROUNDS):
        task = asyncio.create_task(start())
        await asyncio.sleep(rng.random() * 0.004)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_S)
        if not done:
            task.print_stack()
            pytest.fail(f"round {round_}: the loop went on {STOP_S} s after it was cancelled")
        assert task.cancelled(), f"round {round_}: the loop ended otherwise: {task}"


async def test_the_learned_state_refresh_stops_when_cancelled(
    async_redis: aioredis.Redis,
) -> None:
    def refreshing() -> Coroutine[Any, Any, None]:
        states = PolicyStates(async_redis, KEYS, refresh_s=0)
        states.tracked = lambda: [("shop", "e1"), ("news", "e2")]
        return states.run()

    await cancel_many_times(refreshing)


async def test_the_replica_registry_stops_when_cancelled(async_redis: aioredis.Redis) -> None:
    hello = Hello("m", "1", InputType.DOUBLES, "replica-1", {"python": "3.11"}, pid=1)
    replica = Replica.from_hello(b"id", hello, 0.0, FixedController(1))

    def registering() -> Coroutine[Any, Any, None]:
        registry = ReplicaRegistry(async_redis, KEYS, "frontend-1")
        for _ in range(1000):  # always something to write
            registry.added(replica)
            registry.removed(replica)
        return registry.run()

    await cancel_many_times(registering)


async def test_the_change_feed_follower_stops_when_cancelled(
    async_redis: aioredis.Redis,
) -> None:
    stop = asyncio.Event()

    async def publishing() -> None:  # a change now and then: the follower re-reads
        while not stop.is_set():  # an Event: this loop's own cancel could be lost too
            await async_redis.xadd(KEYS.changes, {"kind": "app", "op": "add", "app": "a"})
            await asyncio.sleep(0.001)

    publisher = asyncio.create_task(publishing())
    try:
        await cancel_many_times(lambda: follow(RoutingTable(), async_redis, KEYS))
    finally:
        stop.set()
        await asyncio.wait_for(publisher, STOP_S)


async def test_the_telemetry_publisher_stops_when_cancelled(async_redis: aioredis.Redis) -> None:
    def publishing() -> Coroutine[Any, Any, None]:
        dispatcher = Dispatcher(64, 100)
        cache = PredictionCache(0)
        metrics = Metrics(dispatcher, cache)
        metrics.request("app", 200, 0.001, [b"1"], [1])
        routing, policies = RoutingTable(), PolicyStates(async_redis, KEYS)
        builder = TickBuilder("fe", metrics, dispatcher, cache, routing, policies)
        # A tick every ~ms: the XADD is in flight at most moments a cancel lands.
        return TelemetryPublisher(async_redis, KEYS, builder, tick_s=0.001).run()

    await cancel_many_times(publishing)
