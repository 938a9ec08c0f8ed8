"""The query frontend's gauges read at scrape time."""

import asyncio

from prometheus_client import CollectorRegistry, generate_latest

from model_container.protocol import Hello, InputType
from query_frontend.batching.dispatch import Dispatcher
from query_frontend.caching.cache import PredictionCache
from query_frontend.metrics import Metrics, RefusedPeersCollector


def test_a_benched_replica_is_connected_but_not_in_rotation():
    async def scenario() -> tuple[float | None, float | None]:
        loop = asyncio.get_running_loop()
        d = Dispatcher(64, 100)
        d.bind(lambda identity, frames: None)
        metrics = Metrics(d, PredictionCache(0))
        for rid in ("a", "b"):
            d.add_replica(rid.encode(), Hello("m", "1", InputType.DOUBLES, rid), loop.time())
        d.suspend_replica(b"a", "silent for 0.3 s", loop.time())
        labels = {"model": "m", "version": "1"}
        get = metrics.registry.get_sample_value
        return get("schooner_replicas_connected", labels), get(
            "schooner_replicas_in_rotation", labels
        )

    assert asyncio.run(scenario()) == (2.0, 1.0)


def test_refused_peers_are_read_at_scrape_time_by_transport_and_reason():
    counts = {"other_uid": 0, "unknown_peer": 0}
    registry = CollectorRegistry()
    registry.register(RefusedPeersCollector({"unix": lambda: counts}))
    name = "schooner_rpc_refused_peers_total"
    refused = {"transport": "unix", "reason": "other_uid"}
    assert registry.get_sample_value(name, refused) == 0.0
    counts["other_uid"] = 2
    assert registry.get_sample_value(name, refused) == 2.0
    text = generate_latest(registry).decode()
    assert "# TYPE schooner_rpc_refused_peers_total counter" in text
    assert f'{name}{{reason="unknown_peer",transport="unix"}} 0.0' in text


def test_a_frontend_without_the_unix_transport_exports_no_refused_peers():
    registry = CollectorRegistry()
    registry.register(RefusedPeersCollector({"unix": dict}))
    text = generate_latest(registry).decode()
    assert "schooner_rpc_refused_peers_total{" not in text
