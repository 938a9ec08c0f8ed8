"""KubernetesContainerManager against a fake of the API server (none can run here).

The manager talks to ``FakeKubeAPIServer`` through the official client's own model
objects; each test pins the exact requests it makes -- the objects created, the patches,
the deletes -- for start, connect, deploy, scale, rollback and stop. What those objects
contain is pinned in ``test_k8s_specs.py`` and checked against the official schemas in
``test_k8s_manifests.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_kube_apiserver import Call, FakeKubeAPIServer
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1LoadBalancerIngress,
    V1LoadBalancerStatus,
    V1Node,
    V1NodeAddress,
    V1NodeCondition,
    V1NodeStatus,
    V1ObjectMeta,
    V1ServiceStatus,
)
from kubernetes.client.exceptions import ApiException
from test_admin_connection import FAKE_TOKEN, FakeSchooner, write_bundle

from admin import (
    ClusterAlreadyRunningError,
    ClusterNotRunningError,
    Connection,
    ContainerManagerError,
    DeployError,
    InvalidRequestError,
    KubernetesContainerManager,
    ModelStartError,
)
from admin.container_managers import _k8s_api
from admin.container_managers._k8s_specs import DEFAULT_REDIS_IMAGE, KubeSettings, to_json
from admin.deployers.python import deploy_python_closure
from model_container import credentials as cred

REGISTRY = "registry.example.com/team"
FRONTEND = f"{REGISTRY}/schooner/frontend:0123456789ab"
# Bundle digests, and the images the manager derives from (name, version, digest).
DIGEST_1, DIGEST_2 = "a" * 64, "b" * 64
IRIS_1 = f"{REGISTRY}/schooner/model-iris:1-aaaaaaaaaaaa"
IRIS_2 = f"{REGISTRY}/schooner/model-iris:2-bbbbbbbbbbbb"


class PrebuiltImages(KubernetesContainerManager):
    """Takes IRIS_1 and IRIS_2 as prebuilt images labelled with DIGEST_1 and DIGEST_2.

    Reading an image's labels needs a Docker engine, which this suite has none of; the
    label check itself is tested on the image builder (test_docker_images.py).
    """

    def adopt_image(self, name: str, version: str, image: str) -> str:
        return {IRIS_1: DIGEST_1, IRIS_2: DIGEST_2}[image]


def manager(server: FakeKubeAPIServer, **kw: Any) -> KubernetesContainerManager:
    kw.setdefault("frontend_image", FRONTEND)
    kw.setdefault("start_timeout", 5)
    return PrebuiltImages(
        "prod", namespace="ml", registry=REGISTRY, apps_api=server.apps, core_api=server.core, **kw
    )


def settings(**kw: Any) -> KubeSettings:
    return KubeSettings("prod", namespace="ml", **kw)


def writes(server: FakeKubeAPIServer) -> list[tuple[str, str, str]]:
    return [(c.verb, c.kind, c.name) for c in server.mutations()]


@pytest.fixture
def server() -> FakeKubeAPIServer:
    return FakeKubeAPIServer()


@pytest.fixture(autouse=True)
def fake_schooners_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake management API (``FakeSchooner``) takes its own token, not the one the
    manager generates into the fake API server's Secrets: connections send that one."""
    monkeypatch.setenv("SCHOONER_ADMIN_TOKEN", FAKE_TOKEN)


@pytest.fixture
def started(server: FakeKubeAPIServer) -> KubernetesContainerManager:
    cm = manager(server)
    cm.start_cluster()
    server.calls.clear()
    return cm


# --------------------------------------------------------------------------- start


