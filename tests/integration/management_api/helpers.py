"""What the management API tests share: ``serve`` (the app on uvicorn in the test's loop),
``ok``/``error`` (a response's status and body, or its error code and sentence), the
APP and MODEL bodies most tests register, the change feed read back (``feed_after``) and
what a selection policy learned (``linked_app``, ``learn``, ``learned_keys``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import uvicorn
from credentials import ClusterSecrets, make_cluster_secrets
from polling import eventually_async

from management_frontend import Config, create_app
from management_frontend.state.keys import Keys
from management_frontend.state.policy import RECORDED, ArmFeedback
from query_frontend.selection.learned_store import LearnedStateStore

DEADLINE_S = 15.0
KEYS = Keys()


@asynccontextmanager
async def serve(
    config: Config, secrets: ClusterSecrets | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Serve the app with uvicorn on a free port in this loop; yield a client for it that
    sends the admin token. Without ``secrets`` (or a ``config.secrets_dir``), the
    cluster's credentials are made for this one serving."""
    with tempfile.TemporaryDirectory() as tmp:
        if secrets is None:
            secrets = make_cluster_secrets(Path(tmp))
        if config.secrets_dir is None:
            config = dataclasses.replace(config, secrets_dir=str(secrets.frontend_dir))
        async with _serve(config, secrets.admin_headers) as client:
            yield client


@asynccontextmanager
async def _serve(config: Config, headers: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
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

        await eventually_async(started, "uvicorn to start", DEADLINE_S)
        port = sock.getsockname()[1]
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=10, headers=headers
        ) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, DEADLINE_S)
        sock.close()


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

    async def settled() -> bool:
        return len(await learned_keys(r, app)) <= want

    await eventually_async(settled, f"{app}'s learned keys down to {want}", DEADLINE_S)
    return await learned_keys(r, app)
