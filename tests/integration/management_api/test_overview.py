"""``GET /admin/overview`` and ``GET /admin/apps/{app}/activity`` over a real Redis: apps
and models show before any traffic, ticks written to ``{p}:telemetry`` (as query
frontends write them) become rates, latencies, replicas and recent defaults; a bad
window is a 400 naming the range, an unknown app a 404, no token a 401."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from management_frontend.state.keys import TELEMETRY_FIELD

from .helpers import APP, KEYS, MODEL, error, linked_app, ok

BOUNDS = [0.001, 0.01, 0.1, 1.0]


def a_tick(t: float, **apps: dict[str, Any]) -> dict[str, Any]:
    return {
        "frontend": "qf-test",
        "t": t,
        "dt": 2.0,
        "started": t - 60,
        "apps": apps,
        "models": {
            "m1:1": {
                "batches": 5,
                "queries": 20,
                "queue_depth": 0,
                "replicas": [
                    {
                        "id": "r0",
                        "connected": True,
                        "in_rotation": True,
                        "state": "ok",
                        "restarts": 0,
                    }
                ],
            }
        },
        "cache": {"hits": 0, "misses": 20, "bytes": 0},
    }


def traffic(weights: dict[str, float] | None = None) -> dict[str, Any]:
    return {
        "requests": 20,
        "errors": 0,
        "defaults": 2,
        "queries": 20,
        "latency_buckets": [0, 18, 2, 0, 0],
        "bounds": BOUNDS,
        "weights": weights,
        "recent_defaults": [
            {"t": time.time(), "query_id": 7, "request_id": None, "reason": "too slow"}
        ],
    }


async def add_tick(r: aioredis.Redis, doc: dict[str, Any]) -> None:
    await r.xadd(KEYS.telemetry, {TELEMETRY_FIELD: json.dumps(doc)})


async def test_apps_and_models_show_before_any_traffic(api: httpx.AsyncClient) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    await ok(api.post("/admin/models", json={**MODEL, "num_replicas": 2}), 201)
    await ok(api.post("/admin/apps/app1/links", json={"model_name": "m1"}))
    body = await ok(api.get("/admin/overview"))
    assert body["window_s"] == 300 and body["interval_s"] == 2.0
    assert body["frontends"] == []
    [app] = body["apps"]
    assert (app["name"], app["policy"], app["linked_models"]) == ("app1", "single", ["m1"])
    assert app["now"]["rps"] == 0.0 and app["now"]["p50_ms"] is None
    assert len(app["series"]["t"]) == 150 and set(app["series"]["rps"]) == {None}
    [model] = body["models"]
    assert model["current_version"] == "1" and model["replicas_desired"] == {"1": 2}
    assert model["replicas"] == []


async def test_ticks_become_rates_latencies_and_replicas(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "single", "m1")
    now = time.time()
    for t in (now - 4, now - 2, now):
        await add_tick(async_redis, a_tick(t, app1=traffic()))
    body = await ok(api.get("/admin/overview", params={"window": 60}))
    assert [f["id"] for f in body["frontends"]] == ["qf-test"]
    [app] = body["apps"]
    assert app["now"]["rps"] > 0
    assert 1 <= app["now"]["p50_ms"] <= 10 and app["now"]["p99_ms"] > app["now"]["p50_ms"]
    assert app["now"]["default_rate"] == 0.1
    assert app["series"]["rps"][-1] == 10.0
    model = next(m for m in body["models"] if m["name"] == "m1")
    assert model["now"]["batch_size"] == 4.0
    assert [(r["id"], r["connected"]) for r in model["replicas"]] == [("r0", True)]
    activity = await ok(api.get("/admin/apps/app1/activity", params={"window": 60}))
    assert activity["policy"] == "single" and activity["weights"]["arms"] == {}
    assert [d["reason"] for d in activity["recent_defaults"]] == ["too slow"] * 3
    assert activity["recent_defaults"][0]["frontend"] == "qf-test"


async def test_entries_that_are_no_ticks_are_left_out(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "single", "m1")
    now = time.time()
    await async_redis.xadd(KEYS.telemetry, {TELEMETRY_FIELD: "{not json"})
    await async_redis.xadd(KEYS.telemetry, {"other": "1"})
    await add_tick(async_redis, {"frontend": "x", "t": "soon", "apps": []})
    await add_tick(async_redis, {**a_tick(now, app1=traffic()), "apps": {"app1": []}})
    await add_tick(async_redis, a_tick(now, app1=traffic()))
    body = await ok(api.get("/admin/overview", params={"window": 60}))
    assert by_app(body, "app1")["series"]["rps"][-1] == 10.0  # the one good tick
    await ok(api.get("/admin/apps/app1/activity"))


def by_app(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in body["apps"] if a["name"] == name)


async def test_activity_shows_the_weights_of_each_arm(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1:1", "m1:2")
    now = time.time()
    await add_tick(async_redis, a_tick(now, app1=traffic({"m1:1": 0.25, "m1:2": 0.75})))
    activity = await ok(api.get("/admin/apps/app1/activity"))
    assert activity["policy"] == "exp3"
    assert activity["policy_params"]["gamma"] == 0.1
    assert sorted(activity["weights"]["arms"]) == ["m1:1", "m1:2"]
    assert activity["weights"]["arms"]["m1:2"][-1] == 0.75


async def test_a_bad_window_or_app_is_refused(api: httpx.AsyncClient) -> None:
    for window in ("5", "3601", "abc", "-1", "1e3"):
        message = await error(api.get("/admin/overview", params={"window": window}), 400, "invalid")
        assert "from 10 to 3600" in message, message
    await error(api.get("/admin/apps/nope/activity"), 404, "not_found")
    await error(api.get("/admin/apps/app1/activity", params={"window": "9"}), 400, "invalid")


async def test_the_admin_token_is_required(api: httpx.AsyncClient) -> None:
    for path in ("/admin/overview", "/admin/apps/app1/activity"):
        r = await api.get(path, headers={"Authorization": ""})
        assert r.status_code == 401, r.text
