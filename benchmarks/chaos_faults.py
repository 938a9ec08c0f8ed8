"""The chaos benchmark's scenarios: the faults of issue 13 and the load each is measured by.

A scenario names the streams of calls it drives (``chaos_load.Stream``), the streams it
reports (one table row each), the role whose pids it reports before and after, and a
fault: a function run once, at the fault time, in a thread (the load goes on meanwhile).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from benchmarks.baselines.model import NUM_FEATURES
from benchmarks.chaos_cluster import POISON, Cluster, Features
from benchmarks.chaos_load import Stream

BIG_BODY_BYTES = 10 * 1024 * 1024 - 4096  # legal: the query frontend takes up to 10 MiB

Fault = Callable[[Cluster], dict[str, Any]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    fault: Fault
    streams: tuple[str, ...]  # what load runs (see ``build_streams``)
    measured: tuple[str, ...]  # which streams get a row
    role: str  # whose pids are reported before and after
    query_frontends: int = 1
    bulk_clients: int = 0
    needs: Callable[[Features], str | None] = field(default=lambda f: None)


# ---------------------------------------------------------------------------- faults


def _kill(cluster: Cluster, role: str) -> dict[str, Any]:
    pids = cluster.pids(role)
    if not pids:
        return {"error": f"no running {role} process to kill"}
    try:
        os.kill(pids[0], signal.SIGKILL)
    except OSError as exc:  # it exited between the look and the kill
        return {"error": f"could not kill {role} pid {pids[0]}: {exc}"}
    return {"killed": f"{role} pid {pids[0]}"}


def kill(role: str) -> Fault:
    return lambda cluster: _kill(cluster, role)


def poison(cluster: Cluster) -> dict[str, Any]:
    """Nothing to do here: the poison stream starts sending at the fault time."""
    return {"sent": "2 poison inputs, each again 1 s after its answer"}


def memory_error(cluster: Cluster) -> dict[str, Any]:
    """The first replica raises MemoryError on every call from now on."""
    pids = cluster.pids("replica")
    if not pids:
        return {"error": "no running replica"}
    tmp = cluster.flag_file.with_suffix(".tmp")
    tmp.write_text(f"{pids[0]}\n", encoding="ascii")
    tmp.replace(cluster.flag_file)
    return {"failing": f"replica pid {pids[0]}"}


def big_bodies(cluster: Cluster) -> dict[str, Any]:
    """Nothing to do here: the bulk stream starts sending at the fault time."""
    return {"sent": f"{BIG_BODY_BYTES / 2**20:.1f} MiB bodies to app bulk"}


def rolling_restart(cluster: Cluster) -> dict[str, Any]:
    restart = getattr(cluster.manager, "restart_query_frontends", None) or getattr(
        cluster.conn, "restart_query_frontends", None
    )
    if restart is None:
        return {"error": "no restart_query_frontends() on the manager or the Connection"}
    started = time.monotonic()
    try:
        restart()
    except Exception as exc:
        return {"error": f"restart_query_frontends raised {type(exc).__name__}: {exc}"}
    return {"restart_took_s": round(time.monotonic() - started, 1)}


def _needs_query_frontends(features: Features) -> str | None:
    if features.query_frontends:
        return None
    return "LocalContainerManager takes no query_frontends= (several query frontends)"


def _needs_rolling(features: Features) -> str | None:
    if features.restart_query_frontends:
        return None
    return "neither LocalContainerManager nor Connection has restart_query_frontends()"


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "replica",
            "kill -9 one replica",
            kill("replica"),
            ("predict",),
            ("predict",),
            "replica",
        ),
        Scenario(
            "query",
            "kill -9 query frontend (N=1)",
            kill("query"),
            ("predict",),
            ("predict",),
            "query",
        ),
        Scenario(
            "query-2qf",
            "kill -9 one query frontend (N=2)",
            kill("query"),
            ("predict",),
            ("predict",),
            "query",
            query_frontends=2,
            needs=_needs_query_frontends,
        ),
        Scenario(
            "management",
            "kill -9 management frontend",
            kill("management"),
            ("predict", "admin"),
            ("admin", "predict"),
            "management",
        ),
        Scenario(
            "redis",
            "kill -9 redis-server",
            kill("redis"),
            ("predict", "update", "admin"),
            ("update", "admin", "predict"),
            "redis",
        ),
        Scenario(
            "poison",
            "model sleeps forever on a poison input (2 of them)",
            poison,
            ("predict", "poison"),
            ("predict", "poison"),
            "replica",
        ),
        Scenario(
            "memory-error",
            "one replica raises MemoryError on every call",
            memory_error,
            ("predict",),
            ("predict",),
            "replica",
        ),
        Scenario(
            "big-bodies-1",
            "1 client sends 10 MiB bodies to app bulk; load on app sklearn",
            big_bodies,
            ("predict", "bulk"),
            ("predict", "bulk"),
            "query",
            bulk_clients=1,
        ),
        Scenario(
            "big-bodies-2",
            "2 clients send 10 MiB bodies to app bulk; load on app sklearn",
            big_bodies,
            ("predict", "bulk"),
            ("predict", "bulk"),
            "query",
            bulk_clients=2,
        ),
        Scenario(
            "rolling",
            "rolling restart of the query frontends (N=2 if supported)",
            rolling_restart,
            ("predict",),
            ("predict",),
            "query",
            query_frontends=2,
            needs=_needs_rolling,
        ),
    )
}


# ---------------------------------------------------------------------------- load


def _random_row() -> list[float]:
    return [random.gauss(0.0, 1.0) for _ in range(NUM_FEATURES)]


def _features_body(first: float | None = None, second: float = 0.0) -> bytes:
    """A fresh random input, or with ``first`` the fixed input (first, second, 0, ...)."""
    row = _random_row() if first is None else [first, second] + [0.0] * (NUM_FEATURES - 2)
    return orjson.dumps({"input": row})


def big_body() -> bytes:
    """A legal body just under the query frontend's 10 MiB limit: one long row of
    17-significant-digit doubles (the noop model behind app bulk takes any length)."""
    number = b"0.12345678901234567"
    count = (BIG_BODY_BYTES - len(b'{"input":[]}')) // (len(number) + 1)
    return b'{"input":[' + b",".join([number] * count) + b"]}"


JSON = {"Content-Type": "application/json"}


def build_streams(
    scenario: Scenario, cluster: Cluster, concurrency: int, fault_at: float
) -> list[Stream]:
    q = cluster.query_url
    streams: dict[str, Stream] = {}

    async def predict(c: httpx.AsyncClient, i: int) -> httpx.Response:
        return await c.post(f"{q}/sklearn/predict", content=_features_body(), headers=JSON)

    streams["predict"] = Stream("predict", concurrency, predict)

    async def update(c: httpx.AsyncClient, i: int) -> httpx.Response:
        body = orjson.dumps({"input": _random_row(), "label": 1})
        return await c.post(f"{q}/feedback/update", content=body, headers=JSON)

    streams["update"] = Stream("update", 2, update, prediction=False, slo_bound=False)

    admin_url = f"{cluster.management_url}/admin/apps"

    async def admin(c: httpx.AsyncClient, i: int) -> httpx.Response:
        return await c.get(admin_url)

    streams["admin"] = Stream(
        "admin", 2, admin, prediction=False, headers=cluster.admin_headers(), slo_bound=False
    )

    async def poisoned(c: httpx.AsyncClient, i: int) -> httpx.Response:
        # Input i of 2: the same input every time, so that a quarantine can know it again.
        return await c.post(
            f"{q}/sklearn/predict", content=_features_body(POISON, float(i)), headers=JSON
        )

    streams["poison"] = Stream(
        "poison", 2, poisoned, start_at=fault_at, pause=1.0, slo_bound=False, recovers=False
    )

    if scenario.bulk_clients:
        body = big_body()

        async def bulk(c: httpx.AsyncClient, i: int) -> httpx.Response:
            return await c.post(f"{q}/bulk/predict", content=body, headers=JSON)

        streams["bulk"] = Stream(
            "bulk", scenario.bulk_clients, bulk, start_at=fault_at, slo_bound=False, recovers=False
        )
    return [streams[name] for name in scenario.streams]
