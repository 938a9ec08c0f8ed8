"""Every write to Redis, each one transaction that also appends its change-feed entry.

A write runs as WATCH (the keys its decision reads) → read and check → MULTI → write the
keys and XADD the feed entry → EXEC. If another writer touched a watched key, EXEC
fails with ``WatchError`` and the whole step runs again on fresh state, so checks such
as "not linked to any app" hold at the moment of the write, across any number of
management frontends. A follower therefore never sees a change without its entry or an
entry without its change. A step that finds nothing to change writes nothing and
publishes nothing.

Reads are ``reads.py``'s; the store only adds "not found" errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError, WatchError
from redis.typing import EncodableT, FieldT

from management_frontend.errors import Conflict, NotFound, StartupError
from management_frontend.state.feed import FEED_MAXLEN, ChangeKind, ChangeOp, entry
from management_frontend.state.keys import SCHEMA_VERSION, Keys, arm_name, parse_arm
from management_frontend.state.policy import SINGLE, PolicyParams, new_epoch
from management_frontend.state.records import (
    App,
    Model,
    ModelVersion,
    encode_flag,
    read_replica_record,
)
from management_frontend.storage.cleanup import StaleStateCleaner
from management_frontend.storage.feeds import check_new_current, check_new_first_arm
from management_frontend.storage.reads import (
    read_app,
    read_apps,
    read_later_arms,
    read_links,
    read_members,
    read_model,
    read_models,
    read_schema_version,
    read_version,
    read_versions,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Contended writes retry this often before giving up with a 409.
DEFAULT_MAX_ATTEMPTS = 50


def begin(pipe: Pipeline) -> None:
    """MULTI: queue what follows (redis-py leaves ``multi`` unannotated)."""
    pipe.multi()  # type: ignore[no-untyped-call]


async def _reset(pipe: Pipeline) -> None:
    """UNWATCH and empty the queue, keeping the pipeline usable."""
    await pipe.reset()  # type: ignore[no-untyped-call]


def as_fields(record: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    return {k: v for k, v in record.items()}


def publish(pipe: Pipeline, keys: Keys, kind: str, op: str, **fields: str) -> None:
    """Queue a change's feed entry, inside MULTI with the writes it describes."""
    pipe.xadd(
        keys.changes, as_fields(entry(kind, op, **fields)), maxlen=FEED_MAXLEN, approximate=True
    )


def app_missing(name: str) -> NotFound:
    return NotFound(f"app {name!r} does not exist: register it first")


def _model_missing(name: str) -> NotFound:
    return NotFound(f"model {name!r} does not exist: deploy a version of it first")


def _version_missing(model: Model, version: str) -> NotFound:
    known = listed(model.versions)
    return NotFound(f"model {model.name!r} has no version {version!r} (its versions: {known})")


def listed(names: Sequence[str]) -> str:
    return ", ".join(map(repr, names)) or "none"


def _armas_fields(model: str, version: str | None) -> dict[str, str]:
    """A link's feed-entry fields: "model", and "version" for a pinned link."""
    return {"model": model} if version is None else {"model": model, "version": version}


# How to take a model out of a pipeline's later stages (they have no links to delete).
_SET_PIPELINE_HINT = "set the app's pipeline without it, PUT /admin/apps/{app}/pipeline"