def test_start_creates_redis_then_the_frontends_and_waits_until_they_are_ready(
    server: FakeKubeAPIServer,
) -> None:
    cm = manager(server)
    cm.start_cluster()
    s = settings()
    assert writes(server) == [
        ("create", "Namespace", "ml"),
        ("create", "Secret", "schooner-prod-credentials"),
        ("create", "Secret", "schooner-prod-frontend-secrets"),
        ("create", "Secret", "schooner-prod-replica-secrets"),
        ("create", "Secret", "schooner-prod-redis-config"),
        ("create", "Service", "schooner-prod-redis"),
        ("create", "StatefulSet", "schooner-prod-redis"),
        ("create", "Deployment", "schooner-prod-management"),
        ("create", "Service", "schooner-prod-management"),
        ("create", "Deployment", "schooner-prod-query"),
        ("create", "Service", "schooner-prod-query"),
        ("create", "Service", "schooner-prod-query-rpc"),
    ]
    created = [c.sent for c in server.mutations()]
    assert created[5:] == [
        s.redis_service(),
        s.redis_stateful_set(DEFAULT_REDIS_IMAGE),
        s.management_deployment(FRONTEND),
        s.management_service(),
        s.query_deployment(FRONTEND),
        s.query_service(),
        s.query_rpc_service(),
    ]
    assert created[0] == s.namespace_object()
    # Redis was ready before the frontends that need it were created.
    verbs = [(c.verb, c.kind, c.name) for c in server.calls]
    assert verbs.index(("read", "StatefulSet", "schooner-prod-redis")) < verbs.index(
        ("create", "Deployment", "schooner-prod-management")
    )
    assert len(server.pods_of(server.get("Deployment", "ml", "schooner-prod-query"))) == 2
    # ClusterIP Services: the addresses that answer inside the cluster.
    assert cm.get_query_addr() == "schooner-prod-query.ml.svc:1337"
    assert cm.get_management_addr() == "schooner-prod-management.ml.svc:1338"


def test_start_in_an_existing_namespace_does_not_create_it(server: FakeKubeAPIServer) -> None:
    server.namespaces.add("ml")
    manager(server).start_cluster()
    assert ("create", "Namespace", "ml") not in writes(server)


