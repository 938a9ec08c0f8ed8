"""A query frontend's telemetry tick (``query_frontend.telemetry``): deltas of its own
counters since the last tick stored, replicas as the dispatcher sees them, the policy
weights of apps with several arms, and the defaults answered with their reasons; a tick
Redis did not take is carried into the next; Redis down costs nothing but the tick."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from management_frontend.state.keys import Keys
from management_frontend.state.policy import PolicyParams
from management_frontend.state.records import App
from model_container.protocol import Hello, InputType
from query_frontend.batching.dispatch import Dispatcher
from query_frontend.caching.cache import PredictionCache
from query_frontend.metrics import Metrics
from query_frontend.queries import Expired
from query_frontend.routing.table import Arm, Route, RoutingTable
from query_frontend.selection.learned import PolicyStates
from query_frontend.telemetry import TelemetryPublisher, TickBuilder, frontend_id
from query_frontend.telemetry.ticks import MAX_DEFAULTS_PER_TICK


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def parts() -> tuple[Metrics, Dispatcher, TickBuilder, Clock, RoutingTable]:
    d = Dispatcher(64, 100)
    d.bind(lambda identity, frames: None)
    cache = PredictionCache(0)
    metrics = Metrics(d, cache)
    routing = RoutingTable()
    policies = PolicyStates(aioredis.Redis(), Keys())  # never used to reach Redis here
    clock = Clock()
    builder = TickBuilder("fe-1", metrics, d, cache, routing, policies, clock=clock)
    return metrics, d, builder, clock, routing


def test_a_tick_counts_what_happened_since_the_last_one_stored() -> None:
    async def scenario() -> list[dict[str, Any]]:
        metrics, d, builder, clock, _ = parts()
        loop = asyncio.get_running_loop()
        d.add_replica(b"a", Hello("m", "1", InputType.DOUBLES, "r0"), loop.time())
        d.add_replica(b"b", Hello("m", "1", InputType.DOUBLES, "r1"), loop.time())
        d.suspend_replica(b"b", "stuck: batch 3 unanswered 0.2 s past its deadline", loop.time())
        metrics.request("app", 200, 0.005, [b"1"], [1])
        metrics.request("app", 200, 0.5, [Expired("model 'm' version '1' was slow")], [2])
        metrics.request("app", 503, 0.0001, [])
        metrics.batch_sent(("m", "1"), 4, [0.0] * 4)
        clock.now += 2
        first = builder.build()
        builder.commit()
        clock.now += 2
        quiet = builder.build()
        builder.commit()
        metrics.request("app", 200, 0.005, [b"1"], [3])
        clock.now += 2
        lost = builder.build()  # not committed: Redis did not take it
        metrics.request("app", 200, 0.005, [b"1"], [4])
        clock.now += 2
        carried = builder.build()
        return [first, quiet, lost, carried]

    first, quiet, lost, carried = asyncio.run(scenario())
    assert (first["frontend"], first["t"], first["dt"], first["started"]) == (
        "fe-1",
        1002.0,
        2.0,
        1000.0,
    )
    app = first["apps"]["app"]
    assert (app["requests"], app["errors"], app["defaults"], app["queries"]) == (3, 1, 1, 2)
    assert sum(app["latency_buckets"]) == 3 and len(app["latency_buckets"]) == 15
    assert app["weights"] is None
    [default] = app["recent_defaults"]
    assert isinstance(default.pop("t"), float)  # the wall clock when it was answered
    assert [default] == [
        {
            "query_id": 2,
            "request_id": None,
            "reason": "model 'm' version '1' was slow",
        }
    ]
    model = first["models"]["m:1"]
    assert (model["batches"], model["queries"], model["queue_depth"]) == (1, 4, 0)
    replicas = {r["id"]: r for r in model["replicas"]}
    assert replicas["r0"]["in_rotation"] and replicas["r0"]["state"] == "ok"
    assert not replicas["r1"]["in_rotation"] and replicas["r1"]["state"] == "stuck"
    assert first["cache"] == {"hits": 0, "misses": 0, "bytes": 0}
    assert quiet["apps"] == {}  # nothing happened: the app is left out
    assert quiet["models"]["m:1"]["batches"] == 0
    assert lost["apps"]["app"]["requests"] == 1
    assert carried["apps"]["app"]["requests"] == 2 and carried["dt"] == 4.0


def test_defaults_are_capped_per_tick_and_kept_until_stored() -> None:
    metrics, _, builder, _, _ = parts()
    for qid in range(50):
        metrics.request("app", 200, 0.1, [Expired("late")], [qid])
    tick = builder.build()
    listed = tick["apps"]["app"]["recent_defaults"]
    assert len(listed) == MAX_DEFAULTS_PER_TICK
    assert listed[-1]["query_id"] == 49  # the newest are kept
    again = builder.build()  # the first was not stored: its defaults come again
    assert again["apps"]["app"]["recent_defaults"] == listed
    builder.commit()
    assert builder.build()["apps"] == {}


def test_split_and_learning_apps_carry_their_weights() -> None:
    _, _, builder, _, routing = parts()
    arms = (Arm("m:1", ("m", "1"), label="m:1"), Arm("m", ("m", "2"), label="m:2"))

    def route(name: str, policy: str, **params: Any) -> Route:
        app = App(name, InputType.DOUBLES, None, 100_000, policy=policy)
        return Route(app, None, arms=arms, params=PolicyParams(policy=policy, **params))

    routing.routes = {
        "s": route("s", "split", weights={"m:1": 3.0, "m": 1.0}),
        "b": route("b", "exp3"),
        "one": Route(App("one", InputType.DOUBLES, None, 100_000), ("m", "1")),
    }
    apps = builder.build()["apps"]
    assert apps["s"]["weights"] == {"m:1": 0.75, "m:2": 0.25}
    assert apps["b"]["weights"] == {"m:1": 0.5, "m:2": 0.5}  # nothing learned yet
    assert "one" not in apps


def test_redis_down_costs_the_tick_not_the_frontend(caplog: Any) -> None:
    async def scenario() -> tuple[bool, bool]:
        metrics, _, builder, _, _ = parts()
        # Nothing listens on port 1: every XADD fails at once.
        r = aioredis.Redis(port=1, socket_connect_timeout=0.5)
        publisher = TelemetryPublisher(r, Keys(), builder, tick_s=0.5)
        metrics.request("app", 200, 0.005, [b"1"], [1])
        try:
            return await publisher.publish(), await publisher.publish()
        finally:
            await r.aclose()

    assert asyncio.run(scenario()) == (False, False)
    warnings = [r for r in caplog.records if "cannot append telemetry" in r.getMessage()]
    assert len(warnings) == 1  # said once, not every tick


def test_a_frontend_id_is_unique_per_process_start() -> None:
    assert frontend_id("host-1") != frontend_id("host-1")
    assert frontend_id("host-1").startswith("host-1-")


def test_a_pipeline_app_carries_its_stages_and_a_one_stage_app_none() -> None:
    metrics, _, builder, clock, _ = parts()
    metrics.request("one", 200, 0.005, [b"1"], [1])
    metrics.request("chain", 200, 0.06, [b"1"], [2])
    metrics.stage("chain", 1, 0.05, 0, 0)
    metrics.stage("chain", 2, 0.002, 0, 0)
    metrics.request("chain", 200, 0.3, [Expired("stage 2 ('clf') was late")], [3])
    metrics.stage("chain", 1, 0.05, 0, 0)
    metrics.stage("chain", 2, 0.25, 1, 0)
    clock.now += 2
    first = builder.build()
    builder.commit()
    assert "stages" not in first["apps"]["one"]  # an app of one stage: as small as before
    chain = first["apps"]["chain"]
    stages = chain["stages"]
    assert set(stages) == {"1", "2"}
    bounds = chain["bounds"]
    assert all(len(s["latency_buckets"]) == len(bounds) + 1 for s in stages.values())
    assert (sum(stages["1"]["latency_buckets"]), stages["1"]["defaults"]) == (2, 0)
    assert (sum(stages["2"]["latency_buckets"]), stages["2"]["defaults"]) == (2, 1)
    assert stages["2"]["errors"] == 0
    # Stage 1's two observations sit in the bucket of 50 ms (0.025, 0.05].
    assert stages["1"]["latency_buckets"][bounds.index(0.05)] == 2

    # Next tick: only stage 2 did something (a request failed at stage 1, say, is
    # stage 1's; here stage 2 errs): stage 1 is left out, stage 2 has the delta only.
    metrics.request("chain", 502, 0.01, [], [])
    metrics.stage("chain", 2, 0.004, 0, 1)
    clock.now += 2
    second = builder.build()
    assert second["apps"]["chain"]["stages"] == {
        "2": {
            "latency_buckets": [1 if b == 0.005 else 0 for b in bounds] + [0],
            "defaults": 0,
            "errors": 1,
        }
    }
    # Not stored: the next tick carries the same stage counts again, and more.
    metrics.stage("chain", 2, 0.004, 0, 1)
    metrics.request("chain", 502, 0.01, [], [])
    clock.now += 2
    carried = builder.build()["apps"]["chain"]["stages"]
    assert carried["2"]["errors"] == 2 and sum(carried["2"]["latency_buckets"]) == 2
    builder.commit()
    clock.now += 2
    assert builder.build()["apps"] == {}  # a quiet pipeline: nothing at all
