"""The query frontend's ``/openapi.json``: a valid OpenAPI 3.1 document, served without
a token, that names every error the native handlers can answer with."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import orjson
from openapi_spec_validator import validate
from starlette.applications import Starlette

from query_frontend.http import endpoints
from query_frontend.http.openapi import OPENAPI_JSON, document

HTTP = Path(endpoints.__file__).parent


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises, saying where, if the document breaks the OpenAPI 3.1 schema
    assert orjson.loads(OPENAPI_JSON) == doc


def test_it_describes_the_query_api() -> None:
    paths = document()["paths"]
    for path in (
        "/{app}/predict",
        "/{app}/update",
        "/healthz",
        "/v2",
        "/v2/health/ready",
        "/v2/models/{app}/infer",
        "/v2/models/{app}/versions/{version}/infer",
    ):
        assert path in paths, path
    predict = paths["/{app}/predict"]["post"]
    assert {"200", "400", "401", "403", "404", "413", "503"} <= set(predict["responses"])
    assert {} in predict["security"] and {"apiKey": []} in predict["security"]
    scheme = document()["components"]["securitySchemes"]["apiKey"]
    assert scheme == scheme | {"type": "http", "scheme": "bearer"}


def _documented_errors(doc: dict[str, Any]) -> set[tuple[int, str]]:
    found: set[tuple[int, str]] = set()
    for item in doc["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                for part in schema.get("allOf", []):
                    for code in part.get("properties", {}).get("error", {}).get("enum", []):
                        found.add((int(status), code))
    return found


def test_every_error_the_handlers_send_is_documented() -> None:
    """Each ``error(status, "code", ...)`` in the handlers' source is in the document."""
    sent: set[tuple[int, str]] = set()
    for source in HTTP.glob("*.py"):
        for status, code in re.findall(r'error\(\s*(\d{3}),\s*"([a-z_]+)"', source.read_text()):
            sent.add((int(status), code))
    sent.add((400, "unknown_version"))  # built as a dict: it carries Clipper's "cause"
    assert len(sent) > 10  # the pattern still finds the handlers' errors
    assert sent <= _documented_errors(document())


async def test_served_without_a_token() -> None:
    transport = httpx.ASGITransport(app=Starlette(routes=endpoints.routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://frontend") as client:
        answer = await client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == document()


def test_predict_update_and_infer_document_request_ids_and_server_timing() -> None:
    paths = document()["paths"]
    for path in ("/{app}/predict", "/{app}/update", "/v2/models/{app}/infer"):
        operation = paths[path]["post"]
        names = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
        assert {"X-Request-Id", "traceparent"} <= names, path
        for status, response in operation["responses"].items():
            if status != "405":
                assert {"X-Request-Id", "Server-Timing"} <= set(response["headers"]), (path, status)
    # Shared responses are copied, not changed: the metadata route says no such header.
    assert "X-Request-Id" not in paths["/v2/models/{app}"]["get"]["responses"]["404"].get(
        "headers", {}
    )
