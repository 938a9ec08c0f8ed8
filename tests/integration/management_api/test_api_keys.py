"""Per-app API keys on the management API: made by the server, shown once, stored as
sha256 only, each change one transaction with its feed entry, gone with the app."""

from __future__ import annotations

import hashlib

import httpx
import redis.asyncio as aioredis

from .helpers import APP, KEYS, error, feed_after, ok


async def test_a_key_is_shown_once_and_stored_hashed_with_its_feed_entry(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    before = (await async_redis.xrevrange(KEYS.changes, count=1))[0][0]
    r = await api.post("/admin/apps/app1/keys")
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    made = r.json()
    key, digest = made["key"], made["key_sha256"]
    assert key.startswith("sk-app1-") and len(key) >= len("sk-app1-") + 43
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert made["api_keys"] == 1
    assert await async_redis.smembers(KEYS.api_keys("app1")) == {digest}
    entries = await feed_after(async_redis, before)
    assert [(f["kind"], f["op"], f["app"]) for _, f in entries] == [("keys", "add_key", "app1")]
    app = await ok(api.get("/admin/apps/app1"))
    assert app["api_keys"] == 1 and digest not in str(app)
    assert [a["api_keys"] for a in await ok(api.get("/admin/apps"))] == [1]
    # Two keys differ; revoking one leaves the other.
    other = (await ok(api.post("/admin/apps/app1/keys"), 201))["key_sha256"]
    assert other != digest
    left = await ok(api.delete(f"/admin/apps/app1/keys/{digest}"))
    assert left == {"app": "app1", "api_keys": 1}
    assert await async_redis.smembers(KEYS.api_keys("app1")) == {other}


async def test_refused_key_writes_store_nothing(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await error(api.post("/admin/apps/nope/keys"), 404, "not_found")
    assert not await async_redis.exists(KEYS.api_keys("nope"))
    await ok(api.post("/admin/apps", json=APP), 201)
    entries_before = await async_redis.xlen(KEYS.changes)
    message = await error(api.delete("/admin/apps/app1/keys/sk-app1-xyz"), 400, "invalid")
    assert "sha256" in message
    await error(api.delete(f"/admin/apps/app1/keys/{'a' * 64}"), 404, "not_found")
    assert await async_redis.xlen(KEYS.changes) == entries_before


async def test_deleting_an_app_deletes_its_keys_and_a_new_app_starts_open(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    await ok(api.post("/admin/apps/app1/keys"), 201)
    await ok(api.delete("/admin/apps/app1"), 204)
    assert not await async_redis.exists(KEYS.api_keys("app1"))
    await ok(api.post("/admin/apps", json=APP), 201)
    assert (await ok(api.get("/admin/apps/app1")))["api_keys"] == 0
