"""The ``schooner`` command driving a Kubernetes cluster, against a fake API server.

No API server can run here: ``FakeKubeAPIServer`` (tests/fake_kube_apiserver.py) stands in
for the official client's ``AppsV1Api``/``CoreV1Api`` where the real manager loads them
from the kubeconfig, and ``FakeSchooner`` answers the management API and ``/status``.
Everything between -- the command line, the manager it picks and how it attaches by the
cluster's name and namespace -- is the real code; each test pins what the API server is
asked.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fake_kube_apiserver import Call, FakeKubeAPIServer
from test_admin_connection import FAKE_TOKEN, FakeSchooner
from test_k8s_manager import FRONTEND, IRIS_1, REGISTRY, FakeQueryFrontends, PrebuiltImages

from admin import Connection
from admin.cli import _managers, main
from admin.container_managers import kubernetes as kubernetes_module

CLUSTER = ["--manager", "kubernetes", "--cluster", "prod", "--namespace", "ml"]


class ApiClient:
    """What the manager closes when done with the client it loaded."""

    def close(self) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubeAPIServer]:
    server = FakeKubeAPIServer()
    schooner = FakeSchooner([])
    server.on_change = FakeQueryFrontends(schooner)
    loaded: list[tuple[str | None, str | None]] = []

    def load_client(context: str | None, kubeconfig: str | None) -> tuple[Any, Any, Any]:
        loaded.append((context, kubeconfig))
        return ApiClient(), server.apps, server.core

    monkeypatch.setattr(kubernetes_module, "load_client", load_client)
    monkeypatch.setattr(
        _managers, "Connection", functools.partial(Connection, transport=schooner.transport())
    )
    monkeypatch.setenv("SCHOONER_ADMIN_TOKEN", FAKE_TOKEN)
    server.schooner = schooner  # type: ignore[attr-defined]
    server.loaded = loaded  # type: ignore[attr-defined]
    yield server


def kube(*argv: str) -> int:
    return main([*CLUSTER, *argv])


def started(server: FakeKubeAPIServer) -> None:
    assert kube("start", "--registry", REGISTRY, "--frontend-image", FRONTEND) == 0
    server.calls.clear()


def test_start_creates_the_cluster_in_the_namespace_given(
    server: FakeKubeAPIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["start", "--registry", REGISTRY, "--frontend-image", FRONTEND, "--query-frontends", "3"]
    argv += ["--kube-context", "prod-ctx"]
    assert kube(*argv) == 0
    assert server.loaded == [("prod-ctx", None)]  # type: ignore[attr-defined]
    created = {(c.kind, c.name) for c in server.mutations() if c.verb == "create"}
    assert {
        ("Deployment", "schooner-prod-management"),
        ("Deployment", "schooner-prod-query"),
        ("StatefulSet", "schooner-prod-redis"),
    } <= created
    assert server.get("Deployment", "ml", "schooner-prod-query").spec.replicas == 3
    out = capsys.readouterr().out
    assert "http://schooner-prod-query.ml.svc:1337" in out
    assert "schooner --manager kubernetes --cluster prod --namespace ml stop" in out


def test_status_lists_the_pods_and_the_apps_with_no_literal_none(
    server: FakeKubeAPIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    started(server)
    assert kube("register", "pipeline", "--input-type", "doubles") == 0
    capsys.readouterr()
    assert kube("status") == 0
    out = capsys.readouterr().out
    assert "running on cluster 'prod' (kubernetes, namespace ml)" in out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("NAME"))
    assert header.split() == ["NAME", "ROLE", "PHASE", "READY", "RESTARTS", "MODEL"]
    rows = [line.split() for line in lines if line.startswith("schooner-prod-")]
    assert {row[1] for row in rows} == {"redis", "management", "query"}
    assert all(row[2:4] == ["Running", "yes"] for row in rows)
    assert "pipeline" in out and "None" not in out
    assert kube("status", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["running"] and doc["manager"] == "kubernetes"
    assert {c["role"] for c in doc["components"]} == {"redis", "management", "query"}


def test_status_without_a_cluster_exits_1_and_says_how_to_start_one(
    server: FakeKubeAPIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert kube("status") == 1
    assert "kubectl apply -k deploy/k8s" in capsys.readouterr().out
    assert kube("apps") == 1
    assert "no Schooner cluster 'prod' runs in namespace ml" in capsys.readouterr().err


def test_scale_patches_the_versions_deployment(
    server: FakeKubeAPIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    started(server)
    # A version deployed from a prebuilt image (building one needs a Docker engine).
    cm = PrebuiltImages(
        "prod", namespace="ml", registry=REGISTRY, apps_api=server.apps, core_api=server.core
    )
    schooner: FakeSchooner = server.schooner  # type: ignore[attr-defined]
    with Connection(cm, transport=schooner.transport()) as conn:
        conn.connect()
        conn.deploy_model("iris", "1", "doubles", IRIS_1, num_replicas=1)
    server.calls.clear()
    assert kube("scale", "iris", "3") == 0
    assert server.mutations() == [
        Call("patch", "Deployment/scale", "schooner-prod-iris-1", {"spec": {"replicas": 3}})
    ]
    assert kube("models") == 0
    assert "iris" in capsys.readouterr().out


def test_logs_lists_the_pods_and_prints_the_end_of_one(
    server: FakeKubeAPIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    started(server)
    assert kube("logs") == 0
    pods = capsys.readouterr().out.split()
    (query,) = [p for p in pods if p.startswith("schooner-prod-query")][:1]
    server.logs[query] = "started\nserving"
    assert kube("logs", query, "-n", "2") == 0
    assert capsys.readouterr().out == "started\nserving\n"
    assert Call("log", "Pod", query, {"previous": False, "tail_lines": 2}) in server.calls
    assert kube("logs", "no-such-pod") == 1
    assert "known: " in capsys.readouterr().err


def test_stop_then_destroy_delete_this_clusters_objects(
    server: FakeKubeAPIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    started(server)
    assert kube("stop") == 0
    assert server.stored("Deployment") == server.stored("StatefulSet") == []
    assert server.stored("Secret"), "stop keeps the credentials"
    assert kube("destroy", "--yes") == 0
    assert server.stored("Secret") == server.stored("PersistentVolumeClaim") == []
    assert "destroyed Schooner on cluster 'prod' (kubernetes, namespace ml)" in (
        capsys.readouterr().out
    )


def test_restart_query_frontends_rolls_the_query_pods_over(
    server: FakeKubeAPIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    started(server)
    before = {p.metadata.uid for p in server.stored("Pod") if "query" in p.metadata.name}
    assert kube("restart-query-frontends") == 0
    (patch,) = [c for c in server.mutations() if c.verb == "patch"]
    assert (patch.kind, patch.name) == ("Deployment", "schooner-prod-query")
    after = {p.metadata.uid for p in server.stored("Pod") if "query" in p.metadata.name}
    assert after and not after & before
    assert "restarted the query frontend(s)" in capsys.readouterr().out