def _describe_arm(model: str, version: str | None) -> str:
    return f"model {model!r}" if version is None else f"version {version!r} of model {model!r}"


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
        self._cleaner = StaleStateCleaner(redis, keys)
        self._cleanups: set[asyncio.Task[None]] = set()

    @property
    def keys(self) -> Keys:
        return self._keys

    @property
    def redis(self) -> aioredis.Redis:
        return self._r

    async def transact(self, watch: Sequence[str], step: Callable[[Pipeline], Awaitable[T]]) -> T:
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
                begin(pipe)
                pipe.hset(keys.meta, "schema_version", str(SCHEMA_VERSION))

        await self.transact([keys.meta], step)
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
        return await read_apps(self._r, self._keys)

    async def get_app(self, name: str) -> tuple[App, list[str]]:
        """The app with its links, in one round trip."""
        found = await read_apps(self._r, self._keys, [name])
        if not found:
            raise app_missing(name)
        return found[0]

    async def list_models(self) -> list[Model]:
        return await read_models(self._r, self._keys)

    async def get_model(self, name: str) -> Model:
        """The model with its versions, in one round trip."""
        found = await read_models(self._r, self._keys, [name])
        if not found:
            raise _model_missing(name)
        return found[0]

    async def list_versions(self, model: Model) -> list[ModelVersion]:
        return await read_versions(self._r, self._keys, model.name, model.versions)

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
            record = read_replica_record(blob)
            if record is None:
                logger.warning("replica %s has an unreadable record, skipped", replica_id)
                continue
            if model is not None and record.get("model_name") != model:
                continue
            if version is not None and record.get("model_version") != version:
                continue
            out.append(record)
        return out

    # ------------------------------------------------------------------ apps and links

    async def add_app(self, app: App) -> App:
        """Register an app; its policy parameters are stored normalised.

        An app starts with no links, so split weights are taken as given here; they are
        checked against the links when the policy is set (``set_policy``).
        """
        keys = self._keys
        params = PolicyParams.parse(app.policy, app.policy_params).to_json()

        async def step(pipe: Pipeline) -> App:
            if await pipe.exists(keys.app(app.name)):
                raise Conflict(
                    f"app {app.name!r} already exists: delete it first, or choose another name"
                )
            stored = replace(
                app, policy_params=params, policy_epoch=new_epoch(), created_at=self._clock()
            )
            begin(pipe)
            pipe.hset(keys.app(app.name), mapping=as_fields(stored.to_hash()))
            pipe.delete(keys.links(app.name), keys.api_keys(app.name))
            pipe.sadd(keys.apps, app.name)
            publish(pipe, keys, ChangeKind.APP, ChangeOp.ADD, app=app.name)
            return stored

        watched = [keys.app(app.name), keys.links(app.name), keys.api_keys(app.name)]
        stored = await self.transact(watched, step)
        # Whatever an earlier app of this name learned is not this app's.
        self.clean_up(app.name)
        return stored

    async def delete_app(self, name: str) -> None:
        """Delete an app with its links, its API keys and everything its policy learned."""
        keys = self._keys

        async def step(pipe: Pipeline) -> None:
            if not await pipe.exists(keys.app(name)):
                raise app_missing(name)
            begin(pipe)
            pipe.delete(keys.app(name), keys.links(name), keys.api_keys(name))
            pipe.srem(keys.apps, name)
            publish(pipe, keys, ChangeKind.APP, ChangeOp.DELETE, app=name)

        await self.transact([keys.app(name), keys.links(name), keys.api_keys(name)], step)
        self.clean_up(name)

    # ------------------------------------------------------------------ API keys

    async def add_api_key(self, app: str, key_sha256: str) -> int:
        """Record a new API key of ``app`` by its hex sha256; how many keys it now has."""
        keys = self._keys

        async def step(pipe: Pipeline) -> int:
            if not await pipe.exists(keys.app(app)):
                raise app_missing(app)
            count = int(await pipe.scard(keys.api_keys(app)))
            begin(pipe)
            pipe.sadd(keys.api_keys(app), key_sha256)
            publish(pipe, keys, ChangeKind.KEYS, ChangeOp.ADD_KEY, app=app)
            return count + 1

        return await self.transact([keys.app(app), keys.api_keys(app)], step)

    async def revoke_api_key(self, app: str, key_sha256: str) -> int:
        """Forget an API key of ``app`` (by its hex sha256); how many keys are left."""
        keys = self._keys

        async def step(pipe: Pipeline) -> int:
            if not await pipe.exists(keys.app(app)):
                raise app_missing(app)
            if not await pipe.sismember(keys.api_keys(app), key_sha256):
                raise NotFound(
                    f"app {app!r} has no such API key (already revoked, or another app's): "
                    "send the key itself, or the hex sha256 create_api_key answered"
                )
            count = int(await pipe.scard(keys.api_keys(app)))
            begin(pipe)
            pipe.srem(keys.api_keys(app), key_sha256)
            publish(pipe, keys, ChangeKind.KEYS, ChangeOp.REVOKE_KEY, app=app)
            return count - 1

        return await self.transact([keys.app(app), keys.api_keys(app)], step)

    async def api_key_counts(self, apps: Sequence[str]) -> dict[str, int]:
        """How many API keys each app has, in one round trip (never the hashes)."""
        async with self._r.pipeline(transaction=False) as pipe:
            for app in apps:
                pipe.scard(self._keys.api_keys(app))
            counts = await pipe.execute()
        return {app: int(n) for app, n in zip(apps, counts, strict=True)}

    async def set_app_cache(self, name: str, enabled: bool) -> App:
        """Turn an app's prediction cache on or off; query frontends follow the feed."""
        keys = self._keys

        async def step(pipe: Pipeline) -> App:
            app = await read_app(pipe, keys, name)
            if app is None:
                raise app_missing(name)
            if app.cache_enabled == enabled:
                return app
            updated = replace(app, cache_enabled=enabled)
            begin(pipe)
            pipe.hset(keys.app(name), "cache_enabled", encode_flag(enabled))
            publish(pipe, keys, ChangeKind.APP, ChangeOp.SET_CACHE, app=name)
            return updated

        return await self.transact([keys.app(name)], step)

    async def add_link(
        self, app_name: str, model_name: str, version: str | None = None
    ) -> list[str]:
        """Link an arm: the model (it follows the current version), or with ``version``
        that version, pinned; links are a pipeline's first stage. The app's links are
        returned."""
        keys = self._keys
        arm = arm_name(model_name, version)

        async def step(pipe: Pipeline) -> list[str]:
            app = await read_app(pipe, keys, app_name)
            if app is None:
                raise app_missing(app_name)
            model = await read_model(pipe, keys, model_name)
            if model is None:
                raise _model_missing(model_name)
            if version is not None and version not in model.versions:
                raise _version_missing(model, version)
            if model.input_type != app.input_type:
                raise Conflict(
                    f"model {model_name!r} takes input type {model.input_type.value!r} but "
                    f"app {app_name!r} takes {app.input_type.value!r}: link a model whose "
                    "input type matches the app's"
                )
            links = await read_links(pipe, keys, app_name)
            if arm in links:
                return links
            if app.policy == SINGLE and links:
                raise Conflict(
                    f"app {app_name!r} uses the {SINGLE!r} policy and {links[0]!r} is already "
                    f"linked to it: unlink {links[0]!r} first, or give the app a policy that "
                    f"uses several models (split, exp3 or exp4: PUT /admin/apps/{app_name}/policy)"
                )
            if app.stages:
                await check_new_first_arm(pipe, keys, app, [*links, arm], model, version)
            begin(pipe)
            pipe.sadd(keys.links(app_name), arm)
            where = _armas_fields(model_name, version)
            publish(pipe, keys, ChangeKind.LINKS, ChangeOp.LINK, app=app_name, **where)
            return sorted([*links, arm])

        watch = [
            keys.app(app_name),
            keys.links(app_name),
            keys.model(model_name),
            keys.versions(model_name),
        ]
        return await self.transact(watch, step)

    async def delete_link(self, app_name: str, model_name: str, version: str | None = None) -> None:
        """Unlink the model, or with ``version`` the link pinned to that version."""
        keys = self._keys
        arm = arm_name(model_name, version)

        async def step(pipe: Pipeline) -> None:
            if not await pipe.exists(keys.app(app_name)):
                raise app_missing(app_name)
            links = await read_links(pipe, keys, app_name)
            if arm not in links:
                pinned = [v for m, v in map(parse_arm, links) if m == model_name and v]
                hint = (
                    f": to unlink a pinned version, name it ({listed(pinned)})"
                    if pinned and version is None
                    else ""
                )
                if arm in await read_later_arms(pipe, keys, app_name):
                    hint = (
                        ": it is an arm of a later stage of the app's pipeline, which links do "
                        f"not hold; set the pipeline without it (PUT /admin/apps/{app_name}/"
                        "pipeline)"
                    )
                raise NotFound(
                    f"{_describe_arm(model_name, version)} is not linked to app {app_name!r} "
                    f"(its links: {listed(links)}){hint}"
                )
            begin(pipe)
            pipe.srem(keys.links(app_name), arm)
            where = _armas_fields(model_name, version)
            publish(pipe, keys, ChangeKind.LINKS, ChangeOp.DELETE, app=app_name, **where)

        await self.transact([keys.app(app_name), keys.links(app_name)], step)

    async def _links_to(self, pipe: Pipeline, model: str) -> dict[str, list[str]]:
        """App -> its arms of ``model`` (plain or pinned) in any stage of its pipeline,
        for the apps that have any; every app's record and link set is watched from here
        on."""
        keys = self._keys
        apps = await read_members(pipe, keys.apps)
        if not apps:
            return {}
        await pipe.watch(*[k for a in apps for k in (keys.app(a), keys.links(a))])
        found: dict[str, list[str]] = {}
        for app in apps:
            arms = set(await read_links(pipe, keys, app)) | set(
                await read_later_arms(pipe, keys, app)
            )
            mine = sorted(a for a in arms if parse_arm(a)[0] == model)
            if mine:
                found[app] = mine
        return found

    # ------------------------------------------------------------------ learned policy state

    def clean_up(self, app_name: str) -> None:
        """Delete an app's learned state of other epochs than those its stages use now
        (every epoch, if the app is gone), in the background (``cleanup.py``)."""

        async def run() -> None:
            try:
                count = await self._cleaner.delete(app_name)
            except (RedisError, OSError) as exc:
                logger.warning("could not delete the old policy state of %s: %s", app_name, exc)
                return
            if count:
                logger.info("deleted %d keys of old policy state of app %s", count, app_name)

        task = asyncio.get_running_loop().create_task(run())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def wait_for_cleanups(self) -> None:
        """Wait until the background deletions started so far are done (shutdown, tests)."""
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

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
            if model is not None and set_current:
                await check_new_current(pipe, keys, mv)
            stored = replace(mv, registered_at=self._clock())
            begin(pipe)
            header = {"name": name, "input_type": mv.input_type.value}
            if set_current:
                header["current_version"] = ver
            elif model is None:
                header["current_version"] = ""
            pipe.hset(keys.model(name), mapping=as_fields(header))
            pipe.hset(keys.version(name, ver), mapping=as_fields(stored.to_hash()))
            pipe.zadd(keys.versions(name), {ver: stored.registered_at})
            pipe.sadd(keys.models, name)
            publish(pipe, keys, ChangeKind.MODEL, ChangeOp.ADD, model=name, version=ver)
            return stored

        watch = [keys.model(name), keys.versions(name), keys.version(name, ver)]
        return await self.transact(watch, step)

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
            mv = await read_version(pipe, keys, name, version)
            if mv is not None:
                await check_new_current(pipe, keys, mv)
            begin(pipe)
            pipe.hset(keys.model(name), "current_version", version)
            publish(pipe, keys, ChangeKind.MODEL, ChangeOp.SET_CURRENT, model=name, version=version)
            return replace(model, current_version=version)

        return await self.transact([keys.model(name), keys.versions(name)], step)

    async def set_num_replicas(self, name: str, version: str, num_replicas: int) -> ModelVersion:
        keys = self._keys

        async def step(pipe: Pipeline) -> ModelVersion:
            mv = await read_version(pipe, keys, name, version)
            if mv is None:
                model = await read_model(pipe, keys, name)
                raise _model_missing(name) if model is None else _version_missing(model, version)
            if mv.num_replicas == num_replicas:
                return mv
            begin(pipe)
            pipe.hset(keys.version(name, version), "num_replicas", str(num_replicas))
            publish(
                pipe, keys, ChangeKind.REPLICAS, ChangeOp.SET_REPLICAS, model=name, version=version
            )
            return replace(mv, num_replicas=num_replicas)

        return await self.transact([keys.version(name, version)], step)

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
            linked = await self._links_to(pipe, name)
            if linked:
                apps = ", ".join(
                    repr(app) if arms == [name] else f"{app!r} (as {listed(arms)})"
                    for app, arms in linked.items()
                )
                raise Conflict(
                    f"model {name!r} is linked to app(s) {apps}: unlink it from every app "
                    f"first (from a later stage of a pipeline: {_SET_PIPELINE_HINT})"
                )
            begin(pipe)
            self._queue_model_delete(pipe, model)
            publish(pipe, keys, ChangeKind.MODEL, ChangeOp.DELETE, model=name)

        await self.transact([keys.model(name), keys.versions(name), keys.apps], step)

    async def delete_model_version(self, name: str, version: str) -> None:
        """Delete one version; deleting the last one deletes the model."""
        keys = self._keys

        async def step(pipe: Pipeline) -> None:
            model = await read_model(pipe, keys, name)
            if model is None:
                raise _model_missing(name)
            if version not in model.versions:
                raise _version_missing(model, version)
            links = await self._links_to(pipe, name)
            pinning = [app for app, arms in links.items() if arm_name(name, version) in arms]
            if pinning:
                raise Conflict(
                    f"version {version!r} of model {name!r} is pinned by app(s) "
                    f"{listed(pinning)}: unlink it first (DELETE "
                    f"/admin/apps/{pinning[0]}/links/{name}?version={version}; from a later "
                    f"stage of a pipeline: {_SET_PIPELINE_HINT})"
                )
            # Apps whose plain link follows the current version.
            linked = [app for app, arms in links.items() if name in arms]
            apps = listed(linked)
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
            begin(pipe)
            if last:
                self._queue_model_delete(pipe, model)
            else:
                pipe.delete(keys.version(name, version))
                pipe.zrem(keys.versions(name), version)
                if model.current_version == version:
                    pipe.hset(keys.model(name), "current_version", "")
            publish(pipe, keys, ChangeKind.MODEL, ChangeOp.DELETE, model=name, version=version)

        watch = [keys.model(name), keys.versions(name), keys.version(name, version), keys.apps]
        await self.transact(watch, step)
