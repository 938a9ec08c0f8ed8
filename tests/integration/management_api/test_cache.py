"""The prediction cache switch of an app: on unless registered off, toggled on a live app,
bad settings refused, and the query frontend's routing following a toggle without restart.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis.asyncio as aioredis
from polling import eventually_async

from query_frontend.routing.feed import read_snapshot

from .helpers import APP, DEADLINE_S, KEYS, MODEL, error, ok


async def test_cache_is_enabled_unless_registered_off(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    on = await ok(api.post("/admin/apps", json=APP), 201)
    off = await ok(
        api.post("/admin/apps", json={**APP, "name": "app2", "cache_enabled": False}), 201
    )
    assert (on["cache_enabled"], off["cache_enabled"]) == (True, False)
    assert (await ok(api.get("/admin/apps/app2")))["cache_enabled"] is False
    listed = await ok(api.get("/admin/apps"))
    assert [(a["name"], a["cache_enabled"]) for a in listed] == [("app1", True), ("app2", False)]
    assert await async_redis.hget(KEYS.app("app1"), "cache_enabled") == "1"
    assert await async_redis.hget(KEYS.app("app2"), "cache_enabled") == "0"
    snap = await read_snapshot(async_redis, KEYS)
    assert (snap.apps["app1"].cache_enabled, snap.apps["app2"].cache_enabled) == (True, False)


async def test_cache_is_toggled_on_a_live_app(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    await ok(api.post("/admin/models", json=MODEL), 201)
    await ok(api.post("/admin/apps/app1/links", json={"model_name": "m1"}))
    before = await ok(api.get("/admin/apps/app1"))

    app = await ok(api.put("/admin/apps/app1/cache", json={"cache_enabled": False}))
    assert app["cache_enabled"] is False
    got = await ok(api.get("/admin/apps/app1"))
    # Only the flag changed: the rest of the record and the links are as they were.
    assert got == {**before, "cache_enabled": False}
    assert await async_redis.hget(KEYS.app("app1"), "cache_enabled") == "0"

    app = await ok(api.put("/admin/apps/app1/cache", json={"cache_enabled": True}))
    assert app["cache_enabled"] is True
    assert await ok(api.get("/admin/apps/app1")) == before


async def test_an_app_written_before_cache_enabled_reads_as_on_and_can_be_turned_off(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    await async_redis.hdel(KEYS.app("app1"), "cache_enabled")
    assert (await ok(api.get("/admin/apps/app1")))["cache_enabled"] is True
    await ok(api.put("/admin/apps/app1/cache", json={"cache_enabled": False}))
    assert (await ok(api.get("/admin/apps/app1")))["cache_enabled"] is False


BAD_CACHE_BODIES: list[tuple[object, list[str]]] = [
    (
        {"cache_enabled": "false"},
        ["cache_enabled must be a JSON boolean (true or false), got 'false' (a string)"],
    ),
    ({"cache_enabled": 1}, ["cache_enabled must be a JSON boolean", "got 1 (a number)"]),
    ({"cache_enabled": None}, ["cache_enabled must be a JSON boolean", "got null"]),
    ({}, ["field 'cache_enabled' is required"]),
    ({"enabled": False}, ["field 'enabled' is not accepted", "field 'cache_enabled' is required"]),
]


@pytest.mark.parametrize(("body", "fragments"), BAD_CACHE_BODIES)
async def test_bad_cache_setting_is_400_naming_the_field(
    api: httpx.AsyncClient, async_redis: aioredis.Redis, body: object, fragments: list[str]
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    message = await error(api.put("/admin/apps/app1/cache", json=body), 400, "invalid")
    for fragment in fragments:
        assert fragment in message
    assert await async_redis.hget(KEYS.app("app1"), "cache_enabled") == "1"


async def test_bad_app_name_in_the_cache_path_is_400(api: httpx.AsyncClient) -> None:
    message = await error(
        api.put("/admin/apps/My_App/cache", json={"cache_enabled": False}), 400, "invalid"
    )
    assert "app name 'My_App' is not a DNS-1123 label" in message


async def test_query_frontend_routing_follows_a_cache_toggle_without_restart(
    api: httpx.AsyncClient, async_redis: aioredis.Redis, redis_url: str
) -> None:
    # Imported here: the query frontend is not what this module is about.
    from query_frontend.routing.table import RoutingTable, follow

    await ok(api.post("/admin/apps", json=APP), 201)
    await ok(api.post("/admin/models", json=MODEL), 201)
    await ok(api.post("/admin/apps/app1/links", json={"model_name": "m1"}))
    follower = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    table = RoutingTable()
    task = asyncio.create_task(follow(table, follower, KEYS))

    async def cache_is(enabled: bool) -> bool:
        route = table.routes.get("app1")
        return route is not None and route.app.cache_enabled is enabled

    try:
        await eventually_async(lambda: cache_is(True), "the routing table to load app1", DEADLINE_S)
        await ok(api.put("/admin/apps/app1/cache", json={"cache_enabled": False}))
        await eventually_async(
            lambda: cache_is(False), "the routing table to see the cache turned off", DEADLINE_S
        )
        route = table.routes["app1"]
        assert route.model_key == ("m1", "1")
        await ok(api.put("/admin/apps/app1/cache", json={"cache_enabled": True}))
        await eventually_async(
            lambda: cache_is(True), "the routing table to see the cache turned on", DEADLINE_S
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await follower.aclose()
