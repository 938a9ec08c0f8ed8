"""OpenTelemetry spans across the query frontend and a replica, both real processes.

The cluster runs with ``OTEL_TRACES_EXPORTER=jsonl`` (``model_container.tracing``'s
exporter for tests: one JSON line per span, in ``SCHOONER_OTEL_JSONL_FILE``), which its
processes inherit. A request with a caller's ``traceparent`` makes one trace: the
frontend's SERVER span under the caller's span, its queue/rpc/encode children, and the
replica's ``model`` span under the request's span, with their attributes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from clusters import started
from polling import eventually

from admin import LocalContainerManager
from admin.deployers.python import deploy_python_closure

pytest.importorskip("opentelemetry.sdk", reason="pip install 'schooner[otel]'")

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def _spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_one_trace_spans_the_frontend_and_the_replica(
    tmp_path_factory: pytest.TempPathFactory,
    local_manager: Callable[..., LocalContainerManager],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_dir = tmp_path_factory.mktemp("traced")
    spans_file = data_dir / "spans.jsonl"
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jsonl")
    monkeypatch.setenv("SCHOONER_OTEL_JSONL_FILE", str(spans_file))
    with started(local_manager(data_dir)) as c:
        c.register_application("traced", "doubles", -1, 5_000_000, cache_enabled=False)
        deploy_python_closure(c, "tracee", "1", "doubles", lambda xs: [float(sum(x)) for x in xs])
        c.link_model_to_app("traced", "tracee")
        url = f"http://{c.get_query_addr()}"

        def answered(headers: dict[str, str]) -> bool:
            r = httpx.post(f"{url}/traced/predict", json={"input": [1.0]}, headers=headers)
            return r.status_code == 200 and r.json()["default"] is False

        eventually(lambda: answered({}), "the model answers", timeout=60)
        headers = {
            "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
            "X-Request-Id": "traced-1",
        }
        assert answered(headers)

        def ours() -> list[dict[str, Any]]:
            return [
                s for s in _spans(spans_file) if s["context"]["trace_id"] == f"0x{CALLER_TRACE}"
            ]

        eventually(lambda: {s["name"] for s in ours()} >= {"model", "encode"}, "the spans")
        spans = ours()
        by_name = {s["name"]: s for s in spans}
        server = by_name["POST /traced/predict"]
        assert server["kind"] == "SpanKind.SERVER"
        assert server["parent_id"] == f"0x{CALLER_SPAN}"
        assert server["attributes"]["schooner.app"] == "traced"
        assert server["attributes"]["schooner.request_id"] == "traced-1"
        assert server["attributes"]["schooner.models"] == ["tracee:1"]
        assert server["attributes"]["http.response.status_code"] == 200
        for child in ("queue", "rpc", "encode"):
            assert by_name[child]["parent_id"] == server["context"]["span_id"], child
        model = by_name["model"]
        assert model["parent_id"] == server["context"]["span_id"]
        assert model["attributes"]["schooner.model"] == "tracee"
        assert model["attributes"]["schooner.version"] == "1"
        assert model["attributes"]["schooner.batch_size"] == 1
        assert model["attributes"]["schooner.request_ids"] == ["traced-1"]
        # Two processes: the frontend's and the replica's.
        services = {s["resource"]["attributes"]["service.name"] for s in spans}
        assert services == {"schooner-query-frontend", "schooner-replica"}
