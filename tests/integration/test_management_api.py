"""The management frontend against a real redis-server, over real HTTP sockets.

Most tests serve ``create_app`` with uvicorn inside the test's event loop; the entry
point tests run ``python -m management_frontend`` as a subprocess. Nothing sleeps for
a fixed time: every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
import uvicorn

import management_frontend
from management_frontend import Config, create_app
from management_frontend.errors import StartupError
from management_frontend.reads import read_schema_version
from management_frontend.state.feed import Change
from management_frontend.state.keys import SCHEMA_VERSION, Keys
from management_frontend.state.policy import RECORDED, STALE, ArmFeedback
from management_frontend.state.records import App, Snapshot
from management_frontend.store import Store
from model_container.protocol import InputType
from query_frontend.routing.feed import follow_changes, latest_change_id, read_snapshot
from query_frontend.selection.learned_store import LearnedStateStore

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 15.0
KEYS = Keys()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def poll(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE_S} s waiting for {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def serve(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    """Serve the app with uvicorn on a free port in this loop; yield a client for it."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so,
    # and without it every answer waits for a delayed ACK (~40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), log_config=None, ws="none", lifespan="on")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:

        async def started() -> bool:
            if task.done():
                await task
                raise AssertionError("the management frontend failed to start")
            return server.started

        await poll(started, "uvicorn to start")
        port = sock.getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, DEADLINE_S)
        sock.close()


@pytest_asyncio.fixture
async def api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(Config(redis_url=redis_url, redis_wait_s=5)) as client:
        yield client


APP = {"name": "app1", "input_type": "doubles", "default_output": "-1.0", "slo_micros": 100_000}
MODEL = {"name": "m1", "version": "1", "input_type": "doubles", "artifact": "/bundles/m1-1"}


async def feed_after(r: aioredis.Redis, after_id: str) -> list[tuple[str, dict[str, str]]]:
    """Feed entries strictly after ``after_id``."""
    entries = await r.xrange(KEYS.changes, f"({after_id}", "+")
    return [
        (str(entry_id), {str(k): str(v) for k, v in (fields or {}).items()})
        for entry_id, fields in entries or []
    ]


async def ok(response: Awaitable[httpx.Response], status: int = 200) -> Any:
    r = await response
    assert r.status_code == status, r.text
    return r.json() if r.content else None


async def error(response: Awaitable[httpx.Response], status: int, code: str) -> str:
    r = await response
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return str(body["message"])


# ---------------------------------------------------------------------- happy path


async def test_happy_path(api: httpx.AsyncClient) -> None:
    app = await ok(api.post("/admin/apps", json={**APP, "default_output": {"label": None}}), 201)
    assert app["name"] == "app1" and app["policy"] == "single" and app["created_at"] > 0
    assert app["default_output"] == {"label": None}

    v1 = await ok(api.post("/admin/models", json={**MODEL, "labels": ["a"], "pkgs": ["x"]}), 201)
    assert v1["version"] == "1" and v1["labels"] == ["a"] and v1["registered_at"] > 0
    assert await ok(api.post("/admin/apps/app1/links", json={"model_name": "m1"})) == ["m1"]
    assert await ok(api.get("/admin/apps/app1/links")) == ["m1"]

    v2 = {**MODEL, "version": "2", "set_current": False, "runtime": {"python": "3.11.7"}}
    await ok(api.post("/admin/models", json=v2), 201)
    model = await ok(api.get("/admin/models/m1"))
    assert model["current_version"] == "1" and model["versions"] == ["1", "2"]
    assert [d["version"] for d in model["version_details"]] == ["1", "2"]
    assert model["version_details"][1]["runtime"] == {"python": "3.11.7"}

    model = await ok(api.put("/admin/models/m1/current_version", json={"version": "2"}))
    assert model["current_version"] == "2"
    mv = await ok(api.put("/admin/models/m1/versions/2/replicas", json={"num_replicas": 3}))
    assert mv["num_replicas"] == 3
    assert (await ok(api.get("/admin/models/m1/versions/2")))["num_replicas"] == 3

    apps = await ok(api.get("/admin/apps"))
    assert [(a["name"], a["linked_models"]) for a in apps] == [("app1", ["m1"])]
    got = await ok(api.get("/admin/apps/app1"))
    assert got["linked_models"] == ["m1"] and got["slo_micros"] == 100_000
    models = await ok(api.get("/admin/models"))
    assert models == [
        {"name": "m1", "input_type": "doubles", "current_version": "2", "versions": ["1", "2"]}
    ]

    # Rollback to 1, then the old current (2) may go: the model is still linked.
    await ok(api.put("/admin/models/m1/current_version", json={"version": "1"}))
    assert await ok(api.delete("/admin/models/m1/versions/2"), 204) is None
    assert (await ok(api.get("/admin/models/m1")))["versions"] == ["1"]

    assert await ok(api.delete("/admin/apps/app1/links/m1"), 204) is None
    assert await ok(api.get("/admin/apps/app1/links")) == []
    assert await ok(api.delete("/admin/apps/app1"), 204) is None
    assert await ok(api.get("/admin/apps")) == []
    assert await ok(api.delete("/admin/models/m1"), 204) is None
    assert await ok(api.get("/admin/models")) == []
    assert await ok(api.get("/healthz")) == {"status": "ok"}


