"""Pipelined reads return what one-at-a-time reads returned, deleted records included.

The management frontend's listings and the query frontend's snapshot read many records
in one round trip. A name can still be in ``{p}:apps`` or ``{p}:models``, or a version
in a model's versions, when its record is gone (a deletion between the two reads, or a
record removed by hand): such a record is left out, and everything else is read whole.
"""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

from management_frontend.state.keys import Keys
from management_frontend.state.records import App, ModelVersion
from management_frontend.storage.store import Store
from model_container.protocol import InputType
from query_frontend.routing.feed import read_snapshot

KEYS = Keys("reads-test")


async def seed(r: aioredis.Redis) -> Store:
    store = Store(r, KEYS)
    await store.ensure_schema()
    for name in ("a1", "a2", "a3"):
        await store.add_app(App(name, InputType.DOUBLES, -1, 1000, policy="exp3"))
    for model in ("m1", "m2"):
        for version in ("1", "2"):
            digest = hashlib.sha256(f"{model}-{version}".encode()).hexdigest()
            mv = ModelVersion(model, version, InputType.DOUBLES, bundle_sha256=digest)
            await store.add_model_version(mv, set_current=True)
    await store.add_link("a1", "m1")
    await store.add_link("a1", "m2", "1")
    await store.add_link("a3", "m2")
    # Records gone while their names stay listed, as between two reads of a deletion.
    await r.delete(KEYS.app("a2"), KEYS.model("m1"), KEYS.version("m2", "1"))
    await store.wait_for_cleanups()
    return store


async def test_listings_leave_out_what_is_gone_and_read_the_rest_whole(
    async_redis: aioredis.Redis,
) -> None:
    store = await seed(async_redis)
    apps = await store.list_apps()
    assert [(app.name, links) for app, links in apps] == [("a1", ["m1", "m2:1"]), ("a3", ["m2"])]
    assert apps[0][0].policy == "exp3" and apps[0][0].policy_epoch != ""
    models = await store.list_models()
    assert [(m.name, m.versions, m.current_version) for m in models] == [("m2", ["1", "2"], "2")]
    versions = await store.list_versions(models[0])
    assert [(mv.name, mv.version, mv.bundle_sha256) for mv in versions] == [
        ("m2", "2", hashlib.sha256(b"m2-2").hexdigest())
    ]
    assert await store.get_app("a3") == apps[1]


async def test_the_snapshot_leaves_out_what_is_gone_and_reads_the_rest_whole(
    async_redis: aioredis.Redis,
) -> None:
    store = await seed(async_redis)
    snap = await read_snapshot(async_redis, KEYS)
    assert sorted(snap.apps) == ["a1", "a3"]
    assert snap.links == {"a1": ["m1", "m2:1"], "a3": ["m2"]}
    assert snap.apps["a1"] == (await store.get_app("a1"))[0]
    assert list(snap.models) == ["m2"] and snap.models["m2"].versions == ["1", "2"]
    assert list(snap.versions) == [("m2", "2")]
    assert snap.versions[("m2", "2")].bundle_sha256 == hashlib.sha256(b"m2-2").hexdigest()
