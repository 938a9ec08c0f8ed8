"""Reading the cluster's configuration from Redis: a snapshot, then the change feed.

The follower protocol (``docs/redis-schema.md``): read the newest feed id
(``latest_change_id``), then every record (``read_snapshot``), then block on the feed
from that id (``follow_changes``). A change that raced with the snapshot comes after the
id, so it is replayed; applying an entry whose effect the snapshot already holds is
harmless, because an entry only names what to re-read.

The snapshot takes three round trips however many apps and models there are: the two
name sets, then every app, link set, API key set, model and version list, then every
version record,
each in one pipeline (no MULTI: the snapshot need not be atomic).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import redis.asyncio as aioredis

from management_frontend.state.feed import Change
from management_frontend.state.keys import Keys
from management_frontend.state.records import (
    ModelVersion,
    Snapshot,
    apps_with_links,
    models_with_versions,
    text,
    text_hash,
)
from query_frontend.cancellation import stop_if_cancelled

# An XRANGE/XREAD reply: (entry id, fields) pairs.
_Entries = list[tuple[bytes | str, dict[bytes | str, bytes | str]]]


async def latest_change_id(r: aioredis.Redis, keys: Keys) -> str:
    """The id of the newest feed entry ("0-0" when empty): read it *before* a snapshot."""
    last = cast(_Entries, await r.xrevrange(keys.changes, count=1))
    return text(last[0][0]) if last else "0-0"


async def read_snapshot(r: aioredis.Redis, keys: Keys) -> Snapshot:
    """Every app, link, model and version; a record deleted meanwhile is left out.

    Not atomic: read ``latest_change_id`` first and replay the feed from there, which
    makes the result current.
    """
    async with r.pipeline(transaction=False) as pipe:
        pipe.smembers(keys.apps)
        pipe.smembers(keys.models)
        app_names, model_names = (sorted(text(m) for m in s) for s in await pipe.execute())
        for name in app_names:
            pipe.hgetall(keys.app(name))
            pipe.smembers(keys.links(name))
        for name in model_names:
            pipe.hgetall(keys.model(name))
            pipe.zrange(keys.versions(name), 0, -1)
        for name in app_names:
            pipe.smembers(keys.api_keys(name))
        replies = await pipe.execute()
        n_apps, n_models = len(app_names), len(model_names)
        snap = Snapshot()
        for app, links in apps_with_links(replies[: 2 * n_apps]):
            snap.apps[app.name] = app
            snap.links[app.name] = links
        for model in models_with_versions(replies[2 * n_apps : 2 * (n_apps + n_models)]):
            snap.models[model.name] = model
        for name, digests in zip(app_names, replies[2 * (n_apps + n_models) :], strict=True):
            if digests and name in snap.apps:
                snap.api_keys[name] = frozenset(text(d) for d in digests)
        wanted = [(m.name, v) for m in snap.models.values() for v in m.versions]
        for name, version in wanted:
            pipe.hgetall(keys.version(name, version))
        for key, h in zip(wanted, await pipe.execute(), strict=True):
            if h:
                snap.versions[key] = ModelVersion.from_hash(text_hash(h))
    return snap


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
        stop_if_cancelled()  # redis-py may lose a cancellation in XREAD
        batches = cast(list[tuple[bytes | str, _Entries]] | None, reply)
        for _stream, entries in batches or []:
            for entry_id, raw in entries:
                change = Change.from_entry(entry_id, raw)
                last = change.id
                yield change
