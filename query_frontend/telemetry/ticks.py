"""One telemetry tick: what this frontend did since its previous tick, as JSON.

The shape is the issue-16 contract's (``docs/redis-schema.md``, ``{p}:telemetry``)::

    {"frontend", "t", "dt", "started",
     "apps":   {app: {"requests", "errors", "defaults", "queries", "latency_buckets",
                      "bounds", "weights", "recent_defaults",
                      "stages": {"1": {"latency_buckets", "defaults", "errors"}, ...}}},
     "models": {"model:version": {"batches", "queries", "queue_depth", "replicas"}},
     "cache":  {"hits", "misses", "bytes"}}

``stages`` is a pipeline app's only (an app of one stage has none, so its entry stays
as small as before): per stage number, from 1, the stages that did something since the
last tick, their time per request as a histogram over the app's ``bounds``, and the
defaults and errors they caused.

Counters are deltas over ``dt`` (the management frontend sums them across frontends and
ticks); queue depth, replicas, weights and cache bytes are values as of ``t``. The
builder reads only what the hot path already keeps (``metrics.Metrics``, the
``Dispatcher``, the cache's counters, the routing table and the learned policy state),
so building a tick costs the event loop one walk over apps and models every
``TELEMETRY_TICK_S``, and requests nothing.

A tick that could not be sent is not lost: its counts stay in the next one (whose
``dt`` then covers both), because the baseline moves only on ``commit``.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from management_frontend.state.keys import arm_name
from management_frontend.state.policy import LEARNING, SPLIT, PolicyState, split_shares
from query_frontend.batching.dispatch import Dispatcher
from query_frontend.batching.replicas import Replica
from query_frontend.caching.cache import PredictionCache
from query_frontend.metrics import DefaultAnswer, Metrics, _StageStats
from query_frontend.queries import ModelKey
from query_frontend.routing.table import Route, RoutingTable
from query_frontend.selection.learned import PolicyStates

# Defaults of one app one tick carries at most (the newest).
MAX_DEFAULTS_PER_TICK = 20


def frontend_id(base: str | None = None) -> str:
    """``hostname-pid-random``: unique even when a restarted container gets the same pid."""
    base = base or f"{socket.gethostname()}-{os.getpid()}"
    return f"{base}-{secrets.token_hex(3)}"


@dataclass
class _Totals:
    """Cumulative counters as of one tick, to subtract from the next."""

    apps: dict[str, tuple[int, int, int, int, list[int]]] = field(default_factory=dict)
    # (app, stage number): defaults, errors, latency counts.
    stages: dict[tuple[str, int], tuple[int, int, list[int]]] = field(default_factory=dict)
    models: dict[ModelKey, tuple[int, int]] = field(default_factory=dict)
    cache: tuple[int, int] = (0, 0)


def replica_state(replica: Replica) -> str:
    """``ok`` in rotation; else why not, in a word: restarting, silent, stuck or benched."""
    if replica.available:
        return "ok"
    if replica.restarting:
        return "restarting"
    for word in ("silent", "stuck"):
        if replica.unavailable.startswith(word):
            return word
    return "benched"


def weights(route: Route, learned: PolicyState | None) -> dict[str, float] | None:
    """The share of queries (split, exp3) or of the combined answer (exp4) each arm has
    now, keyed by the version that answers (``model:version``); None for ``single``."""
    params = route.params
    if params.policy != SPLIT and params.policy not in LEARNING:
        return None
    names = [a.name for a in route.arms]
    if params.policy == SPLIT:
        shares = split_shares(params.weights, names)
    else:
        shares = (learned or PolicyState()).probabilities(params, names)
    return {(a.label or a.name): p for a, p in zip(route.arms, shares, strict=True)}


class TickBuilder:
    """Builds ticks from the frontend's in-memory state; see the module docstring."""

    def __init__(
        self,
        frontend: str,
        metrics: Metrics,
        dispatcher: Dispatcher,
        cache: PredictionCache,
        routing: RoutingTable,
        policies: PolicyStates,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.frontend = frontend
        self._metrics = metrics
        self._dispatcher = dispatcher
        self._cache = cache
        self._routing = routing
        self._policies = policies
        self._clock = clock
        self.started = clock()
        self._sent_at = self.started
        self._sent = _Totals()
        self._current = _Totals()
        self._built_at = self.started
        # Defaults taken from the metrics whose tick has not been sent yet.
        self._unsent: dict[str, list[DefaultAnswer]] = {}

    def build(self) -> dict[str, Any]:
        """The tick for now; counters are relative to the last tick ``commit``-ted."""
        now = self._clock()
        current = _Totals()
        for app, new in self._metrics.recent_defaults.take().items():
            kept = self._unsent.setdefault(app, [])
            kept.extend(new)
            del kept[:-MAX_DEFAULTS_PER_TICK]
        tick: dict[str, Any] = {
            "frontend": self.frontend,
            "t": now,
            "dt": max(0.0, now - self._sent_at),
            "started": self.started,
            "apps": self._apps(current),
            "models": self._models(current),
            "cache": self._cache_counts(current),
        }
        self._current, self._built_at = current, now
        return tick

    def commit(self) -> None:
        """The tick last built was stored: the next one counts from it."""
        self._sent, self._sent_at = self._current, self._built_at
        self._unsent = {}

    # ------------------------------------------------------------------ parts

    def _apps(self, current: _Totals) -> dict[str, Any]:
        out: dict[str, Any] = {}
        before = self._sent.apps
        for app, stats in self._metrics.apps.items():
            if not app:
                continue  # refused before an app was known
            requests = sum(stats.codes.values())
            errors = sum(n for code, n in stats.codes.items() if code >= 400)
            queries = stats.predictions + stats.defaults + stats.errors
            counts = list(stats.latency.counts)
            now = current.apps[app] = (requests, errors, stats.defaults, queries, counts)
            then = before.get(app, (0, 0, 0, 0, [0] * len(counts)))
            stages = self._stages(app, stats.stages, current) if stats.stages else None
            if now[:4] == then[:4] and not stages and app not in self._unsent:
                continue
            entry = out[app] = {
                "requests": requests - then[0],
                "errors": errors - then[1],
                "defaults": stats.defaults - then[2],
                "queries": queries - then[3],
                "latency_buckets": [a - b for a, b in zip(counts, then[4], strict=True)],
                "bounds": list(stats.latency.bounds),
                "weights": None,
                "recent_defaults": [],
            }
            if stages:
                entry["stages"] = stages
        apps = self._policies.apps
        for app, route in self._routing.routes.items():
            shares = weights(route, apps.get((app, route.app.policy_epoch)))
            if shares is not None:
                out.setdefault(app, _idle_app())["weights"] = shares
        for app, answers in self._unsent.items():
            out.setdefault(app, _idle_app())["recent_defaults"] = [
                {"t": a.t, "query_id": a.query_id, "request_id": a.request_id, "reason": a.reason}
                for a in answers
            ]
        return out

    def _stages(
        self, app: str, stages: Mapping[int, _StageStats], current: _Totals
    ) -> dict[str, Any]:
        """A pipeline app's stages that did something since the last tick, by number."""
        out: dict[str, Any] = {}
        before = self._sent.stages
        for number, stats in stages.items():
            counts = list(stats.latency.counts)
            now = current.stages[(app, number)] = (stats.defaults, stats.errors, counts)
            then = before.get((app, number))
            if then is None:
                then = (0, 0, [0] * len(counts))
            elif now[0] == then[0] and now[1] == then[1] and counts == then[2]:
                continue
            out[str(number)] = {
                "latency_buckets": [a - b for a, b in zip(counts, then[2], strict=True)],
                "defaults": stats.defaults - then[0],
                "errors": stats.errors - then[1],
            }
        return out

    def _models(self, current: _Totals) -> dict[str, Any]:
        out: dict[str, Any] = {}
        history = self._dispatcher.history
        before = self._sent.models
        stats = self._metrics.models
        for key, q in self._dispatcher.queues.items():
            sizes = stats.get(key)
            batches, queries = (
                (sum(sizes.batch_size.counts), int(sizes.batch_size.sum)) if sizes else (0, 0)
            )
            current.models[key] = (batches, queries)
            then = before.get(key, (0, 0))
            replicas = []
            for r in q.replicas.values():
                seen = history.get((key, r.replica_id))
                replicas.append(
                    {
                        "id": r.replica_id,
                        "connected": True,
                        "in_rotation": r.available,
                        "state": replica_state(r),
                        "reason": r.unavailable or None,
                        "restarts": seen.restarts if seen is not None else 0,
                    }
                )
            out[arm_name(*key)] = {
                "batches": batches - then[0],
                "queries": queries - then[1],
                "queue_depth": len(q.pending),
                "replicas": replicas,
            }
        return out

    def _cache_counts(self, current: _Totals) -> dict[str, int]:
        stats = self._cache.stats()
        current.cache = (stats.hits, stats.misses)
        hits, misses = self._sent.cache
        return {
            "hits": stats.hits - hits,
            "misses": stats.misses - misses,
            "bytes": stats.bytes_used,
        }


def _idle_app() -> dict[str, Any]:
    """An app's entry in a tick where it served nothing (its weights or defaults only)."""
    return {
        "requests": 0,
        "errors": 0,
        "defaults": 0,
        "queries": 0,
        "latency_buckets": [],
        "bounds": [],
        "weights": None,
        "recent_defaults": [],
    }
