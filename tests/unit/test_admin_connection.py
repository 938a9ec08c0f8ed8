"""Connection against a fake management API and a fake container manager.

The fakes stand in for real frontends and processes so that these tests can pin what
Connection does, and in which order: nothing before start()/connect(); nothing
registered for a model the replicas cannot load; register, start, wait, then switch.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from admin import (
    AuthenticationError,
    ConflictError,
    Connection,
    ContainerManager,
    DeployError,
    IncompatibleModelError,
    InvalidRequestError,
    LocalContainerManager,
    ModelStartError,
    NotConnectedError,
    ReplicaState,
    _status,
)
from admin.deployers.python import deploy_python_closure
from admin.deployers.sklearn import deploy_sklearn_model
from model_container.bundle import write_closure_bundle

# The admin token the fake cluster keeps, and the one its API takes.
FAKE_TOKEN = "fake-admin-token"


class FakeSchooner:
    """An in-memory management API plus the query frontend's /status, on one transport.

    ``events`` records every request as "METHOD path[?query]"; a fake container manager
    appends its own calls to the same list, so a test sees the whole order.
    ``/status`` answers in the current shape (per app: "policy", "arms", "model",
    "models", ...), or with ``old_status`` in the shape of an earlier query frontend
    (only "model", for apps with a route, and "cache_enabled").
    """

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.models: dict[str, dict[str, Any]] = {}
        self.versions: dict[tuple[str, str], dict[str, Any]] = {}
        self.connected: list[dict[str, Any]] = []
        self.links: dict[str, list[str]] = {}
        self.bodies: list[Any] = []
        self.apps: dict[str, dict[str, Any]] = {}
        # What /status reports: the query frontend's view, which a test may hold back
        # to see that the client waits for it.
        self.status_view: dict[str, dict[str, Any]] = {}
        self.status_lag = 0  # /status answers that still show the state before a change
        self.old_status = False
        self.token = FAKE_TOKEN  # what every path but /healthz needs as a bearer token
        self.keys: dict[str, set[str]] = {}  # app -> sha256 of its API keys

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def _resolve(self, arm: str) -> str | None:
        """The model:version a link is routed to, as the query frontend resolves it."""
        name, _, version = arm.partition(":")
        model = self.models.get(name)
        if model is None:
            return None
        if version:
            return arm if version in model["versions"] else None
        current = model.get("current_version")
        return f"{name}:{current}" if current else None

    def _status_apps(self) -> dict[str, dict[str, Any]]:
        apps: dict[str, dict[str, Any]] = {}
        for app in sorted(set(self.apps) | set(self.links)):
            record = self.apps.get(app, {})
            arms = {arm: self._resolve(arm) for arm in self.links.get(app, [])}
            first = next(iter(arms.values()), None)
            if self.old_status:
                if first:
                    apps[app] = {"model": first}
                if app in self.apps:
                    apps.setdefault(app, {"model": None})["cache_enabled"] = record["cache_enabled"]
                continue
            apps[app] = {
                "policy": record.get("policy", "single"),
                "arms": arms,
                "model": first,
                "models": sorted({r for r in arms.values() if r}),
                "reason": None,
                "slo_micros": record.get("slo_micros", 100000),
                "cache_enabled": record.get("cache_enabled", True),
                "api_keys": bool(self.keys.get(app)),
            }
        return apps

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        query = dict(request.url.params)
        body: Any = json.loads(request.content) if request.content else None
        target = f"{path}?{request.url.query.decode()}" if request.url.query else path
        self.events.append(f"{request.method} {target}")
        self.bodies.append(body)
        parts = path.strip("/").split("/")
        if path != "/healthz" and request.headers.get("authorization") != f"Bearer {self.token}":
            message = "this endpoint needs the cluster's admin token (SCHOONER_ADMIN_TOKEN)"
            return httpx.Response(401, json={"error": "unauthorized", "message": message})
        match request.method, parts:
            case "POST", ["admin", "apps", app, "keys"] if app in self.apps:
                key = f"sk-{app}-" + "k" * 43
                digest = hashlib.sha256(key.encode()).hexdigest()
                self.keys.setdefault(app, set()).add(digest)
                body = {"app": app, "key": key, "key_sha256": digest, "api_keys": 1}
                return httpx.Response(201, json=body)
            case "DELETE", ["admin", "apps", app, "keys", digest] if digest in self.keys.get(
                app, set()
            ):
                self.keys[app].discard(digest)
                return httpx.Response(200, json={"app": app, "api_keys": len(self.keys[app])})
            case "GET", ["healthz"]:
                return httpx.Response(200, json={"status": "ok"})
            case "GET", ["status"]:
                if self.status_lag > 0:
                    self.status_lag -= 1
                else:
                    self.status_view = self._status_apps()
                return httpx.Response(200, json={"apps": self.status_view})
            case "POST", ["admin", "apps"]:
                self.apps[body["name"]] = {"cache_enabled": True, "policy": "single", **body}
                return httpx.Response(201, json=self.apps[body["name"]])
            case "GET", ["admin", "apps", app]:
                record = {**self.apps[app], "linked_models": self.links.get(app, [])}
                return httpx.Response(200, json=record)
            case "PUT", ["admin", "apps", app, "cache"]:
                self.apps[app]["cache_enabled"] = body["cache_enabled"]
                return httpx.Response(200, json=self.apps[app])
            case "PUT", ["admin", "apps", app, "policy"]:
                self.apps[app].update(policy=body["policy"], policy_params=body["params"])
                return httpx.Response(200, json=self.apps[app])
            case "GET", ["admin", "apps", app, "policy", "state"]:
                state = {"app": app, "uid": query.get("uid"), "updates": 0, "arms": {}}
                return httpx.Response(200, json=state)
            case "DELETE", ["admin", "apps", app, "policy", "state"]:
                return httpx.Response(204)
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
                version = body.get("version")
                arm = f"{body['model_name']}:{version}" if version else body["model_name"]
                links = self.links.setdefault(app, [])
                if arm not in links:
                    links.append(arm)
                return httpx.Response(200, json=sorted(links))
            case "DELETE", ["admin", "apps", app, "links", model]:
                version = query.get("version")
                self.links[app].remove(f"{model}:{version}" if version else model)
                return httpx.Response(204)
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

    def admin_token(self) -> str:
        return self.api.token

    def rotate_admin_token(self) -> str:
        self.api.events.append("cm.rotate_admin_token")
        self.api.token = "rotated-" + self.api.token
        return self.api.token

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
        return fake_digest(f"bundle {name}/{version}")

    def adopt_image(self, name: str, version: str, image: str) -> str:
        self.api.events.append(f"cm.adopt_image {name}:{version} {image}")
        return fake_digest(f"image {image}")

    def set_num_replicas(
        self,
        name: str,
        version: str,
        input_type: str,
        bundle_sha256: str,
        num_replicas: int,
        *,
        memory_limit: int = 0,
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


def fake_digest(what: str) -> str:
    return hashlib.sha256(what.encode()).hexdigest()


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
    lambda c: c.deploy_model("m", "1", "doubles", "prebuilt/m:1"),
    lambda c: c.build_and_deploy_model("m", "1", "doubles", "/no/such/bundle"),
    lambda c: c.register_model("m", "1", "doubles"),
    lambda c: c.set_model_version("m", "1"),
    lambda c: c.set_num_replicas("m", 2),
    lambda c: c.stop_models(["m"]),
    lambda c: c.get_all_apps(),
    lambda c: c.get_app_info("app"),
    lambda c: c.set_app_cache("app", False),
    lambda c: c.set_selection_policy("app", "exp3", eta=0.2),
    lambda c: c.get_policy_state("app"),
    lambda c: c.reset_policy_state("app", uid="u1"),
    lambda c: c.link_model_to_app("app", "m", version="1"),
    lambda c: c.unlink_model_from_app("app", "m", version="1"),
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

        def admin_token(self) -> str:
            return FAKE_TOKEN

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
    assert registered["bundle_sha256"] == fake_digest("bundle m/1")
    assert "artifact" not in registered
    assert registered["runtime"]["python"] == platform.python_version()
    assert api.models["m"]["current_version"] == "1"


def test_replica_that_exits_fails_fast_and_the_version_is_forgotten(tmp_path: Path) -> None:
    conn, api, events = connected(crash=True)
    with pytest.raises(ModelStartError, match="boom: bad model"):
        conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    assert "PUT /admin/models/m/current_version" not in events
    assert events[-2:] == ["cm.stop_models m ['1']", "DELETE /admin/models/m/versions/1"]
    assert api.versions == {}


def test_deploying_an_existing_version_is_refused_before_building(tmp_path: Path) -> None:
    conn, _api, events = connected()
    conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    events.clear()
    with pytest.raises(ConflictError, match="set_model_version"):
        conn.build_and_deploy_model("m", "1", "doubles", write_bundle(tmp_path / "b"))
    assert events == ["GET /admin/models/m"]


def test_set_num_replicas_defaults_to_the_current_version() -> None:
    conn, api, events = connected()
    conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    events.clear()
    conn.set_num_replicas("m", 3)
    assert "cm.set_num_replicas m:1 3" in events
    assert api.versions["m", "1"]["num_replicas"] == 3
    assert events.index("PUT /admin/models/m/versions/1/replicas") < events.index(
        "cm.set_num_replicas m:1 3"
    ), "desired state must be recorded before it is enacted"


def test_link_waits_until_the_query_frontend_routes_to_the_model() -> None:
    conn, _api, events = connected()
    conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
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


def test_register_application_asks_to_expose_model_errors_only_when_told() -> None:
    conn, api, _events = connected()
    conn.register_application("quiet", "doubles", "-1.0", 100000)
    conn.register_application("dev", "doubles", "-1.0", 100000, expose_model_errors=True)
    posted = [b for b in api.bodies if isinstance(b, dict) and "slo_micros" in b]
    assert [b.get("expose_model_errors", False) for b in posted] == [False, True]
    with pytest.raises(InvalidRequestError, match="expose_model_errors must be True or False"):
        conn.register_application("x", "doubles", "-1.0", 100000, expose_model_errors="yes")  # type: ignore[arg-type]


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
    assert api.status_view["app"]["cache_enabled"] is False
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
    conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    events.clear()
    conn.stop_models("m")
    assert events == [
        "GET /admin/models/m",
        "PUT /admin/models/m/versions/1/replicas",
        "cm.stop_models m ['1']",
    ]
    assert api.versions["m", "1"]["num_replicas"] == 0


def test_unregistering_a_version_deletes_it_then_stops_its_replicas() -> None:
    # Deleted first: a deletion the cluster refuses (an app needs the version) must
    # leave its replicas serving and its replica count as it was.
    conn, _api, events = connected()
    conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    conn.deploy_model("m", "2", "doubles", "prebuilt/m:1")
    events.clear()
    conn.unregister_model_version("m", 1)
    assert events == [
        "DELETE /admin/models/m/versions/1",
        "cm.stop_models m ['1']",
    ]
    assert (conn.get_model("m") or {})["versions"] == ["2"]
    assert conn.get_model("absent") is None
    assert conn.get_model("Not_A_Name") is None


def test_listings_follow_clippers_shapes() -> None:
    conn, _api, _events = connected()
    conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    conn.deploy_model("m", "2", "doubles", "prebuilt/m:2")
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
    "deploy_model": lambda c, kw: c.deploy_model("m", "1", "doubles", "prebuilt/m:1", **kw),
    "register_model": lambda c, kw: c.register_model("m", "1", "doubles", **kw),
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
        ({"batch_wait_micros": -1}, "batch_wait_micros must be >= 0, got -1"),
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


# ------------------------------------------------------------------ selection policies


def test_register_application_sends_the_policy_and_its_settings() -> None:
    conn, api, _events = connected()
    conn.register_application(
        "app", "doubles", "-1.0", 100000, policy="exp3", policy_params={"eta": 0.2}
    )
    [body] = [b for b in api.bodies if isinstance(b, dict) and "slo_micros" in b]
    assert (body["policy"], body["policy_params"]) == ("exp3", {"eta": 0.2})


def test_set_selection_policy_sends_the_settings_and_waits_for_the_query_frontend() -> None:
    conn, api, events = connected()
    conn.register_application("app", "doubles", "-1.0", 100000)
    events.clear()
    api.status_lag = 2  # the query frontend has not followed the feed yet
    first = len(api.bodies)
    app = conn.set_selection_policy("app", "split", weights={"m:1": 90, "m:2": 10})
    assert app["policy"] == "split"
    assert api.bodies[first] == {
        "policy": "split",
        "params": {"weights": {"m:1": 90, "m:2": 10}},
        "reset_state": False,
    }
    assert events == ["PUT /admin/apps/app/policy"] + ["GET /status"] * 3
    assert api.status_view["app"]["policy"] == "split"

    conn.set_selection_policy("app", "split", reset_state=True)
    assert api.bodies[-2] == {"policy": "split", "params": {}, "reset_state": True}


def test_set_selection_policy_does_not_wait_on_a_query_frontend_that_does_not_say() -> None:
    conn, api, events = connected()
    api.old_status = True
    conn.register_application("app", "doubles", "-1.0", 100000)
    events.clear()
    conn.set_selection_policy("app", "exp4")
    assert events == ["PUT /admin/apps/app/policy", "GET /status"]


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_reset_state_that_is_not_a_boolean_is_refused_before_any_request(value: object) -> None:
    conn, _api, events = connected()
    with pytest.raises(InvalidRequestError, match="reset_state must be True or False"):
        conn.set_selection_policy("app", "exp3", reset_state=value)  # type: ignore[arg-type]
    assert events == []


def test_policy_state_is_read_and_reset_for_the_app_or_one_user() -> None:
    conn, _api, events = connected()
    assert conn.get_policy_state("app")["uid"] is None
    assert conn.get_policy_state("app", uid=7)["uid"] == "7"
    assert conn.get_policy_state("app", uid="a b")["uid"] == "a b"
    conn.reset_policy_state("app", uid="u1")
    conn.reset_policy_state("app")
    assert events == [
        "GET /admin/apps/app/policy/state",
        "GET /admin/apps/app/policy/state?uid=7",
        "GET /admin/apps/app/policy/state?uid=a+b",
        "DELETE /admin/apps/app/policy/state?uid=u1",
        "DELETE /admin/apps/app/policy/state",
    ]
    with pytest.raises(
        InvalidRequestError, match='"uid" must be a non-empty string \\(or an integer\\)'
    ):
        conn.get_policy_state("app", uid=1.5)  # type: ignore[arg-type]


def test_a_pinned_link_waits_until_the_query_frontend_routes_that_version() -> None:
    conn, api, events = connected()
    conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    conn.deploy_model("m", "2", "doubles", "prebuilt/m:2")
    events.clear()
    api.status_lag = 1
    conn.link_model_to_app("app", "m", version=1)
    assert api.bodies[-3] == {"model_name": "m", "version": "1"}
    # No look-up of the current version: a pinned link routes to its own.
    assert events == ["POST /admin/apps/app/links", "GET /status", "GET /status"]
    assert api.status_view["app"]["arms"] == {"m:1": "m:1"}


def test_unlinking_a_pinned_version_waits_until_the_link_is_gone() -> None:
    conn, api, events = connected()
    conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    conn.link_model_to_app("app", "m")
    conn.link_model_to_app("app", "m", version="1")
    events.clear()
    api.status_lag = 1
    conn.unlink_model_from_app("app", "m", version="1")
    assert events == ["DELETE /admin/apps/app/links/m?version=1", "GET /status", "GET /status"]
    assert api.status_view["app"]["arms"] == {"m": "m:1"}


def test_a_new_current_version_waits_for_the_links_that_follow_it_only() -> None:
    conn, api, events = connected()
    conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    conn.link_model_to_app("app", "m")
    conn.link_model_to_app("app", "m", version="1")
    events.clear()
    api.status_lag = 1
    conn.deploy_model("m", "2", "doubles", "prebuilt/m:2", num_replicas=0)
    # One stale answer, then done: the pinned link m:1 is not waited for.
    assert events[-3:] == ["PUT /admin/models/m/current_version", "GET /status", "GET /status"]
    assert api.status_view["app"]["arms"] == {"m": "m:2", "m:1": "m:1"}
    assert api.status_view["app"]["models"] == ["m:1", "m:2"]


# ------------------------------------------------------------------ reading /status

NEW = {
    "app": {"policy": "exp3", "arms": {"m": "m:2", "m:1": "m:1", "n": None}, "model": "m:2"},
    "other": {"policy": "single", "arms": {"m": "m:1"}, "model": "m:1"},
}
OLD = {"app": {"model": "m:2", "cache_enabled": True}, "other": {"model": "n:1"}}


def test_status_links_are_read_per_arm() -> None:
    assert _status.arm_route(NEW, "app", "m:1") == "m:1"
    assert _status.arm_route(NEW, "app", "m") == "m:2"
    assert _status.arm_route(NEW, "app", "n") == ""
    assert _status.arm_route(NEW, "nope", "m") == ""
    assert not _status.arm_gone(NEW, "app", "m:1")
    assert _status.arm_gone(NEW, "app", "m:3")
    assert _status.arm_gone(NEW, "nope", "m")
    assert _status.follows_current(NEW, "m", "m:2") is False  # "other" still routes m:1
    assert _status.follows_current(NEW, "n", "n:1") is False  # null: not routed yet
    assert _status.follows_current({"app": NEW["app"]}, "m", "m:2") is True
    assert _status.app_policy(NEW, "app") == "exp3"
    assert _status.app_policy(NEW, "nope") == ""


def test_status_of_an_earlier_query_frontend_falls_back_to_the_apps_one_route() -> None:
    assert _status.arm_route(OLD, "app", "m") == "m:2"
    assert _status.arm_gone(OLD, "other", "m")
    assert not _status.arm_gone(OLD, "app", "m:1")
    assert _status.follows_current(OLD, "m", "m:2") is True
    assert _status.follows_current(OLD, "n", "n:2") is False
    assert _status.app_policy(OLD, "app") is None  # not reported: nothing to wait for
    assert _status.cache_state(OLD, "app") is True
    assert _status.cache_state(OLD, "other") is None


def test_deploy_model_builds_a_bundle_directory_and_records_only_its_digest(
    tmp_path: Path,
) -> None:
    conn, api, events = connected()
    conn.deploy_model("m", "1", "doubles", write_bundle(tmp_path / "b"))
    assert "cm.build_model m:1" in events
    assert api.versions["m", "1"]["bundle_sha256"] == fake_digest("bundle m/1")
    assert str(tmp_path) not in json.dumps(api.versions["m", "1"])


def test_deploy_model_takes_an_image_by_the_digest_the_manager_reads_from_it() -> None:
    conn, api, events = connected()
    conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    assert "cm.adopt_image m:1 prebuilt/m:1" in events
    assert api.versions["m", "1"]["bundle_sha256"] == fake_digest("image prebuilt/m:1")
    assert "prebuilt/m:1" not in json.dumps(api.versions["m", "1"])


@pytest.mark.parametrize("missing", ["/no/such/bundle", "./typo", Path("relative/dir")])
def test_deploy_model_refuses_a_bundle_path_that_is_not_there_before_anything(
    missing: str | Path,
) -> None:
    conn, api, events = connected()
    with pytest.raises(InvalidRequestError, match="there is no bundle directory at"):
        conn.deploy_model("m", "1", "doubles", missing)
    assert events == [] and api.versions == {}


def test_register_model_records_no_bundle_and_refuses_an_artifact() -> None:
    conn, api, events = connected()
    with pytest.raises(InvalidRequestError, match="register_model records no artifact"):
        conn.register_model("m", "1", "doubles", "/tmp/evil-bundle")
    assert events == []
    conn.register_model("m", "1", "doubles")
    assert api.versions["m", "1"]["bundle_sha256"] == ""
    with pytest.raises(DeployError, match="no bundle is recorded for it"):
        conn.set_num_replicas("m", 1, version="1")
    assert api.versions["m", "1"].get("num_replicas", 0) == 0
    assert not [e for e in events if e.startswith("cm.set_num_replicas")]


# ------------------------------------------------------------------ the admin token


def test_the_connection_sends_the_clusters_token_and_never_shows_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SCHOONER_ADMIN_TOKEN", raising=False)
    conn, _, _ = connected()
    assert conn.get_all_models() == []
    assert conn.inspect_instance()["apps"] == {}
    assert FAKE_TOKEN not in repr(conn) and FAKE_TOKEN not in repr(conn._api)


def test_a_refused_token_is_an_authentication_error_saying_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHOONER_ADMIN_TOKEN", "stale-token-from-env")
    api = FakeSchooner([])
    conn = Connection(FakeContainerManager(api), transport=api.transport())
    conn.connect()  # /healthz needs no token
    with pytest.raises(AuthenticationError) as info:
        conn.get_all_apps()
    message = str(info.value)
    assert info.value.status_code == 401
    assert "$SCHOONER_ADMIN_TOKEN" in message
    assert "stale-token-from-env" not in message
    # The environment overrides the cluster's token: with the right one, it works.
    monkeypatch.setenv("SCHOONER_ADMIN_TOKEN", FAKE_TOKEN)
    conn.connect()
    assert conn.get_all_models() == []


def test_rotating_the_token_keeps_the_connection_working(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHOONER_ADMIN_TOKEN", raising=False)
    conn, api, events = connected()
    conn.rotate_admin_token()
    assert "cm.rotate_admin_token" in events and api.token != FAKE_TOKEN
    assert conn.get_all_models() == []  # the new token is sent
    old = httpx.Client(transport=api.transport(), headers={"Authorization": f"Bearer {FAKE_TOKEN}"})
    with old:
        assert old.get("http://fake-management:1338/admin/models").status_code == 401


def test_api_keys_are_created_and_revoked_by_their_sha256() -> None:
    conn, api, events = connected()
    api.apps["app"] = {"name": "app"}
    key = conn.create_api_key("app")
    assert key.startswith("sk-app-")
    conn.revoke_api_key("app", key)
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert events[-1] == f"DELETE /admin/apps/app/keys/{digest}"
    assert key not in " ".join(events)  # the key itself never travels again


# ------------------------------------------------------------------ bounds (issue 12)


@pytest.mark.parametrize(
    ("default_output", "message"),
    [
        (10**399, "default_output is an integer of about 400 digits"),
        (float("nan"), "default_output is NaN"),
        ({1: "x"}, "JSON object keys are strings"),
    ],
)
def test_a_default_output_no_answer_could_carry_is_refused_before_any_request(
    default_output: object, message: str
) -> None:
    conn, api, events = connected()
    with pytest.raises(InvalidRequestError, match=message):
        conn.register_application("app", "doubles", default_output, 100_000)
    assert events == []
    assert api.apps == {}


def test_replica_counts_over_the_bound_are_refused_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn, api, events = connected()
    conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    events.clear()
    with pytest.raises(InvalidRequestError, match="num_replicas must be at most 64, got 65"):
        conn.set_num_replicas("m", 65)
    assert events == []
    # The operator raised the management frontend's bound: the client follows it.
    monkeypatch.setenv("SCHOONER_MAX_REPLICAS", "100")
    conn.set_num_replicas("m", 65)
    assert api.versions["m", "1"]["num_replicas"] == 65
    monkeypatch.setenv("SCHOONER_MAX_REPLICAS", "lots")
    with pytest.raises(InvalidRequestError, match="SCHOONER_MAX_REPLICAS='lots' is not"):
        conn.set_num_replicas("m", 1)
