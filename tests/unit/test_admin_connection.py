"""Connection against a fake management API and a fake container manager.

The fakes stand in for real frontends and processes so that these tests can pin what
Connection does, and in which order: nothing before start()/connect(); nothing
registered for a model the replicas cannot load; register, start, wait, then switch.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from admin import (
    ConflictError,
    Connection,
    ContainerManager,
    IncompatibleModelError,
    InvalidRequestError,
    LocalContainerManager,
    ModelStartError,
    NotConnectedError,
    ReplicaState,
)
from admin.deployers.python import deploy_python_closure
from admin.deployers.sklearn import deploy_sklearn_model
from model_container.bundle import write_closure_bundle


class FakeSchooner:
    """An in-memory management API plus the query frontend's /status, on one transport.

    ``events`` records every request as "METHOD path"; a fake container manager
    appends its own calls to the same list, so a test sees the whole order.
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.models: dict[str, dict[str, Any]] = {}
        self.versions: dict[tuple[str, str], dict[str, Any]] = {}
        self.connected: list[dict[str, Any]] = []
        self.links: dict[str, list[str]] = {}
        self.bodies: list[Any] = []
        self.apps: dict[str, dict[str, Any]] = {}
        # What /status reports as each app's cache_enabled: the query frontend's view,
        # which a test may hold back to see that the client waits for it.
        self.status_cache: dict[str, bool] = {}
        self.status_lag = 0  # /status answers that still show the old cache setting

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body: Any = json.loads(request.content) if request.content else None
        self.events.append(f"{request.method} {path}")
        self.bodies.append(body)
        parts = path.strip("/").split("/")
        match request.method, parts:
            case "GET", ["healthz"]:
                return httpx.Response(200, json={"status": "ok"})
            case "GET", ["status"]:
                apps: dict[str, dict[str, Any]] = {
                    app: {"model": f"{m[0]}:{self.models[m[0]]['current_version']}"}
                    for app, m in self.links.items()
                    if m and self.models.get(m[0], {}).get("current_version")
                }
                if self.status_lag > 0:
                    self.status_lag -= 1
                else:
                    self.status_cache = {a: r["cache_enabled"] for a, r in self.apps.items()}
                for app, enabled in self.status_cache.items():
                    apps.setdefault(app, {"model": None})["cache_enabled"] = enabled
                return httpx.Response(200, json={"apps": apps})
            case "POST", ["admin", "apps"]:
                self.apps[body["name"]] = {"cache_enabled": True, "policy": "single", **body}
                return httpx.Response(201, json=self.apps[body["name"]])
            case "GET", ["admin", "apps", app]:
                record = {**self.apps[app], "linked_models": self.links.get(app, [])}
                return httpx.Response(200, json=record)
            case "PUT", ["admin", "apps", app, "cache"]:
                self.apps[app]["cache_enabled"] = body["cache_enabled"]
                return httpx.Response(200, json=self.apps[app])
            case "GET", ["admin", "models"]:
                return httpx.Response(200, json=list(self.models.values()))
            case "GET", ["admin", "models", name]:
                if name not in self.models:
                    return httpx.Response(404, json={"error": "not_found", "message": "no"})
                return httpx.Response(200, json=self.models[name])
            case "POST", ["admin", "models"]:
                model = self.models.setdefault(
                    body["name"],
                    {"name": body["name"], "input_type": body["input_type"], "versions": []},
                )
                model["versions"].append(body["version"])
                if body["set_current"]:
                    model["current_version"] = body["version"]
                self.versions[body["name"], body["version"]] = body
                return httpx.Response(201, json=body)
            case "GET", ["admin", "models", name, "versions", version]:
                return httpx.Response(200, json=self.versions[name, version])
            case "DELETE", ["admin", "models", name, "versions", version]:
                self.models[name]["versions"].remove(version)
                del self.versions[name, version]
                return httpx.Response(204)
            case "PUT", ["admin", "models", name, "current_version"]:
                self.models[name]["current_version"] = body["version"]
                return httpx.Response(200, json=self.models[name])
            case "PUT", ["admin", "models", name, "versions", version, "replicas"]:
                self.versions[name, version]["num_replicas"] = body["num_replicas"]
                return httpx.Response(200, json=self.versions[name, version])
            case "GET", ["admin", "replicas"]:
                return httpx.Response(200, json=self.connected)
            case "POST", ["admin", "apps", app, "links"]:
                self.links.setdefault(app, []).append(body["model_name"])
                return httpx.Response(200, json=self.links[app])
        return httpx.Response(500, json={"error": "internal", "message": f"fake: {path}"})


