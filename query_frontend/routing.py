"""Routing table of the query frontend, kept current from the management change feed.

The follower reads the newest feed id, then a snapshot of Redis, then blocks on the
feed from that id: no change is missed between snapshot and feed, and each change
takes effect as soon as Redis delivers it. A lost Redis connection is retried with
backoff; routing keeps the last known table meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from management_frontend.schema import (
    App,
    Keys,
    Snapshot,
    follow_changes,
    latest_change_id,
    read_snapshot,
)
from query_frontend.replicas import ModelKey

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Route:
    app: App
    model_key: ModelKey | None  # the linked model's current version
    no_model_reason: str = ""  # why model_key is None


def build_routes(snap: Snapshot) -> dict[str, Route]:
    routes: dict[str, Route] = {}
    for name, app in snap.apps.items():
        links = snap.links.get(name, [])
        if not links:
            routes[name] = Route(app, None, f"no model is linked to app '{name}'")
            continue
        model = snap.models.get(links[0])
        if model is None:
            routes[name] = Route(app, None, f"model '{links[0]}' is not registered")
        elif model.current_version is None:
            routes[name] = Route(app, None, f"model '{model.name}' has no current version")
        else:
            routes[name] = Route(app, (model.name, model.current_version))
    return routes


def tightest_slos(routes: Iterable[Route]) -> dict[ModelKey, float]:
    """The smallest objective (seconds) among the apps routed to each model version."""
    slos: dict[ModelKey, float] = {}
    for route in routes:
        if route.model_key is not None:
            slo = route.app.slo_micros / 1e6
            slos[route.model_key] = min(slo, slos.get(route.model_key, slo))
    return slos


class RoutingTable:
    """The frontend's view of apps, links and versions; replaced whole on each change."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.snapshot = Snapshot()
        self.ready = asyncio.Event()
        self.listeners: list[Callable[[Snapshot], None]] = []

    def apply(self, snap: Snapshot) -> None:
        self.snapshot = snap
        self.routes = build_routes(snap)
        for listener in self.listeners:
            listener(snap)
        self.ready.set()


async def follow(table: RoutingTable, r: aioredis.Redis, keys: Keys) -> None:
    """Keep ``table`` current until cancelled."""
    backoff = 0.1
    while True:
        try:
            last = await latest_change_id(r, keys)
            table.apply(await read_snapshot(r, keys))
            backoff = 0.1
            async for change in follow_changes(r, keys, last):
                logger.debug("change %s: %s %s", change.id, change.kind, change.fields)
                table.apply(await read_snapshot(r, keys))
        except (RedisError, OSError) as exc:
            logger.warning("change feed interrupted (%s); retrying in %.1f s", exc, backoff)
        except Exception:
            # A record this version cannot read must not freeze routing for good.
            logger.exception("cannot apply the configuration in Redis; retrying")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 2.0)
