"""The notebook flow on a real Kubernetes cluster (kind, k3s or a cloud cluster).

Runs when ``KUBECONFIG`` is set, and is skipped with that reason otherwise: no API
server can run on the machines ``make test`` runs on (tests/unit/test_k8s_*.py check the
manager against a fake of one there). Besides a cluster it needs:

- ``SCHOONER_K8S_REGISTRY``: a registry this machine can push to and the cluster can
  pull from (kind: ``localhost:5001`` with kind's local-registry recipe; see
  docs/kubernetes.md). Without it the tests are skipped, saying so.
- a Docker engine and the base image, as the Docker e2e tests (``conftest.py``).

Optional: ``SCHOONER_K8S_CONTEXT``; ``SCHOONER_K8S_NAMESPACE`` (default
``schooner-e2e-<session>``, created and deleted here); ``SCHOONER_K8S_SERVICE_TYPE``
(default ``NodePort``, which kind and k3s nodes answer on from the host);
``SCHOONER_K8S_QUERY_ADDR`` / ``SCHOONER_K8S_MANAGEMENT_ADDR`` to reach the Services
another way (``kubectl port-forward``); ``SCHOONER_K8S_BUILD_NETWORK=host`` for engines
without a default bridge.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from admin import ClusterNotRunningError, Connection, KubernetesContainerManager
from admin.deployers.python import deploy_python_closure

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="Kubernetes e2e tests skipped: KUBECONFIG is not set (point it at a kind, "
        "k3s or cloud cluster, and SCHOONER_K8S_REGISTRY at a registry it pulls from)",
    ),
]

BASE_IMAGE = os.environ.get("SCHOONER_TEST_BASE_IMAGE", "schooner/base-python:3.11")


def make_model(factor: float) -> Callable[[Any], list[float]]:
    def model(xs: Any) -> list[float]:
        return [factor * float(x[0]) for x in xs]

    return model


def manager(name: str, namespace: str, **kw: Any) -> KubernetesContainerManager:
    env = os.environ.get
    return KubernetesContainerManager(
        name,
        namespace=namespace,
        registry=env("SCHOONER_K8S_REGISTRY", ""),
        kube_context=env("SCHOONER_K8S_CONTEXT"),
        service_type=env("SCHOONER_K8S_SERVICE_TYPE", "NodePort"),
        query_addr=env("SCHOONER_K8S_QUERY_ADDR"),
        management_addr=env("SCHOONER_K8S_MANAGEMENT_ADDR"),
        base_image=BASE_IMAGE,
        build_network_mode=env("SCHOONER_K8S_BUILD_NETWORK"),
        redis_storage="256Mi",
        **kw,
    )


@pytest.fixture(scope="module")
def conn(docker_client: Any, session_id: str) -> Iterator[Connection]:
    if not os.environ.get("SCHOONER_K8S_REGISTRY"):
        pytest.skip(
            "Kubernetes e2e tests skipped: SCHOONER_K8S_REGISTRY is not set (a registry this "
            "machine pushes to and the cluster pulls from)"
        )
    namespace = os.environ.get("SCHOONER_K8S_NAMESPACE") or f"schooner-e2e-{session_id}"
    cm = manager(f"e2e-{session_id}", namespace)
    c = Connection(cm, progress=print, deploy_timeout=600)
    try:
        c.start()
        yield c
    finally:
        with contextlib.suppress(Exception):
            c.stop_all()
        cm.destroy()
        if not os.environ.get("SCHOONER_K8S_NAMESPACE"):
            with contextlib.suppress(Exception):
                cm.api.core.delete_namespace(namespace, _request_timeout=30)


def predict(conn: Connection, app: str, x: float) -> dict[str, Any]:
    reply = httpx.post(
        f"http://{conn.get_query_addr()}/{app}/predict", json={"input": [x]}, timeout=30
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def model_pods(conn: Connection, name: str) -> dict[str, str]:
    """Name -> uid of the running pods of a model."""
    cm = conn.cm
    assert isinstance(cm, KubernetesContainerManager)
    selector = cm.settings.label_selector("replica", **cm.settings.model_labels(name))
    return {p.metadata.name: p.metadata.uid for p in cm.api.find("Pod", selector)}


def test_the_notebook_flow(conn: Connection) -> None:
    conn.register_application("k8s", "doubles", "-1.0", 1_000_000)
    deploy_python_closure(conn, "scaler", "1", "doubles", make_model(2.0))
    conn.link_model_to_app("k8s", "scaler")
    body = predict(conn, "k8s", 21.0)
    assert (body["output"], body["default"]) == (42.0, False)

    conn.set_num_replicas("scaler", 2)
    assert len(model_pods(conn, "scaler")) == 2
    assert all(predict(conn, "k8s", 1.0)["output"] == 2.0 for _ in range(20))

    deploy_python_closure(conn, "scaler", "2", "doubles", make_model(3.0))
    assert predict(conn, "k8s", 1.0)["output"] == 3.0
    pods = model_pods(conn, "scaler")
    conn.set_model_version("scaler", "1")  # rollback: no pod restarts
    assert predict(conn, "k8s", 1.0)["output"] == 2.0
    assert model_pods(conn, "scaler") == pods

    conn.stop_models("scaler")
    cm = conn.cm
    assert isinstance(cm, KubernetesContainerManager)
    selector = cm.settings.label_selector("replica")
    assert cm.api.find("Deployment", selector) == []


def test_every_query_frontend_reaches_every_replica(conn: Connection) -> None:
    deploy_python_closure(conn, "echo", "1", "doubles", make_model(1.0), num_replicas=2)
    records = [r for r in conn.get_all_model_replicas(verbose=True) if r["model_name"] == "echo"]
    frontends = {r["frontend"] for r in records}
    pods = {r["replica_id"] for r in records}
    cm = conn.cm
    assert isinstance(cm, KubernetesContainerManager)
    query_pods = cm.api.find("Pod", cm.settings.label_selector("query"))
    assert frontends == {p.metadata.name for p in query_pods}, "named by their pod names"
    assert pods == set(model_pods(conn, "echo")), "one replica id per model pod"
    assert len(records) == 4, "each of 2 model pods connected to each of 2 frontend pods"
    conn.stop_models("echo")


def test_another_client_connects_to_the_running_cluster(conn: Connection) -> None:
    cm = conn.cm
    assert isinstance(cm, KubernetesContainerManager)
    other = Connection(manager(cm.cluster_name, cm.namespace))
    other.connect()
    assert other.get_all_apps() == conn.get_all_apps()
    other.close()
    with pytest.raises(ClusterNotRunningError):
        manager(f"{cm.cluster_name}-none", cm.namespace).connect()
