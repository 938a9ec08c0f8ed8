"""OpenTelemetry for Schooner's processes: set up from the standard ``OTEL_*`` variables,
and the replica's model span.

Off — zero cost but a test of ``msg.traceparents`` per batch — unless all of these hold:
the ``opentelemetry-sdk`` is installed (``pip install schooner[otel]``),
``OTEL_SDK_DISABLED`` is not ``true``, and something says where spans go:
``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``jsonl``: one JSON line per span in
the file ``SCHOONER_OTEL_JSONL_FILE``, for tests; ``none``), or an
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (then OTLP over
HTTP). The SDK itself reads the rest: ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and its argument, the OTLP
exporter's headers and timeouts.

The replica: a frontend that traces sends one W3C ``traceparent`` per input in PREDICT
(``"tp"``); the model's run on the batch is one span, ``model``, the child of the first
input's request span and linked to the others', with the model, version, replica, batch
size and request ids as attributes. This module imports nothing of OpenTelemetry until
``setup`` finds it configured: the model container must import without it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

__all__ = ["model_span", "provider_from_env", "setup", "shutdown", "tracer"]

logger = logging.getLogger(__name__)

_EXPORTERS = ("OTEL_TRACES_EXPORTER",)
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

#: The replica's tracer once ``setup`` found tracing configured, else None.
tracer: Any = None
_provider: Any = None
_attributes: dict[str, Any] = {}


def configured(environ: dict[str, str] | None = None) -> bool:
    """Whether the environment asks for traces (not whether the SDK is installed)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return any(env.get(name, "").strip() for name in _ENDPOINTS)


def provider_from_env(service_name: str, attributes: dict[str, str]) -> Any:
    """A TracerProvider exporting as the ``OTEL_*`` variables say, or None (not
    configured, or the SDK missing: said once in the log)."""
    if not configured():
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        logger.warning(
            "OTEL_* variables ask for traces but opentelemetry-sdk is not installed: "
            "pip install 'schooner[otel]'; no traces"
        )
        return None
    # A service name from OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES wins over ours
    # (Resource.create lets the attributes it is given win over the environment's).
    named = os.environ.get("OTEL_SERVICE_NAME", "").strip() or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create(
        attributes if named else {"service.name": service_name, **attributes}
    )
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    for name in (n.strip() for n in names.split(",")):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "jsonl":
            path = os.environ.get("SCHOONER_OTEL_JSONL_FILE", "")
            if not path:
                logger.warning("OTEL_TRACES_EXPORTER=jsonl needs SCHOONER_OTEL_JSONL_FILE")
                continue
            provider.add_span_processor(SimpleSpanProcessor(_jsonl_exporter(path)))
        elif name and name != "none":
            logger.warning("unknown OTEL_TRACES_EXPORTER %r: ignored", name)
    return provider


def _jsonl_exporter(path: str) -> Any:
    """Appends each span as one JSON line (the SDK's own ``to_json``, on one line)."""
    import json

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class JsonLinesExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            with open(path, "a", encoding="utf-8") as out:
                for span in spans:
                    out.write(json.dumps(json.loads(span.to_json())) + "\n")
            return SpanExportResult.SUCCESS

    return JsonLinesExporter()


def setup(model: str, version: str, replica_id: str) -> bool:
    """The replica's entry point: trace model runs if the environment says so."""
    global tracer, _provider  # noqa: PLW0603  (one process-wide tracer)
    provider = provider_from_env(
        "schooner-replica", {"service.instance.id": replica_id, "schooner.model": model}
    )
    if provider is None:
        return False
    _provider = provider
    tracer = provider.get_tracer("schooner.model_container")
    _attributes.update(
        {"schooner.model": model, "schooner.version": version, "schooner.replica": replica_id}
    )
    logger.info("tracing model runs (OpenTelemetry)")
    return True


def shutdown() -> None:
    """Flush what is buffered (a normal exit)."""
    global tracer, _provider  # noqa: PLW0603  (one process-wide tracer)
    if _provider is not None:
        _provider.shutdown()
    tracer = _provider = None


def model_span(traceparents: tuple[str, ...], request_ids: tuple[str, ...]) -> Any:
    """A started ``model`` span for a batch (end it), or None when not tracing."""
    if tracer is None or not traceparents:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    contexts = [propagator.extract({"traceparent": tp}) for tp in traceparents]
    parent = contexts[0]
    links = []
    seen = {trace.get_current_span(parent).get_span_context().span_id}
    for context in contexts[1:]:
        span_context = trace.get_current_span(context).get_span_context()
        if span_context.is_valid and span_context.span_id not in seen:
            seen.add(span_context.span_id)
            links.append(trace.Link(span_context))
    attributes = {
        **_attributes,
        "schooner.batch_size": len(traceparents),
        "schooner.request_ids": list(request_ids),
    }
    return tracer.start_span(
        "model", context=parent, links=links, attributes=attributes, start_time=time.time_ns()
    )
