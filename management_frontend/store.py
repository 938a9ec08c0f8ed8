"""Every write to Redis, each one transaction that also appends its change-feed entry.

A write runs as WATCH (the keys its decision reads) → read and check → MULTI → write the
keys and XADD the feed entry → EXEC. If another writer touched a watched key, EXEC
fails with ``WatchError`` and the whole step runs again on fresh state, so checks such
as "not linked to any app" hold at the moment of the write, across any number of
management frontends. A follower therefore never sees a change without its entry or an
entry without its change. A step that finds nothing to change writes nothing and
publishes nothing.

Reads reuse ``schema.read_*``; the store only adds "not found" errors.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError, WatchError
from redis.typing import EncodableT, FieldT

from management_frontend.errors import Conflict, NotFound, StartupError
from management_frontend.schema import (
    SCHEMA_VERSION,
    App,
    ChangeKind,
    ChangeOp,
    Keys,
    Model,
    ModelVersion,
    encode_flag,
    publish_change,
    read_app,
    read_links,
    read_members,
    read_model,
    read_schema_version,
    read_version,
)
from management_frontend.validation import SINGLE_POLICY

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Contended writes retry this often before giving up with a 409.
DEFAULT_MAX_ATTEMPTS = 50


def _begin(pipe: Pipeline) -> None:
    """MULTI: queue what follows (redis-py leaves ``multi`` unannotated)."""
    pipe.multi()  # type: ignore[no-untyped-call]


async def _reset(pipe: Pipeline) -> None:
    """UNWATCH and empty the queue, keeping the pipeline usable."""
    await pipe.reset()  # type: ignore[no-untyped-call]


def _fields(record: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    return {k: v for k, v in record.items()}


def _app_missing(name: str) -> NotFound:
    return NotFound(f"app {name!r} does not exist: register it first")


def _model_missing(name: str) -> NotFound:
    return NotFound(f"model {name!r} does not exist: deploy a version of it first")


def _version_missing(model: Model, version: str) -> NotFound:
    known = ", ".join(repr(v) for v in model.versions) or "none"
    return NotFound(f"model {model.name!r} has no version {version!r} (its versions: {known})")


class Store:
    """The management frontend's view of Redis: typed reads, transactional writes."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        clock: Callable[[], float] = time.time,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self._r = redis
        self._keys = keys
        self._clock = clock
        self._max_attempts = max_attempts

    @property
    def keys(self) -> Keys:
        return self._keys

    async def _transact(self, watch: Sequence[str], step: Callable[[Pipeline], Awaitable[T]]) -> T:
        """Run ``step`` under WATCH ``watch`` until EXEC succeeds.

        ``step`` reads through the pipeline (which executes at once while watching),
        raises to abort, may WATCH more keys, then calls ``multi()`` and queues the
        writes and the feed entry. If it queued nothing, nothing is executed.
        """
        async with self._r.pipeline(transaction=True) as pipe:
            for attempt in range(1, self._max_attempts + 1):
                try:
                    await pipe.watch(*watch)
                    result = await step(pipe)
                    if len(pipe) == 0:
                        await _reset(pipe)
                        return result
                    await pipe.execute()
                    return result
                except WatchError:
                    logger.debug("concurrent change on %s, attempt %d", watch, attempt)
                    await _reset(pipe)
        raise Conflict(f"too many concurrent changes to {', '.join(watch)}: retry the request")

    # ------------------------------------------------------------------ startup

    async def ping(self) -> None:
        await self._r.ping()

    async def ensure_schema(self) -> None:
        """Write ``{p}:meta`` schema_version, or refuse a Redis that holds a newer one."""
        keys = self._keys

        async def step(pipe: Pipeline) -> None:
            found = await read_schema_version(pipe, keys)
            if found is not None and found > SCHEMA_VERSION:
                raise StartupError(
                    f"Redis holds Schooner schema version {found} under prefix "
                    f"{keys.prefix!r}, but this management frontend understands only "
                    f"version {SCHEMA_VERSION}: upgrade Schooner, or use another key prefix"
                )
            if found != SCHEMA_VERSION:
                _begin(pipe)
                pipe.hset(keys.meta, "schema_version", str(SCHEMA_VERSION))

        await self._transact([keys.meta], step)
        logger.info("Redis schema version %d under prefix %r", SCHEMA_VERSION, keys.prefix)

    async def persistence_enabled(self) -> bool | None:
        """Whether Redis has AOF on; ``None`` if CONFIG is not allowed (managed Redis)."""
        try:
            reply = await self._r.config_get("appendonly")
        except ResponseError:
            return None
        return str(reply.get("appendonly", "")).lower() == "yes"

    # ------------------------------------------------------------------ reads

    async def list_apps(self) -> list[tuple[App, list[str]]]:
        """Every app with its linked models; an app deleted meanwhile is left out."""
        out: list[tuple[App, list[str]]] = []
        for name in await read_members(self._r, self._keys.apps):
            app = await read_app(self._r, self._keys, name)
            if app is not None:
                out.append((app, await read_links(self._r, self._keys, name)))
        return out

    async def get_app(self, name: str) -> App:
        app = await read_app(self._r, self._keys, name)
        if app is None:
            raise _app_missing(name)
        return app

    async def get_links(self, app: str) -> list[str]:
        await self.get_app(app)
        return await read_links(self._r, self._keys, app)

    async def list_models(self) -> list[Model]:
        names = await read_members(self._r, self._keys.models)
        models = [await read_model(self._r, self._keys, n) for n in names]
        return [m for m in models if m is not None]

    async def get_model(self, name: str) -> Model:
        model = await read_model(self._r, self._keys, name)
        if model is None:
            raise _model_missing(name)
        return model

    async def list_versions(self, model: Model) -> list[ModelVersion]:
        found = [await read_version(self._r, self._keys, model.name, v) for v in model.versions]
        return [mv for mv in found if mv is not None]

    async def get_version(self, model: str, version: str) -> ModelVersion:
        mv = await read_version(self._r, self._keys, model, version)
        if mv is None:
            raise _version_missing(await self.get_model(model), version)
        return mv

    async def list_replicas(
        self, model: str | None = None, version: str | None = None
    ) -> list[dict[str, Any]]:
        """Connected replicas as the query frontends recorded them, by replica id."""
        raw = await self._r.hgetall(self._keys.replicas)
        out: list[dict[str, Any]] = []
        for replica_id, blob in sorted(raw.items()):
            try:
                record = json.loads(blob)
            except ValueError:
                logger.warning("replica %s has an unreadable record, skipped", replica_id)
                continue
            if not isinstance(record, dict):
                continue
            if model is not None and record.get("model_name") != model:
                continue
            if version is not None and record.get("model_version") != version:
                continue
            out.append(record)
        return out

    # ------------------------------------------------------------------ apps and links

    async def add_app(self, app: App) -> App:
        keys = self._keys

        async def step(pipe: Pipeline) -> App:
            if await pipe.exists(keys.app(app.name)):
                raise Conflict(
                    f"app {app.name!r} already exists: delete it first, or choose another name"
                )
            stored = replace(app, created_at=self._clock())
            _begin(pipe)
            pipe.hset(keys.app(app.name), mapping=_fields(stored.to_hash()))
            pipe.delete(keys.links(app.name))
            pipe.sadd(keys.apps, app.name)
            await publish_change(pipe, keys, ChangeKind.APP, op=ChangeOp.ADD, app=app.name)
            return stored

        return await self._transact([keys.app(app.name), keys.links(app.name)], step)

    async def delete_app(self, name: str) -> None:
        keys = self._keys

        async def step(pipe: Pipeline) -> None:
            if not await pipe.exists(keys.app(name)):
                raise _app_missing(name)
            _begin(pipe)
            pipe.delete(keys.app(name), keys.links(name))
            pipe.srem(keys.apps, name)
            await publish_change(pipe, keys, ChangeKind.APP, op=ChangeOp.DELETE, app=name)

        await self._transact([keys.app(name), keys.links(name)], step)

    async def set_app_cache(self, name: str, enabled: bool) -> App:
        """Turn an app's prediction cache on or off; query frontends follow the feed."""
        keys = self._keys

        async def step(pipe: Pipeline) -> App:
            app = await read_app(pipe, keys, name)
            if app is None:
                raise _app_missing(name)
            if app.cache_enabled == enabled:
                return app
            updated = replace(app, cache_enabled=enabled)
            _begin(pipe)
            pipe.hset(keys.app(name), "cache_enabled", encode_flag(enabled))
            await publish_change(pipe, keys, ChangeKind.APP, op=ChangeOp.SET_CACHE, app=name)
            return updated

        return await self._transact([keys.app(name)], step)

    async def add_link(self, app_name: str, model_name: str) -> list[str]:
        keys = self._keys

        async def step(pipe: Pipeline) -> list[str]:
            app = await read_app(pipe, keys, app_name)
            if app is None:
                raise _app_missing(app_name)
            model = await read_model(pipe, keys, model_name)
            if model is None:
                raise _model_missing(model_name)
            if model.input_type != app.input_type:
                raise Conflict(
                    f"model {model_name!r} takes input type {model.input_type.value!r} but "
                    f"app {app_name!r} takes {app.input_type.value!r}: link a model whose "
                    "input type matches the app's"
                )
            links = await read_links(pipe, keys, app_name)
            if model_name in links:
                return links
            if app.policy == SINGLE_POLICY and links:
                raise Conflict(
                    f"app {app_name!r} uses the {SINGLE_POLICY!r} policy and model "
                    f"{links[0]!r} is already linked to it: unlink {links[0]!r} first, "
                    "or register the app with a policy that combines several models"
                )
            _begin(pipe)
            pipe.sadd(keys.links(app_name), model_name)
            await publish_change(
                pipe, keys, ChangeKind.LINKS, op=ChangeOp.LINK, app=app_name, model=model_name
            )
            return sorted([*links, model_name])

        watch = [keys.app(app_name), keys.links(app_name), keys.model(model_name)]
        return await self._transact(watch, step)

    async def delete_link(self, app_name: str, model_name: str) -> None:
        keys = self._keys

        async def step(pipe: Pipeline) -> None:
            if not await pipe.exists(keys.app(app_name)):
                raise _app_missing(app_name)
            links = await read_links(pipe, keys, app_name)
            if model_name not in links:
                linked = ", ".join(repr(m) for m in links) or "none"
                raise NotFound(
                    f"model {model_name!r} is not linked to app {app_name!r} "
                    f"(its linked models: {linked})"
                )
            _begin(pipe)
            pipe.srem(keys.links(app_name), model_name)
            await publish_change(
                pipe, keys, ChangeKind.LINKS, op=ChangeOp.DELETE, app=app_name, model=model_name
            )

        await self._transact([keys.app(app_name), keys.links(app_name)], step)

    async def _linked_apps(self, pipe: Pipeline, model: str) -> list[str]:
        """Apps linking ``model``; their link sets are watched from here on."""
        apps = await read_members(pipe, self._keys.apps)
        if not apps:
            return []
        link_keys = [self._keys.links(a) for a in apps]
        await pipe.watch(*link_keys)
        return [a for a, k in zip(apps, link_keys, strict=True) if await pipe.sismember(k, model)]

    # ------------------------------------------------------------------ models

    async def add_model_version(self, mv: ModelVersion, *, set_current: bool) -> ModelVersion:
        keys = self._keys
        name, ver = mv.name, mv.version

        async def step(pipe: Pipeline) -> ModelVersion:
            model = await read_model(pipe, keys, name)
            if model is not None and model.input_type != mv.input_type:
                raise Conflict(
                    f"model {name!r} takes input type {model.input_type.value!r} (fixed by its "
                    f"first version): register version {ver!r} with that input type, or "
                    "deploy it under a new model name"
                )
            if model is not None and (
                ver in model.versions or await pipe.exists(keys.version(name, ver))
            ):
                raise Conflict(
                    f"model {name!r} already has version {ver!r}: versions are immutable, "
                    "deploy this one under a new version"
                )
            stored = replace(mv, registered_at=self._clock())
            _begin(pipe)
            header = {"name": name, "input_type": mv.input_type.value}
            if set_current:
                header["current_version"] = ver
            elif model is None:
                header["current_version"] = ""
            pipe.hset(keys.model(name), mapping=_fields(header))
            pipe.hset(keys.version(name, ver), mapping=_fields(stored.to_hash()))
            pipe.zadd(keys.versions(name), {ver: stored.registered_at})
            pipe.sadd(keys.models, name)
            await publish_change(
                pipe, keys, ChangeKind.MODEL, op=ChangeOp.ADD, model=name, version=ver
            )
            return stored

        watch = [keys.model(name), keys.versions(name), keys.version(name, ver)]
        return await self._transact(watch, step)

    async def set_current_version(self, name: str, version: str) -> Model:
        keys = self._keys

        async def step(pipe: Pipeline) -> Model:
            model = await read_model(pipe, keys, name)
            if model is None:
                raise _model_missing(name)
            if version not in model.versions:
                raise _version_missing(model, version)
            if model.current_version == version:
                return model
            _begin(pipe)
            pipe.hset(keys.model(name), "current_version", version)
            await publish_change(
                pipe, keys, ChangeKind.MODEL, op=ChangeOp.SET_CURRENT, model=name, version=version
            )
            return replace(model, current_version=version)

        return await self._transact([keys.model(name), keys.versions(name)], step)

    async def set_num_replicas(self, name: str, version: str, num_replicas: int) -> ModelVersion:
        keys = self._keys

        async def step(pipe: Pipeline) -> ModelVersion:
            mv = await read_version(pipe, keys, name, version)
            if mv is None:
                model = await read_model(pipe, keys, name)
                raise _model_missing(name) if model is None else _version_missing(model, version)
            if mv.num_replicas == num_replicas:
                return mv
            _begin(pipe)
            pipe.hset(keys.version(name, version), "num_replicas", str(num_replicas))
            await publish_change(
                pipe,
                keys,
                ChangeKind.REPLICAS,
                op=ChangeOp.SET_REPLICAS,
                model=name,
                version=version,
            )
            return replace(mv, num_replicas=num_replicas)

        return await self._transact([keys.version(name, version)], step)

    def _queue_model_delete(self, pipe: Pipeline, model: Model) -> None:
        keys = self._keys
        version_keys = [keys.version(model.name, v) for v in model.versions]
        pipe.delete(keys.model(model.name), keys.versions(model.name), *version_keys)
        pipe.srem(keys.models, model.name)

    async def delete_model(self, name: str) -> None:
        keys = self._keys

        async def step(pipe: Pipeline) -> None:
            model = await read_model(pipe, keys, name)
            if model is None:
                raise _model_missing(name)
            linked = await self._linked_apps(pipe, name)
            if linked:
                raise Conflict(
                    f"model {name!r} is linked to app(s) {', '.join(map(repr, linked))}: "
                    "unlink it from every app first"
                )
            _begin(pipe)
            self._queue_model_delete(pipe, model)
            await publish_change(pipe, keys, ChangeKind.MODEL, op=ChangeOp.DELETE, model=name)

        await self._transact([keys.model(name), keys.versions(name), keys.apps], step)

    async def delete_model_version(self, name: str, version: str) -> None:
        """Delete one version; deleting the last one deletes the model."""
        keys = self._keys

        async def step(pipe: Pipeline) -> None:
            model = await read_model(pipe, keys, name)
            if model is None:
                raise _model_missing(name)
            if version not in model.versions:
                raise _version_missing(model, version)
            linked = await self._linked_apps(pipe, name)
            apps = ", ".join(map(repr, linked))
            if linked and model.current_version == version:
                raise Conflict(
                    f"version {version!r} is the current version of model {name!r}, which is "
                    f"linked to app(s) {apps}: make another version current first, "
                    "or unlink the model"
                )
            last = model.versions == [version]
            if linked and last:
                raise Conflict(
                    f"version {version!r} is the last version of model {name!r}, which is "
                    f"linked to app(s) {apps}: unlink the model first"
                )
            _begin(pipe)
            if last:
                self._queue_model_delete(pipe, model)
            else:
                pipe.delete(keys.version(name, version))
                pipe.zrem(keys.versions(name), version)
                if model.current_version == version:
                    pipe.hset(keys.model(name), "current_version", "")
            await publish_change(
                pipe, keys, ChangeKind.MODEL, op=ChangeOp.DELETE, model=name, version=version
            )

        watch = [keys.model(name), keys.versions(name), keys.version(name, version), keys.apps]
        await self._transact(watch, step)
