"""The error contract across resources: the status, code and sentence of every 400, 404,
405, 409 and 413 that is not one resource's own rule (those live with their resource).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable

import httpx

from management_frontend.api.errors import MAX_BODY_BYTES

from .helpers import APP, MODEL, error, ok

# ---------------------------------------------------------------------- 400


async def test_bad_bodies_and_paths_are_400(api: httpx.AsyncClient) -> None:
    headers = {"content-type": "application/json"}
    cases: list[tuple[Awaitable[httpx.Response], str]] = [
        (api.post("/admin/apps", content=b'{"name": "a",', headers=headers), "not valid JSON"),
        (api.post("/admin/apps", content=b"[1, 2]", headers=headers), "must be a JSON object"),
        (api.post("/admin/apps", headers=headers), "request body is missing"),
        (api.post("/admin/apps", content=b'{"name": "a"}'), "Content-Type: application/json"),
        (api.get("/admin/apps/Bad_App"), "app name 'Bad_App'"),
        (api.get("/admin/apps/a:links"), "app name 'a:links'"),
        (api.get("/admin/models/m1/versions/1%200"), "model version '1 0'"),
        (api.post("/admin/apps/app1/links", json={"model_name": "No"}), "model name 'No'"),
        (api.post("/admin/apps/app1/links", json={}), "field 'model_name' is required"),
        (
            api.put("/admin/models/m1/versions/1/replicas", json={"num_replicas": -2}),
            "num_replicas must be >= 0, got -2",
        ),
        (
            api.put("/admin/models/m1/versions/1/replicas", json={"num_replicas": "2"}),
            "num_replicas must be an integer",
        ),
        (
            api.put("/admin/models/m1/current_version", json={"version": ""}),
            "model version '' is not valid",
        ),
    ]
    for request, fragment in cases:
        assert fragment in await error(request, 400, "invalid")


async def test_bad_query_parameters_are_400(api: httpx.AsyncClient) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    cases: list[tuple[Awaitable[httpx.Response], str]] = [
        (api.get("/admin/apps/app1/policy/state", params={"uid": ""}), '"uid" must be a non-empty'),
        (
            api.delete("/admin/apps/app1/policy/state", params={"uid": "u" * 257}),
            '"uid" has 257 characters: use at most 256',
        ),
        (
            api.delete("/admin/apps/app1/links/m1", params={"version": "1 0"}),
            "model version '1 0' is not valid",
        ),
        (
            api.post("/admin/apps/app1/links", json={"model_name": "m1", "version": "v:1"}),
            "model version 'v:1' is not valid",
        ),
    ]
    for request, fragment in cases:
        assert fragment in await error(request, 400, "invalid")


async def test_oversize_body_is_413(api: httpx.AsyncClient) -> None:
    big = json.dumps({**APP, "default_output": "x" * 2_000_000}).encode()
    too_large = f"the request body is over {MAX_BODY_BYTES} bytes: send a smaller one"
    headers = {"content-type": "application/json"}
    message = await error(api.post("/admin/apps", content=big, headers=headers), 413, "too_large")
    assert message == too_large

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    # No Content-Length: the body is counted as it streams in.
    chunked = await error(
        api.post("/admin/apps", content=chunks(), headers=headers), 413, "too_large"
    )
    assert chunked == too_large
    assert await ok(api.get("/admin/apps")) == []


# ---------------------------------------------------------------------- 404 / 405


async def test_unknown_things_are_404(api: httpx.AsyncClient) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    await ok(api.post("/admin/models", json=MODEL), 201)
    cases: list[tuple[Awaitable[httpx.Response], str]] = [
        (api.get("/admin/apps/nope"), "app 'nope' does not exist"),
        (api.delete("/admin/apps/nope"), "app 'nope'"),
        (api.get("/admin/apps/nope/links"), "app 'nope'"),
        (api.post("/admin/apps/nope/links", json={"model_name": "m1"}), "app 'nope'"),
        (api.post("/admin/apps/app1/links", json={"model_name": "nope"}), "model 'nope'"),
        (api.delete("/admin/apps/app1/links/m1"), "model 'm1' is not linked to app 'app1'"),
        (api.get("/admin/models/nope"), "model 'nope' does not exist"),
        (api.delete("/admin/models/nope"), "model 'nope'"),
        (api.get("/admin/models/m1/versions/9"), "model 'm1' has no version '9'"),
        (api.get("/admin/models/nope/versions/1"), "model 'nope' does not exist"),
        (api.delete("/admin/models/m1/versions/9"), "no version '9' (its versions: '1')"),
        (api.put("/admin/models/m1/current_version", json={"version": "9"}), "no version '9'"),
        (api.put("/admin/models/nope/current_version", json={"version": "1"}), "'nope'"),
        (api.put("/admin/models/m1/versions/9/replicas", json={"num_replicas": 1}), "'9'"),
        (api.put("/admin/models/nope/versions/1/replicas", json={"num_replicas": 1}), "'nope'"),
        (api.put("/admin/apps/nope/cache", json={"cache_enabled": False}), "app 'nope'"),
        (api.get("/admin/nothing-here"), "no such endpoint: GET /admin/nothing-here"),
    ]
    for request, fragment in cases:
        assert fragment in await error(request, 404, "not_found")


async def test_wrong_method_is_405(api: httpx.AsyncClient) -> None:
    message = await error(api.patch("/admin/apps", json={}), 405, "method_not_allowed")
    assert message == "PATCH is not allowed on /admin/apps: use GET, POST"


async def test_405_allows_every_method_of_the_path(api: httpx.AsyncClient) -> None:
    """``Allow`` names what the path answers, not what one of its routes does."""
    for method, path, allowed in [
        ("OPTIONS", "/admin/apps", "GET, POST"),
        ("PATCH", "/admin/apps/app1", "DELETE, GET"),
        ("POST", "/admin/models/m1/versions/1", "DELETE, GET"),
        ("GET", "/admin/apps/app1/cache", "PUT"),
    ]:
        r = await api.request(method, path)
        assert (r.status_code, r.headers.get("allow")) == (405, allowed), r.text


# ---------------------------------------------------------------------- 409


async def test_conflicts_are_409_and_say_what_to_do(api: httpx.AsyncClient) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    await ok(api.post("/admin/models", json=MODEL), 201)

    message = await error(api.post("/admin/apps", json=APP), 409, "conflict")
    assert "app 'app1' already exists" in message

    message = await error(api.post("/admin/models", json=MODEL), 409, "conflict")
    assert "model 'm1' already has version '1'" in message

    other_type = {**MODEL, "version": "2", "input_type": "strings"}
    message = await error(api.post("/admin/models", json=other_type), 409, "conflict")
    assert "model 'm1' takes input type 'doubles'" in message and "first version" in message

    await ok(api.post("/admin/models", json={**MODEL, "name": "s1", "input_type": "strings"}), 201)
    link_s1 = api.post("/admin/apps/app1/links", json={"model_name": "s1"})
    message = await error(link_s1, 409, "conflict")
    assert "model 's1' takes input type 'strings' but app 'app1' takes 'doubles'" in message

    await ok(api.post("/admin/apps/app1/links", json={"model_name": "m1"}))
    await ok(api.post("/admin/models", json={**MODEL, "name": "m2"}), 201)
    link_m2 = api.post("/admin/apps/app1/links", json={"model_name": "m2"})
    message = await error(link_m2, 409, "conflict")
    assert "'single' policy" in message and "unlink 'm1' first" in message

    message = await error(api.delete("/admin/models/m1"), 409, "conflict")
    assert "model 'm1' is linked to app(s) 'app1'" in message and "unlink" in message

    message = await error(api.delete("/admin/models/m1/versions/1"), 409, "conflict")
    assert "current version of model 'm1'" in message

    # A linked model with no current version still keeps its last version.
    await ok(api.post("/admin/models", json={**MODEL, "version": "2"}), 201)
    await ok(api.delete("/admin/models/m1/versions/1"), 204)
    await ok(api.post("/admin/models", json={**MODEL, "version": "3", "set_current": False}), 201)
    await ok(api.delete("/admin/models/m1/versions/3"), 204)
    # Nothing above changed the links.
    assert await ok(api.get("/admin/apps/app1/links")) == ["m1"]
