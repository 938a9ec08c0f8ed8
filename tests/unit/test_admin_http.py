"""The management client against a fake management API (``httpx.MockTransport``).

The one place that turns status codes and httpx errors into Schooner exceptions is
``admin._http``; these tests pin that mapping and the requests each verb sends.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from admin import (
    ConflictError,
    InvalidRequestError,
    ManagementAPIError,
    NotFoundError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from admin._http import DEFAULT_TIMEOUT, BatchSettings, ManagementClient

Handler = Callable[[httpx.Request], httpx.Response]


def fake_api_client(handler: Handler) -> ManagementClient:
    return ManagementClient("http://fake-management:1338", transport=httpx.MockTransport(handler))


def answer(status: int, body: object = None, **kwargs: object) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, **kwargs)  # type: ignore[arg-type]
        return httpx.Response(status, json=body)

    return handler


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "invalid", InvalidRequestError),
        (404, "not_found", NotFoundError),
        (409, "conflict", ConflictError),
        (503, "unavailable", ServiceUnavailableError),
        (500, "internal", ManagementAPIError),
    ],
)
def test_fake_api_error_answers_map_to_exceptions(
    status: int, code: str, expected: type[ManagementAPIError]
) -> None:
    message = "app 'x' is bad: use another name"
    client = fake_api_client(answer(status, {"error": code, "message": message}))
    with pytest.raises(expected) as info:
        client.get_app("x")
    assert type(info.value) is expected
    assert info.value.status_code == status
    assert info.value.code == code
    assert message in str(info.value)
    assert "GET /admin/apps/x" in str(info.value)


def test_fake_api_framework_validation_error_is_invalid_request() -> None:
    client = fake_api_client(answer(422, {"detail": [{"msg": "field required"}]}))
    with pytest.raises(InvalidRequestError, match="field required"):
        client.add_app("x", "doubles", None, 1000)


def test_fake_api_non_json_error_body_is_quoted() -> None:
    client = fake_api_client(answer(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(ManagementAPIError, match="Bad Gateway") as info:
        client.list_apps()
    assert info.value.status_code == 502


def test_fake_api_non_json_success_body_is_an_error() -> None:
    client = fake_api_client(answer(200, text="hello"))
    with pytest.raises(ManagementAPIError, match="not JSON"):
        client.list_apps()


def test_fake_api_wrong_shape_is_an_error() -> None:
    client = fake_api_client(answer(200, {"not": "a list"}))
    with pytest.raises(ManagementAPIError, match="expected a JSON list"):
        client.list_models()


def test_fake_transport_connect_error_is_service_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ServiceUnavailableError, match="schooner start") as info:
        fake_api_client(refuse).healthz()
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert info.value.status_code is None


def test_fake_transport_timeout_is_request_timeout() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(RequestTimeoutError, match="within 5 s"):
        fake_api_client(hang).list_replicas()


def test_default_timeout_is_five_seconds() -> None:
    seen: list[dict[str, float | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json=[])

    fake_api_client(handler).list_apps()
    assert DEFAULT_TIMEOUT == 5.0
    assert seen == [{"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}]


def test_fake_api_receives_the_documented_requests() -> None:
    sent: list[tuple[str, str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        sent.append((request.method, request.url.raw_path.decode(), body))
        if request.method == "DELETE":
            return httpx.Response(204)
        if request.url.path.endswith("/links"):
            return httpx.Response(200, json=["m"])
        return httpx.Response(200, json={"ok": True})

    client = fake_api_client(handler)
    client.add_app("app", "doubles", "-1.0", 100000)
    client.add_link("app", "m")
    client.add_model_version(
        "m", "1", "doubles", bundle_sha256="ab" * 32, num_replicas=2, set_current=False
    )
    client.set_current_version("m", "1")
    client.set_num_replicas("m", "1", 3)
    client.delete_app("app")
    assert sent == [
        (
            "POST",
            "/admin/apps",
            {
                "name": "app",
                "input_type": "doubles",
                "default_output": "-1.0",
                "slo_micros": 100000,
            },
        ),
        ("POST", "/admin/apps/app/links", {"model_name": "m"}),
        (
            "POST",
            "/admin/models",
            {
                "name": "m",
                "version": "1",
                "input_type": "doubles",
                "bundle_sha256": "ab" * 32,
                "labels": [],
                "batch_size": -1,
                "batch_mode": "",
                "batch_wait_micros": 0,
                "batch_timeout_micros": 0,
                "num_replicas": 2,
                "memory_limit": 0,
                "runtime": {},
                "pkgs": [],
                "set_current": False,
            },
        ),
        ("PUT", "/admin/models/m/current_version", {"version": "1"}),
        ("PUT", "/admin/models/m/versions/1/replicas", {"num_replicas": 3}),
        ("DELETE", "/admin/apps/app", None),
    ]


def test_app_cache_requests() -> None:
    sent: list[tuple[str, str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        sent.append((request.method, request.url.raw_path.decode(), body))
        return httpx.Response(200, json={"name": "app", "cache_enabled": False})

    client = fake_api_client(handler)
    client.add_app("app", "doubles", "-1.0", 100000, cache_enabled=False)
    assert client.set_app_cache("app", False) == {"name": "app", "cache_enabled": False}
    assert sent[0][2] == {
        "name": "app",
        "input_type": "doubles",
        "default_output": "-1.0",
        "slo_micros": 100000,
        "cache_enabled": False,
    }
    assert sent[1] == ("PUT", "/admin/apps/app/cache", {"cache_enabled": False})


def test_add_model_version_sends_the_batching_settings() -> None:
    bodies: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(201, json={"ok": True})

    batch = BatchSettings(batch_size=8, batch_mode="fixed", batch_wait_micros=1500)
    fake_api_client(handler).add_model_version("m", "1", "doubles", batch=batch)
    [body] = bodies
    assert isinstance(body, dict)
    assert {k: body[k] for k in ("batch_size", "batch_mode", "batch_wait_micros")} == {
        "batch_size": 8,
        "batch_mode": "fixed",
        "batch_wait_micros": 1500,
    }


def test_batch_mode_is_checked_with_the_servers_message() -> None:
    from management_frontend.state import InvalidValue, rules

    with pytest.raises(InvalidValue) as server:
        rules.batch_mode("greedy")
    with pytest.raises(InvalidRequestError) as client:
        BatchSettings(batch_mode="greedy")
    assert str(client.value) == str(server.value)


def test_names_cannot_add_path_segments() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(404, json={"error": "not_found", "message": "no"})

    with pytest.raises(NotFoundError):
        fake_api_client(handler).get_model("../apps")
    assert paths == ["/admin/models/..%2Fapps"]


def test_selection_policy_and_link_requests() -> None:
    sent: list[tuple[str, str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        sent.append((request.method, request.url.raw_path.decode(), body))
        if request.method == "DELETE":
            return httpx.Response(204)
        if request.url.path.endswith("/links"):
            return httpx.Response(200, json=["m", "m:1"])
        return httpx.Response(200, json={"name": "app"})

    client = fake_api_client(handler)
    client.add_app("app", "doubles", "-1.0", 100000, policy="exp3", policy_params={"eta": 0.2})
    assert client.set_policy("app", "split", {"weights": {"m:1": 1}}) == {"name": "app"}
    client.set_policy("app", "exp4", reset_state=True)
    client.get_policy_state("app")
    client.get_policy_state("app", uid="user/1&x")
    client.reset_policy_state("app")
    client.reset_policy_state("app", uid="u1")
    assert client.add_link("app", "m", "1") == ["m", "m:1"]
    client.add_link("app", "m")
    client.delete_link("app", "m", "1")
    client.delete_link("app", "m")
    assert sent == [
        (
            "POST",
            "/admin/apps",
            {
                "name": "app",
                "input_type": "doubles",
                "default_output": "-1.0",
                "slo_micros": 100000,
                "policy": "exp3",
                "policy_params": {"eta": 0.2},
            },
        ),
        (
            "PUT",
            "/admin/apps/app/policy",
            {"policy": "split", "params": {"weights": {"m:1": 1}}, "reset_state": False},
        ),
        ("PUT", "/admin/apps/app/policy", {"policy": "exp4", "params": {}, "reset_state": True}),
        ("GET", "/admin/apps/app/policy/state", None),
        # The user id is a query value: it can never add a path segment or a parameter.
        ("GET", "/admin/apps/app/policy/state?uid=user%2F1%26x", None),
        ("DELETE", "/admin/apps/app/policy/state", None),
        ("DELETE", "/admin/apps/app/policy/state?uid=u1", None),
        ("POST", "/admin/apps/app/links", {"model_name": "m", "version": "1"}),
        ("POST", "/admin/apps/app/links", {"model_name": "m"}),
        ("DELETE", "/admin/apps/app/links/m?version=1", None),
        ("DELETE", "/admin/apps/app/links/m", None),
    ]
