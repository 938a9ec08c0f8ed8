"""A ``Query`` with the timestamps the dispatcher would have given it, for tests of the
latency split (``observability.timing``) and of the spans made from it (``tracing``)."""

from __future__ import annotations

import asyncio

from query_frontend.queries import Query


def timed_query(submitted: float, sent: float, held: float, model_s: float) -> Query:
    loop = asyncio.new_event_loop()
    try:
        query = Query(1, b"x", 10.0, loop.create_future())
    finally:
        loop.close()
    query.submitted, query.sent, query.held, query.model_s = submitted, sent, held, model_s
    return query
