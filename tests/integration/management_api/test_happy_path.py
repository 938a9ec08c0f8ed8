"""One app and one model through every verb of the admin API, as a notebook drives them:
register, link, add and roll back versions, scale, list, unlink and delete.
"""

from __future__ import annotations

import time

import httpx

from .helpers import APP, MODEL, ok


async def test_happy_path(api: httpx.AsyncClient) -> None:
    sent = time.time()  # created_at and registered_at: when the request was served
    app = await ok(api.post("/admin/apps", json={**APP, "default_output": {"label": None}}), 201)
    assert app["name"] == "app1" and app["policy"] == "single"
    assert sent <= app["created_at"] <= time.time()
    assert app["default_output"] == {"label": None}

    sent = time.time()
    v1 = await ok(api.post("/admin/models", json={**MODEL, "labels": ["a"], "pkgs": ["x"]}), 201)
    assert v1["version"] == "1" and v1["labels"] == ["a"]
    assert sent <= v1["registered_at"] <= time.time()
    assert await ok(api.post("/admin/apps/app1/links", json={"model_name": "m1"})) == ["m1"]
    assert await ok(api.get("/admin/apps/app1/links")) == ["m1"]

    v2 = {**MODEL, "version": "2", "set_current": False, "runtime": {"python": "3.11.7"}}
    await ok(api.post("/admin/models", json=v2), 201)
    model = await ok(api.get("/admin/models/m1"))
    assert model["current_version"] == "1" and model["versions"] == ["1", "2"]
    assert [d["version"] for d in model["version_details"]] == ["1", "2"]
    assert model["version_details"][1]["runtime"] == {"python": "3.11.7"}

    model = await ok(api.put("/admin/models/m1/current_version", json={"version": "2"}))
    assert model["current_version"] == "2"
    mv = await ok(api.put("/admin/models/m1/versions/2/replicas", json={"num_replicas": 3}))
    assert mv["num_replicas"] == 3
    assert (await ok(api.get("/admin/models/m1/versions/2")))["num_replicas"] == 3

    apps = await ok(api.get("/admin/apps"))
    assert [(a["name"], a["linked_models"]) for a in apps] == [("app1", ["m1"])]
    got = await ok(api.get("/admin/apps/app1"))
    assert got["linked_models"] == ["m1"] and got["slo_micros"] == 100_000
    models = await ok(api.get("/admin/models"))
    assert models == [
        {"name": "m1", "input_type": "doubles", "current_version": "2", "versions": ["1", "2"]}
    ]

    # Rollback to 1, then the old current (2) may go: the model is still linked.
    await ok(api.put("/admin/models/m1/current_version", json={"version": "1"}))
    assert await ok(api.delete("/admin/models/m1/versions/2"), 204) is None
    assert (await ok(api.get("/admin/models/m1")))["versions"] == ["1"]

    assert await ok(api.delete("/admin/apps/app1/links/m1"), 204) is None
    assert await ok(api.get("/admin/apps/app1/links")) == []
    assert await ok(api.delete("/admin/apps/app1"), 204) is None
    assert await ok(api.get("/admin/apps")) == []
    assert await ok(api.delete("/admin/models/m1"), 204) is None
    assert await ok(api.get("/admin/models")) == []
    assert await ok(api.get("/healthz")) == {"status": "ok"}
