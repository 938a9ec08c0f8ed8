"""Replicas: ``GET /admin/replicas`` lists what the query frontends wrote, filtered by model
and version, skipping records it cannot read.
"""

from __future__ import annotations

import json

import httpx
import redis.asyncio as aioredis

from .helpers import KEYS, ok


async def test_replicas_lists_what_query_frontends_wrote(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    assert await ok(api.get("/admin/replicas")) == []
    replica = {
        "replica_id": "r1",
        "model_name": "m1",
        "model_version": "1",
        "input_type": "doubles",
        "frontend": "qf-0",
        "pid": 42,
        "runtime": {"python": "3.11.7"},
        "connected_at": 1.5,
    }
    other = {**replica, "replica_id": "r2", "model_name": "m2"}
    await async_redis.hset(
        KEYS.replicas,
        mapping={"r1": json.dumps(replica), "r2": json.dumps(other), "r3": "{not json"},
    )
    assert await ok(api.get("/admin/replicas")) == [replica, other]
    assert await ok(api.get("/admin/replicas", params={"model_name": "m2"})) == [other]
    only_v2 = await ok(
        api.get("/admin/replicas", params={"model_name": "m1", "model_version": "2"})
    )
    assert only_v2 == []