class FakeContainerManager(ContainerManager):
    """Runs nothing: replicas "connect" at once unless told to crash."""

    def __init__(self, api: FakeSchooner, crash: bool = False) -> None:
        super().__init__()
        self.api = api
        self.crash = crash
        self.replicas: dict[tuple[str, str], list[ReplicaState]] = {}

    def start_cluster(self) -> None:
        self.api.events.append("cm.start_cluster")

    def connect(self) -> None:
        self.api.events.append("cm.connect")

    def stop_all(self) -> None:
        self.api.events.append("cm.stop_all")

    def get_query_addr(self) -> str:
        return "fake-query:1337"

    def get_management_addr(self) -> str:
        return "fake-management:1338"

    def get_logs(self, logging_dir: str | os.PathLike[str]) -> list[str]:
        return []

    def build_model(self, name: str, version: str, bundle_dir: str | os.PathLike[str]) -> str:
        self.api.events.append(f"cm.build_model {name}:{version}")
        return f"/artifacts/{name}/{version}"

    def set_num_replicas(
        self, name: str, version: str, input_type: str, artifact: str, num_replicas: int
    ) -> None:
        self.api.events.append(f"cm.set_num_replicas {name}:{version} {num_replicas}")
        states = [
            ReplicaState(f"{name}-{version}-r{i}", not self.crash, 1000 + i, "boom: bad model")
            for i in range(num_replicas)
        ]
        self.replicas[name, version] = states
        if not self.crash:
            self.api.connected = [
                {
                    "replica_id": s.replica_id,
                    "model_name": name,
                    "model_version": version,
                    "pid": s.pid,
                }
                for s in states
            ]

    def stop_models(self, name: str, versions: Sequence[str] | None = None) -> None:
        self.api.events.append(f"cm.stop_models {name} {list(versions or [])}")

    def replica_states(self, name: str, version: str) -> list[ReplicaState]:
        return self.replicas.get((name, version), [])


def connected(crash: bool = False) -> tuple[Connection, FakeSchooner, list[str]]:
    events: list[str] = []
    api = FakeSchooner(events)
    conn = Connection(FakeContainerManager(api, crash), transport=api.transport())
    conn.connect()
    events.clear()
    return conn, api, events


def double(xs: list[float]) -> list[float]:
    return [2 * x for x in xs]


def write_bundle(path: Path, **runtime: str) -> Path:
    write_closure_bundle(path, double, "doubles")
    doc = json.loads((path / "model.json").read_text())
    doc["runtime"].update(runtime)
    (path / "model.json").write_text(json.dumps(doc))
    return path


# ------------------------------------------------------------------ before start/connect

NEEDS_A_CLUSTER: list[Callable[[Connection], object]] = [
    lambda c: c.register_application("app", "doubles", "-1.0", 100000),
    lambda c: c.unregister_application("app"),
    lambda c: c.link_model_to_app("app", "m"),
    lambda c: c.unlink_model_from_app("app", "m"),
    lambda c: c.deploy_model("m", "1", "doubles", "/artifact"),
    lambda c: c.build_and_deploy_model("m", "1", "doubles", "/no/such/bundle"),
    lambda c: c.register_model("m", "1", "doubles"),
    lambda c: c.set_model_version("m", "1"),
    lambda c: c.set_num_replicas("m", 2),
    lambda c: c.stop_models(["m"]),
    lambda c: c.get_all_apps(),
    lambda c: c.get_app_info("app"),
    lambda c: c.set_app_cache("app", False),
    lambda c: c.get_linked_models("app"),
    lambda c: c.get_all_models(),
    lambda c: c.get_model_info("m", "1"),
    lambda c: c.get_all_model_replicas(),
    lambda c: c.get_query_addr(),
    lambda c: c.inspect_instance(),
]


@pytest.mark.parametrize("call", NEEDS_A_CLUSTER)
def test_methods_before_start_raise_not_connected(call: Callable[[Connection], object]) -> None:
    events: list[str] = []
    conn = Connection(FakeContainerManager(FakeSchooner(events)))
    with pytest.raises(NotConnectedError, match=r"start\(\).*connect\(\)"):
        call(conn)
    assert events == [], "a method that refused still did something"


def test_stop_all_and_get_logs_work_without_a_connection(tmp_path: Path) -> None:
    conn = Connection(LocalContainerManager(data_dir=tmp_path / "data"))
    conn.stop_all()
    assert conn.get_logs(tmp_path / "logs") == []
    assert not conn.connected


def test_deploy_python_closure_before_start_raises_not_connected() -> None:
    conn = Connection(FakeContainerManager(FakeSchooner([])))
    with pytest.raises(NotConnectedError):
        deploy_python_closure(conn, "m", "1", "doubles", double)


