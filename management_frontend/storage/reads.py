"""Reading the control plane's records from Redis.

One command at a time (``read_app``, ``read_model``, ...) inside the writes'
transactions, where a pipeline in WATCH mode runs each command at once; everywhere else
in pipelines (``read_apps``, ``read_models``, ``read_versions``): one app with its links
is one round trip, and listing every app two, however many there are (a read need not
be atomic, so no MULTI).
Decoding is the records' own (``state.records``); "not found" errors are the store's.
Listings read defensively: an app record no answer can be made of (written by hand, or
by an older Schooner that stored a default_output nested 500 deep) is left out with a
warning naming it, instead of turning every listing into a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from management_frontend.state import rules
from management_frontend.state.errors import InvalidValue
from management_frontend.state.keys import Keys
from management_frontend.state.records import (
    App,
    Model,
    ModelVersion,
    Stage,
    models_with_versions,
    schema_version_of,
    text,
    text_hash,
)

logger = logging.getLogger(__name__)

# A client, or a pipeline that executes at once (in WATCH mode, before MULTI).
Reader = aioredis.Redis | Pipeline


def readable_app(keys: Keys, h: dict[str, str]) -> App | None:
    """The app in hash ``h``, or ``None`` (with a warning saying how to remove it) when
    it cannot be decoded or its default_output could not be answered."""
    try:
        app = App.from_hash(h)
        rules.default_output(app.default_output)
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError, InvalidValue) as exc:
        name = h.get("name", "?")
        reason = exc.message if isinstance(exc, InvalidValue) else f"{type(exc).__name__}"
        logger.warning(
            "app record %s cannot be served (%s) and is left out: delete it with "
            "DELETE /admin/apps/%s and register it again",
            keys.app(name),
            reason,
            name,
        )
        return None
    return app


def _apps_with_links(keys: Keys, replies: Sequence[Any]) -> list[tuple[App, list[str]]]:
    """``records.apps_with_links``, leaving out (with a warning) an app that cannot be
    served."""
    found: list[tuple[App, list[str]]] = []
    for h, links in zip(replies[::2], replies[1::2], strict=True):
        app = readable_app(keys, text_hash(h)) if h else None
        if app is not None:
            found.append((app, sorted(text(m) for m in links)))
    return found


async def read_schema_version(r: Reader, keys: Keys) -> int | None:
    """The schema version stored in Redis, ``None`` before any management frontend ran."""
    return schema_version_of(await r.hget(keys.meta, "schema_version"))


async def read_members(r: Reader, key: str) -> list[str]:
    """A set's members, sorted."""
    return sorted(text(m) for m in await r.smembers(key))


async def read_app(r: Reader, keys: Keys, name: str) -> App | None:
    h = await r.hgetall(keys.app(name))
    return App.from_hash(text_hash(h)) if h else None


async def read_links(r: Reader, keys: Keys, app: str) -> list[str]:
    """The app's arms, sorted (empty for an unknown app)."""
    return await read_members(r, keys.links(app))


async def read_later_arms(r: Reader, keys: Keys, app: str) -> list[str]:
    """The arms of the app's stages after the first (its pipeline's ``stages`` field);
    none for an unknown app, a one-stage app, or a field that cannot be read."""
    raw = await r.hget(keys.app(app), "stages")
    try:
        stages = [Stage.from_json(d) for d in json.loads(text(raw))] if raw else []
    except (ValueError, TypeError, AttributeError):
        logger.warning("app record %s has unreadable stages, read as none", keys.app(app))
        return []
    return sorted({arm for stage in stages for arm in stage.arms})


async def read_model(r: Reader, keys: Keys, name: str) -> Model | None:
    h = text_hash(await r.hgetall(keys.model(name)))
    if not h:
        return None
    return Model.from_hash(h, cast(list[bytes | str], await r.zrange(keys.versions(name), 0, -1)))


async def read_version(r: Reader, keys: Keys, name: str, version: str) -> ModelVersion | None:
    h = await r.hgetall(keys.version(name, version))
    return ModelVersion.from_hash(text_hash(h)) if h else None


async def read_apps(
    r: aioredis.Redis, keys: Keys, names: Sequence[str] | None = None
) -> list[tuple[App, list[str]]]:
    """These apps (every app: one more round trip) with their links, in one round trip;
    an app that does not exist, was deleted meanwhile or cannot be served is left out."""
    if names is None:
        names = await read_members(r, keys.apps)
    async with r.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.app(name))
            pipe.smembers(keys.links(name))
        return _apps_with_links(keys, await pipe.execute())


async def read_models(
    r: aioredis.Redis, keys: Keys, names: Sequence[str] | None = None
) -> list[Model]:
    """These models (every model: one more round trip) with their versions, in one round
    trip; a model that does not exist, or was deleted meanwhile, is left out."""
    if names is None:
        names = await read_members(r, keys.models)
    async with r.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.model(name))
            pipe.zrange(keys.versions(name), 0, -1)
        return models_with_versions(await pipe.execute())


async def read_versions(
    r: aioredis.Redis, keys: Keys, model: str, versions: Sequence[str]
) -> list[ModelVersion]:
    """These versions of ``model`` in one round trip; one deleted meanwhile is left out."""
    async with r.pipeline(transaction=False) as pipe:
        for version in versions:
            pipe.hgetall(keys.version(model, version))
        replies = await pipe.execute()
    return [ModelVersion.from_hash(text_hash(h)) for h in replies if h]
