"""The Redis schema: key names, the records stored under them, and the change feed.

The management frontend is the only writer of these keys (``store.py``), except
``{p}:replicas``, which the query frontends write; query frontends read the rest here and
follow the change feed. ``docs/redis-schema.md`` documents the same layout for operators
and the rules for changing it. Every client of these functions uses a Redis connection
opened with ``decode_responses=True``.

Keys (``{p}`` is the key prefix, ``schooner`` by default):

    {p}:meta                              hash  schema_version
    {p}:apps                              set   app names
    {p}:app:{app}                         hash  an App record
    {p}:app:{app}:links                   set   the app's arms: "model" (its current version)
                                                or "model:version" (that version, pinned)
    {p}:app:{app}:policy:{epoch}          hash  learned selection-policy state (policy_state.py)
    {p}:app:{app}:policy:{epoch}:user:{uid}  hash  what one user's feedback added to it
    {p}:app:{app}:policy:{epoch}:seen:{id}   string a feedback id already counted (expires)
    {p}:models                            set   model names
    {p}:model:{model}                     hash  name, input_type, current_version
    {p}:model:{model}:versions            zset  version -> registration time (unix s)
    {p}:model:{model}:version:{version}   hash  a ModelVersion record
    {p}:replicas                          hash  replica id -> JSON of a connected replica
    {p}:changes                           stream the change feed (one entry per change)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from model_container.protocol import InputType

SCHEMA_VERSION = 1
DEFAULT_PREFIX = "schooner"
# The feed keeps about this many entries; a follower further behind reloads everything.
FEED_MAXLEN = 10_000


# An XRANGE/XREAD reply: (entry id, fields) pairs.
_Entries = list[tuple[bytes | str, dict[bytes | str, bytes | str]]]


def text(value: bytes | str) -> str:
    """A reply item as ``str``; a client without ``decode_responses`` still reads right."""
    return value.decode() if isinstance(value, bytes) else value


def text_hash(h: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A hash reply (HGETALL, a stream entry's fields) as ``str`` -> ``str``."""
    return {text(k): text(v) for k, v in h.items()}


class ChangeKind:
    """What a change-feed entry is about (its "kind" field).

    An entry names what changed, not how: a follower re-reads the named app or model
    (``read_app``, ``read_model``, ``read_version``) and treats a missing record as
    deleted. Entries also carry an "op" field (``ChangeOp``) for logs and metrics.
    """

    APP = "app"  # an app was added, changed or deleted ("app" field)
    LINKS = "links"  # an app's links changed ("app" field)
    MODEL = "model"  # a model or one of its versions changed ("model", "version" fields)
    REPLICAS = "replicas"  # desired replica count of a model version ("model", "version")


class ChangeOp:
    """The "op" field of a change-feed entry: informative, never needed to apply it."""

    ADD = "add"  # app added, model version added (and model created with its first one)
    DELETE = "delete"  # app, model or model version deleted; link removed
    LINK = "link"  # model linked to an app
    SET_CURRENT = "set_current"  # a model's current version changed
    SET_REPLICAS = "set_replicas"  # a model version's desired replica count changed
    SET_CACHE = "set_cache"  # an app's prediction cache was turned on or off
    SET_POLICY = "set_policy"  # an app's selection policy or its parameters changed
    RESET_POLICY = "reset_policy"  # what an app's policy learned was forgotten ("uid"?)


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix, so several clusters can share a Redis."""

    prefix: str = DEFAULT_PREFIX

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def apps(self) -> str:
        return f"{self.prefix}:apps"

    def app(self, app: str) -> str:
        return f"{self.prefix}:app:{app}"

    def links(self, app: str) -> str:
        return f"{self.prefix}:app:{app}:links"

    def policy_state(self, app: str, epoch: str, uid: str | None = None) -> str:
        """The app's learned policy state in ``epoch`` (the app's ``policy_epoch``), or
        with ``uid`` one user's part of it."""
        base = f"{self.prefix}:app:{app}:policy:{epoch}"
        return base if uid is None else f"{base}:user:{uid}"

    def feedback_seen(self, app: str, epoch: str, feedback_id: str) -> str:
        return f"{self.prefix}:app:{app}:policy:{epoch}:seen:{feedback_id}"

    def policy_pattern(self, app: str) -> str:
        """A SCAN pattern matching every learned-state key of ``app``, of any epoch."""
        return f"{self.prefix}:app:{app}:policy:*"

    def policy_epoch_of(self, app: str, key: str) -> str:
        """The epoch a key matched by ``policy_pattern`` belongs to."""
        return key[len(f"{self.prefix}:app:{app}:policy:") :].split(":", 1)[0]

    @property
    def models(self) -> str:
        return f"{self.prefix}:models"

    def model(self, model: str) -> str:
        return f"{self.prefix}:model:{model}"

    def versions(self, model: str) -> str:
        return f"{self.prefix}:model:{model}:versions"

    def version(self, model: str, version: str) -> str:
        return f"{self.prefix}:model:{model}:version:{version}"

    @property
    def replicas(self) -> str:
        return f"{self.prefix}:replicas"

    @property
    def changes(self) -> str:
        return f"{self.prefix}:changes"