# ------------------------------------------------------------------ deploying


def test_incompatible_pickle_is_refused_before_anything_is_registered(tmp_path: Path) -> None:
    class FakeRunningLocalManager(LocalContainerManager):
        """The real build_model; a cluster that is taken to be running."""

        def connect(self) -> None:
            pass

    events: list[str] = []
    api = FakeSchooner(events)
    conn = Connection(
        FakeRunningLocalManager(data_dir=tmp_path / "data"), transport=api.transport()
    )
    conn.connect()
    with pytest.raises(IncompatibleModelError) as info:
        conn.build_and_deploy_model(
            "m", "1", "doubles", write_bundle(tmp_path / "b", python="3.10.13")
        )
    assert "3.10.13" in str(info.value)
    assert platform.python_version() in str(info.value)
    assert [e for e in events if not e.startswith("GET")] == [], "something was registered"
    assert api.versions == {}
    assert not (tmp_path / "data" / "models").exists()


def test_deploy_registers_starts_waits_then_switches(tmp_path: Path) -> None:
    conn, api, events = connected()
    conn.build_and_deploy_model("m", "1", "doubles", write_bundle(tmp_path / "b"), num_replicas=2)
    assert events == [
        "GET /admin/models/m",  # refuse early what registration would refuse
        "cm.build_model m:1",
        "POST /admin/models",
        "cm.set_num_replicas m:1 2",
        "GET /admin/replicas",
        "PUT /admin/models/m/current_version",
        "GET /status",
    ]
    registered = api.versions["m", "1"]
    assert registered["set_current"] is False
    assert registered["num_replicas"] == 2
    assert registered["artifact"] == "/artifacts/m/1"
    assert registered["runtime"]["python"] == platform.python_version()
    assert api.models["m"]["current_version"] == "1"


def test_replica_that_exits_fails_fast_and_the_version_is_forgotten(tmp_path: Path) -> None:
    conn, api, events = connected(crash=True)
    with pytest.raises(ModelStartError, match="boom: bad model"):
        conn.deploy_model("m", "1", "doubles", "/artifact")
    assert "PUT /admin/models/m/current_version" not in events
    assert events[-2:] == ["cm.stop_models m ['1']", "DELETE /admin/models/m/versions/1"]
    assert api.versions == {}


def test_deploying_an_existing_version_is_refused_before_building(tmp_path: Path) -> None:
    conn, _api, events = connected()
    conn.deploy_model("m", "1", "doubles", "/artifact")
    events.clear()
    with pytest.raises(ConflictError, match="set_model_version"):
        conn.build_and_deploy_model("m", "1", "doubles", write_bundle(tmp_path / "b"))
    assert events == ["GET /admin/models/m"]


def test_set_num_replicas_defaults_to_the_current_version() -> None:
    conn, api, events = connected()
    conn.deploy_model("m", "1", "doubles", "/artifact")
    events.clear()
    conn.set_num_replicas("m", 3)
    assert "cm.set_num_replicas m:1 3" in events
    assert api.versions["m", "1"]["num_replicas"] == 3
    assert events.index("PUT /admin/models/m/versions/1/replicas") < events.index(
        "cm.set_num_replicas m:1 3"
    ), "desired state must be recorded before it is enacted"


def test_link_waits_until_the_query_frontend_routes_to_the_model() -> None:
    conn, _api, events = connected()
    conn.deploy_model("m", "1", "doubles", "/artifact")
    events.clear()
    conn.link_model_to_app("app", "m")
    assert events[-1] == "GET /status"


def test_register_application_sends_cache_enabled_and_get_app_info_shows_it() -> None:
    conn, api, _events = connected()
    conn.register_application("on", "doubles", "-1.0", 100000)
    conn.register_application("off", "doubles", "-1.0", 100000, cache_enabled=False)
    posted = [b for b in api.bodies if isinstance(b, dict) and "slo_micros" in b]
    assert [b["cache_enabled"] for b in posted] == [True, False]
    assert (conn.get_app_info("on") or {})["cache_enabled"] is True
    assert (conn.get_app_info("off") or {})["cache_enabled"] is False


def test_set_app_cache_records_it_and_waits_for_the_query_frontend() -> None:
    conn, api, events = connected()
    conn.register_application("app", "doubles", "-1.0", 100000)
    events.clear()
    api.status_lag = 2  # the query frontend has not followed the feed yet
    first = len(api.bodies)
    app = conn.set_app_cache("app", False)
    assert app["cache_enabled"] is False
    assert api.bodies[first] == {"cache_enabled": False}
    assert events == ["PUT /admin/apps/app/cache"] + ["GET /status"] * 3
    assert api.status_cache == {"app": False}
    assert (conn.get_app_info("app") or {})["cache_enabled"] is False

    conn.set_app_cache("app", True)
    assert api.apps["app"]["cache_enabled"] is True


