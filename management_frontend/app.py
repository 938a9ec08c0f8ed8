"""The management frontend as an ASGI app: ``create_app(config)``, its lifespan and Redis.

``create_app`` does no I/O; the lifespan reads the admin token's hash from the secrets
directory (refusing to start without one: every route but ``/healthz`` needs the token,
``api/auth.py``), opens the Redis client, waits for Redis to
answer, writes the schema version, hands the ``Store`` to the routes
(``api/routes.py``; the ``/docs`` page, served offline, is ``api/docs_page.py``; the
``/ui`` dashboard is ``ui/``) and, on
exit, lets background clean-ups finish and closes the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from management_frontend.api.activity_routes import router as activity_router
from management_frontend.api.auth import AdminAuthMiddleware
from management_frontend.api.docs_page import install_docs_page
from management_frontend.api.errors import BodyLimitMiddleware, install_error_handlers
from management_frontend.api.openapi import install_openapi
from management_frontend.api.routes import API_VERSION, router
from management_frontend.config import Config
from management_frontend.errors import StartupError
from management_frontend.state.keys import Keys
from management_frontend.storage.store import Store
from management_frontend.ui import SecurityHeadersMiddleware, Sessions, install_dashboard
from model_container import credentials
from model_container.bearer import AdminTokenCheck
from model_container.credentials import CredentialError

logger = logging.getLogger(__name__)


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
    """The client every request shares; reads retry briefly on connection errors. It
    authenticates with the cluster's ``redis-password`` when its secrets directory has
    one (never from the URL on the command line, which ``ps`` shows everyone)."""
    return aioredis.Redis.from_url(
        config.redis_url,
        password=credentials.read_optional(config.secrets_dir, credentials.REDIS_PASSWORD),
        decode_responses=True,
        socket_timeout=config.redis_timeout_s,
        socket_connect_timeout=config.redis_timeout_s,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.02), retries=2),
        client_name="schooner-management",
    )


def create_app(config: Config) -> FastAPI:
    """The management frontend as an ASGI app; serve it with uvicorn."""

    admin_token = AdminTokenCheck(config.secrets_dir)
    # The dashboard's, signed with the token's hash and the Redis password (lifespan).
    sessions = Sessions(admin_token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:  # secure by default: no admin token to check, no API
            admin_token.load()
        except CredentialError as exc:
            raise StartupError(f"the management API needs the admin token's hash: {exc}") from None
        # Not the hash alone: replicas hold it. A Redis of the user's has no password file.
        sessions.use_server_secret(
            credentials.read_optional(config.secrets_dir, credentials.REDIS_PASSWORD)
        )
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
        # FastAPI's pages load from a CDN; ours are served from the package (docs_page.py).
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = None
    app.state.config = config
    install_error_handlers(app, config.redis_url_redacted)
    app.add_middleware(BodyLimitMiddleware)
    # Added last, so it runs first: nothing is read or answered before the token is checked.
    app.add_middleware(AdminAuthMiddleware, check=admin_token, sessions=sessions)
    # Outermost: the dashboard's CSP reaches the login form the middleware above serves.
    app.add_middleware(SecurityHeadersMiddleware)
    app.include_router(router)
    app.include_router(activity_router)
    install_openapi(app)
    install_docs_page(app)
    install_dashboard(app, admin_token, sessions)
    return app
