"""What the cluster's supervisor says about each process, for ``/status`` and ``/metrics``.

The local manager's supervisor restarts every process of a cluster it runs (Redis, the
frontends, the replicas) and publishes each one's state in Redis, in the hash
``{p}:supervision`` (process name -> JSON; ``docs/redis-schema.md``). A query frontend
reads it every few seconds in the background, so that ``/status`` and a Prometheus scrape
show a process in a crash loop (``state: "failed"``) without waiting on Redis; when
Redis is down the last copy read stays, marked with its age. Clusters without such a
supervisor (Docker, Kubernetes: the engine and the controllers restart containers) have
no hash, and show nothing here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from query_frontend.cancellation import stop_if_cancelled

logger = logging.getLogger(__name__)

REFRESH_S = 2.0
# A process name or a field longer than this is not from our supervisor: left out.
_MAX_TEXT = 4096


class ProcessStates:
    """The last copy of ``{p}:supervision`` read, refreshed every ``REFRESH_S``."""

    def __init__(self, r: aioredis.Redis, key: str, refresh_s: float = REFRESH_S) -> None:
        self._r = r
        self._key = key
        self._refresh_s = refresh_s
        self.processes: dict[str, dict[str, Any]] = {}
        self.read_at = 0.0  # time.time() of the last successful read; 0: never

    async def run(self) -> None:
        while True:
            try:
                raw = await self._r.hgetall(self._key)
                stop_if_cancelled()
                self.processes = parse(raw)
                self.read_at = time.time()
            except (RedisError, OSError) as exc:
                stop_if_cancelled(exc)
            await asyncio.sleep(self._refresh_s)

    def status(self) -> dict[str, Any]:
        """The ``/status`` section: every process, and how old the copy is."""
        age = None if not self.read_at else round(time.time() - self.read_at, 1)
        failed = sorted(n for n, p in self.processes.items() if p.get("state") == "failed")
        return {"processes": self.processes, "failed": failed, "age_s": age}


def parse(raw: dict[Any, Any]) -> dict[str, dict[str, Any]]:
    """The hash's entries that are JSON objects, by process name; the others left out."""
    out: dict[str, dict[str, Any]] = {}
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        if len(name) > _MAX_TEXT:
            continue
        try:
            doc = json.loads(value)
        except (TypeError, ValueError):
            logger.warning("ignoring a malformed %r entry in the supervision hash", name[:80])
            continue
        if isinstance(doc, dict):
            out[name] = doc
    return dict(sorted(out.items()))


class ProcessCollector(Collector):
    """Restarts and failed processes as Prometheus metrics."""

    def __init__(self, states: ProcessStates) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        labels = ["process", "role"]
        restarts = CounterMetricFamily(
            "schooner_process_restarts",
            "Times the cluster's supervisor restarted a process after it exited",
            labels=labels,
        )
        failed = GaugeMetricFamily(
            "schooner_process_failed",
            "1 when the supervisor gave up on a process (it kept exiting: a crash loop)",
            labels=labels,
        )
        up = GaugeMetricFamily(
            "schooner_process_running", "1 when the process is running", labels=labels
        )
        for name, proc in self._states.processes.items():
            key = [name, str(proc.get("role", ""))[:_MAX_TEXT]]
            count = proc.get("restarts", 0)
            restarts.add_metric(key, count if isinstance(count, int | float) else 0)
            failed.add_metric(key, 1.0 if proc.get("state") == "failed" else 0.0)
            up.add_metric(key, 1.0 if proc.get("state") == "running" else 0.0)
        yield restarts
        yield failed
        yield up
