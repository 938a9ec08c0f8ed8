"""The query frontend's gauges read at scrape time."""

import asyncio

from model_container.protocol import Hello, InputType
from query_frontend.batching.dispatch import Dispatcher
from query_frontend.caching.cache import PredictionCache
from query_frontend.metrics import Metrics


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
