"""The frontend's live numbers for the dashboard and ``schooner top``, without Prometheus.

    ticks.py      ``TickBuilder``: every few seconds, the counters of ``metrics``, the
                  dispatcher's queues and replicas, the cache and each app's policy
                  weights, as deltas since the previous tick (one JSON document)
    publisher.py  ``TelemetryPublisher``: the background task that appends each tick to
                  the Redis stream ``{p}:telemetry`` (``docs/redis-schema.md``); Redis
                  being down costs a tick, never a prediction

Nothing here runs per request: the hot path only adds to the counters ``metrics``
already keeps. The management frontend reads the stream (``management_frontend.telemetry``).
Imports ``metrics``, ``batching``, ``caching``, ``routing``, ``selection``, ``queries``
and ``cancellation``; the app's lifespan (``query_frontend.app``) starts the task.
"""

from query_frontend.telemetry.publisher import TelemetryPublisher
from query_frontend.telemetry.ticks import TickBuilder, frontend_id

__all__ = ["TelemetryPublisher", "TickBuilder", "frontend_id"]
