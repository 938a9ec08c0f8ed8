"""The last step of every predict/update request: its id and ``Server-Timing`` on the
reply, its access-log line, the end of its spans."""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any

from query_frontend.http.asgi import Reply
from query_frontend.observability import tracing
from query_frontend.observability.access_log import AccessLog, peer_of
from query_frontend.observability.timing import server_timing, split
from query_frontend.queries import RequestTrace

__all__ = ["GONE", "finish"]

#: What ``finish`` is given for a request whose client left before its answer: nothing
#: is sent; the access log and the span say 499 (nginx's "client closed request").
GONE = Reply(499, b"")


def finish(
    access: AccessLog | None,
    trace: RequestTrace,
    reply: Reply,
    path: Callable[[], str],
    arrival: float,
    now: float,
    receive: Any,
) -> Reply:
    """``reply`` with ``X-Request-Id`` and ``Server-Timing``; the request logged (if
    sampled) and its spans ended (if traced). ``path`` makes the request's path, only
    for a line that is written."""
    timing = split(trace, arrival, now, perf_counter() - trace.started)
    status = reply.status
    if access is not None and access.wants(status, trace):
        access.log(trace, "POST", path(), status, timing, peer_of(receive))
    if trace.span is not None:
        tracing.finish(trace, status, timing, arrival, now)
    ours = ((b"x-request-id", trace.id_bytes), (b"server-timing", server_timing(trace, timing)))
    return Reply(status, reply.body, reply.headers + ours if reply.headers else ours)
