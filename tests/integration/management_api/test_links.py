"""Links between apps and models: several under a multi-model policy, idempotent linking,
one winner among concurrent links under the single policy, and links pinned to a version.
"""

from __future__ import annotations

import asyncio

import httpx
import redis.asyncio as aioredis

from query_frontend.routing.feed import latest_change_id, read_snapshot

from .helpers import APP, KEYS, MODEL, error, feed_after, linked_app, ok


async def test_several_links_under_a_multi_model_policy(api: httpx.AsyncClient) -> None:
    await ok(api.post("/admin/apps", json={**APP, "policy": "exp3"}), 201)
    for name in ("m1", "m2"):
        await ok(api.post("/admin/models", json={**MODEL, "name": name}), 201)
        await ok(api.post("/admin/apps/app1/links", json={"model_name": name}))
    assert await ok(api.get("/admin/apps/app1/links")) == ["m1", "m2"]


async def test_linking_twice_is_idempotent(api: httpx.AsyncClient) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    await ok(api.post("/admin/models", json=MODEL), 201)
    for _ in range(2):
        assert await ok(api.post("/admin/apps/app1/links", json={"model_name": "m1"})) == ["m1"]


async def test_concurrent_links_under_single_policy_admit_exactly_one(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    names = [f"m{i}" for i in range(8)]
    for name in names:
        await ok(api.post("/admin/models", json={**MODEL, "name": name}), 201)
    before = await latest_change_id(async_redis, KEYS)
    answers = await asyncio.gather(
        *(api.post("/admin/apps/app1/links", json={"model_name": n}) for n in names)
    )
    assert sorted(a.status_code for a in answers) == [200] + [409] * 7
    links = await ok(api.get("/admin/apps/app1/links"))
    assert len(links) == 1
    assert len(await feed_after(async_redis, before)) == 1


# ---------------------------------------------------------------------- pinned links


async def test_a_link_can_pin_a_version(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1")
    assert await ok(
        api.post("/admin/apps/app1/links", json={"model_name": "m1", "version": "1"})
    ) == [
        "m1",
        "m1:1",
    ]
    # Linking it again changes nothing; null is no version.
    again = {"model_name": "m1", "version": "1"}
    assert await ok(api.post("/admin/apps/app1/links", json=again)) == ["m1", "m1:1"]
    assert await ok(
        api.post("/admin/apps/app1/links", json={"model_name": "m1", "version": None})
    ) == [
        "m1",
        "m1:1",
    ]
    assert (await ok(api.get("/admin/apps/app1")))["linked_models"] == ["m1", "m1:1"]
    assert (await read_snapshot(async_redis, KEYS)).links == {"app1": ["m1", "m1:1"]}

    message = await error(
        api.post("/admin/apps/app1/links", json={"model_name": "m1", "version": "9"}),
        404,
        "not_found",
    )
    assert "model 'm1' has no version '9' (its versions: '1', '2')" in message

    await ok(api.delete("/admin/apps/app1/links/m1", params={"version": "1"}), 204)
    assert await ok(api.get("/admin/apps/app1/links")) == ["m1"]
    message = await error(
        api.delete("/admin/apps/app1/links/m1", params={"version": "1"}), 404, "not_found"
    )
    assert "version '1' of model 'm1' is not linked to app 'app1' (its links: 'm1')" in message


async def test_unlinking_a_model_that_is_only_pinned_says_to_name_the_version(
    api: httpx.AsyncClient,
) -> None:
    await linked_app(api, "exp3", "m1:2")
    message = await error(api.delete("/admin/apps/app1/links/m1"), 404, "not_found")
    assert "model 'm1' is not linked to app 'app1' (its links: 'm1:2')" in message
    assert "to unlink a pinned version, name it ('2')" in message


async def test_single_policy_counts_a_pinned_link(api: httpx.AsyncClient) -> None:
    await linked_app(api, "single", "m1:1")
    message = await error(
        api.post("/admin/apps/app1/links", json={"model_name": "m1"}), 409, "conflict"
    )
    assert "'single' policy and 'm1:1' is already linked to it: unlink 'm1:1' first" in message
    assert "PUT /admin/apps/app1/policy" in message


async def test_a_pinned_version_and_its_model_cannot_be_deleted(api: httpx.AsyncClient) -> None:
    await linked_app(api, "exp3", "m1:1")
    message = await error(api.delete("/admin/models/m1/versions/1"), 409, "conflict")
    assert "version '1' of model 'm1' is pinned by app(s) 'app1': unlink it first" in message
    assert "DELETE /admin/apps/app1/links/m1?version=1" in message
    message = await error(api.delete("/admin/models/m1"), 409, "conflict")
    assert "model 'm1' is linked to app(s) 'app1' (as 'm1:1'): unlink it from every app" in message

    # Nothing follows the current version (2): it may go; the pinned one stays.
    await ok(api.delete("/admin/models/m1/versions/2"), 204)
    assert (await ok(api.get("/admin/models/m1")))["versions"] == ["1"]
    await ok(api.delete("/admin/apps/app1/links/m1", params={"version": "1"}), 204)
    await ok(api.delete("/admin/models/m1/versions/1"), 204)
    await error(api.get("/admin/models/m1"), 404, "not_found")
