"""The service around the API: the schema version written at startup, key prefixes,
state surviving a Redis restart, ``python -m management_frontend`` serving and stopping,
and the package's public API.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from credentials import make_cluster_secrets
from polling import eventually, eventually_async
from ports import free_port

import management_frontend
from management_frontend import Config
from management_frontend.errors import StartupError
from management_frontend.state.keys import SCHEMA_VERSION, Keys
from management_frontend.storage.reads import read_schema_version
from management_frontend.storage.store import Store

from .helpers import APP, DEADLINE_S, KEYS, MODEL, error, ok, serve

REPO_ROOT = Path(__file__).resolve().parents[3]


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

        await eventually_async(healthy, "the frontend to reach the restarted Redis", DEADLINE_S)
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
    secrets = make_cluster_secrets(tmp_path)
    proc = _start_entry_point(
        [
            "--secrets-dir",
            str(secrets.frontend_dir),
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

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text()
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200

        eventually(
            healthy,
            lambda: f"the entry point to serve /healthz; its log:\n{log.read_text()}",
            DEADLINE_S,
            ignoring=(httpx.TransportError,),
        )
        wrong = {"Authorization": f"Bearer {secrets.admin_token}x"}
        refused = httpx.post(f"{base}/admin/apps", json=APP, timeout=5, headers=wrong)
        assert refused.status_code == 401
        r = httpx.post(f"{base}/admin/apps", json=APP, timeout=5, headers=secrets.admin_headers)
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
        assert proc.wait(timeout=DEADLINE_S) == -signal.SIGTERM, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE_S)
    text = log.read_text()
    assert "management frontend ready" in text
    assert "Application shutdown complete" in text and "management frontend stopped" in text
    # At DEBUG, after a refused and an accepted request, the token is nowhere in the log.
    assert "401 for POST /admin/apps" in text
    assert secrets.admin_token not in text


def test_entry_point_exits_when_redis_never_answers(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    log = tmp_path / "mf.log"
    secrets = make_cluster_secrets(tmp_path)
    args = ["--redis-url", url, "--port", "0", "--redis-wait", "0.3"]
    proc = _start_entry_point([*args, "--secrets-dir", str(secrets.frontend_dir)], log)
    try:
        assert proc.wait(timeout=DEADLINE_S) == 3  # startup failed (2 is bad arguments)
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
