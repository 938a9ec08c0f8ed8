"""The dashboard's live numbers on a real local cluster: predictions sent over HTTP show
up in ``GET /admin/overview`` and ``GET /admin/apps/{app}/activity`` within a few
ticks, from the query frontend's own telemetry (``{p}:telemetry``), without Prometheus.

Real redis-server, both frontends and every replica as local processes. Apps: one
answered by a fast model, one whose model is slower than its objective (answered by
its default), one linked to nothing (its default too), and an exp3 bandit over two
models (its weights per arm). Then two query frontends sharing one replica: their
requests add up, and the replica is listed once.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from clusters import started
from credentials import ClusterSecrets, make_cluster_secrets
from polling import eventually
from ports import free_port
from spawning import Spawner

from admin import Connection, LocalContainerManager
from admin.deployers.python import deploy_python_closure
from model_container import write_closure_bundle
from model_container.bundle import bundle_digest
from model_container.protocol import InputType

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

WAIT_S = 60.0  # for a few ticks of a busy machine


@pytest.fixture(scope="module")
def conn(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[Connection]:
    with started(local_manager(tmp_path_factory.mktemp("cluster"))) as c:
        deploy_python_closure(c, "tel-echo", "1", "doubles", lambda xs: [float(sum(x)) for x in xs])
        deploy_python_closure(c, "tel-twice", "1", "doubles", lambda xs: [2.0 * x[0] for x in xs])

        def slow(xs: Any) -> list[float]:
            time.sleep(0.3)
            return [0.0 for _ in xs]

        deploy_python_closure(c, "tel-slow", "1", "doubles", slow)
        c.register_application("tel-fast", "doubles", -1.0, 2_000_000)
        c.link_model_to_app("tel-fast", "tel-echo")
        # 20 ms for a model that takes 300: every query gets the default.
        c.register_application("tel-late", "doubles", -1.0, 20_000, cache_enabled=False)
        c.link_model_to_app("tel-late", "tel-slow")
        c.register_application("tel-orphan", "doubles", -1.0, 100_000)  # linked to nothing
        c.register_application("tel-bandit", "doubles", -1.0, 2_000_000, policy="exp3")
        c.link_model_to_app("tel-bandit", "tel-echo")
        c.link_model_to_app("tel-bandit", "tel-twice")
        yield c


@pytest.fixture(scope="module")
def admin(conn: Connection) -> Iterator[httpx.Client]:
    token = conn.cm.admin_token()
    with httpx.Client(
        base_url=f"http://{conn.get_management_addr()}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def query(conn: Connection) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://{conn.get_query_addr()}", timeout=10) as client:
        yield client


def predict(query: httpx.Client, app: str, n: int) -> list[dict[str, Any]]:
    answers = []
    for i in range(n):
        r = query.post(f"/{app}/predict", json={"input": [float(i), 1.0]})
        assert r.status_code == 200, r.text
        answers.append(r.json())
    return answers


def by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(item for item in items if item["name"] == name)


def test_the_overview_shows_live_traffic_latency_defaults_and_replicas(
    admin: httpx.Client, query: httpx.Client
) -> None:
    assert all(not a["default"] for a in predict(query, "tel-fast", 5))
    assert all(a["default"] for a in predict(query, "tel-late", 2))
    assert all(a["default"] for a in predict(query, "tel-orphan", 2))
    seen: dict[str, Any] = {}

    def live() -> bool:
        predict(query, "tel-fast", 10)  # traffic keeps flowing while we look
        predict(query, "tel-orphan", 1)
        body = admin.get("/admin/overview", params={"window": 60}).json()
        seen.update(body)
        fast = by_name(body["apps"], "tel-fast")["now"]
        orphan = by_name(body["apps"], "tel-orphan")["now"]
        echo = by_name(body["models"], "tel-echo")
        return (
            bool(body["frontends"])
            and fast["rps"] > 0
            and fast["p50_ms"] is not None
            and fast["p99_ms"] is not None
            and fast["default_rate"] == 0
            and (orphan["default_rate"] or 0) > 0
            and echo["now"]["batch_size"] is not None
            and any(r["connected"] and r["in_rotation"] for r in echo["replicas"])
        )

    eventually(live, lambda: f"the overview to show the traffic: {seen}", WAIT_S)
    fast = by_name(seen["apps"], "tel-fast")
    assert fast["linked_models"] == ["tel-echo"] and fast["policy"] == "single"
    assert any(v is not None and v > 0 for v in fast["series"]["rps"])
    echo = by_name(seen["models"], "tel-echo")
    assert echo["current_version"] == "1" and echo["replicas_desired"] == {"1": 1}
    assert [r["version"] for r in echo["replicas"]] == ["1"]
    assert echo["now"]["batch_size"] >= 1
    assert seen["frontends"][0]["uptime_s"] > 0


def test_activity_lists_the_defaults_with_their_reasons(
    admin: httpx.Client, query: httpx.Client
) -> None:
    answered = predict(query, "tel-late", 3)
    assert all(a["default"] for a in answered)
    ids = {a["query_id"] for a in answered}
    found: list[dict[str, Any]] = []

    def listed() -> bool:
        body = admin.get("/admin/apps/tel-late/activity", params={"window": 60}).json()
        found[:] = body["recent_defaults"]
        return ids <= {d["query_id"] for d in found}

    eventually(listed, lambda: f"the defaults {ids} in the activity: {found}", WAIT_S)
    mine = [d for d in found if d["query_id"] in ids]
    reasons = {a["query_id"]: a["default_explanation"] for a in answered}
    assert all(d["reason"] == reasons[d["query_id"]] for d in mine), mine
    assert all(d["reason"] and d["frontend"] for d in mine)
    assert [d["t"] for d in found] == sorted((d["t"] for d in found), reverse=True)


def test_an_exp3_apps_weights_are_a_series_per_arm(
    admin: httpx.Client, query: httpx.Client
) -> None:
    predict(query, "tel-bandit", 4)
    arms: dict[str, list[float | None]] = {}

    def weighted() -> bool:
        body = admin.get("/admin/apps/tel-bandit/activity", params={"window": 60}).json()
        assert body["policy"] == "exp3"
        arms.clear()
        arms.update(body["weights"]["arms"])
        return set(arms) == {"tel-echo:1", "tel-twice:1"} and all(
            any(v is not None for v in series) for series in arms.values()
        )

    eventually(weighted, lambda: f"the bandit's arms in its activity: {arms}", WAIT_S)
    latest = [next(v for v in reversed(s) if v is not None) for s in arms.values()]
    assert sum(latest) == pytest.approx(1.0, abs=1e-3)


def test_the_numbers_need_the_admin_token(conn: Connection) -> None:
    base = f"http://{conn.get_management_addr()}"
    for path in ("/admin/overview", "/admin/apps/tel-fast/activity"):
        r = httpx.get(base + path, timeout=10)
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "unauthorized"


# ---------------------------------------------------------------------- two frontends


def make_adder() -> Callable[[Any], list[float]]:
    """A model made in a function, so that cloudpickle takes it by value (the replica
    cannot import this test module)."""

    def adder(xs: Any) -> list[float]:
        return [float(sum(x)) for x in xs]

    return adder


def test_two_frontends_add_up_and_share_one_replica(redis_url: str, tmp_path: Path) -> None:
    secrets: ClusterSecrets = make_cluster_secrets(tmp_path / "secrets")
    spawner = Spawner(tmp_path)

    def spawn(name: str, directory: Path, *argv: str) -> subprocess.Popen[bytes]:
        return spawner(name, *argv, env={"SCHOONER_SECRETS_DIR": str(directory)})

    try:
        mgmt = f"http://127.0.0.1:{free_port()}"
        spawn("management", secrets.frontend_dir, "-m", "management_frontend",
              "--redis-url", redis_url, "--port", mgmt.rsplit(":", 1)[1])  # fmt: skip
        bases, rpcs = [], []
        for i in range(2):
            port, rpc = free_port(), free_port()
            spawn(f"query-{i}", secrets.frontend_dir, "-m", "query_frontend",
                  "--redis-url", redis_url, "--port", str(port), "--rpc-port", str(rpc),
                  "--frontend-id", f"qf-{i}")  # fmt: skip
            bases.append(f"http://127.0.0.1:{port}")
            rpcs.append(f"tcp://127.0.0.1:{rpc}")
        with httpx.Client(timeout=10, headers=secrets.admin_headers) as http:
            up = (httpx.HTTPError,)
            eventually(lambda: http.get(f"{mgmt}/healthz").status_code == 200, "up", 60, up)
            app = {"name": "adder", "input_type": "doubles", "default_output": None,
                   "slo_micros": 5_000_000}  # fmt: skip
            assert http.post(f"{mgmt}/admin/apps", json=app).status_code == 201
            model = {"name": "summer", "version": "1", "input_type": "doubles"}
            assert http.post(f"{mgmt}/admin/models", json=model).status_code == 201
            link = {"model_name": "summer"}
            assert http.post(f"{mgmt}/admin/apps/adder/links", json=link).status_code == 200
            bundle = tmp_path / "bundle"
            write_closure_bundle(bundle, make_adder(), InputType.DOUBLES, ["numpy"])
            spawn("replica", secrets.replica_dir, "-m", "model_container",
                  "--bundle", str(bundle), "--bundle-sha256", bundle_digest(bundle),
                  "--frontend", ",".join(rpcs), "--name", "summer", "--version", "1",
                  "--replica-id", "summer-0")  # fmt: skip
            sent = 0

            def answers(base: str) -> bool:
                nonlocal sent
                reply = http.post(f"{base}/adder/predict", json={"input": [1.0]})
                sent += 1
                return reply.status_code == 200 and reply.json()["default"] is False

            for base in bases:
                eventually(lambda base=base: answers(base), f"{base} to answer", 60, up)
                for _ in range(20):
                    assert answers(base)
            seen: dict[str, Any] = {}

            def summed() -> bool:
                body = http.get(f"{mgmt}/admin/overview", params={"window": 120}).json()
                seen.update(body)
                series = next(a for a in body["apps"] if a["name"] == "adder")["series"]
                counted = sum(r or 0.0 for r in series["rps"]) * body["interval_s"]
                return len(body["frontends"]) == 2 and abs(counted - sent) < 0.5

            eventually(summed, lambda: f"{sent} requests of two frontends: {seen}", 60)
            assert sorted(f["id"].rsplit("-", 1)[0] for f in seen["frontends"]) == ["qf-0", "qf-1"]
            summer = next(m for m in seen["models"] if m["name"] == "summer")
            assert [r["id"] for r in summer["replicas"]] == ["summer-0"]
            assert summer["replicas"][0]["connected"] and summer["replicas"][0]["in_rotation"]
    finally:
        spawner.stop()
