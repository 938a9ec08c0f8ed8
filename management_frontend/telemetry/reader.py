"""The answers of ``GET /admin/overview`` and ``GET /admin/apps/{app}/activity``.

Reads the window's ticks from ``{p}:telemetry`` (one XRANGE), the apps, models and
versions from the store (so they show before any traffic), the replicas recorded in
``{p}:replicas`` and the local supervisor's ``{p}:supervision`` (restarts, replicas not
connected); ``aggregate`` does the arithmetic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from management_frontend.state.errors import InvalidValue
from management_frontend.state.keys import TELEMETRY_FIELD, TELEMETRY_TICK_S
from management_frontend.state.policy import PolicyParams
from management_frontend.state.records import App, pipeline_json
from management_frontend.storage.store import Store
from management_frontend.telemetry import aggregate, ticks

logger = logging.getLogger(__name__)

# The window a request may ask for, in seconds, and the one it gets by default.
MIN_WINDOW_S = 10
MAX_WINDOW_S = 3600
DEFAULT_WINDOW_S = 300


class Telemetry:
    """Reads for the two routes; ``clock`` is the wall clock (unix seconds)."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def read_ticks(self, since: float) -> list[dict[str, Any]]:
        """The ticks stored since ``since`` (unix s), oldest first; unreadable ones left out."""
        r = self._store.redis
        # Entry ids are Redis's clock in ms: a tick's own dt before it may reach further
        # back, so one more tick's worth is read.
        start = max(0, int((since - 2 * TELEMETRY_TICK_S) * 1000))
        entries = await r.xrange(self._store.keys.telemetry, min=f"{start}-0", max="+")
        out = []
        for _id, fields in entries or ():
            try:
                tick = orjson.loads((fields or {})[TELEMETRY_FIELD])
            except (KeyError, TypeError, orjson.JSONDecodeError):
                tick = None
            if ticks.readable(tick):
                out.append(tick)
            else:
                logger.debug("skipping an unreadable telemetry entry %s", _id)
        return out

    async def _supervised(self) -> dict[str, dict[str, Any]]:
        raw = await self._store.redis.hgetall(self._store.keys.supervision)
        out: dict[str, dict[str, Any]] = {}
        for name, value in raw.items():
            try:
                doc = orjson.loads(value)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                out[str(name)] = doc
        return out

    async def overview(self, window_s: int) -> dict[str, Any]:
        now = self._clock()
        stored = await self.read_ticks(now - window_s)
        window = aggregate.window_for(stored, now, window_s)
        merged = aggregate.merge(stored, window)
        latest = ticks.latest_by_frontend(stored)
        replicas = ticks.replicas(
            ticks.live(latest, now),
            await self._store.list_replicas(),
            await self._supervised(),
        )
        apps = []
        for app, links in await self._store.list_apps():
            apps.append(
                {
                    "name": app.name,
                    "input_type": str(app.input_type),
                    "slo_micros": app.slo_micros,
                    "policy": app.policy,
                    "linked_models": links,
                    "pipeline": pipeline_json(app, links),
                    **aggregate.app_figures(merged, app.name),
                }
            )
        models = []
        listed = await self._store.list_models()
        details = await asyncio.gather(*(self._store.list_versions(m) for m in listed))
        for model, versions in zip(listed, details, strict=True):
            models.append(
                {
                    "name": model.name,
                    "current_version": model.current_version,
                    "versions": model.versions,
                    "replicas_desired": {v.version: v.num_replicas for v in versions},
                    "replicas": replicas.get(model.name, []),
                    **aggregate.model_figures(merged, model.name),
                }
            )
        return {
            "now": round(now, 3),
            "interval_s": window.interval_s,
            "window_s": window_s,
            "frontends": ticks.frontends(latest, now),
            "apps": apps,
            "models": models,
            "cache": aggregate.cache_figures(merged, dict(latest)),
        }

    async def activity(self, name: str, window_s: int) -> dict[str, Any]:
        """One app's policy, weights over time, recent defaults and, for a pipeline, each
        stage's live numbers; ``NotFound`` if unknown."""
        app, links = await self._store.get_app(name)
        now = self._clock()
        stored = await self.read_ticks(now - window_s)
        window = aggregate.window_for(stored, now, window_s)
        pipeline = pipeline_json(app, links)
        # A pipeline's live numbers per stage; an app of one stage has only its own.
        stages = []
        if len(pipeline) > 1:
            merged = aggregate.merge_stages(stored, window, app.name)
            stages = aggregate.stage_figures(merged, len(pipeline))
        return {
            "app": app.name,
            "policy": app.policy,
            "policy_params": _params(app),
            "linked_models": links,
            "pipeline": pipeline,
            "interval_s": window.interval_s,
            "window_s": window_s,
            "weights": aggregate.weight_series(stored, window, app.name),
            "recent_defaults": ticks.recent_defaults(stored, app.name),
            "stages": stages,
        }


def _params(app: App) -> dict[str, Any]:
    """The app's policy settings with defaults filled in (as stored if unreadable)."""
    try:
        return PolicyParams.parse(app.policy, app.policy_params).to_json()
    except InvalidValue:  # written by a newer Schooner, say: show it as it is
        return dict(app.policy_params)
