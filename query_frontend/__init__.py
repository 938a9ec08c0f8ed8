"""Schooner's data plane: REST predict, batching and dispatch to model replicas over ZeroMQ.

The public API is ``Config`` and ``create_app``. The package, lowest layer first::

    queries.py    the shared vocabulary: Item, ModelKey, Query, Outcome (bytes, Failure,
                  Expired)
    config.py     Config, built once in the entry point and passed in
    cancellation.py  telling a cancellation from the Redis error redis-py may turn it
                  into, for the background loops that retry on Redis errors
    observability/  request ids, the latency split (Server-Timing), the access log and
                  OpenTelemetry spans of each predict/update request
    caching/      the prediction cache: by (model, version, input digest), bounded by
                  bytes, merging identical queries in flight
    batching/     batch-size controllers, deadlines, replicas, the per-model queues and
                  their dispatch (Dispatcher), failing replicas and poison inputs
                  (timeouts, retries, ejection, quarantine), and the Evaluator
    rpc/          the ZeroMQ ROUTER replicas connect to, the liveness rules, the
                  {p}:replicas writer
    routing/      the routing table (apps to model versions) and the Redis snapshot and
                  change-feed reader that keeps it current
    selection/    split, exp3 and exp4: choosing arms, asking them, combining answers,
                  learning from feedback, the learned state and its Redis store
    composition/  pipelines: an app's inputs through several stages, each a set of arms
                  with its own policy, within the app's one deadline; their /update
    metrics.py    Prometheus metrics, read from batching, caching and selection answers
    supervision.py  what the local supervisor reports of each process ({p}:supervision),
                  for /status and /metrics
    telemetry/    the live numbers for the dashboard: every 2 s a tick of the counters
                  above, as deltas, appended to the Redis stream {p}:telemetry
    http/         the ASGI handlers (predict, update), request parsing, health, status
                  and metrics endpoints, the FrontendState the handlers share
    app.py        the composition root: FrontDoor, create_app, the lifespan that builds
                  and wires everything
    __main__.py   ``python -m query_frontend``

Dependencies point one way, down this list. Besides ``management_frontend.state`` (the
state contract) and ``model_container`` (the wire protocol, logging), a part imports
only along these edges::

    observability -> queries
    caching   -> queries
    batching  -> caching, queries
    rpc       -> batching, caching, queries, cancellation
    routing   -> queries, cancellation
    selection -> routing, batching, caching, queries, cancellation
    composition -> selection, routing, batching, queries
    metrics   -> selection, batching, caching, queries
    supervision -> cancellation
    telemetry -> metrics, selection, batching, caching, routing, queries, cancellation
    http      -> any of the above, config
    app.py, __main__.py, __init__.py -> anything

and no module imports one that imports it back, inside a package or across packages
(imports under ``TYPE_CHECKING`` count). ``tests/unit/test_architecture.py``
keeps both rules.
"""

from query_frontend.app import create_app
from query_frontend.config import Config

__all__ = ["Config", "create_app"]
