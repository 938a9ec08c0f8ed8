"""Where a request's time went: queueing, delayed batching's wait, the model, in all.

From timestamps the dispatcher takes anyway (loop seconds, ``Query``): a query joined
its model's queue at ``submitted``, its batch was sent at ``sent`` after delayed
batching held it ``held`` of that wait, and the replica reported ``model_s`` of model
time for the batch. Per query:

    queue  = sent - submitted - batch     (waiting for a replica with room)
    batch  = min(held, sent - submitted)  (delayed batching holding a short batch)
    model  = model_s                      (the replica's RESULT: the model call alone)

and for the request: the largest of each over its queries (the query that waited
longest decides: a request is answered when its last query is), and ``total``, the
request's own span from its arrival to its answer. What ``total`` holds beyond the
others is transfer, (de)serialisation and the frontend's own work. A query retried on
another replica counts from its first queueing to its last send.
"""

from __future__ import annotations

from typing import NamedTuple

from query_frontend.queries import RequestTrace

__all__ = ["Split", "server_timing", "split"]


class Split(NamedTuple):
    """A request's latency split, in seconds."""

    queue: float
    batch: float
    model: float
    total: float


def split(trace: RequestTrace, arrival: float, now: float, total: float | None = None) -> Split:
    """The latency split of ``trace``'s request, which arrived at ``arrival`` (loop time);
    ``total``, its time by a finer clock than the loop's, when the caller has it."""
    if total is None:
        total = now - arrival
    queries = trace.queries
    if len(queries) == 1 and queries[0].sent:  # one input, sent: most requests
        query = queries[0]
        waited = query.sent - query.submitted
        held = query.held if query.held < waited else waited
        return Split(waited - held, held, query.model_s, total)
    queue = batch = model = 0.0
    for query in queries:
        sent = query.sent
        if not sent:  # never sent: it waited in the queue until it was answered
            waited = now - query.submitted if query.submitted else 0.0
            queue = max(queue, waited)
            continue
        waited = sent - query.submitted
        held = min(query.held, waited)
        queue = max(queue, waited - held)
        batch = max(batch, held)
        model = max(model, query.model_s)
    return Split(queue, batch, model, total)


def server_timing(trace: RequestTrace, timing: Split) -> bytes:
    """The ``Server-Timing`` header's value (milliseconds): ``cache;desc="hit"`` when
    the cache answered every input (``"partial"``: some of them)."""
    total = timing.total * 1000
    if not trace.queries:
        if trace.cached:
            return b'cache;desc="hit", total;dur=%.3f' % total
        return b"total;dur=%.3f" % total
    head = b'cache;desc="partial", ' if trace.cached else b""
    return b"%bqueue;dur=%.3f, batch;dur=%.3f, model;dur=%.3f, total;dur=%.3f" % (
        head,
        timing.queue * 1000,
        timing.batch * 1000,
        timing.model * 1000,
        total,
    )
