"""The change feed the query frontends follow: every change appends exactly one entry (and
failures and no-ops none), policy changes and pins included, and a snapshot plus the
feed after it reproduces the state.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import httpx
import pytest
import redis.asyncio as aioredis

from management_frontend.state.feed import Change
from management_frontend.state.records import Snapshot
from query_frontend.routing.feed import follow_changes, latest_change_id, read_snapshot

from .helpers import APP, DEADLINE_S, KEYS, MODEL, feed_after, feedback, learn, linked_app, ok


async def test_every_change_appends_exactly_one_feed_entry(
    api: httpx.AsyncClient, async_redis: aioredis.Redis, redis_url: str
) -> None:
    follower = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    seen: asyncio.Queue[Change] = asyncio.Queue()
    start = await latest_change_id(async_redis, KEYS)

    async def follow() -> None:
        async for change in follow_changes(follower, KEYS, start, block_ms=500):
            seen.put_nowait(change)

    task = asyncio.create_task(follow())
    last = start

    async def expect(
        request: Awaitable[httpx.Response], status: int, fields: dict[str, str] | None
    ) -> None:
        nonlocal last
        r = await request
        assert r.status_code == status, r.text
        entries = await feed_after(async_redis, last)
        if fields is None:
            assert entries == [], f"{r.request.method} {r.request.url} published {entries}"
            return
        assert len(entries) == 1, entries
        entry_id, entry = entries[0]
        assert entry == fields
        change = await asyncio.wait_for(seen.get(), DEADLINE_S)
        assert (change.id, change.kind, change.fields) == (entry_id, fields["kind"], fields)
        last = entry_id

    try:
        await expect(
            api.post("/admin/apps", json=APP), 201, {"kind": "app", "op": "add", "app": "app1"}
        )
        model_add = {"kind": "model", "op": "add", "model": "m1", "version": "1"}
        await expect(api.post("/admin/models", json=MODEL), 201, model_add)
        link = {"kind": "links", "op": "link", "app": "app1", "model": "m1"}
        await expect(api.post("/admin/apps/app1/links", json={"model_name": "m1"}), 200, link)
        v2 = {**MODEL, "version": "2", "set_current": False}
        await expect(api.post("/admin/models", json=v2), 201, {**model_add, "version": "2"})
        current = {"kind": "model", "op": "set_current", "model": "m1", "version": "2"}
        await expect(
            api.put("/admin/models/m1/current_version", json={"version": "2"}), 200, current
        )
        replicas = {"kind": "replicas", "op": "set_replicas", "model": "m1", "version": "2"}
        put_replicas = api.put("/admin/models/m1/versions/2/replicas", json={"num_replicas": 2})
        await expect(put_replicas, 200, replicas)
        cache_off = {"kind": "app", "op": "set_cache", "app": "app1"}
        await expect(
            api.put("/admin/apps/app1/cache", json={"cache_enabled": False}), 200, cache_off
        )

        # Failures and no-ops publish nothing.
        await expect(api.put("/admin/apps/app1/cache", json={"cache_enabled": False}), 200, None)
        await expect(api.put("/admin/apps/app1/cache", json={"cache_enabled": "no"}), 400, None)
        await expect(api.post("/admin/apps", json=APP), 409, None)
        await expect(api.post("/admin/apps/app1/links", json={"model_name": "m1"}), 200, None)
        await expect(api.put("/admin/models/m1/current_version", json={"version": "2"}), 200, None)
        same = api.put("/admin/models/m1/versions/2/replicas", json={"num_replicas": 2})
        await expect(same, 200, None)
        await expect(api.delete("/admin/models/m1"), 409, None)
        await expect(api.post("/admin/apps", json={**APP, "slo_micros": 0}), 400, None)

        unlink = {"kind": "links", "op": "delete", "app": "app1", "model": "m1"}
        await expect(api.delete("/admin/apps/app1/links/m1"), 204, unlink)
        drop_v1 = {"kind": "model", "op": "delete", "model": "m1", "version": "1"}
        await expect(api.delete("/admin/models/m1/versions/1"), 204, drop_v1)
        await expect(
            api.delete("/admin/models/m1"), 204, {"kind": "model", "op": "delete", "model": "m1"}
        )
        drop_app = {"kind": "app", "op": "delete", "app": "app1"}
        await expect(api.delete("/admin/apps/app1"), 204, drop_app)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await follower.aclose()

    assert await read_snapshot(async_redis, KEYS) == Snapshot()
    assert seen.empty()


async def test_snapshot_plus_feed_reproduces_the_state(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    await ok(api.post("/admin/models", json=MODEL), 201)
    after = await latest_change_id(async_redis, KEYS)
    await ok(api.post("/admin/apps/app1/links", json={"model_name": "m1"}))
    snap = await read_snapshot(async_redis, KEYS)
    assert snap.links == {"app1": ["m1"]}
    assert snap.models["m1"].current_version == "1"
    assert snap.versions[("m1", "1")].bundle_sha256 == "5" * 64
    assert [(f["kind"], f["op"]) for _, f in await feed_after(async_redis, after)] == [
        ("links", "link")
    ]


async def test_policy_changes_append_one_feed_entry_each(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1")
    last = await latest_change_id(async_redis, KEYS)

    async def published(request: Awaitable[httpx.Response]) -> list[dict[str, str]]:
        nonlocal last
        r = await request
        # Every request here succeeds: a DELETE with 204 No Content, the rest with 200.
        assert r.status_code == (204 if r.request.method == "DELETE" else 200), r.text
        entries = await feed_after(async_redis, last)
        if entries:
            last = entries[-1][0]
        return [fields for _, fields in entries]

    set_policy = {"kind": "app", "op": "set_policy", "app": "app1"}
    put = api.put
    assert await published(put("/admin/apps/app1/policy", json={"policy": "exp4"})) == [set_policy]
    assert await published(put("/admin/apps/app1/policy", json={"policy": "exp4"})) == []
    same = {"policy": "exp4", "params": {"eta": 0.1, "loss": "auto"}}
    assert await published(put("/admin/apps/app1/policy", json=same)) == []
    eta = {"policy": "exp4", "params": {"eta": 0.3}}
    assert await published(put("/admin/apps/app1/policy", json=eta)) == [set_policy]
    reset = {**eta, "reset_state": True}
    assert await published(put("/admin/apps/app1/policy", json=reset)) == [set_policy]

    # Forgetting learned state tells the query frontends; forgetting nothing does not.
    reset_all = {"kind": "app", "op": "reset_policy", "app": "app1"}
    assert await published(api.delete("/admin/apps/app1/policy/state")) == []
    await learn(async_redis, "u1", feedback(m1=(0.0, 0.0)))
    assert await published(api.delete("/admin/apps/app1/policy/state", params={"uid": "u1"})) == [
        {**reset_all, "uid": "u1"}
    ]
    assert await published(api.delete("/admin/apps/app1/policy/state", params={"uid": "u1"})) == []
    assert await published(api.delete("/admin/apps/app1/policy/state")) == [reset_all]

    pin = api.post("/admin/apps/app1/links", json={"model_name": "m1", "version": "2"})
    link = {"kind": "links", "op": "link", "app": "app1", "model": "m1", "version": "2"}
    assert await published(pin) == [link]
    unpin = api.delete("/admin/apps/app1/links/m1", params={"version": "2"})
    assert await published(unpin) == [{**link, "op": "delete"}]
