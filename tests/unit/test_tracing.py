"""Tracing: off unless the OTEL_* variables ask for it, the model container importing
without OpenTelemetry, and the query frontend's span tree of one request (in process,
with the SDK's in-memory exporter; the replica's side, across processes, is
tests/integration/test_request_tracing.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from model_container import tracing as common
from query_frontend.observability import tracing
from query_frontend.queries import RequestTrace
from tests.timed_queries import timed_query

sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="pip install 'schooner[otel]'")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_when_the_environment_asks(environ: dict[str, str], on: bool) -> None:
    assert common.configured(environ) is on


def test_the_model_container_imports_and_runs_batches_without_opentelemetry() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # any import of it fails\n"
        "import os\n"
        "os.environ['OTEL_TRACES_EXPORTER'] = 'console'\n"
        "import model_container, model_container.cli\n"
        "from model_container import tracing\n"
        "assert tracing.setup('m', '1', 'r') is False\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = sdk.TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    assert tracing.configure("frontend-1", provider=provider)
    try:
        yield spans
    finally:
        tracing.shutdown()
        provider.shutdown()
    assert not tracing.ENABLED


def test_a_request_s_spans_join_the_caller_and_hang_under_the_server_span(
    exporter: InMemorySpanExporter,
) -> None:
    trace = RequestTrace(b"rq-1")
    trace.app = "sums"
    headers = [(b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01".encode())]
    tracing.start(trace, headers, "/sums/predict", 100.0)
    trace.queries = [timed_query(100.001, 100.004, 0.002, 0.001)]
    trace.answered_at = 100.006
    traceparent = tracing.traceparent(trace)
    tracing.finish(trace, 200, None, 100.0, 100.007)
    assert trace.span is None

    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"POST /sums/predict", "queue", "batch wait", "rpc", "encode"}
    server = spans["POST /sums/predict"]
    assert server.parent is not None and server.parent.span_id == int(CALLER_SPAN, 16)
    assert server.attributes is not None
    assert server.attributes["schooner.app"] == "sums"
    assert server.attributes["schooner.request_id"] == "rq-1"
    assert server.attributes["http.response.status_code"] == 200
    for span in spans.values():
        assert span.context.trace_id == int(CALLER_TRACE, 16)
    for name in ("queue", "batch wait", "rpc", "encode"):
        parent = spans[name].parent
        assert parent is not None and parent.span_id == server.context.span_id, name
    # One after the other, as the timestamps say.
    assert spans["queue"].end_time == spans["batch wait"].start_time
    assert spans["batch wait"].end_time == spans["rpc"].start_time
    assert spans["rpc"].end_time == spans["encode"].start_time
    assert spans["encode"].end_time == server.end_time
    # The replica's model span is made the child of the request's span.
    assert traceparent == f"00-{CALLER_TRACE}-{server.context.span_id:016x}-01"


def test_a_request_without_a_caller_starts_its_own_trace(exporter: InMemorySpanExporter) -> None:
    trace = RequestTrace(b"rq-2")
    tracing.start(trace, [], "/sums/predict", 5.0)
    tracing.finish(trace, 404, None, 5.0, 5.001)
    (server,) = exporter.get_finished_spans()
    assert server.parent is None and server.attributes is not None
    assert server.attributes["http.response.status_code"] == 404


def test_the_service_name_is_ours_unless_the_environment_names_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none,console")
    provider = common.provider_from_env("schooner-replica", {"service.instance.id": "r-1"})
    assert provider.resource.attributes["service.name"] == "schooner-replica"
    assert provider.resource.attributes["service.instance.id"] == "r-1"
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "fraud-scoring")
    provider = common.provider_from_env("schooner-replica", {})
    assert provider.resource.attributes["service.name"] == "fraud-scoring"
    provider.shutdown()