def test_start_refuses_a_cluster_that_is_already_running(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    with pytest.raises(ClusterAlreadyRunningError, match=r"connect\(\)"):
        manager(server).start_cluster()
    assert server.mutations() == []


def test_with_an_external_redis_no_redis_objects_are_made(server: FakeKubeAPIServer) -> None:
    url = "redis://redis.shared.svc:6379/3"
    manager(server, redis_url=url).start_cluster()
    assert not any("redis" in name for _, _, name in writes(server))
    management = server.get("Deployment", "ml", "schooner-prod-management")
    assert url in management.spec.template.spec.containers[0].args


def test_start_without_a_registry_or_a_frontend_image_says_what_to_pass(
    server: FakeKubeAPIServer,
) -> None:
    cm = KubernetesContainerManager(apps_api=server.apps, core_api=server.core)
    with pytest.raises(ContainerManagerError, match=r"registry=.*frontend_image="):
        cm.start_cluster()
    assert [c for c in writes(server) if c[1] != "Namespace"] == []


def test_a_frontend_that_cannot_pull_its_image_fails_start_and_is_cleaned_up(
    server: FakeKubeAPIServer,
) -> None:
    def image_pull_fails(srv: FakeKubeAPIServer) -> None:
        for pod in srv.stored("Pod"):
            if pod.metadata.labels["schooner.io/role"] == "query":
                pod.status.container_statuses[0].state = V1ContainerState(
                    waiting=V1ContainerStateWaiting(
                        reason="ImagePullBackOff", message="manifest unknown"
                    )
                )
                srv.logs[pod.metadata.name] = ""

    server.on_change = image_pull_fails
    with pytest.raises(ContainerManagerError) as info:
        manager(server).start_cluster()
    message = str(info.value)
    assert "the query frontend did not start" in message
    assert "ImagePullBackOff: manifest unknown" in message
    assert f"can the cluster pull {FRONTEND}?" in message
    # Nothing of the cluster is left but its namespace (and Redis's volume claim).
    for kind in ("Deployment", "StatefulSet", "Service", "ConfigMap", "Pod"):
        assert server.stored(kind) == [], kind
    assert [o.metadata.name for o in server.stored("PersistentVolumeClaim")] == [
        "data-schooner-prod-redis-0"
    ]


def test_a_frontend_never_ready_times_out_with_the_kubectl_line_to_look(
    server: FakeKubeAPIServer,
) -> None:
    def frontends_never_ready(srv: FakeKubeAPIServer) -> None:
        for deployment in srv.stored("Deployment"):
            deployment.status.ready_replicas = 0

    server.on_change = frontends_never_ready
    cm = manager(server, start_timeout=0.2)
    with pytest.raises(ContainerManagerError, match=r"not ready within 0.2 s.*kubectl -n ml"):
        cm.start_cluster()
    assert server.stored("Deployment") == []


def test_node_port_services_are_reached_at_a_node_address(server: FakeKubeAPIServer) -> None:
    server.nodes = [
        V1Node(
            metadata=V1ObjectMeta(name="kind-control-plane"),
            status=V1NodeStatus(
                conditions=[V1NodeCondition(type="Ready", status="True")],
                addresses=[
                    V1NodeAddress(type="Hostname", address="kind-control-plane"),
                    V1NodeAddress(type="InternalIP", address="172.18.0.2"),
                ],
            ),
        )
    ]
    cm = manager(server, service_type="NodePort")
    cm.start_cluster()
    query = server.get("Service", "ml", "schooner-prod-query")
    management = server.get("Service", "ml", "schooner-prod-management")
    assert query.spec.type == management.spec.type == "NodePort"
    assert cm.get_query_addr() == f"172.18.0.2:{query.spec.ports[0].node_port}"
    assert cm.get_management_addr() == f"172.18.0.2:{management.spec.ports[0].node_port}"
    # The headless Services stay headless.
    assert server.get("Service", "ml", "schooner-prod-query-rpc").spec.type is None


def test_load_balancer_services_are_waited_for(server: FakeKubeAPIServer) -> None:
    def provision(srv: FakeKubeAPIServer) -> None:
        for svc in srv.stored("Service"):
            if svc.spec.type == "LoadBalancer" and svc.status is None:
                ip = "203.0.113.7" if "query" in svc.metadata.name else "203.0.113.8"
                ingress = [V1LoadBalancerIngress(ip=ip)]
                svc.status = V1ServiceStatus(load_balancer=V1LoadBalancerStatus(ingress=ingress))

    server.on_change = provision
    cm = manager(server, service_type="LoadBalancer", query_port=80)
    cm.start_cluster()
    assert cm.get_query_addr() == "203.0.113.7:80"
    assert cm.get_management_addr() == "203.0.113.8:1338"


def test_explicit_addresses_win(server: FakeKubeAPIServer) -> None:
    cm = manager(server, management_addr="127.0.0.1:1338", query_addr="127.0.0.1:1337")
    cm.start_cluster()
    assert cm.management_url == "http://127.0.0.1:1338"
    assert cm.query_url == "http://127.0.0.1:1337"


# --------------------------------------------------------------------------- connect


def test_connect_finds_the_running_cluster_by_its_labels(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    other = manager(server, frontend_image=None)
    other.connect()
    assert server.mutations() == []
    assert other.get_query_addr() == started.get_query_addr()
    lists = [c for c in server.calls if c.verb == "list"]
    assert lists[0] == Call("list", "Deployment", "", "schooner.io/cluster=prod")


def test_connect_without_a_cluster_says_how_to_start_one(server: FakeKubeAPIServer) -> None:
    with pytest.raises(ClusterNotRunningError, match=r"kubectl apply -k deploy/k8s"):
        manager(server).connect()


def test_connect_to_a_cluster_whose_query_frontend_is_not_ready(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    server.auto_converge = False
    server.get("Deployment", "ml", "schooner-prod-query").status.ready_replicas = 0
    with pytest.raises(ClusterNotRunningError, match="no ready query frontend pod"):
        manager(server).connect()


# --------------------------------------------------------------------------- models


def test_deploying_a_version_creates_its_deployment_and_nothing_else(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    started.set_num_replicas("iris", "1", "doubles", DIGEST_1, 2)
    s = settings()
    assert [(c.verb, c.kind, c.name, c.sent) for c in server.mutations()] == [
        (
            "create",
            "Deployment",
            "schooner-prod-iris-1",
            s.replica_deployment(
                IRIS_1,
                name="iris",
                version="1",
                input_type="doubles",
                bundle_sha256=DIGEST_1,
                replicas=2,
            ),
        ),
    ]
    server.calls.clear()
    started.set_num_replicas("iris", "2", "doubles", DIGEST_2, 1)
    assert writes(server) == [("create", "Deployment", "schooner-prod-iris-2")]
    assert server.stored("ConfigMap") == []
    # Each pod runs the model container itself, which finds every query frontend pod.
    (c,) = server.get("Deployment", "ml", "schooner-prod-iris-2").spec.template.spec.containers
    env = {e.name: e for e in c.env}
    assert env["SCHOONER_FRONTEND"].value == (
        "dns+tcp://schooner-prod-query-rpc.ml.svc.cluster.local:7000"
    )
    assert env["SCHOONER_REPLICA_ID"].value_from.field_ref.field_path == "metadata.name"
    assert c.command == ["python", "-m", "model_container"]


def test_scaling_patches_the_replica_count_and_nothing_else(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    started.set_num_replicas("iris", "1", "doubles", DIGEST_1, 2)
    deployment = server.get("Deployment", "ml", "schooner-prod-iris-1")
    server.calls.clear()
    started.set_num_replicas("iris", "1", "doubles", DIGEST_1, 3)
    assert server.mutations() == [
        Call("patch", "Deployment/scale", "schooner-prod-iris-1", {"spec": {"replicas": 3}})
    ]
    assert len(server.pods_of(deployment)) == 3
    server.calls.clear()
    started.set_num_replicas("iris", "1", "doubles", DIGEST_1, 0)
    assert server.mutations() == [
        Call("patch", "Deployment/scale", "schooner-prod-iris-1", {"spec": {"replicas": 0}})
    ]
    assert server.pods_of(deployment) == []
    # Scaling to zero a version that has no Deployment asks for nothing.
    server.calls.clear()
    started.set_num_replicas("iris", "9", "doubles", DIGEST_1, 0)
    assert server.mutations() == []
    with pytest.raises(InvalidRequestError, match=">= 0"):
        started.set_num_replicas("iris", "1", "doubles", DIGEST_1, -1)


def test_stop_models_deletes_the_deployments_of_those_versions_with_their_pods(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    started.set_num_replicas("iris", "1", "doubles", DIGEST_1, 1)
    started.set_num_replicas("iris", "2", "doubles", DIGEST_2, 1)
    started.set_num_replicas("wine", "1", "doubles", DIGEST_1, 1)
    server.calls.clear()
    started.stop_models("iris", ["1"])
    assert server.mutations() == [
        Call("delete", "Deployment", "schooner-prod-iris-1", "Foreground")
    ]
    started.stop_models("iris")
    assert writes(server)[1:] == [("delete", "Deployment", "schooner-prod-iris-2")]
    remaining = {d.metadata.name for d in server.stored("Deployment")}
    assert "schooner-prod-wine-1" in remaining
    assert not any(
        p.metadata.labels.get("schooner.io/model") == "iris" for p in server.stored("Pod")
    )


def test_a_model_pod_is_one_replica_connected_to_every_query_frontend_pod(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    started.set_num_replicas("iris", "1", "doubles", DIGEST_1, 2)
    model_pods = sorted(
        p.metadata.name
        for p in server.stored("Pod")
        if p.metadata.labels.get("schooner.io/model") == "iris"
    )
    states = started.replica_states("iris", "1")
    assert sorted(s.replica_id for s in states) == model_pods
    assert all(s.running for s in states)
    # 2 replicas x 2 query frontend pods: one connection (and Redis record) each.
    assert started.connections_expected("iris", "1", 2) == 4


def test_a_model_that_cannot_load_is_reported_with_the_log_of_its_last_run(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    started.set_num_replicas("iris", "1", "doubles", DIGEST_1, 1)
    (pod,) = server.pods_of(server.get("Deployment", "ml", "schooner-prod-iris-1"))
    status = pod.status.container_statuses[0]
    status.restart_count = 1
    status.state = V1ContainerState(waiting=V1ContainerStateWaiting(reason="CrashLoopBackOff"))
    status.last_state = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=2))
    server.logs[pod.metadata.name] = "cannot load the model: No module named 'sklearn'"
    (state,) = started.replica_states("iris", "1")
    assert not state.running
    assert state.replica_id == pod.metadata.name
    assert "status 2 (its model cannot be loaded)" in state.detail
    assert "No module named 'sklearn'" in state.detail
    assert Call("log", "Pod", pod.metadata.name, {"previous": True, "tail_lines": 30}) in (
        server.calls
    )


def test_build_model_without_a_registry_says_kubernetes_needs_one(
    server: FakeKubeAPIServer, tmp_path: Path
) -> None:
    cm = KubernetesContainerManager(apps_api=server.apps, core_api=server.core)
    with pytest.raises(DeployError, match=r"Kubernetes runs images from a registry.*registry="):
        cm.build_model("iris", "1", write_bundle(tmp_path / "b"))
    assert server.calls == []


# --------------------------------------------------------------------------- stop


def test_stop_all_deletes_this_clusters_objects_only_and_keeps_its_state(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    neighbour = KubernetesContainerManager(
        "staging",
        namespace="ml",
        frontend_image=FRONTEND,
        apps_api=server.apps,
        core_api=server.core,
    )
    neighbour.start_cluster()
    started.set_num_replicas("iris", "1", "doubles", DIGEST_1, 1)
    server.calls.clear()
    started.stop_all()
    assert writes(server) == [
        ("delete", "Deployment", "schooner-prod-iris-1"),
        ("delete", "Deployment", "schooner-prod-query"),
        ("delete", "Deployment", "schooner-prod-management"),
        ("delete", "StatefulSet", "schooner-prod-redis"),
        ("delete", "Service", "schooner-prod-query"),
        ("delete", "Service", "schooner-prod-query-rpc"),
        ("delete", "Service", "schooner-prod-management"),
        ("delete", "Service", "schooner-prod-redis"),
    ]
    assert all(c.sent == "Background" for c in server.mutations())
    left = {o.metadata.labels["schooner.io/cluster"] for o in server.stored("Deployment")}
    assert left == {"staging"}
    claims = [c.metadata.name for c in server.stored("PersistentVolumeClaim")]
    assert "data-schooner-prod-redis-0" in claims
    # It starts again on the same state, and destroy() deletes that too.
    started.start_cluster()
    server.calls.clear()
    started.destroy()
    assert ("delete", "PersistentVolumeClaim", "data-schooner-prod-redis-0") in writes(server)
    assert [c.metadata.name for c in server.stored("PersistentVolumeClaim")] == [
        "data-schooner-staging-redis-0"
    ]


def test_get_logs_writes_one_file_per_pod(
    server: FakeKubeAPIServer, started: KubernetesContainerManager, tmp_path: Path
) -> None:
    for pod in server.stored("Pod"):
        server.logs[pod.metadata.name] = f"log of {pod.metadata.name}"
    paths = started.get_logs(tmp_path)
    assert len(paths) == len(server.stored("Pod")) == 4  # Redis, management, 2 query
    for path in map(Path, paths):
        assert path.read_text() == f"log of {path.stem}\n"


# --------------------------------------------------------------------------- the notebook


class FakeQueryFrontends:
    """Plays the query frontend pods: every model pod registers with every frontend pod
    as replica ``<pod>``, one record per connection, as the real ones do."""

    def __init__(self, schooner: FakeSchooner) -> None:
        self.schooner = schooner

    def __call__(self, srv: FakeKubeAPIServer) -> None:
        pods = srv.stored("Pod")
        frontends = [
            p.metadata.name for p in pods if p.metadata.labels["schooner.io/role"] == "query"
        ]
        self.schooner.connected = [
            {
                "replica_id": p.metadata.name,
                "frontend": frontend,
                "model_name": p.metadata.labels["schooner.io/model"],
                "model_version": p.metadata.labels["schooner.io/version"],
            }
            for p in pods
            if p.metadata.labels["schooner.io/role"] == "replica"
            for frontend in frontends
        ]


def test_the_notebook_flow_start_deploy_scale_rollback_stop(server: FakeKubeAPIServer) -> None:
    schooner = FakeSchooner([])
    server.on_change = FakeQueryFrontends(schooner)
    cm = manager(server)
    conn = Connection(cm, transport=schooner.transport())
    conn.start()
    conn.register_application("pipeline", "doubles", "-1.0", 100000)
    conn.deploy_model("iris", "1", "doubles", IRIS_1, num_replicas=2)
    conn.link_model_to_app("pipeline", "iris")
    conn.deploy_model("iris", "2", "doubles", IRIS_2, num_replicas=1)
    assert schooner.models["iris"]["current_version"] == "2"
    pods_before = {p.metadata.uid for p in server.stored("Pod")}

    server.calls.clear()
    conn.set_model_version("iris", "1")  # roll back: Redis state only
    assert schooner.models["iris"]["current_version"] == "1"
    assert server.mutations() == []
    assert {p.metadata.uid for p in server.stored("Pod")} == pods_before, "no pod restarted"

    conn.set_num_replicas("iris", 3)
    assert server.mutations() == [
        Call("patch", "Deployment/scale", "schooner-prod-iris-1", {"spec": {"replicas": 3}})
    ]

    server.calls.clear()
    conn.stop_models("iris")
    assert writes(server) == [
        ("delete", "Deployment", "schooner-prod-iris-1"),
        ("delete", "Deployment", "schooner-prod-iris-2"),
    ]
    conn.stop_all()
    assert server.stored("Deployment") == server.stored("Service") == []


def test_start_brings_back_the_replicas_recorded_in_redis(server: FakeKubeAPIServer) -> None:
    schooner = FakeSchooner([])
    server.on_change = FakeQueryFrontends(schooner)
    conn = Connection(manager(server), transport=schooner.transport())
    conn.start()
    conn.deploy_model("iris", "1", "doubles", IRIS_1, num_replicas=2)
    conn.stop_all()
    assert server.stored("Deployment") == []
    conn.start()
    (deployment,) = [
        d for d in server.stored("Deployment") if d.metadata.labels["schooner.io/role"] == "replica"
    ]
    assert deployment.spec.replicas == 2
    assert deployment.spec.template.spec.containers[0].image == IRIS_1


def test_a_replica_that_cannot_load_fails_the_deploy_and_its_deployment_goes(
    server: FakeKubeAPIServer,
) -> None:
    schooner = FakeSchooner([])

    def crash_models(srv: FakeKubeAPIServer) -> None:
        for pod in srv.stored("Pod"):
            if pod.metadata.labels["schooner.io/role"] == "replica":
                status = pod.status.container_statuses[0]
                status.state = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=2))

    server.on_change = crash_models
    conn = Connection(manager(server), transport=schooner.transport())
    conn.start()
    with pytest.raises(ModelStartError, match=r"its model cannot be loaded"):
        conn.deploy_model("iris", "1", "doubles", IRIS_1)
    assert [d.metadata.name for d in server.stored("Deployment")] == [
        "schooner-prod-management",
        "schooner-prod-query",
    ]
    assert ("iris", "1") not in schooner.versions


def test_deploy_python_closure_without_a_registry_registers_nothing(
    server: FakeKubeAPIServer,
) -> None:
    events: list[str] = []
    schooner = FakeSchooner(events)
    cm = KubernetesContainerManager(
        frontend_image=FRONTEND, apps_api=server.apps, core_api=server.core
    )
    conn = Connection(cm, transport=schooner.transport())
    conn.start()
    events.clear()
    with pytest.raises(DeployError, match="Kubernetes runs images from a registry"):
        deploy_python_closure(conn, "iris", "1", "doubles", lambda xs: [0.0 for _ in xs])
    assert [e for e in events if not e.startswith("GET")] == []


# --------------------------------------------------------------------------- the client


def test_without_the_kubernetes_client_the_error_says_what_to_install() -> None:
    """``import admin`` needs neither the kubernetes client nor the docker SDK."""
    script = (
        "import sys; sys.modules['kubernetes'] = sys.modules['docker'] = None\n"
        "from admin import ContainerManagerError, KubernetesContainerManager\n"
        "try:\n"
        "    KubernetesContainerManager().connect()\n"
        "except ContainerManagerError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'schooner[kubernetes]'" in done.stdout


def test_a_missing_kubeconfig_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "no-such-kubeconfig"
    cm = KubernetesContainerManager(kubeconfig=missing)
    with pytest.raises(ContainerManagerError, match=rf"{re.escape(str(missing))}.*KUBECONFIG"):
        cm.connect()


def kubeconfig(path: Path, server_url: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server_url}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


def test_an_unreachable_api_server_is_reported_as_such(tmp_path: Path) -> None:
    cm = KubernetesContainerManager(
        kubeconfig=kubeconfig(tmp_path / "config", "http://127.0.0.1:9"),
        kube_context="ctx",
        request_timeout=2,
    )
    with pytest.raises(ContainerManagerError, match="cannot reach the Kubernetes API server"):
        cm.connect()


def test_the_api_servers_refusal_is_quoted() -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps({"message": 'deployments.apps is forbidden: User "u" cannot list'})
    assert _k8s_api._reason(exc) == 'HTTP 403: deployments.apps is forbidden: User "u" cannot list'


# --------------------------------------------------------------------------- TLS


def test_with_a_tls_secret_the_urls_are_https_and_connect_finds_it_out(
    server: FakeKubeAPIServer,
) -> None:
    cm = manager(server, tls_secret="schooner-tls", management_addr="m.example.com:443")
    cm.start_cluster()
    assert cm.management_url == "https://m.example.com:443"
    assert cm.query_url.startswith("https://")
    # Another client that knows nothing of the Secret attaches over HTTPS all the same.
    other = manager(server, frontend_image=None)
    assert other.management_url.startswith("http://")
    other.connect()
    assert other.management_url.startswith("https://")
    assert other.query_url.startswith("https://")


def test_without_tls_connect_stays_on_http(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    other = manager(server, frontend_image=None)
    other.connect()
    assert other.management_url.startswith("http://")


# --------------------------------------------------------------------------- credentials


def secret_files(server: FakeKubeAPIServer, kind: str) -> dict[str, str]:
    return KubeSettings.secret_files(server.get("Secret", "ml", f"schooner-prod-{kind}"))


def test_the_first_start_makes_the_credentials_and_restarts_keep_them(
    server: FakeKubeAPIServer,
) -> None:
    cm = manager(server)
    cm.start_cluster()
    token = cm.admin_token()
    assert len(token) >= 43
    frontend = secret_files(server, "frontend-secrets")
    replica = secret_files(server, "replica-secrets")
    assert set(frontend) == set(cred.FRONTEND_FILES)
    assert set(replica) == set(cred.REPLICA_FILES)
    assert frontend[cred.ADMIN_TOKEN_SHA256] == cred.sha256_hex(token)
    password = frontend[cred.REDIS_PASSWORD]
    assert secret_files(server, "redis-config") == {"redis.conf": f'requirepass "{password}"'}
    # No secret in any pod spec: they come from the mounted Secrets alone.
    specs_json = json.dumps(
        [to_json(o) for k in ("Deployment", "StatefulSet") for o in server.stored(k)]
    )
    for value in (
        token,
        password,
        replica[cred.RPC_CLIENT_SECRET],
        frontend[cred.RPC_SERVER_SECRET],
    ):
        assert value not in specs_json
    cm.stop_all()
    assert server.stored("Secret", "ml"), "stop_all() keeps the credentials"
    again = manager(server)
    again.start_cluster()
    assert again.admin_token() == token
    assert manager(server).admin_token() == token  # a new client finds it in the cluster


def test_rotating_the_admin_token_patches_it_and_its_digests_in_place(
    started: KubernetesContainerManager, server: FakeKubeAPIServer
) -> None:
    old = started.admin_token()
    before = secret_files(server, "replica-secrets")
    new = started.rotate_admin_token()
    assert new != old and manager(server).admin_token() == new
    assert writes(server) == [
        ("patch", "Secret", "schooner-prod-credentials"),
        ("patch", "Secret", "schooner-prod-frontend-secrets"),
        ("patch", "Secret", "schooner-prod-replica-secrets"),
    ]
    for kind in ("frontend-secrets", "replica-secrets"):
        assert secret_files(server, kind)[cred.ADMIN_TOKEN_SHA256] == cred.sha256_hex(new)
    after = secret_files(server, "replica-secrets")
    assert after[cred.RPC_CLIENT_SECRET] == before[cred.RPC_CLIENT_SECRET]


def test_without_credentials_the_token_is_refused_with_the_fix(server: FakeKubeAPIServer) -> None:
    with pytest.raises(ClusterNotRunningError, match=r"make-secrets\.sh"):
        manager(server).admin_token()
    with pytest.raises(ClusterNotRunningError, match="start it first"):
        manager(server).rotate_admin_token()


def test_with_an_external_redis_there_is_no_redis_password(server: FakeKubeAPIServer) -> None:
    manager(server, redis_url="redis://redis.internal:6379/0").start_cluster()
    assert cred.REDIS_PASSWORD not in secret_files(server, "frontend-secrets")
    names = [s.metadata.name for s in server.stored("Secret", "ml")]
    assert "schooner-prod-redis-config" not in names


def test_destroy_deletes_the_credentials(
    started: KubernetesContainerManager, server: FakeKubeAPIServer
) -> None:
    started.destroy()
    assert server.stored("Secret", "ml") == []


# --------------------------------------------------------------------------- issue 13


def test_query_frontends_is_the_number_of_query_pods_and_query_replicas_its_old_name(
    server: FakeKubeAPIServer,
) -> None:
    cm = manager(server, query_frontends=3)
    cm.start_cluster()
    query = server.get("Deployment", "ml", "schooner-prod-query")
    assert query.spec.replicas == 3 and len(server.pods_of(query)) == 3
    assert manager(FakeKubeAPIServer(), query_replicas=4).settings.query_replicas == 4
    assert manager(FakeKubeAPIServer()).settings.query_replicas == 2
    same = manager(FakeKubeAPIServer(), query_frontends=3, query_replicas=3)
    assert same.settings.query_replicas == 3
    with pytest.raises(InvalidRequestError, match="older name of query_frontends"):
        manager(FakeKubeAPIServer(), query_frontends=3, query_replicas=2)
    with pytest.raises(InvalidRequestError, match="query_replicas must be >= 1"):
        manager(FakeKubeAPIServer(), query_frontends=0)


def test_a_versions_memory_limit_is_its_pods_memory_limit(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    started.set_num_replicas("iris", "1", "doubles", DIGEST_1, 2, memory_limit=256 * 2**20)
    deployment = server.get("Deployment", "ml", "schooner-prod-iris-1")
    (c,) = deployment.spec.template.spec.containers
    assert c.resources.limits["memory"] == "256Mi"
    assert c.resources.requests["memory"] == "256Mi"
    for pod in server.pods_of(deployment):
        assert pod.spec.containers[0].resources.limits["memory"] == "256Mi"


def test_restarting_the_query_frontends_rolls_their_pods_over_and_waits(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    query = server.get("Deployment", "ml", "schooner-prod-query")
    before = {p.metadata.uid for p in server.pods_of(query)}
    assert len(before) == 2
    started.restart_query_frontends()
    [patch] = server.mutations()
    assert (patch.verb, patch.kind, patch.name) == ("patch", "Deployment", "schooner-prod-query")
    annotations = patch.sent["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", annotations["kubectl.kubernetes.io/restartedAt"]
    )
    # Every pod was replaced (each old one drains in its grace period), and nothing else
    # was touched: the model Deployments and Redis keep their pods.
    after = server.pods_of(server.get("Deployment", "ml", "schooner-prod-query"))
    assert len(after) == 2 and not before & {p.metadata.uid for p in after}


def test_a_query_pod_that_cannot_start_stops_the_restart_with_its_reason(
    server: FakeKubeAPIServer, started: KubernetesContainerManager
) -> None:
    def new_pods_fail(srv: FakeKubeAPIServer) -> None:
        for pod in srv.stored("Pod"):
            if pod.metadata.labels["schooner.io/role"] == "query" and pod.metadata.annotations:
                pod.status.container_statuses[0].state = V1ContainerState(
                    waiting=V1ContainerStateWaiting(
                        reason="CreateContainerConfigError", message="secret not found"
                    )
                )

    server.on_change = new_pods_fail
    with pytest.raises(ContainerManagerError, match="secret not found") as info:
        started.restart_query_frontends()
    assert "the restart of the query frontends stopped" in str(info.value)


def test_a_rollout_is_done_when_every_pod_runs_the_latest_template() -> None:
    from kubernetes.client import (
        V1Deployment,
        V1DeploymentSpec,
        V1DeploymentStatus,
        V1LabelSelector,
        V1PodTemplateSpec,
    )

    from admin.container_managers import _k8s_status as readback

    def deployment(generation: int, **status: int) -> V1Deployment:
        return V1Deployment(
            metadata=V1ObjectMeta(name="q", generation=generation),
            spec=V1DeploymentSpec(
                replicas=2, selector=V1LabelSelector(), template=V1PodTemplateSpec()
            ),
            status=V1DeploymentStatus(**status),
        )

    done = {"replicas": 2, "updated_replicas": 2, "available_replicas": 2}
    assert readback.rolled_out(deployment(2, observed_generation=2, **done))
    # The controller has not seen the patch yet.
    assert not readback.rolled_out(deployment(3, observed_generation=2, **done))
    # A new pod is up, an old one still drains.
    surging = {"replicas": 3, "updated_replicas": 2, "available_replicas": 2}
    assert not readback.rolled_out(deployment(2, observed_generation=2, **surging))
    # The new pods are not all ready yet.
    starting = {"replicas": 2, "updated_replicas": 2, "available_replicas": 1}
    assert not readback.rolled_out(deployment(2, observed_generation=2, **starting))


def test_without_a_query_deployment_there_is_nothing_to_restart(
    server: FakeKubeAPIServer,
) -> None:
    with pytest.raises(ClusterNotRunningError, match="start the cluster first"):
        manager(server).restart_query_frontends()
