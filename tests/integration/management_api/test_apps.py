"""Apps: what deleting one takes with it, concurrent registrations of one name, and the 400
each malformed registration body gets, naming its field.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from .helpers import APP, KEYS, MODEL, error, ok


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


async def test_concurrent_adds_of_one_app_admit_exactly_one(api: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(*(api.post("/admin/apps", json=APP) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [201] + [409] * 7


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


async def test_an_app_of_integers_is_stored_as_ints(api: httpx.AsyncClient) -> None:
    """Clipper's name for the type is taken, and the record says ours."""
    app = await ok(api.post("/admin/apps", json={**APP, "input_type": "integers"}), 201)
    assert app["input_type"] == "ints"
    assert (await ok(api.get("/admin/apps/app1")))["input_type"] == "ints"
    await ok(api.delete("/admin/apps/app1"), 204)
