"""Models and their versions: deleting versions, the batching settings a version carries,
and the 400 each malformed version body gets, naming its field.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from query_frontend.routing.feed import read_snapshot

from .helpers import KEYS, MODEL, error, ok


async def test_deleting_the_last_version_deletes_the_model(api: httpx.AsyncClient) -> None:
    await ok(api.post("/admin/models", json=MODEL), 201)
    await ok(api.delete("/admin/models/m1/versions/1"), 204)
    await error(api.get("/admin/models/m1"), 404, "not_found")
    # The name is free again, with any input type.
    await ok(api.post("/admin/models", json={**MODEL, "input_type": "strings"}), 201)


async def test_deleting_the_current_version_of_an_unlinked_model_clears_current(
    api: httpx.AsyncClient,
) -> None:
    await ok(api.post("/admin/models", json=MODEL), 201)
    await ok(api.post("/admin/models", json={**MODEL, "version": "2"}), 201)
    await ok(api.delete("/admin/models/m1/versions/2"), 204)
    model = await ok(api.get("/admin/models/m1"))
    assert model["current_version"] is None and model["versions"] == ["1"]


async def test_batching_settings_are_stored_and_returned(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    batching = {"batch_size": 32, "batch_mode": "latency_model", "batch_wait_micros": 2000}
    mv = await ok(api.post("/admin/models", json={**MODEL, **batching}), 201)
    assert {k: mv[k] for k in batching} == batching
    got = await ok(api.get("/admin/models/m1/versions/1"))
    assert {k: got[k] for k in batching} == batching
    snap = await read_snapshot(async_redis, KEYS)
    stored = snap.versions["m1", "1"]
    assert (stored.batch_size, stored.batch_mode, stored.batch_wait_micros) == (
        32,
        "latency_model",
        2000,
    )

    defaults = await ok(api.post("/admin/models", json={**MODEL, "version": "2"}), 201)
    assert (defaults["batch_mode"], defaults["batch_wait_micros"]) == ("", 0)


async def test_a_timeout_and_memory_limit_are_stored_and_returned(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    body = {**MODEL, "batch_timeout_micros": 2_500_000, "memory_limit": "1Gi"}
    mv = await ok(api.post("/admin/models", json=body), 201)
    assert (mv["batch_timeout_micros"], mv["memory_limit_bytes"]) == (2_500_000, 2**30)
    stored = (await read_snapshot(async_redis, KEYS)).versions["m1", "1"]
    assert (stored.batch_timeout_micros, stored.memory_limit_bytes) == (2_500_000, 2**30)
    # Unset: derived by the query frontend, and no limit.
    plain = await ok(api.post("/admin/models", json={**MODEL, "version": "2"}), 201)
    assert (plain["batch_timeout_micros"], plain["memory_limit_bytes"]) == (0, 0)


async def test_a_version_written_before_the_batching_settings_reads_with_defaults(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/models", json=MODEL), 201)
    await async_redis.hdel(KEYS.version("m1", "1"), "batch_mode", "batch_wait_micros")
    got = await ok(api.get("/admin/models/m1/versions/1"))
    assert (got["batch_size"], got["batch_mode"], got["batch_wait_micros"]) == (-1, "", 0)


BAD_MODELS = [
    ({**MODEL, "name": "M1"}, ["model name 'M1' is not a DNS-1123 label"]),
    ({**MODEL, "version": "1 0"}, ["model version '1 0' is not valid"]),
    ({**MODEL, "version": "v1:x"}, ["model version 'v1:x'"]),
    ({**MODEL, "version": 1}, ["model version must be a string", "a number"]),
    ({**MODEL, "input_type": "tensor"}, ["input_type 'tensor' is not known"]),
    ({**MODEL, "num_replicas": -1}, ["num_replicas must be >= 0, got -1"]),
    ({**MODEL, "num_replicas": True}, ["num_replicas must be an integer"]),
    ({**MODEL, "batch_size": 0}, ["batch_size must be >= 1, or -1", "got 0"]),
    (
        {**MODEL, "batch_mode": "greedy"},
        ["batch_mode 'greedy' is not known", "'aimd', 'latency_model', 'fixed', ''"],
    ),
    ({**MODEL, "batch_mode": None}, ["batch_mode null is not known"]),
    ({**MODEL, "batch_wait_micros": -5}, ["batch_wait_micros must be >= 0, got -5"]),
    ({**MODEL, "batch_timeout_micros": -1}, ["batch_timeout_micros must be >= 0, got -1"]),
    ({**MODEL, "memory_limit": "1GB"}, ["memory_limit '1GB' is not a size", "'1Gi'"]),
    ({**MODEL, "memory_limit": "1Mi"}, ["memory_limit must be at least 64Mi"]),
    ({**MODEL, "batch_wait_micros": True}, ["batch_wait_micros must be an integer", "true"]),
    ({**MODEL, "batch_wait_micros": 0.5}, ["batch_wait_micros must be an integer", "0.5"]),
    ({**MODEL, "batch_wait_micros": 5_000_000}, ["batch_wait_micros must be at most 1000000"]),
    ({**MODEL, "labels": "a"}, ["labels must be a list of strings"]),
    ({**MODEL, "pkgs": [1]}, ["pkgs must be a list of strings", "1"]),
    ({**MODEL, "runtime": {"python": 3}}, ["runtime must map names to strings", "'python'"]),
    ({**MODEL, "set_current": "yes"}, ["field 'set_current'", "'yes'"]),
    ({"name": "m1"}, ["field 'version' is required", "field 'input_type' is required"]),
    ({**MODEL, "bundle_sha256": "5" * 63}, ["bundle_sha256 '55555", "is not a sha256"]),
    ({**MODEL, "bundle_sha256": "A" * 64}, ["is not a sha256", "64 lowercase hex digits"]),
    ({**MODEL, "bundle_sha256": "../../tmp/evil"}, ["bundle_sha256 '../../tmp/evil'"]),
    ({**MODEL, "bundle_sha256": 5}, ["bundle_sha256 must be a string"]),
]


@pytest.mark.parametrize(("body", "fragments"), BAD_MODELS)
async def test_bad_model_version_is_400_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], fragments: list[str]
) -> None:
    message = await error(api.post("/admin/models", json=body), 400, "invalid")
    for fragment in fragments:
        assert fragment in message


ATTACK = {
    "name": "logreg",
    "version": "666",
    "input_type": "doubles",
    "num_replicas": 1,
    "set_current": True,
}


@pytest.mark.parametrize("artifact", ["/tmp/evil-bundle", "attacker/evil:latest", ""])
async def test_a_path_or_image_as_artifact_is_refused_and_nothing_is_stored(
    api: httpx.AsyncClient, async_redis: aioredis.Redis, artifact: str
) -> None:
    before = sorted(await async_redis.keys("*"))
    message = await error(
        api.post("/admin/models", json={**ATTACK, "artifact": artifact}), 400, "invalid"
    )
    assert "field 'artifact' is no longer accepted" in message
    assert "Send 'bundle_sha256'" in message
    await error(api.get("/admin/models/logreg"), 404, "not_found")
    assert sorted(await async_redis.keys("*")) == before, "a refused write stored something"


async def test_a_version_records_its_bundle_digest_and_nothing_a_client_could_run(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    created = await ok(api.post("/admin/models", json=MODEL), 201)
    assert created["bundle_sha256"] == "5" * 64
    assert "artifact" not in created
    stored = await async_redis.hgetall(KEYS.version("m1", "1"))
    assert stored["bundle_sha256"] == "5" * 64
    assert "artifact" not in stored
    # A version whose replicas run elsewhere has no bundle at all.
    bare = {k: v for k, v in MODEL.items() if k != "bundle_sha256"}
    elsewhere = await ok(api.post("/admin/models", json={**bare, "version": "2"}), 201)
    assert elsewhere["bundle_sha256"] == ""


async def test_a_version_of_the_old_schema_reads_without_a_bundle(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/models", json=MODEL), 201)
    key = KEYS.version("m1", "1")
    await async_redis.hdel(key, "bundle_sha256")
    await async_redis.hset(key, "artifact", "/tmp/evil-bundle")
    got = await ok(api.get("/admin/models/m1/versions/1"))
    assert got["bundle_sha256"] == ""
    assert "artifact" not in got
