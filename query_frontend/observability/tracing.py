"""OpenTelemetry spans of predict/update requests (``pip install schooner[otel]``).

Configured from the standard ``OTEL_*`` variables (``model_container.tracing``
says which, and what turns it off); off, the handlers and the dispatcher test
``ENABLED`` or ``trace.span`` and do nothing else. On, each request gets:

    POST /{app}/predict        SERVER span: joins the caller's W3C ``traceparent``;
                               schooner.app, schooner.request_id, http status
      queue                    from joining the model's queue to delayed batching (or send)
      batch wait               delayed batching holding a short batch (when it did)
      rpc                      batch sent -> its answer back (holds the replica's span)
      encode                   the answers in -> the response built
    model (in the replica)     child of the request span, sent in PREDICT ("tp")

The children are made when the request ends, from the timestamps of ``timing`` (loop
time, converted to the Unix epoch): nothing is timed twice. Of a request with several
queries, the children are those of the query that waited longest.

Nothing of OpenTelemetry is imported until ``configure`` finds tracing asked for.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from model_container import tracing as common
from query_frontend.queries import Query, RequestTrace

__all__ = ["ENABLED", "configure", "finish", "shutdown", "start", "traceparent"]

logger = logging.getLogger(__name__)

#: Whether requests are traced: the one test the hot path makes when tracing is off.
ENABLED = False
_tracer: Any = None
_provider: Any = None
_offset_ns = 0  # Unix time minus loop (monotonic) time, in ns


def configure(frontend_id: str, provider: Any = None) -> bool:
    """Trace if the ``OTEL_*`` variables say so (or with ``provider``, for tests)."""
    global ENABLED, _tracer, _provider, _offset_ns  # noqa: PLW0603  (one process-wide tracer)
    if provider is None:
        provider = common.provider_from_env(
            "schooner-query-frontend", {"service.instance.id": frontend_id}
        )
        if provider is None:
            return False
        _provider = provider
    _tracer = provider.get_tracer("schooner.query_frontend")
    _offset_ns = time.time_ns() - time.monotonic_ns()
    ENABLED = True
    logger.info("tracing predict and update requests (OpenTelemetry)")
    return True


def shutdown() -> None:
    global ENABLED, _tracer, _provider  # noqa: PLW0603  (one process-wide tracer)
    ENABLED = False
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def _ns(loop_time: float) -> int:
    return int(loop_time * 1e9) + _offset_ns


def start(trace: RequestTrace, headers: list[tuple[bytes, bytes]], path: str, at: float) -> None:
    """Open the request's SERVER span, joining the caller's ``traceparent``."""
    from opentelemetry import trace as api
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {}
    for name, value in headers:
        if name in (b"traceparent", b"tracestate"):
            carrier[name.decode()] = value.decode("latin-1")
    context = TraceContextTextMapPropagator().extract(carrier) if carrier else None
    trace.span = _tracer.start_span(
        f"POST {path}",
        context=context,
        kind=api.SpanKind.SERVER,
        start_time=_ns(at),
        attributes={
            "http.request.method": "POST",
            "url.path": path,
            "schooner.app": trace.app,
            "schooner.request_id": trace.id,
        },
    )
    trace.traceparent = traceparent(trace)


def traceparent(trace: RequestTrace) -> str:
    """The W3C traceparent of the request's span, for the replica (PREDICT "tp")."""
    context = trace.span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def finish(trace: RequestTrace, status: int, timing: Any, arrival: float, now: float) -> None:
    """The children of the request's span, from its timestamps; then its end."""
    from opentelemetry import trace as api
    from opentelemetry.trace import Status, StatusCode

    span, trace.span = trace.span, None
    parent = api.set_span_in_context(span)
    tracer = _tracer
    query = _slowest(trace.queries)
    if query is not None and query.sent:
        held = min(query.held, query.sent - query.submitted)
        attributes: dict[str, Any] = {"schooner.request_id": trace.id}
        if query.model_s:
            attributes["schooner.model_ms"] = round(query.model_s * 1000, 3)
        _child(tracer, "queue", parent, query.submitted, query.sent - held, attributes)
        if held > 0:
            _child(tracer, "batch wait", parent, query.sent - held, query.sent, attributes)
        answered = trace.answered_at or now
        _child(tracer, "rpc", parent, query.sent, answered, attributes)
        _child(tracer, "encode", parent, answered, now, attributes)
    models = _models(trace)
    if models:
        span.set_attribute("schooner.models", models)
    span.set_attribute("schooner.queries", len(trace.queries) + trace.cached)
    if trace.cached:
        span.set_attribute("schooner.cached", trace.cached)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    span.end(end_time=_ns(now))


def _child(
    tracer: Any, name: str, parent: Any, start: float, end: float, attributes: dict[str, Any]
) -> None:
    child = tracer.start_span(name, context=parent, start_time=_ns(start), attributes=attributes)
    child.end(end_time=_ns(max(start, end)))


def _slowest(queries: list[Query]) -> Query | None:
    best: Query | None = None
    for query in queries:
        if query.sent and (
            best is None or query.sent - query.submitted > best.sent - best.submitted
        ):
            best = query
    return best if best is not None else (queries[0] if queries else None)


def _models(trace: RequestTrace) -> list[str]:
    from query_frontend.observability.access_log import models_of

    return models_of(trace)