async def test_deleting_an_app_removes_its_links(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    await ok(api.post("/admin/models", json=MODEL), 201)
    await ok(api.post("/admin/apps/app1/links", json={"model_name": "m1"}))
    await ok(api.delete("/admin/apps/app1"), 204)
    assert not await async_redis.exists(KEYS.links("app1"), KEYS.app("app1"))
    # The model is free now, and a re-created app starts with no links.
    await ok(api.post("/admin/apps", json=APP), 201)
    assert await ok(api.get("/admin/apps/app1/links")) == []
    await ok(api.delete("/admin/models/m1"), 204)


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


async def test_a_version_written_before_the_batching_settings_reads_with_defaults(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/models", json=MODEL), 201)
    await async_redis.hdel(KEYS.version("m1", "1"), "batch_mode", "batch_wait_micros")
    got = await ok(api.get("/admin/models/m1/versions/1"))
    assert (got["batch_size"], got["batch_mode"], got["batch_wait_micros"]) == (-1, "", 0)


# ---------------------------------------------------------------------- prediction cache


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
        await poll(lambda: cache_is(True), "the routing table to load app1")
        await ok(api.put("/admin/apps/app1/cache", json={"cache_enabled": False}))
        await poll(lambda: cache_is(False), "the routing table to see the cache turned off")
        route = table.routes["app1"]
        assert route.model_key == ("m1", "1")
        await ok(api.put("/admin/apps/app1/cache", json={"cache_enabled": True}))
        await poll(lambda: cache_is(True), "the routing table to see the cache turned on")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await follower.aclose()


# ---------------------------------------------------------------------- selection policies


def feedback(**arms: tuple[float, float]) -> dict[str, ArmFeedback]:
    """``m1=(log_weight, loss)`` -> what one feedback message adds to each arm."""
    return {arm.replace("_", ":"): ArmFeedback(w, loss) for arm, (w, loss) in arms.items()}


async def linked_app(api: httpx.AsyncClient, policy: str, *arms: str) -> None:
    """app1 under ``policy``, linked to ``arms`` ("m" or "m:v"); each model has 1 and 2."""
    await ok(api.post("/admin/apps", json={**APP, "policy": policy}), 201)
    for model in sorted({arm.partition(":")[0] for arm in arms}):
        for version in ("1", "2"):
            await ok(
                api.post("/admin/models", json={**MODEL, "name": model, "version": version}), 201
            )
    for arm in arms:
        model, _, version = arm.partition(":")
        body = {"model_name": model, **({"version": version} if version else {})}
        await ok(api.post("/admin/apps/app1/links", json=body))


async def learn(r: aioredis.Redis, uid: str | None, fb: dict[str, ArmFeedback]) -> None:
    """Record one feedback message for app1 in its current epoch, as a frontend does."""
    epoch = await r.hget(KEYS.app("app1"), "policy_epoch")
    assert await LearnedStateStore(r, KEYS).record("app1", epoch, uid, fb) == RECORDED


async def learned_keys(r: aioredis.Redis, app: str = "app1") -> list[str]:
    """Every key holding what ``app``'s policy learned, of any epoch."""
    return sorted(await r.keys(KEYS.policy_pattern(app)))


async def settled_keys(r: aioredis.Redis, want: int, app: str = "app1") -> list[str]:
    """The learned keys once old epochs are deleted (in the background) down to ``want``."""
    for _ in range(250):
        found = await learned_keys(r, app)
        if len(found) <= want:
            return found
        await asyncio.sleep(0.02)
    return await learned_keys(r, app)


async def test_an_app_is_registered_with_a_policy_and_its_settings_filled_in(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    plain = await ok(api.post("/admin/apps", json=APP), 201)
    assert (plain["policy"], plain["policy_params"]) == ("single", {"loss": "auto"})

    body = {**APP, "name": "app2", "policy": "exp3", "policy_params": {"eta": 0.5}}
    app = await ok(api.post("/admin/apps", json=body), 201)
    assert app["policy"] == "exp3"
    assert app["policy_params"] == {"eta": 0.5, "gamma": 0.1, "loss": "auto"}
    assert (await ok(api.get("/admin/apps/app2")))["policy_params"] == app["policy_params"]
    snap = await read_snapshot(async_redis, KEYS)
    assert snap.apps["app2"].policy_params == app["policy_params"]

    # No links exist at registration: split weights are taken as given.
    weights = {"m1:1": 90, "m2": 10}
    split = {**APP, "name": "app3", "policy": "split", "policy_params": {"weights": weights}}
    app = await ok(api.post("/admin/apps", json=split), 201)
    assert app["policy_params"] == {"weights": weights, "loss": "auto"}


BAD_POLICY_PARAMS: list[tuple[str, object, list[str]]] = [
    ("exp3", {"weights": {"m1": 1}}, ["policy 'exp3' takes no parameter 'weights'", "'eta'"]),
    ("single", {"eta": 0.1}, ["policy 'single' takes no parameter 'eta': it takes 'loss'"]),
    ("exp3", {"eta": 0}, ["eta must be > 0 and <= 10", "got 0"]),
    ("exp4", {"eta": "fast"}, ["eta must be a number, got 'fast'"]),
    ("exp3", {"gamma": 2}, ["gamma must be > 0 and <= 1", "got 2"]),
    ("exp4", {"loss": "hinge"}, ["loss 'hinge' is not known: use one of auto, zero_one"]),
    ("split", {"weights": {"m1": -1}}, ["the weight of 'm1' must be >= 0, got -1"]),
    ("split", {"weights": {"m1": 0}}, ["weights must give at least one arm a weight > 0"]),
    ("split", {"weights": [1, 2]}, ["weights must be a non-empty object of arm -> weight"]),
    ("split", {"weights": {"M1": 1}}, ["model name 'M1' is not a DNS-1123 label"]),
    ("split", {"weights": {"m1:1 0": 1}}, ["model version '1 0' is not valid"]),
]


@pytest.mark.parametrize(("policy", "params", "fragments"), BAD_POLICY_PARAMS)
async def test_bad_policy_settings_are_400_naming_the_setting(
    api: httpx.AsyncClient, policy: str, params: object, fragments: list[str]
) -> None:
    body = {**APP, "policy": policy, "policy_params": params}
    message = await error(api.post("/admin/apps", json=body), 400, "invalid")
    for fragment in fragments:
        assert fragment in message
    assert await ok(api.get("/admin/apps")) == []

    await ok(api.post("/admin/apps", json=APP), 201)
    put = api.put("/admin/apps/app1/policy", json={"policy": policy, "params": params})
    message = await error(put, 400, "invalid")
    for fragment in fragments:
        assert fragment in message
    assert (await ok(api.get("/admin/apps/app1")))["policy"] == "single"


BAD_POLICY_BODIES: list[tuple[object, list[str]]] = [
    ({}, ["field 'policy' is required"]),
    ({"policy": "weighted"}, ["policy 'weighted' is no longer offered: use 'split'"]),
    ({"policy": "exp3", "params": [1]}, ["params must be a JSON object, got [1] (a list)"]),
    ({"policy": "exp3", "reset_state": "yes"}, ["reset_state must be a JSON boolean", "'yes'"]),
    ({"policy": "exp3", "eta": 0.2}, ["field 'eta' is not accepted"]),
]


@pytest.mark.parametrize(("body", "fragments"), BAD_POLICY_BODIES)
async def test_bad_set_policy_body_is_400(
    api: httpx.AsyncClient, body: object, fragments: list[str]
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    message = await error(api.put("/admin/apps/app1/policy", json=body), 400, "invalid")
    for fragment in fragments:
        assert fragment in message


async def test_set_policy_changes_the_policy_of_a_live_app(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "single", "m1")
    before = await ok(api.get("/admin/apps/app1"))
    app = await ok(api.put("/admin/apps/app1/policy", json={"policy": "exp4"}))
    assert (app["policy"], app["policy_params"]) == ("exp4", {"eta": 0.1, "loss": "auto"})
    after = await ok(api.get("/admin/apps/app1"))
    # A new policy learns from scratch: a new epoch names its state.
    assert after["policy_epoch"] != before["policy_epoch"]
    assert after == {
        **before,
        "policy": "exp4",
        "policy_params": app["policy_params"],
        "policy_epoch": after["policy_epoch"],
    }
    assert (await read_snapshot(async_redis, KEYS)).apps["app1"].policy == "exp4"
    # Now a second model may be linked.
    await ok(api.post("/admin/models", json={**MODEL, "name": "m2"}), 201)
    assert await ok(api.post("/admin/apps/app1/links", json={"model_name": "m2"})) == ["m1", "m2"]


async def test_single_policy_on_an_app_with_two_links_is_409(api: httpx.AsyncClient) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    message = await error(
        api.put("/admin/apps/app1/policy", json={"policy": "single"}), 409, "conflict"
    )
    assert "app 'app1' has 2 links ('m1', 'm2')" in message
    assert "unlink all but one of them first" in message
    assert (await ok(api.get("/admin/apps/app1")))["policy"] == "exp3"

    await ok(api.delete("/admin/apps/app1/links/m2"), 204)
    app = await ok(api.put("/admin/apps/app1/policy", json={"policy": "single"}))
    assert app["policy"] == "single"


async def test_split_weights_must_name_linked_arms(api: httpx.AsyncClient) -> None:
    await linked_app(api, "exp3", "m1", "m2:1")
    bad = {"policy": "split", "params": {"weights": {"m1": 50, "m2": 50}}}
    message = await error(api.put("/admin/apps/app1/policy", json=bad), 400, "invalid")
    assert "the split weights name 'm2', which app 'app1' does not link" in message
    assert "(its links: 'm1', 'm2:1')" in message
    assert (await ok(api.get("/admin/apps/app1")))["policy"] == "exp3"

    good = {"policy": "split", "params": {"weights": {"m1": 90, "m2:1": 10}}}
    app = await ok(api.put("/admin/apps/app1/policy", json=good))
    assert app["policy_params"] == {"weights": {"m1": 90, "m2:1": 10}, "loss": "auto"}


async def test_changing_the_policy_forgets_what_the_old_one_learned(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    await learn(async_redis, None, feedback(m1=(0.0, 0.0), m2=(-1.0, 1.0)))
    await learn(async_redis, "u1", feedback(m1=(-0.5, 0.5), m2=(0.0, 0.0)))
    assert len(await learned_keys(async_redis)) == 2  # the app's and u1's
    assert (await ok(api.get("/admin/apps/app1/policy/state")))["updates"] == 2

    await ok(api.put("/admin/apps/app1/policy", json={"policy": "exp4"}))
    assert await settled_keys(async_redis, 0) == []
    state = await ok(api.get("/admin/apps/app1/policy/state"))
    assert state["updates"] == 0
    assert [a["updates"] for a in state["arms"].values()] == [0, 0]
    user = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u1"}))
    assert user["updates"] == 0


async def test_new_settings_for_the_same_policy_keep_what_it_learned_unless_reset(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    await learn(async_redis, "u1", feedback(m1=(0.0, 0.0), m2=(-1.0, 1.0)))
    learned = await ok(api.get("/admin/apps/app1/policy/state"))

    app = await ok(
        api.put("/admin/apps/app1/policy", json={"policy": "exp3", "params": {"eta": 0.5}})
    )
    assert app["policy_params"]["eta"] == 0.5
    kept = await ok(api.get("/admin/apps/app1/policy/state"))
    assert kept["updates"] == 1 and kept["params"]["eta"] == 0.5
    assert {a: s["log_weight"] for a, s in kept["arms"].items()} == {
        a: s["log_weight"] for a, s in learned["arms"].items()
    }

    reset = {"policy": "exp3", "params": {"eta": 0.5}, "reset_state": True}
    app = await ok(api.put("/admin/apps/app1/policy", json=reset))
    assert app["policy_params"]["eta"] == 0.5
    assert await settled_keys(async_redis, 0) == []
    assert (await ok(api.get("/admin/apps/app1/policy/state")))["updates"] == 0


async def test_policy_state_shows_each_arm_and_what_a_user_sees(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2:1")
    # Two messages for the app, one of them from user u1; an unlinked arm learned too.
    await learn(async_redis, None, feedback(m1=(0.0, 0.0), m2_1=(-1.0, 1.0)))
    await learn(async_redis, "u1", feedback(m1=(0.0, 0.0), m2_1=(-1.0, 1.0)))
    await learn(async_redis, None, feedback(old=(-2.0, 3.0)))

    state = await ok(api.get("/admin/apps/app1/policy/state"))
    assert {k: state[k] for k in ("app", "policy", "params", "uid", "updates")} == {
        "app": "app1",
        "policy": "exp3",
        "params": {"eta": 0.1, "gamma": 0.1, "loss": "auto"},
        "uid": None,
        "updates": 3,
    }
    arms = state["arms"]
    assert list(arms) == ["m1", "m2:1", "old"]
    assert arms["m1"]["probability"] > arms["m2:1"]["probability"] > 0
    assert arms["m1"]["probability"] + arms["m2:1"]["probability"] == pytest.approx(1.0)
    assert (arms["m2:1"]["updates"], arms["m2:1"]["mean_loss"]) == (2, 1.0)
    assert arms["m2:1"]["log_weight"] == pytest.approx(-2.0)
    assert (arms["m1"]["updates"], arms["m1"]["mean_loss"]) == (2, 0.0)
    assert "linked" not in arms["m1"]
    assert arms["old"] == {
        "probability": 0.0,
        "log_weight": -2.0,
        "updates": 1,
        "mean_loss": 3.0,
        "linked": False,
    }

    # u1 sees the app's state plus what their own feedback added.
    user = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u1"}))
    assert (user["uid"], user["updates"]) == ("u1", 4)
    assert user["arms"]["m2:1"]["updates"] == 3
    assert user["arms"]["m2:1"]["log_weight"] == pytest.approx(-3.0)
    assert user["arms"]["m1"]["probability"] > arms["m1"]["probability"]
    # A user without feedback of their own sees the app's state.
    stranger = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u2"}))
    assert {**stranger, "uid": None} == state


async def test_an_arm_first_learned_late_starts_where_feedback_said(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    await learn(async_redis, None, {"m1": ArmFeedback(-40.0, 1.0)})
    # m2's first feedback starts it level with m1 (the frontend says where), then steps.
    await learn(async_redis, "u1", {"m2": ArmFeedback(-1.0, 1.0, start=-40.0)})
    await learn(async_redis, None, {"m2": ArmFeedback(-1.0, 1.0, start=123.0)})  # not again
    arms = (await ok(api.get("/admin/apps/app1/policy/state")))["arms"]
    assert arms["m2"]["log_weight"] == pytest.approx(-42.0)
    assert arms["m1"]["probability"] > arms["m2"]["probability"]
    user = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u1"}))
    assert user["arms"]["m2"]["log_weight"] == pytest.approx(-43.0)  # plus u1's own step


async def test_resetting_one_user_keeps_the_app_and_other_users(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    for uid in ("u1", "u2"):
        await learn(async_redis, uid, feedback(m1=(0.0, 0.0), m2=(-1.0, 1.0)))
    u2_before = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u2"}))

    await ok(api.delete("/admin/apps/app1/policy/state", params={"uid": "u1"}), 204)
    epoch = await async_redis.hget(KEYS.app("app1"), "policy_epoch")
    assert not await async_redis.exists(KEYS.policy_state("app1", epoch, "u1"))
    assert await async_redis.exists(KEYS.policy_state("app1", epoch, "u2"))
    app_state = await ok(api.get("/admin/apps/app1/policy/state"))
    assert app_state["updates"] == 2  # the app keeps what u1's feedback taught it
    u1 = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u1"}))
    assert {**u1, "uid": None} == app_state
    assert await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u2"})) == u2_before

    await ok(api.delete("/admin/apps/app1/policy/state"), 204)
    assert await settled_keys(async_redis, 0) == []
    assert (await ok(api.get("/admin/apps/app1/policy/state")))["updates"] == 0


async def test_deleting_an_app_deletes_what_its_policy_learned(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    await learn(async_redis, "u1", feedback(m1=(0.0, 0.0), m2=(-1.0, 1.0)))
    epoch = await async_redis.hget(KEYS.app("app1"), "policy_epoch")
    await ok(api.delete("/admin/apps/app1"), 204)
    assert await settled_keys(async_redis, 0) == []
    assert await async_redis.keys(f"{KEYS.app('app1')}*") == []
    # Feedback in flight when the app went is not counted anywhere.
    late = await LearnedStateStore(async_redis, KEYS).record(
        "app1", epoch, "u1", feedback(m1=(-1.0, 1.0))
    )
    assert late == STALE and await learned_keys(async_redis) == []
    # A new app of the same name starts from nothing, even from a leftover record.
    await async_redis.hset(KEYS.policy_state("app1", "0ld", "u9"), "w:m1", "-1")
    await ok(api.post("/admin/apps", json={**APP, "policy": "exp3"}), 201)
    assert await settled_keys(async_redis, 0) == []


class HeldScans(aioredis.Redis):
    """A client whose SCANs wait for ``go``: its background clean-ups start when told."""

    go: asyncio.Event

    async def scan_iter(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        await self.go.wait()
        async for key in super().scan_iter(*args, **kwargs):
            yield key


async def test_an_app_added_again_keeps_what_it_learns_while_the_old_state_goes(
    redis_url: str, async_redis: aioredis.Redis
) -> None:
    held = HeldScans.from_url(redis_url, decode_responses=True, socket_timeout=5)
    held.go = asyncio.Event()
    store = Store(held, KEYS)
    app = App(
        name="app1",
        input_type=InputType.DOUBLES,
        default_output=-1.0,
        slo_micros=100_000,
        policy="exp3",
    )
    try:
        old = await store.add_app(app)
        # Enough users that the clean-up unlinks them in several batches.
        async with async_redis.pipeline(transaction=False) as pipe:
            for i in range(1200):
                pipe.hset(KEYS.policy_state("app1", old.policy_epoch, f"u{i}"), "updates", "1")
            await pipe.execute()
        await store.delete_app("app1")
        new = await store.add_app(app)
        await learn(async_redis, "u1", feedback(m1=(-1.0, 1.0)))
        # Every clean-up scans only now, and so finds the new app's keys with the old ones.
        held.go.set()
        await store.wait_for_cleanups()
    finally:
        await held.aclose()
    assert await learned_keys(async_redis) == [
        KEYS.policy_state("app1", new.policy_epoch),
        KEYS.policy_state("app1", new.policy_epoch, "u1"),
    ]


async def test_policy_endpoints_of_unknown_apps_are_404(api: httpx.AsyncClient) -> None:
    cases: list[Awaitable[httpx.Response]] = [
        api.put("/admin/apps/nope/policy", json={"policy": "exp3"}),
        api.get("/admin/apps/nope/policy/state"),
        api.get("/admin/apps/nope/policy/state", params={"uid": "u1"}),
        api.delete("/admin/apps/nope/policy/state"),
        api.delete("/admin/apps/nope/policy/state", params={"uid": "u1"}),
    ]
    for request in cases:
        assert "app 'nope' does not exist" in await error(request, 404, "not_found")


async def test_bad_query_parameters_are_400(api: httpx.AsyncClient) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    cases: list[tuple[Awaitable[httpx.Response], str]] = [
        (api.get("/admin/apps/app1/policy/state", params={"uid": ""}), '"uid" must be a non-empty'),
        (
            api.delete("/admin/apps/app1/policy/state", params={"uid": "u" * 257}),
            '"uid" has 257 characters: use at most 256',
        ),
        (
            api.delete("/admin/apps/app1/links/m1", params={"version": "1 0"}),
            "model version '1 0' is not valid",
        ),
        (
            api.post("/admin/apps/app1/links", json={"model_name": "m1", "version": "v:1"}),
            "model version 'v:1' is not valid",
        ),
    ]
    for request, fragment in cases:
        assert fragment in await error(request, 400, "invalid")


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


async def test_policy_changes_append_one_feed_entry_each(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1")
    last = await latest_change_id(async_redis, KEYS)

    async def published(request: Awaitable[httpx.Response]) -> list[dict[str, str]]:
        nonlocal last
        r = await request
        assert r.status_code < 300, r.text
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


# ---------------------------------------------------------------------- 400


BAD_APPS = [
    ({**APP, "name": "My_App"}, ["app name 'My_App' is not a DNS-1123 label", "lowercase"]),
    ({**APP, "name": "a" * 64}, ["app name", "64 characters", "at most 63"]),
    ({**APP, "name": "-app"}, ["app name '-app'", "starting and ending"]),
    ({**APP, "name": ""}, ["app name ''", "empty"]),
    ({**APP, "name": 7}, ["app name must be a string", "7"]),
    ({**APP, "input_type": "tensor"}, ["input_type 'tensor' is not known", "doubles"]),
    ({**APP, "input_type": "Doubles"}, ["input_type 'Doubles'"]),
    ({**APP, "slo_micros": 0}, ["slo_micros must be > 0, got 0"]),
    ({**APP, "slo_micros": -5}, ["slo_micros must be > 0, got -5"]),
    ({**APP, "slo_micros": "100"}, ["slo_micros must be an integer", "'100'", "a string"]),
    ({**APP, "slo_micros": True}, ["slo_micros must be an integer", "true"]),
    ({**APP, "slo_micros": 1.5}, ["slo_micros must be an integer", "1.5"]),
    ({**APP, "slo_micros": None}, ["slo_micros must be an integer", "null"]),
    ({**APP, "policy": "random"}, ["policy 'random' is not known", "single, split, exp3, exp4"]),
    ({**APP, "policy": "weighted"}, ["policy 'weighted' is no longer offered: use 'split'"]),
    ({**APP, "policy": "straggler"}, ["policy 'straggler' is no longer offered: use 'exp4'"]),
    ({**APP, "slo_micro": 5}, ["field 'slo_micro' is not accepted"]),
    ({k: v for k, v in APP.items() if k != "slo_micros"}, ["field 'slo_micros' is required"]),
    ({k: v for k, v in APP.items() if k != "default_output"}, ["'default_output' is required"]),
    ({}, ["field 'name' is required", "field 'input_type' is required"]),
    ({**APP, "default_output": "x" * 70_000}, ["default_output is", "bytes"]),
    (
        {**APP, "cache_enabled": "false"},
        ["cache_enabled must be a JSON boolean (true or false), got 'false' (a string)"],
    ),
    ({**APP, "cache_enabled": 0}, ["cache_enabled must be a JSON boolean", "got 0 (a number)"]),
    ({**APP, "cache_enabled": None}, ["cache_enabled must be a JSON boolean", "got null"]),
]


@pytest.mark.parametrize(("body", "fragments"), BAD_APPS)
async def test_bad_app_is_400_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], fragments: list[str]
) -> None:
    message = await error(api.post("/admin/apps", json=body), 400, "invalid")
    for fragment in fragments:
        assert fragment in message


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
    ({**MODEL, "batch_wait_micros": True}, ["batch_wait_micros must be an integer", "true"]),
    ({**MODEL, "batch_wait_micros": 0.5}, ["batch_wait_micros must be an integer", "0.5"]),
    ({**MODEL, "batch_wait_micros": 5_000_000}, ["batch_wait_micros must be at most 1000000"]),
    ({**MODEL, "labels": "a"}, ["labels must be a list of strings"]),
    ({**MODEL, "pkgs": [1]}, ["pkgs must be a list of strings", "1"]),
    ({**MODEL, "runtime": {"python": 3}}, ["runtime must map names to strings", "'python'"]),
    ({**MODEL, "set_current": "yes"}, ["field 'set_current'", "'yes'"]),
    ({"name": "m1"}, ["field 'version' is required", "field 'input_type' is required"]),
]


@pytest.mark.parametrize(("body", "fragments"), BAD_MODELS)
async def test_bad_model_version_is_400_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], fragments: list[str]
) -> None:
    message = await error(api.post("/admin/models", json=body), 400, "invalid")
    for fragment in fragments:
        assert fragment in message


async def test_bad_bodies_and_paths_are_400(api: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    cases: list[tuple[Awaitable[httpx.Response], str]] = [
        (api.post("/admin/apps", content=b'{"name": "a",', headers=headers), "not valid JSON"),
        (api.post("/admin/apps", content=b"[1, 2]", headers=headers), "must be a JSON object"),
        (api.post("/admin/apps", headers=headers), "request body is missing"),
        (api.post("/admin/apps", content=b'{"name": "a"}'), "Content-Type: application/json"),
        (api.get("/admin/apps/Bad_App"), "app name 'Bad_App'"),
        (api.get("/admin/apps/a:links"), "app name 'a:links'"),
        (api.get("/admin/models/m1/versions/1%200"), "model version '1 0'"),
        (api.post("/admin/apps/app1/links", json={"model_name": "No"}), "model name 'No'"),
        (api.post("/admin/apps/app1/links", json={}), "field 'model_name' is required"),
        (
            api.put("/admin/models/m1/versions/1/replicas", json={"num_replicas": -2}),
            "num_replicas must be >= 0, got -2",
        ),
        (
            api.put("/admin/models/m1/versions/1/replicas", json={"num_replicas": "2"}),
            "num_replicas must be an integer",
        ),
        (
            api.put("/admin/models/m1/current_version", json={"version": ""}),
            "model version '' is not valid",
        ),
    ]
    for request, fragment in cases:
        assert fragment in await error(request, 400, "invalid")


async def test_oversize_body_is_413(api: httpx.AsyncClient) -> None:
    big = json.dumps({**APP, "default_output": "x" * 2_000_000}).encode()
    headers = {"content-type": "application/json"}
    message = await error(api.post("/admin/apps", content=big, headers=headers), 413, "too_large")
    assert "bytes" in message

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    # No Content-Length: the body is counted as it streams in.
    await error(api.post("/admin/apps", content=chunks(), headers=headers), 413, "too_large")
    assert await ok(api.get("/admin/apps")) == []


# ---------------------------------------------------------------------- 404 / 405


async def test_unknown_things_are_404(api: httpx.AsyncClient) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    await ok(api.post("/admin/models", json=MODEL), 201)
    cases: list[tuple[Awaitable[httpx.Response], str]] = [
        (api.get("/admin/apps/nope"), "app 'nope' does not exist"),
        (api.delete("/admin/apps/nope"), "app 'nope'"),
        (api.get("/admin/apps/nope/links"), "app 'nope'"),
        (api.post("/admin/apps/nope/links", json={"model_name": "m1"}), "app 'nope'"),
        (api.post("/admin/apps/app1/links", json={"model_name": "nope"}), "model 'nope'"),
        (api.delete("/admin/apps/app1/links/m1"), "model 'm1' is not linked to app 'app1'"),
        (api.get("/admin/models/nope"), "model 'nope' does not exist"),
        (api.delete("/admin/models/nope"), "model 'nope'"),
        (api.get("/admin/models/m1/versions/9"), "model 'm1' has no version '9'"),
        (api.get("/admin/models/nope/versions/1"), "model 'nope' does not exist"),
        (api.delete("/admin/models/m1/versions/9"), "no version '9' (its versions: '1')"),
        (api.put("/admin/models/m1/current_version", json={"version": "9"}), "no version '9'"),
        (api.put("/admin/models/nope/current_version", json={"version": "1"}), "'nope'"),
        (api.put("/admin/models/m1/versions/9/replicas", json={"num_replicas": 1}), "'9'"),
        (api.put("/admin/models/nope/versions/1/replicas", json={"num_replicas": 1}), "'nope'"),
        (api.put("/admin/apps/nope/cache", json={"cache_enabled": False}), "app 'nope'"),
        (api.get("/admin/nothing-here"), "no such endpoint: GET /admin/nothing-here"),
    ]
    for request, fragment in cases:
        assert fragment in await error(request, 404, "not_found")


async def test_wrong_method_is_405(api: httpx.AsyncClient) -> None:
    message = await error(api.patch("/admin/apps", json={}), 405, "method_not_allowed")
    assert "PATCH is not allowed on /admin/apps" in message and "GET" in message


# ---------------------------------------------------------------------- 409


async def test_conflicts_are_409_and_say_what_to_do(api: httpx.AsyncClient) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    await ok(api.post("/admin/models", json=MODEL), 201)

    message = await error(api.post("/admin/apps", json=APP), 409, "conflict")
    assert "app 'app1' already exists" in message

    message = await error(api.post("/admin/models", json=MODEL), 409, "conflict")
    assert "model 'm1' already has version '1'" in message

    other_type = {**MODEL, "version": "2", "input_type": "strings"}
    message = await error(api.post("/admin/models", json=other_type), 409, "conflict")
    assert "model 'm1' takes input type 'doubles'" in message and "first version" in message

    await ok(api.post("/admin/models", json={**MODEL, "name": "s1", "input_type": "strings"}), 201)
    link_s1 = api.post("/admin/apps/app1/links", json={"model_name": "s1"})
    message = await error(link_s1, 409, "conflict")
    assert "model 's1' takes input type 'strings' but app 'app1' takes 'doubles'" in message

    await ok(api.post("/admin/apps/app1/links", json={"model_name": "m1"}))
    await ok(api.post("/admin/models", json={**MODEL, "name": "m2"}), 201)
    link_m2 = api.post("/admin/apps/app1/links", json={"model_name": "m2"})
    message = await error(link_m2, 409, "conflict")
    assert "'single' policy" in message and "unlink 'm1' first" in message

    message = await error(api.delete("/admin/models/m1"), 409, "conflict")
    assert "model 'm1' is linked to app(s) 'app1'" in message and "unlink" in message

    message = await error(api.delete("/admin/models/m1/versions/1"), 409, "conflict")
    assert "current version of model 'm1'" in message

    # A linked model with no current version still keeps its last version.
    await ok(api.post("/admin/models", json={**MODEL, "version": "2"}), 201)
    await ok(api.delete("/admin/models/m1/versions/1"), 204)
    await ok(api.post("/admin/models", json={**MODEL, "version": "3", "set_current": False}), 201)
    await ok(api.delete("/admin/models/m1/versions/3"), 204)
    # Nothing above changed the links.
    assert await ok(api.get("/admin/apps/app1/links")) == ["m1"]


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


async def test_concurrent_adds_of_one_app_admit_exactly_one(api: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(*(api.post("/admin/apps", json=APP) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [201] + [409] * 7


# ---------------------------------------------------------------------- change feed


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

    async def expect(request: Awaitable[httpx.Response], fields: dict[str, str] | None) -> None:
        nonlocal last
        r = await request
        assert r.status_code < 500, r.text
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
        await expect(api.post("/admin/apps", json=APP), {"kind": "app", "op": "add", "app": "app1"})
        model_add = {"kind": "model", "op": "add", "model": "m1", "version": "1"}
        await expect(api.post("/admin/models", json=MODEL), model_add)
        link = {"kind": "links", "op": "link", "app": "app1", "model": "m1"}
        await expect(api.post("/admin/apps/app1/links", json={"model_name": "m1"}), link)
        v2 = {**MODEL, "version": "2", "set_current": False}
        await expect(api.post("/admin/models", json=v2), {**model_add, "version": "2"})
        current = {"kind": "model", "op": "set_current", "model": "m1", "version": "2"}
        await expect(api.put("/admin/models/m1/current_version", json={"version": "2"}), current)
        replicas = {"kind": "replicas", "op": "set_replicas", "model": "m1", "version": "2"}
        put_replicas = api.put("/admin/models/m1/versions/2/replicas", json={"num_replicas": 2})
        await expect(put_replicas, replicas)
        cache_off = {"kind": "app", "op": "set_cache", "app": "app1"}
        await expect(api.put("/admin/apps/app1/cache", json={"cache_enabled": False}), cache_off)

        # Failures and no-ops publish nothing.
        await expect(api.put("/admin/apps/app1/cache", json={"cache_enabled": False}), None)
        await expect(api.put("/admin/apps/app1/cache", json={"cache_enabled": "no"}), None)
        await expect(api.post("/admin/apps", json=APP), None)
        await expect(api.post("/admin/apps/app1/links", json={"model_name": "m1"}), None)
        await expect(api.put("/admin/models/m1/current_version", json={"version": "2"}), None)
        same = api.put("/admin/models/m1/versions/2/replicas", json={"num_replicas": 2})
        await expect(same, None)
        await expect(api.delete("/admin/models/m1"), None)
        await expect(api.post("/admin/apps", json={**APP, "slo_micros": 0}), None)

        unlink = {"kind": "links", "op": "delete", "app": "app1", "model": "m1"}
        await expect(api.delete("/admin/apps/app1/links/m1"), unlink)
        drop_v1 = {"kind": "model", "op": "delete", "model": "m1", "version": "1"}
        await expect(api.delete("/admin/models/m1/versions/1"), drop_v1)
        await expect(
            api.delete("/admin/models/m1"), {"kind": "model", "op": "delete", "model": "m1"}
        )
        drop_app = {"kind": "app", "op": "delete", "app": "app1"}
        await expect(api.delete("/admin/apps/app1"), drop_app)
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
    assert snap.versions[("m1", "1")].artifact == "/bundles/m1-1"
    assert [(f["kind"], f["op"]) for _, f in await feed_after(async_redis, after)] == [
        ("links", "link")
    ]


# ---------------------------------------------------------------------- replicas


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


# ---------------------------------------------------------------------- schema, prefix


async def test_startup_writes_schema_version_and_refuses_a_newer_one(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    assert await read_schema_version(async_redis, KEYS) == SCHEMA_VERSION
    await async_redis.hset(KEYS.meta, "schema_version", str(SCHEMA_VERSION + 1))
    with pytest.raises(StartupError, match=f"schema version {SCHEMA_VERSION + 1}"):
        await Store(async_redis, KEYS).ensure_schema()


async def test_key_prefixes_keep_clusters_apart(
    api: httpx.AsyncClient, redis_url: str, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    async with serve(Config(redis_url=redis_url, key_prefix="other")) as other:
        assert await ok(other.get("/admin/apps")) == []
        await ok(other.post("/admin/apps", json=APP), 201)
    assert await async_redis.sismember("other:apps", "app1")
    assert await read_schema_version(async_redis, Keys("other")) == SCHEMA_VERSION


# ---------------------------------------------------------------------- Redis restarts


async def test_state_survives_a_redis_restart(
    redis_process_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = redis_process_factory(data_dir=tmp_path / "aof")
    config = Config(redis_url=server.url, redis_wait_s=5)
    async with serve(config) as api:
        await ok(api.post("/admin/apps", json=APP), 201)
        await ok(api.post("/admin/models", json=MODEL), 201)
        await ok(api.post("/admin/apps/app1/links", json={"model_name": "m1"}))
        await ok(api.put("/admin/models/m1/versions/1/replicas", json={"num_replicas": 2}))
        before = [await ok(api.get(p)) for p in ("/admin/apps", "/admin/models/m1")]

        await asyncio.to_thread(server.shutdown)
        message = await error(api.get("/admin/apps"), 503, "unavailable")
        assert server.url in message
        await error(api.get("/healthz"), 503, "unavailable")

        await asyncio.to_thread(server.start)  # same directory, same port

        async def healthy() -> bool:
            return (await api.get("/healthz")).status_code == 200

        await poll(healthy, "the frontend to reach the restarted Redis")
        assert [await ok(api.get(p)) for p in ("/admin/apps", "/admin/models/m1")] == before

    # A frontend started afresh reads the same state, feed included.
    async with serve(config) as api:
        assert await ok(api.get("/admin/apps")) == before[0]
        client = aioredis.Redis.from_url(server.url, decode_responses=True)
        try:
            assert await client.xlen(KEYS.changes) == 4
            assert await client.config_get("appendonly") == {"appendonly": "yes"}
        finally:
            await client.aclose()
    assert list((tmp_path / "aof").glob("appendonly*"))


# ---------------------------------------------------------------------- entry point


def _start_entry_point(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "management_frontend", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_entry_point_serves_and_shuts_down_gracefully(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "mf.log"
    proc = _start_entry_point(
        [
            "--redis-url",
            redis_url,
            "--port",
            str(port),
            "--key-prefix",
            "entry",
            "--log-level",
            "debug",
        ],
        log,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        r = httpx.post(f"{base}/admin/apps", json=APP, timeout=5)
        assert r.status_code == 201, r.text
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert client.sismember("entry:apps", "app1")
            assert client.hget("entry:meta", "schema_version") == str(SCHEMA_VERSION)
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so that the exit
        # status reports it, as a supervisor expects.
        assert proc.wait(timeout=DEADLINE_S) in (0, -signal.SIGTERM), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE_S)
    text = log.read_text()
    assert "management frontend ready" in text
    assert "Application shutdown complete" in text and "management frontend stopped" in text


def test_entry_point_exits_when_redis_never_answers(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    log = tmp_path / "mf.log"
    proc = _start_entry_point(["--redis-url", url, "--port", "0", "--redis-wait", "0.3"], log)
    try:
        assert proc.wait(timeout=DEADLINE_S) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE_S)
    text = log.read_text()
    assert f"Redis at {url} did not answer within 0.3 s" in text


def test_entry_point_rejects_bad_arguments_with_usage(tmp_path: Path) -> None:
    log = tmp_path / "mf.log"
    proc = _start_entry_point(["--redis-url", "http://nope"], log)
    assert proc.wait(timeout=DEADLINE_S) == 2
    assert "is not a Redis URL" in log.read_text()


def test_public_api_is_pinned() -> None:
    assert sorted(management_frontend.__all__) == sorted(
        [
            "Config",
            "Conflict",
            "Invalid",
            "ManagementError",
            "NotFound",
            "StartupError",
            "Store",
            "create_app",
            "main",
        ]
    )
    for name in management_frontend.__all__:
        assert getattr(management_frontend, name) is not None
