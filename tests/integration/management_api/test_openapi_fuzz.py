"""Issue 12, point 9: schemathesis, driven by the management frontend's own
``/openapi.json``, finds no 5xx and no answer that breaks the documented schema
(status codes, content types, bodies, headers) against a real ``python -m
management_frontend`` over a real Redis.

Bounded and deterministic: each operation gets a fixed number of derandomized examples,
valid and invalid ones. The admin token goes in ``headers``; schemathesis also checks
that a request without it is refused.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import ports
import pytest
import schemathesis
from credentials import ClusterSecrets, make_cluster_secrets
from hypothesis import HealthCheck, settings
from polling import eventually
from schemathesis import Case
from schemathesis.specs.openapi.checks import (
    ignored_auth,
    missing_required_header,
    positive_data_acceptance,
)

from management_frontend import Config, create_app
from management_frontend.state import rules

EXAMPLES_PER_OPERATION = 25
START_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> ClusterSecrets:
    return make_cluster_secrets(tmp_path_factory.mktemp("secrets"))


@pytest.fixture(scope="module")
def management_url(
    redis_server: str, secrets: ClusterSecrets, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A management frontend process on a free port, over the session's Redis."""
    port = ports.free_port()
    log = tmp_path_factory.mktemp("management") / "management.log"
    args = [sys.executable, "-m", "management_frontend", "--redis-url", redis_server]
    args += ["--port", str(port), "--key-prefix", "fuzz", "--log-level", "WARNING"]
    args += ["--secrets-dir", str(secrets.frontend_dir)]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the management frontend exited: {log.read_text()[-2000:]}")
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200

    try:
        eventually(
            healthy, "the management frontend to answer", START_TIMEOUT_S, (httpx.HTTPError,)
        )
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture
def headers(secrets: ClusterSecrets) -> dict[str, str]:
    """Sent with every request: the admin token."""
    return secrets.admin_headers


@pytest.fixture
def excluded_checks(headers: dict[str, str]) -> list[Any]:
    """Every check runs but two kinds.

    "A schema-valid request is accepted": JSON Schema cannot say every rule (which
    parameters a policy takes, that 5.0 is no replica count), so such a request may
    still be a 400, whose message names the rule. And until requests carry the admin
    token (and the API requires it), that a request without one is refused."""
    unauthenticated = [] if "Authorization" in headers else [ignored_auth, missing_required_header]
    return [positive_data_acceptance, *unauthenticated]


# The document the process serves, made without I/O by the same code, so that pytest can
# collect one test per operation (test_the_served_document_is_this_one checks the two).
DOCUMENT = create_app(Config()).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)
# Credentials come from ``headers``, not from the generator.
schema.config.generation.update(with_security_parameters=False)


def test_the_served_document_is_this_one(management_url: str, headers: dict[str, str]) -> None:
    assert httpx.get(f"{management_url}/openapi.json", headers=headers).json() == DOCUMENT


def test_the_document_declares_credentials_errors_and_name_rules() -> None:
    assert DOCUMENT["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "the cluster's admin token (docs/admin-api.md)",
    }
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)  # validation errors are 400s
            assert "503" in responses, (method, path)
            if path == "/healthz":
                assert "security" not in operation and "401" not in responses
            else:
                assert operation["security"] == [{"bearerAuth": []}], (method, path)
                assert "401" in responses, (method, path)
    app = DOCUMENT["paths"]["/admin/apps/{app}"]["get"]["parameters"][0]["schema"]
    assert (app["pattern"], app["maxLength"]) == (rules.DNS1123_LABEL_RE.pattern, 63)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_management_api_keeps_to_its_openapi(
    case: Case, management_url: str, headers: dict[str, str], excluded_checks: list[Any]
) -> None:
    case.call_and_validate(
        base_url=management_url, headers=headers, excluded_checks=excluded_checks
    )