@pytest.mark.parametrize("value", ["false", 0, None])
def test_cache_flags_that_are_not_booleans_are_refused_before_any_request(
    value: object,
) -> None:
    conn, _api, events = connected()
    with pytest.raises(InvalidRequestError, match="enabled must be True or False"):
        conn.set_app_cache("app", value)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="cache_enabled must be True or False"):
        conn.register_application("app", "doubles", "-1.0", 100000, cache_enabled=value)  # type: ignore[arg-type]
    assert events == []


def test_stop_models_records_zero_replicas_then_stops_them() -> None:
    conn, api, events = connected()
    conn.deploy_model("m", "1", "doubles", "/artifact")
    events.clear()
    conn.stop_models("m")
    assert events == [
        "GET /admin/models/m",
        "PUT /admin/models/m/versions/1/replicas",
        "cm.stop_models m ['1']",
    ]
    assert api.versions["m", "1"]["num_replicas"] == 0


def test_listings_follow_clippers_shapes() -> None:
    conn, _api, _events = connected()
    conn.deploy_model("m", "1", "doubles", "/artifact")
    conn.deploy_model("m", "2", "doubles", "/artifact2")
    assert conn.get_all_models() == ["m:1", "m:2"]
    verbose = conn.get_all_models(verbose=True)
    assert [(v["version"], v["is_current_version"]) for v in verbose] == [
        ("1", False),
        ("2", True),
    ]
    assert conn.get_all_model_replicas() == ["m-2-r0"]
    assert conn.get_query_addr() == "fake-query:1337"


# ------------------------------------------------------------------ batching settings

BATCHING = {"batch_size": 16, "batch_mode": "latency_model", "batch_wait_micros": 500}


class Halver:
    """Duck-typed estimator: deploy_sklearn_model only needs ``predict``."""

    def predict(self, xs: Any) -> Any:
        return xs[:, 0] / 2


DEPLOYS: dict[str, Callable[[Connection, dict[str, Any]], object]] = {
    "deploy_python_closure": lambda c, kw: deploy_python_closure(
        c, "m", "1", "doubles", double, **kw
    ),
    "deploy_sklearn_model": lambda c, kw: deploy_sklearn_model(
        c, "m", "1", "doubles", Halver(), pkgs_to_install=[], **kw
    ),
    "deploy_model": lambda c, kw: c.deploy_model("m", "1", "doubles", "/artifact", **kw),
    "register_model": lambda c, kw: c.register_model("m", "1", "doubles", "/artifact", **kw),
}


@pytest.mark.parametrize("deploy", DEPLOYS.values(), ids=DEPLOYS.keys())
def test_every_deploy_path_sends_the_batching_settings(
    deploy: Callable[[Connection, dict[str, Any]], object],
) -> None:
    conn, api, _events = connected()
    deploy(conn, BATCHING)
    registered = api.versions["m", "1"]
    assert {k: registered[k] for k in BATCHING} == BATCHING


@pytest.mark.parametrize("deploy", DEPLOYS.values(), ids=DEPLOYS.keys())
def test_every_deploy_path_defaults_to_clippers_batching(
    deploy: Callable[[Connection, dict[str, Any]], object],
) -> None:
    conn, api, _events = connected()
    deploy(conn, {})
    registered = api.versions["m", "1"]
    assert {k: registered[k] for k in BATCHING} == {
        "batch_size": -1,
        "batch_mode": "",
        "batch_wait_micros": 0,
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_mode": "greedy"}, "batch_mode 'greedy' is not known: use one of 'aimd', "),
        ({"batch_wait_micros": -1}, "batch_wait_micros must be an integer"),
        ({"batch_wait_micros": True}, "batch_wait_micros must be an integer"),
        ({"batch_wait_micros": 2_000_000}, "batch_wait_micros must be at most 1000000"),
    ],
)
@pytest.mark.parametrize("deploy", DEPLOYS.values(), ids=DEPLOYS.keys())
def test_bad_batching_settings_are_refused_before_anything_is_built_or_registered(
    deploy: Callable[[Connection, dict[str, Any]], object], settings: dict[str, Any], message: str
) -> None:
    conn, api, events = connected()
    with pytest.raises(InvalidRequestError, match=message):
        deploy(conn, settings)
    assert [e for e in events if not e.startswith("GET")] == []
    assert api.versions == {}
