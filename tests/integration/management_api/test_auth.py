"""The admin token in front of the management API: every route but ``/healthz`` needs it.

Real uvicorn, real Redis: a request without the token, or with another one, is a 401 in
the API's error shape that stores nothing; a rotated token (its hash rewritten in the
secrets directory, as the container manager does) takes effect without a restart.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from credentials import ClusterSecrets, make_cluster_secrets
from polling import eventually_async
from ports import free_port

from admin.container_managers._credentials import new_token, write_private
from management_frontend import Config, StartupError, create_app
from model_container import credentials as cred

from .helpers import APP, DEADLINE_S, KEYS, MODEL, ok, serve

REPO_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def secrets(tmp_path: Path) -> ClusterSecrets:
    return make_cluster_secrets(tmp_path)


@pytest_asyncio.fixture
async def api(redis_url: str, secrets: ClusterSecrets) -> AsyncIterator[httpx.AsyncClient]:
    config = Config(redis_url=redis_url, redis_wait_s=5, secrets_dir=str(secrets.frontend_dir))
    async with serve(config, secrets) as client:
        yield client


def as_anyone(api: httpx.AsyncClient, token: str | None = None) -> httpx.AsyncClient:
    """A client of the same server sending ``token`` (or no Authorization at all)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.AsyncClient(base_url=api.base_url, timeout=10, headers=headers)


def assert_unauthorized(r: httpx.Response, token: str | None = None) -> str:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    body = r.json()
    assert body["error"] == "unauthorized"
    assert "SCHOONER_ADMIN_TOKEN" in body["message"]
    if token:
        assert token not in r.text
    return str(body["message"])


WRITES = [
    ("POST", "/admin/apps", APP),
    ("POST", "/admin/models", MODEL),
    ("PUT", "/admin/models/m1/versions/1/replicas", {"num_replicas": 3}),
    ("DELETE", "/admin/apps/app1", None),
]


@pytest.mark.parametrize("token", [None, "not-the-token"])
async def test_writes_without_the_admin_token_are_401_and_store_nothing(
    api: httpx.AsyncClient, async_redis: aioredis.Redis, token: str | None
) -> None:
    before = sorted(await async_redis.keys("*"))
    async with as_anyone(api, token) as anyone:
        for method, path, body in WRITES:
            r = await anyone.request(method, path, json=body)
            message = assert_unauthorized(r, token)
            assert ("not this cluster's" in message) == bool(token)
    assert sorted(await async_redis.keys("*")) == before
    assert not await async_redis.exists(KEYS.app("app1"))
    assert await async_redis.xlen(KEYS.changes) == 0


async def test_every_route_but_healthz_needs_the_token(api: httpx.AsyncClient) -> None:
    async with as_anyone(api) as anyone:
        assert (await anyone.get("/healthz")).status_code == 200
        for path in ("/admin/apps", "/admin/replicas", "/docs", "/openapi.json", "/nope"):
            assert_unauthorized(await anyone.get(path))
    # The same paths with the token: the API as before.
    assert await ok(api.get("/admin/apps")) == []
    assert (await api.get("/openapi.json")).status_code == 200
    assert (await api.get("/nope")).status_code == 404


async def test_another_scheme_or_a_lowercase_bearer(
    api: httpx.AsyncClient, secrets: ClusterSecrets
) -> None:
    async with as_anyone(api) as anyone:
        basic = await anyone.get("/admin/apps", headers={"Authorization": "Basic dXNlcjpwdw=="})
        assert "is not 'Bearer <token>'" in assert_unauthorized(basic)
        lower = {"Authorization": f"bearer {secrets.admin_token}"}
        assert (await anyone.get("/admin/apps", headers=lower)).status_code == 200


async def test_a_rotated_token_takes_effect_without_a_restart(
    api: httpx.AsyncClient, secrets: ClusterSecrets, async_redis: aioredis.Redis
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    new = new_token()
    write_private(secrets.frontend_dir / cred.ADMIN_TOKEN_SHA256, cred.sha256_hex(new))

    async with as_anyone(api, new) as rotated:

        async def old_refused() -> bool:
            return (await api.get("/admin/apps")).status_code == 401

        await eventually_async(old_refused, "the old token to be refused", DEADLINE_S)
        assert [a["name"] for a in await ok(rotated.get("/admin/apps"))] == ["app1"]
        assert_unauthorized(await api.delete("/admin/apps/app1"))
        assert await async_redis.exists(KEYS.app("app1"))


async def test_startup_refuses_a_secrets_dir_without_the_token_hash(
    redis_url: str, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    app = create_app(Config(redis_url=redis_url, secrets_dir=str(empty)))
    with pytest.raises(StartupError, match=r"admin-token\.sha256 is missing"):
        async with app.router.lifespan_context(app):
            pass


def test_entry_point_refuses_to_start_without_a_secrets_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != cred.SECRETS_DIR_ENV}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "management_frontend", "--port", str(free_port())],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
    )
    assert done.returncode == 2
    assert "--secrets-dir is required" in done.stderr
