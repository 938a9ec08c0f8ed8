"""Prometheus on Kubernetes: the pods the manager makes say where their metrics are
(``prometheus.io/*`` annotations), and ``deploy/prometheus/podmonitor.yaml`` picks exactly
the query frontend and model pods, on the ports that serve ``/metrics``, with the admin
token from the cluster's Secret. Checked against the fake API server (no cluster can run
here): the pods are those its controllers make from the manager's Deployments."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_kube_apiserver import FakeKubeAPIServer

from admin import KubernetesContainerManager
from admin.container_managers._credentials import ADMIN_TOKEN

PODMONITOR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "podmonitor.yaml"
REGISTRY = "registry.example.com/team"


def cluster(**kw: Any) -> FakeKubeAPIServer:
    """The cluster deploy/k8s describes ("default" in "schooner"), with a model of two
    replicas."""
    server = FakeKubeAPIServer()
    cm = KubernetesContainerManager(
        "default",
        namespace="schooner",
        registry=REGISTRY,
        frontend_image=f"{REGISTRY}/schooner/frontend:0123456789ab",
        apps_api=server.apps,
        core_api=server.core,
        start_timeout=5,
        **kw,
    )
    cm.start_cluster()
    cm.set_num_replicas("iris", "1", "doubles", "a" * 64, 2)
    return server


def pods_by_role(server: FakeKubeAPIServer) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for pod in server.stored("Pod", "schooner"):
        out.setdefault(pod.metadata.labels["schooner.io/role"], []).append(pod)
    return out


def port_numbers(pod: Any) -> dict[str, int]:
    return {p.name: p.container_port for c in pod.spec.containers for p in c.ports or []}


def test_query_and_model_pods_say_where_their_metrics_are() -> None:
    pods = pods_by_role(cluster())
    assert len(pods["query"]) >= 1 and len(pods["replica"]) == 2
    for role, metrics_port in (("query", 1337), ("replica", 9100)):
        for pod in pods[role]:
            annotations = pod.metadata.annotations or {}
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/path"] == "/metrics"
            assert int(annotations["prometheus.io/port"]) == metrics_port
            assert metrics_port in port_numbers(pod).values()
            assert "prometheus.io/scheme" not in annotations
    for role in ("management", "redis"):  # no metrics there
        for pod in pods[role]:
            assert "prometheus.io/scrape" not in (pod.metadata.annotations or {})


def test_a_tls_query_frontend_is_scraped_over_https() -> None:
    pods = pods_by_role(cluster(tls_secret="schooner-tls"))
    for pod in pods["query"]:
        assert pod.metadata.annotations["prometheus.io/scheme"] == "https"
    for pod in pods["replica"]:  # replicas serve plain HTTP on their metrics port
        assert "prometheus.io/scheme" not in pod.metadata.annotations


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions with In)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def meta_label(pod_label: str) -> str:
    """How Prometheus's Kubernetes discovery names a pod label."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", pod_label)


@pytest.fixture(scope="module")
def podmonitor() -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(PODMONITOR.read_text()) if d]
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PodMonitor"
    return dict(doc)


def test_the_podmonitor_picks_the_query_and_model_pods_on_their_metrics_ports(
    podmonitor: dict[str, Any],
) -> None:
    server = cluster()
    assert podmonitor["metadata"]["namespace"] == "schooner"
    picked: dict[str, set[str]] = {}
    for role, pods in pods_by_role(server).items():
        for pod in pods:
            if not matches(podmonitor["spec"]["selector"], pod.metadata.labels):
                continue
            ports = port_numbers(pod)
            for endpoint in podmonitor["spec"]["podMetricsEndpoints"]:
                if endpoint["port"] in ports:
                    picked.setdefault(role, set()).add(pod.metadata.name)
                    annotated = int(pod.metadata.annotations["prometheus.io/port"])
                    assert ports[endpoint["port"]] == annotated
                    assert endpoint["path"] == pod.metadata.annotations["prometheus.io/path"]
    pods = pods_by_role(server)
    assert picked == {
        "query": {p.metadata.name for p in pods["query"]},
        "replica": {p.metadata.name for p in pods["replica"]},
    }


def test_the_podmonitor_sends_the_admin_token_from_the_clusters_secret(
    podmonitor: dict[str, Any],
) -> None:
    server = cluster()
    secrets = {s.metadata.name: s for s in server.stored("Secret", "schooner")}
    for endpoint in podmonitor["spec"]["podMetricsEndpoints"]:
        auth = endpoint["authorization"]
        assert auth["type"] == "Bearer"
        ref = auth["credentials"]
        assert ref["key"] == ADMIN_TOKEN
        assert ADMIN_TOKEN in secrets[ref["name"]].data, f"{ref} names no admin token"


def test_the_podmonitor_labels_series_like_the_local_targets_file(
    podmonitor: dict[str, Any],
) -> None:
    """role, cluster, and on model pods model/version/replica: what the Grafana dashboard
    and the local and Docker targets files use; taken from labels the pods carry."""
    server = cluster()
    pods = pods_by_role(server)
    by_role = {}
    for endpoint in podmonitor["spec"]["podMetricsEndpoints"]:
        fixed = {
            r["targetLabel"]: r["replacement"]
            for r in endpoint["relabelings"]
            if "replacement" in r
        }
        by_role[fixed["role"]] = endpoint
    assert set(by_role) == {"query", "replica"}
    for role, wanted in (("query", {"cluster"}), ("replica", {"cluster", "model", "version"})):
        sources = {
            r["targetLabel"]: r["sourceLabels"][0]
            for r in by_role[role]["relabelings"]
            if "sourceLabels" in r
        }
        assert wanted <= set(sources)
        for pod in pods[role]:
            metas = {meta_label(k): v for k, v in pod.metadata.labels.items()}
            metas["__meta_kubernetes_pod_name"] = pod.metadata.name
            for target in wanted:
                assert sources[target] in metas, f"{role}: {target} from {sources[target]}"
            if role == "replica":
                assert metas[sources["model"]] == "iris" and metas[sources["version"]] == "1"
                # The replica id the query frontend's series carry is the pod's name.
                assert sources["replica"] == "__meta_kubernetes_pod_name"