def arm_name(model: str, version: str | None = None) -> str:
    """A link as stored: the model (it follows the current version) or ``model:version``."""
    return model if version is None else f"{model}:{version}"


def parse_arm(arm: str) -> tuple[str, str | None]:
    """``"m"`` -> ``("m", None)``; ``"m:2"`` -> ``("m", "2")`` (names hold no ':')."""
    model, sep, version = arm.partition(":")
    return model, (version if sep else None)


def encode_flag(value: bool) -> str:
    """A boolean hash field: "1" or "0"."""
    return "1" if value else "0"


def decode_flag(value: str) -> bool:
    """Only "0" is off: an unexpected value reads as the default (on) instead of making
    the whole record unreadable to a query frontend."""
    return value != "0"


@dataclass(frozen=True)
class App:
    name: str
    input_type: InputType
    default_output: Any  # any JSON value, returned as given
    slo_micros: int
    policy: str = "single"
    created_at: float = 0.0
    # Whether the query frontend may answer from (and fill) its prediction cache.
    cache_enabled: bool = True
    # The policy's settings (split weights, learning rates, loss): see policy_state.py.
    policy_params: dict[str, Any] = field(default_factory=dict)
    # Names the learned state in use; a new token forgets it (a reset is one write).
    policy_epoch: str = ""

    def to_hash(self) -> dict[str, str]:
        return {
            "name": self.name,
            "input_type": str(self.input_type),
            "default_output": json.dumps(self.default_output),
            "slo_micros": str(self.slo_micros),
            "policy": self.policy,
            "policy_params": json.dumps(self.policy_params),
            "policy_epoch": self.policy_epoch,
            "created_at": repr(self.created_at),
            "cache_enabled": encode_flag(self.cache_enabled),
        }

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> App:
        return cls(
            name=h["name"],
            input_type=InputType(h["input_type"]),
            default_output=json.loads(h["default_output"]),
            slo_micros=int(h["slo_micros"]),
            policy=h.get("policy", "single"),
            policy_params=dict(json.loads(h.get("policy_params", "{}"))),
            policy_epoch=h.get("policy_epoch", ""),
            created_at=float(h.get("created_at", "0")),
            # Written before the field existed: on, as every app was then.
            cache_enabled=decode_flag(h.get("cache_enabled", "1")),
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_type"] = str(self.input_type)
        return out


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    input_type: InputType
    # What a container manager runs: a bundle directory (local) or an image (Docker, k8s).
    artifact: str = ""
    labels: list[str] = field(default_factory=list)
    batch_size: int = -1  # -1: adaptive
    # "aimd", "latency_model", "fixed"; "" is "fixed" when batch_size > 0, else "aimd".
    batch_mode: str = ""
    batch_wait_micros: int = 0  # how long a free replica may wait to fill a batch; 0: off
    num_replicas: int = 0  # desired replicas, enacted by the container manager
    runtime: dict[str, str] = field(default_factory=dict)  # versions it was pickled under
    pkgs: list[str] = field(default_factory=list)
    registered_at: float = 0.0

    def to_hash(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "input_type": str(self.input_type),
            "artifact": self.artifact,
            "labels": json.dumps(self.labels),
            "batch_size": str(self.batch_size),
            "batch_mode": self.batch_mode,
            "batch_wait_micros": str(self.batch_wait_micros),
            "num_replicas": str(self.num_replicas),
            "runtime": json.dumps(self.runtime),
            "pkgs": json.dumps(self.pkgs),
            "registered_at": repr(self.registered_at),
        }

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> ModelVersion:
        return cls(
            name=h["name"],
            version=h["version"],
            input_type=InputType(h["input_type"]),
            artifact=h.get("artifact", ""),
            labels=list(json.loads(h.get("labels", "[]"))),
            batch_size=int(h.get("batch_size", "-1")),
            batch_mode=h.get("batch_mode", ""),
            batch_wait_micros=int(h.get("batch_wait_micros", "0")),
            num_replicas=int(h.get("num_replicas", "0")),
            runtime=dict(json.loads(h.get("runtime", "{}"))),
            pkgs=list(json.loads(h.get("pkgs", "[]"))),
            registered_at=float(h.get("registered_at", "0")),
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_type"] = str(self.input_type)
        return out


@dataclass(frozen=True)
class Model:
    name: str
    input_type: InputType
    current_version: str | None
    versions: list[str]  # in registration order

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_type"] = str(self.input_type)
        return out


@dataclass
class Snapshot:
    """Everything a query frontend needs to route, read in one go."""

    apps: dict[str, App] = field(default_factory=dict)
    links: dict[str, list[str]] = field(default_factory=dict)  # app -> arms (see parse_arm)
    models: dict[str, Model] = field(default_factory=dict)
    versions: dict[tuple[str, str], ModelVersion] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    id: str  # the stream entry id
    kind: str
    fields: dict[str, str]


async def read_schema_version(r: aioredis.Redis, keys: Keys) -> int | None:
    """The schema version stored in Redis, ``None`` before any management frontend ran.

    A reader that finds a version above ``SCHEMA_VERSION`` must refuse to run: it would
    misread the records.
    """
    value = await r.hget(keys.meta, "schema_version")
    return int(text(value)) if value is not None else None


async def read_members(r: aioredis.Redis, key: str) -> list[str]:
    """A set's members, sorted."""
    return sorted(text(m) for m in await r.smembers(key))


async def read_app(r: aioredis.Redis, keys: Keys, name: str) -> App | None:
    h = await r.hgetall(keys.app(name))
    return App.from_hash(text_hash(h)) if h else None


async def read_links(r: aioredis.Redis, keys: Keys, app: str) -> list[str]:
    """Names of the models linked to ``app``, sorted (empty for an unknown app)."""
    return await read_members(r, keys.links(app))


async def read_model(r: aioredis.Redis, keys: Keys, name: str) -> Model | None:
    h = text_hash(await r.hgetall(keys.model(name)))
    if not h:
        return None
    versions = cast(list[bytes | str], await r.zrange(keys.versions(name), 0, -1))
    return Model(
        name=h["name"],
        input_type=InputType(h["input_type"]),
        current_version=h.get("current_version") or None,
        versions=[text(v) for v in versions],
    )


async def read_version(
    r: aioredis.Redis, keys: Keys, name: str, version: str
) -> ModelVersion | None:
    h = await r.hgetall(keys.version(name, version))
    return ModelVersion.from_hash(text_hash(h)) if h else None


async def read_snapshot(r: aioredis.Redis, keys: Keys) -> Snapshot:
    """Every app, link, model and version. Not atomic: read ``latest_change_id`` first
    and replay the feed from there, which makes the result current (see ``follow_changes``).
    """
    snap = Snapshot()
    for name in await read_members(r, keys.apps):
        app = await read_app(r, keys, name)
        if app is not None:
            snap.apps[name] = app
            snap.links[name] = await read_links(r, keys, name)
    for name in await read_members(r, keys.models):
        model = await read_model(r, keys, name)
        if model is None:
            continue
        snap.models[name] = model
        for version in model.versions:
            mv = await read_version(r, keys, name, version)
            if mv is not None:
                snap.versions[(name, version)] = mv
    return snap


async def latest_change_id(r: aioredis.Redis, keys: Keys) -> str:
    """The id of the newest feed entry ("0-0" when empty): read it *before* a snapshot."""
    last = cast(_Entries, await r.xrevrange(keys.changes, count=1))
    return text(last[0][0]) if last else "0-0"


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def feed_trimmed_after(r: aioredis.Redis, keys: Keys, after_id: str) -> bool:
    """Whether entries after ``after_id`` may have been trimmed from the feed.

    A follower that was disconnected for long calls this before resuming; ``True`` means
    it must reload a snapshot (read ``latest_change_id`` first) instead of replaying.
    """
    if after_id == "0-0":
        return False
    first = cast(_Entries, await r.xrange(keys.changes, count=1))
    if not first:
        # Empty feed: either nothing was ever written after a snapshot, or it was all
        # trimmed or deleted; only a snapshot is safe.
        return True
    oldest = text(first[0][0])
    return _id_tuple(oldest) > _id_tuple(after_id)


async def publish_change(r: aioredis.Redis | Any, keys: Keys, kind: str, **fields: str) -> None:
    """Append an entry to the change feed (``r`` may be a pipeline inside MULTI)."""
    entry: dict[FieldT, EncodableT] = {"kind": kind}
    entry.update(fields)
    await r.xadd(keys.changes, entry, maxlen=FEED_MAXLEN, approximate=True)


async def follow_changes(
    r: aioredis.Redis, keys: Keys, after_id: str, block_ms: int = 1000
) -> AsyncIterator[Change]:
    """Yield feed entries after ``after_id`` as they are appended, forever.

    Blocking XREAD: a change arrives as soon as it is written, no polling interval.
    ``block_ms`` must stay well below the client's ``socket_timeout``, or an idle feed
    turns into a ``TimeoutError``; the loop simply blocks again when it expires.
    """
    last = after_id
    while True:
        reply = await r.xread({keys.changes: last}, block=block_ms, count=100)
        batches = cast(list[tuple[bytes | str, _Entries]] | None, reply)
        for _stream, entries in batches or []:
            for entry_id, raw in entries:
                last = text(entry_id)
                fields = text_hash(raw)
                yield Change(id=last, kind=fields.get("kind", ""), fields=fields)
