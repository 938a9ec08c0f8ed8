"""What an attacker with curl tried against the management API (issue 12, rows 4, 5
and 7): each is a 400 that says what to fix, and a refused write stores nothing, so
listing keeps working."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import redis.asyncio as aioredis

from management_frontend import Config
from management_frontend.cli import parse_config
from management_frontend.state.records import App
from management_frontend.state.rules import MAX_JSON_DEPTH
from model_container.protocol import InputType

from .helpers import APP, KEYS, MODEL, error, ok, serve

JSON = {"content-type": "application/json"}


def nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


async def test_a_body_nested_past_the_limit_is_400_and_stores_nothing(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    for depth in (500, 100_000):
        body = json.dumps({**APP, "default_output": "@"}).replace('"@"', nested(depth))
        message = await error(api.post("/admin/apps", content=body, headers=JSON), 400, "invalid")
        assert message == (
            f"the request body is nested deeper than {MAX_JSON_DEPTH} levels: "
            f"nest lists and objects at most {MAX_JSON_DEPTH} deep"
        )
    assert await async_redis.exists(KEYS.app("app1")) == 0
    assert await ok(api.get("/admin/apps")) == []
    # Brackets inside strings are text, not nesting.
    text = "[" * 1000
    await ok(api.post("/admin/apps", json={**APP, "default_output": text}), 201)
    assert (await ok(api.get("/admin/apps")))[0]["default_output"] == text


async def test_default_output_no_answer_could_carry_is_400_and_stores_nothing(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    cases = [
        ("1" * 400, "default_output is an integer of about 400 digits"),
        ("18446744073709551616", "default_output is an integer of about 20 digits"),
        ("[1, NaN]", "default_output[1] is NaN: use a finite number"),
        ('{"a": Infinity}', 'default_output["a"] is Infinity'),
        ('"\\ud800"', "default_output holds a lone UTF-16 surrogate"),
    ]
    for raw, fragment in cases:
        body = json.dumps({**APP, "default_output": "@"}).replace('"@"', raw)
        message = await error(api.post("/admin/apps", content=body, headers=JSON), 400, "invalid")
        assert fragment in message, message
    assert await async_redis.exists(KEYS.app("app1")) == 0
    # The largest values an answer carries (and the deepest body) are accepted, and read
    # back as sent.
    for value in (2**64 - 1, -(2**63), json.loads(nested(MAX_JSON_DEPTH - 1))):
        await ok(api.post("/admin/apps", json={**APP, "default_output": value}), 201)
        assert (await ok(api.get("/admin/apps/app1")))["default_output"] == value
        await ok(api.delete("/admin/apps/app1"), 204)


async def test_an_integer_too_long_to_parse_is_400(api: httpx.AsyncClient) -> None:
    body = json.dumps({**APP, "default_output": "@"}).replace('"@"', "9" * 5000)
    message = await error(api.post("/admin/apps", content=body, headers=JSON), 400, "invalid")
    assert "could not be parsed as JSON" in message
    assert await ok(api.get("/admin/apps")) == []


async def test_policy_numbers_too_large_for_a_float_are_400(api: httpx.AsyncClient) -> None:
    body = json.dumps({**APP, "policy": "exp3", "policy_params": {"eta": "@"}})
    body = body.replace('"@"', "1" * 400)
    message = await error(api.post("/admin/apps", content=body, headers=JSON), 400, "invalid")
    assert "must be a finite number" in message
    assert await ok(api.get("/admin/apps")) == []


async def test_replica_counts_over_the_bound_are_400_and_store_nothing(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    message = await error(
        api.post("/admin/models", json={**MODEL, "num_replicas": 1_000_000_000}), 400, "invalid"
    )
    assert message.startswith("num_replicas must be at most 64, got 1000000000")
    assert "--max-replicas (env SCHOONER_MAX_REPLICAS)" in message
    assert await async_redis.exists(KEYS.version("m1", "1"), KEYS.model("m1")) == 0

    await ok(api.post("/admin/models", json={**MODEL, "num_replicas": 64}), 201)
    await error(
        api.put("/admin/models/m1/versions/1/replicas", json={"num_replicas": 65}), 400, "invalid"
    )
    assert (await ok(api.get("/admin/models/m1/versions/1")))["num_replicas"] == 64


async def test_the_operator_can_raise_the_replica_bound(redis_url: str) -> None:
    async with serve(Config(redis_url=redis_url, redis_wait_s=5, max_replicas=200)) as api:
        await ok(api.post("/admin/models", json={**MODEL, "num_replicas": 200}), 201)
        message = await error(
            api.put("/admin/models/m1/versions/1/replicas", json={"num_replicas": 201}),
            400,
            "invalid",
        )
        assert "num_replicas must be at most 200, got 201" in message


async def test_an_app_stored_by_an_older_schooner_that_cannot_be_served_does_not_break_listing(
    api: httpx.AsyncClient, async_redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """What main before issue 12 stored for row 4: every GET /admin/apps was a 500."""
    await ok(api.post("/admin/apps", json=APP), 201)
    bad = App(
        name="deep",
        input_type=InputType.DOUBLES,
        default_output=json.loads(nested(500)),
        slo_micros=100_000,
    )
    await async_redis.hset(KEYS.app("deep"), mapping=bad.to_hash())
    await async_redis.sadd(KEYS.apps, "deep")
    with caplog.at_level(logging.WARNING):
        listed = await ok(api.get("/admin/apps"))
    assert [app["name"] for app in listed] == ["app1"]
    assert "DELETE /admin/apps/deep" in caplog.text
    await ok(api.delete("/admin/apps/deep"), 204)
    assert await async_redis.exists(KEYS.app("deep")) == 0


def test_the_replica_bound_comes_from_the_flag_or_the_environment(
    capsys: pytest.CaptureFixture[str],
) -> None:
    secrets = ["--secrets-dir", "/s"]
    assert parse_config(secrets, env={}).max_replicas == 64
    assert parse_config(secrets, env={"SCHOONER_MAX_REPLICAS": "500"}).max_replicas == 500
    assert parse_config([*secrets, "--max-replicas", "8"], env={}).max_replicas == 8
    with pytest.raises(SystemExit) as info:
        parse_config([*secrets, "--max-replicas", "-1"], env={})
    assert info.value.code == 2
    assert "max_replicas must be >= 0, got -1" in capsys.readouterr().err
