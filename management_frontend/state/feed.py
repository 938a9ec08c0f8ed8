"""The change feed ``{p}:changes``: what an entry says.

Every write of the management frontend appends one entry in the same MULTI/EXEC as the
keys it changes (``management_frontend.storage.store.publish``); query frontends follow
the feed (``query_frontend.routing.feed``). An entry names *what* changed, not how: a
follower re-reads the named app or model and treats a missing record as deleted, so
applying an entry twice, or one a snapshot already holds, is harmless.
``docs/redis-schema.md`` gives the follower protocol (newest id, then a snapshot, then
``XREAD BLOCK`` from that id).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from management_frontend.state.records import text, text_hash

# The feed keeps about this many entries (XADD MAXLEN ~); a follower further behind
# reloads everything.
FEED_MAXLEN = 10_000


class ChangeKind:
    """What a change-feed entry is about (its "kind" field)."""

    APP = "app"  # an app was added, changed or deleted ("app" field)
    LINKS = "links"  # an app's links changed ("app" field)
    MODEL = "model"  # a model or one of its versions changed ("model", "version" fields)
    REPLICAS = "replicas"  # desired replica count of a model version ("model", "version")
    KEYS = "keys"  # an API key of an app was created or revoked ("app" field)


class ChangeOp:
    """The "op" field of a change-feed entry: informative, never needed to apply it."""

    ADD = "add"  # app added, model version added (and model created with its first one)
    DELETE = "delete"  # app, model or model version deleted; link removed
    LINK = "link"  # model linked to an app
    SET_CURRENT = "set_current"  # a model's current version changed
    SET_REPLICAS = "set_replicas"  # a model version's desired replica count changed
    SET_CACHE = "set_cache"  # an app's prediction cache was turned on or off
    SET_POLICY = "set_policy"  # an app's selection policy or its parameters changed
    SET_PIPELINE = "set_pipeline"  # an app's pipeline (its stages) was set
    RESET_POLICY = "reset_policy"  # what an app's policy learned was forgotten ("uid"?)
    ADD_KEY = "add_key"  # an API key was created for an app
    REVOKE_KEY = "revoke_key"  # an API key of an app was revoked


@dataclass(frozen=True)
class Change:
    """One feed entry as a follower reads it."""

    id: str  # the stream entry id
    kind: str
    fields: dict[str, str]

    @classmethod
    def from_entry(cls, entry_id: bytes | str, raw: Mapping[bytes | str, bytes | str]) -> Change:
        fields = text_hash(raw)
        return cls(id=text(entry_id), kind=fields.get("kind", ""), fields=fields)


def entry(kind: str, op: str, **fields: str) -> dict[str, str]:
    """The fields of a feed entry: ``kind``, ``op`` and what names the change."""
    return {"kind": kind, "op": op, **fields}
