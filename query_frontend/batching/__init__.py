"""Queues of queries per model version and their dispatch, in batches, to replicas.

``controllers``  how many queries the next batch of a replica holds (AIMD, latency model,
                 fixed): pure, no clock, no I/O
``deadlines``    when the frontend gives up on a query, early enough for the default
``replicas``     one connected replica: identity, liveness state, batches in flight
``failures``     when a replica is to blame for a failed batch: timeouts, retries once,
                 outlier ejection (pure)
``quarantine``   incidents per input digest; inputs refused for a while (pure)
``dispatch``     ``ModelQueue`` and ``Dispatcher``: bounded queues, event-driven
                 dispatch, retries when a replica leaves rotation or fails a batch
``evaluate``     ``Evaluator``: one model version's answers, from the cache or the queue

Imports ``query_frontend.queries``, ``query_frontend.caching``, ``model_container.
protocol`` (the frames a batch travels in) and ``management_frontend.state`` (a
replica's record, an app's settings); never routing, selection, metrics, rpc or http,
so the hot path below a request is free of them. Imported by ``rpc`` (which feeds the
dispatcher what replicas say), ``selection`` (through the ``Evaluator``), ``metrics``,
``http`` and ``app``.
"""

from query_frontend.batching.dispatch import (
    Dispatcher,
    ModelQueue,
    OverloadedError,
    TooManyInputsError,
)
from query_frontend.batching.evaluate import Evaluator
from query_frontend.batching.quarantine import Quarantine, QuarantinedError
from query_frontend.batching.replicas import Replica

__all__ = [
    "Dispatcher",
    "Evaluator",
    "ModelQueue",
    "OverloadedError",
    "Quarantine",
    "QuarantinedError",
    "Replica",
    "TooManyInputsError",
]
