"""An app's ``expose_model_errors``: off unless registered on, stored with the app, and
nothing but a JSON boolean accepted (a refused registration stores nothing)."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from .helpers import APP, KEYS, error, ok


async def test_an_app_hides_model_errors_unless_registered_to_expose_them(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    hidden = await ok(api.post("/admin/apps", json=APP), 201)
    assert hidden["expose_model_errors"] is False
    shown = await ok(
        api.post("/admin/apps", json={**APP, "name": "dev", "expose_model_errors": True}), 201
    )
    assert shown["expose_model_errors"] is True
    assert (await ok(api.get("/admin/apps/dev")))["expose_model_errors"] is True
    assert await async_redis.hget(KEYS.app("dev"), "expose_model_errors") == "1"
    assert await async_redis.hget(KEYS.app("app1"), "expose_model_errors") == "0"


@pytest.mark.parametrize("value", ["true", 1, None])
async def test_expose_model_errors_must_be_a_boolean(
    api: httpx.AsyncClient, async_redis: aioredis.Redis, value: object
) -> None:
    body = {**APP, "expose_model_errors": value}
    message = await error(api.post("/admin/apps", json=body), 400, "invalid")
    assert "expose_model_errors must be a JSON boolean (true or false)" in message
    assert not await async_redis.exists(KEYS.app("app1"))
