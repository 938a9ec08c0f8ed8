"""The REST admin API (``docs/admin-api.md``): the FastAPI app factory and its routes.

``create_app(config)`` does no I/O; the lifespan opens the Redis client, waits for
Redis to answer, writes the schema version and closes the client on exit. Handlers
are thin: parse (``models.py``), call the ``Store``, shape the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, cast

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from pydantic import BeforeValidator
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from management_frontend.config import Config
from management_frontend.errors import StartupError
from management_frontend.http_errors import BodyLimitMiddleware, install_error_handlers
from management_frontend.models import (
    AddApp,
    AddLink,
    AddModelVersion,
    SetAppCache,
    SetCurrentVersion,
    SetPolicy,
    SetReplicas,
)
from management_frontend.policy_store import PolicyStore
from management_frontend.state import rules
from management_frontend.state.keys import Keys, arm_name
from management_frontend.state.records import App, Model
from management_frontend.store import Store

logger = logging.getLogger(__name__)

API_VERSION = "1"

# Path parameters are validated like body fields: a name that cannot exist is a 400
# that says why, and a ':' can never reach a Redis key.
AppPath = Annotated[str, Path(), BeforeValidator(rules.app_name)]
ModelPath = Annotated[str, Path(), BeforeValidator(rules.model_name)]
VersionPath = Annotated[str, Path(), BeforeValidator(rules.version)]
# Optional query parameters, validated the same way when given.
VersionQuery = Annotated[str | None, Query(), BeforeValidator(rules.optional(rules.version))]
UserQuery = Annotated[str | None, Query(), BeforeValidator(rules.optional(rules.check_user_id))]


def get_store(request: Request) -> Store:
    store = getattr(request.app.state, "store", None)
    if store is None:
        raise RuntimeError("the app's lifespan has not run: serve it with uvicorn or run it")
    return cast(Store, store)


StoreDep = Annotated[Store, Depends(get_store)]


def get_policies(request: Request) -> PolicyStore:
    return PolicyStore(get_store(request))


PoliciesDep = Annotated[PolicyStore, Depends(get_policies)]

router = APIRouter()


def _app_json(app: App, links: list[str]) -> dict[str, Any]:
    return {**app.to_json(), "linked_models": links}


def _no_content() -> Response:
    return Response(status_code=204)


@router.get("/healthz")
async def healthz(store: StoreDep) -> dict[str, str]:
    await store.ping()
    return {"status": "ok"}


# ---------------------------------------------------------------------- apps


@router.get("/admin/apps")
async def list_apps(store: StoreDep) -> list[dict[str, Any]]:
    return [_app_json(app, links) for app, links in await store.list_apps()]


@router.post("/admin/apps", status_code=201)
async def add_app(body: AddApp, store: StoreDep) -> dict[str, Any]:
    app = await store.add_app(body.to_record())
    logger.info(
        "app %s added (input %s, slo %d us, policy %s, cache %s)",
        app.name,
        app.input_type,
        app.slo_micros,
        app.policy,
        "on" if app.cache_enabled else "off",
    )
    return app.to_json()


@router.get("/admin/apps/{app}")
async def get_app(app: AppPath, store: StoreDep) -> dict[str, Any]:
    record = await store.get_app(app)
    return _app_json(record, await store.get_links(app))


@router.delete("/admin/apps/{app}", status_code=204)
async def delete_app(app: AppPath, store: StoreDep) -> Response:
    await store.delete_app(app)
    logger.info("app %s deleted", app)
    return _no_content()


@router.put("/admin/apps/{app}/cache")
async def set_app_cache(app: AppPath, body: SetAppCache, store: StoreDep) -> dict[str, Any]:
    record = await store.set_app_cache(app, body.cache_enabled)
    logger.info("app %s prediction cache %s", app, "on" if record.cache_enabled else "off")
    return record.to_json()


@router.put("/admin/apps/{app}/policy")
async def set_policy(app: AppPath, body: SetPolicy, policies: PoliciesDep) -> dict[str, Any]:
    record = await policies.set_policy(app, body.policy, body.params, reset_state=body.reset_state)
    logger.info(
        "app %s selection policy %s %s%s",
        app,
        record.policy,
        record.policy_params,
        " (learned state reset)" if body.reset_state else "",
    )
    return record.to_json()


@router.get("/admin/apps/{app}/policy/state")
async def get_policy_state(
    app: AppPath, policies: PoliciesDep, uid: UserQuery = None
) -> dict[str, Any]:
    return await policies.get_policy_state(app, uid)


@router.delete("/admin/apps/{app}/policy/state", status_code=204)
async def reset_policy_state(
    app: AppPath, policies: PoliciesDep, uid: UserQuery = None
) -> Response:
    await policies.reset_policy_state(app, uid)
    if uid is None:
        logger.info("app %s learned policy state reset", app)
    else:
        logger.info("app %s learned policy state of user %r reset", app, uid)
    return _no_content()


@router.get("/admin/apps/{app}/links")
async def get_links(app: AppPath, store: StoreDep) -> list[str]:
    return await store.get_links(app)


@router.post("/admin/apps/{app}/links")
async def add_link(app: AppPath, body: AddLink, store: StoreDep) -> list[str]:
    links = await store.add_link(app, body.model_name, body.version)
    logger.info("%s linked to app %s", arm_name(body.model_name, body.version), app)
    return links


@router.delete("/admin/apps/{app}/links/{model}", status_code=204)
async def delete_link(
    app: AppPath, model: ModelPath, store: StoreDep, version: VersionQuery = None
) -> Response:
    await store.delete_link(app, model, version)
    logger.info("%s unlinked from app %s", arm_name(model, version), app)
    return _no_content()


# ---------------------------------------------------------------------- models


@router.get("/admin/models")
async def list_models(store: StoreDep) -> list[dict[str, Any]]:
    return [m.to_json() for m in await store.list_models()]


@router.post("/admin/models", status_code=201)
async def add_model_version(body: AddModelVersion, store: StoreDep) -> dict[str, Any]:
    mv = await store.add_model_version(body.to_record(), set_current=body.set_current)
    logger.info(
        "model %s version %s added (input %s, current: %s)",
        mv.name,
        mv.version,
        mv.input_type,
        body.set_current,
    )
    return mv.to_json()


@router.get("/admin/models/{model}")
async def get_model(model: ModelPath, store: StoreDep) -> dict[str, Any]:
    record: Model = await store.get_model(model)
    details = [mv.to_json() for mv in await store.list_versions(record)]
    return {**record.to_json(), "version_details": details}


@router.delete("/admin/models/{model}", status_code=204)
async def delete_model(model: ModelPath, store: StoreDep) -> Response:
    await store.delete_model(model)
    logger.info("model %s deleted", model)
    return _no_content()


@router.get("/admin/models/{model}/versions/{version}")
async def get_version(model: ModelPath, version: VersionPath, store: StoreDep) -> dict[str, Any]:
    return (await store.get_version(model, version)).to_json()


@router.delete("/admin/models/{model}/versions/{version}", status_code=204)
async def delete_version(model: ModelPath, version: VersionPath, store: StoreDep) -> Response:
    await store.delete_model_version(model, version)
    logger.info("model %s version %s deleted", model, version)
    return _no_content()


@router.put("/admin/models/{model}/current_version")
async def set_current_version(
    model: ModelPath, body: SetCurrentVersion, store: StoreDep
) -> dict[str, Any]:
    record = await store.set_current_version(model, body.version)
    logger.info("model %s current version is %s", model, body.version)
    return record.to_json()


@router.put("/admin/models/{model}/versions/{version}/replicas")
async def set_num_replicas(
    model: ModelPath, version: VersionPath, body: SetReplicas, store: StoreDep
) -> dict[str, Any]:
    mv = await store.set_num_replicas(model, version, body.num_replicas)
    logger.info("model %s version %s wants %d replicas", model, version, body.num_replicas)
    return mv.to_json()


# ---------------------------------------------------------------------- replicas


@router.get("/admin/replicas")
async def list_replicas(
    store: StoreDep, model_name: str | None = None, model_version: str | None = None
) -> list[dict[str, Any]]:
    return await store.list_replicas(model_name, model_version)


# ---------------------------------------------------------------------- the app


async def _wait_for_redis(store: Store, config: Config) -> None:
    """Poll PING until Redis answers or ``config.redis_wait_s`` has passed."""
    deadline = time.monotonic() + config.redis_wait_s
    delay = 0.05
    warned = False
    while True:
        try:
            await store.ping()
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartupError(
                    f"Redis at {config.redis_url_redacted} did not answer within "
                    f"{config.redis_wait_s:g} s ({exc}): start Redis or fix --redis-url"
                ) from exc
            if not warned:
                logger.warning("waiting for Redis at %s: %s", config.redis_url_redacted, exc)
                warned = True
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)


def open_redis(config: Config) -> aioredis.Redis:
    """The client every request shares; reads retry briefly on connection errors."""
    return aioredis.Redis.from_url(
        config.redis_url,
        decode_responses=True,
        socket_timeout=config.redis_timeout_s,
        socket_connect_timeout=config.redis_timeout_s,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.02), retries=2),
        client_name="schooner-management",
    )


def create_app(config: Config) -> FastAPI:
    """The management frontend as an ASGI app; serve it with uvicorn."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = open_redis(config)
        try:
            store = Store(redis, Keys(config.key_prefix))
            await _wait_for_redis(store, config)
            await store.ensure_schema()
            if await store.persistence_enabled() is False:
                logger.warning(
                    "Redis at %s runs without AOF persistence (appendonly no): "
                    "apps and models will not survive a Redis restart",
                    config.redis_url_redacted,
                )
            app.state.store = store
            logger.info(
                "management frontend ready, Redis %s, prefix %r",
                config.redis_url_redacted,
                config.key_prefix,
            )
            yield
        finally:
            current: Store | None = app.state.store
            app.state.store = None
            if current is not None:  # let background deletions of old policy state finish
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(current.wait_for_cleanups(), timeout=10)
            await redis.aclose()
            logger.info("management frontend stopped")

    app = FastAPI(
        title="Schooner management API",
        version=API_VERSION,
        summary="Apps, models, versions, links and replicas of a Schooner cluster",
        lifespan=lifespan,
    )
    app.state.store = None
    app.state.config = config
    install_error_handlers(app, config.redis_url_redacted)
    app.add_middleware(BodyLimitMiddleware)
    app.include_router(router)
    return app
