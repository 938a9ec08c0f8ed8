"""Every Kubernetes object Schooner makes passes the official schemas, strictly.

``kubernetes-validate`` checks objects offline against the OpenAPI schemas of a
Kubernetes release; ``strict`` also refuses fields the schema does not know, which the
API server would drop (or, with field validation, refuse). Checked here: every object
the manager creates, over the option combinations that change them, and every manifest
of ``deploy/k8s`` as ``kubectl kustomize`` renders it. The manifests must also be the
very objects the manager creates for cluster "default" in namespace "schooner", so that
``connect()`` attaches to a cluster applied with ``kubectl apply -k deploy/k8s``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fake_kube_apiserver import FakeKubeAPIServer
from kubernetes.client import V1LoadBalancerIngress, V1LoadBalancerStatus, V1ServiceStatus

from admin import KubernetesContainerManager
from admin.container_managers._k8s_specs import DEFAULT_REDIS_IMAGE, KubeSettings, to_json

K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# The newest release the installed schemas cover; kubernetes-validate tracks Kubernetes.
VERSION = kubernetes_validate.latest_version()
PLACEHOLDER_IMAGE = "schooner/frontend:latest"


def validate(doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        name = f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        path = "/".join(map(str, exc.caught.absolute_path))
        pytest.fail(f"{name} is not a valid Kubernetes {VERSION} object at {path}: {exc.caught}")


def rendered() -> list[dict[str, Any]]:
    """``kubectl kustomize deploy/k8s``; without kubectl, the kustomization's resources
    with its namespace applied (what kustomize does for these plain manifests)."""
    if shutil.which("kubectl"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(K8S_DIR)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    docs = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S_DIR / resource).read_text()):
            if doc and doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = kustomization["namespace"]
            if doc:
                docs.append(doc)
    return docs


def key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


# --------------------------------------------------------------------------- the validator


def test_the_validator_is_strict() -> None:
    """Unknown fields and missing required ones fail: the checks below mean something."""
    good = to_json(KubeSettings("x").management_service())
    validate(good)
    unknown = {**good, "spec": {**good["spec"], "clusterIp": "None"}}  # a typo of clusterIP
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, VERSION, strict=True)
    deployment = to_json(KubeSettings("x").management_deployment("i"))
    del deployment["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSION, strict=True)


# --------------------------------------------------------------------------- the manager


def created_objects(server: FakeKubeAPIServer) -> list[dict[str, Any]]:
    return [to_json(c.sent) for c in server.mutations() if c.verb == "create"]


def provision_load_balancers(srv: FakeKubeAPIServer) -> None:
    for svc in srv.stored("Service"):
        if svc.spec.type == "LoadBalancer" and svc.status is None:
            ingress = [V1LoadBalancerIngress(hostname="lb.example.com")]
            svc.status = V1ServiceStatus(load_balancer=V1LoadBalancerStatus(ingress=ingress))


MANAGER_OPTIONS: list[dict[str, Any]] = [
    {},
    {"service_type": "LoadBalancer", "query_port": 80, "query_replicas": 5},
    {"service_type": "NodePort", "management_addr": "127.0.0.1:1338", "query_addr": "q:1"},
    {"redis_url": "rediss://:secret@redis.example.com:6380/2", "key_prefix": "team-a"},
    {
        "storage_class": "fast-ssd",
        "redis_storage": "20Gi",
        "image_pull_secrets": ["regcred"],
        "resources": {
            "replica": {"requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}},
            "query": {"requests": {"cpu": "1"}},
        },
    },
    {"tls_secret": "schooner-tls"},
]


@pytest.mark.parametrize("options", MANAGER_OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_every_object_the_manager_creates_is_valid(options: dict[str, Any]) -> None:
    server = FakeKubeAPIServer(on_change=provision_load_balancers)
    cm = KubernetesContainerManager(
        "prod",
        namespace="ml-serving",
        registry="registry.example.com:5000/team",
        frontend_image="registry.example.com:5000/team/schooner/frontend:0123456789ab",
        apps_api=server.apps,
        core_api=server.core,
        **options,
    )
    cm.start_cluster()
    # Versions that are not DNS names, and names as long as they may be.
    for name, version in [("iris", "1"), ("m" * 63, "V2_2024.05.01"), ("a", "x" * 63)]:
        cm.set_num_replicas(name, version, "doubles", "01" * 32, 2)
    docs = created_objects(server)
    kinds = {d["kind"] for d in docs}
    assert kinds == {"Deployment", "Namespace", "Service", "Secret"} | (
        set() if "redis_url" in options else {"StatefulSet"}
    )
    # Two frontends and three model versions: five Deployments, no two sharing a name.
    assert len({key(d) for d in docs if d["kind"] == "Deployment"}) == 5
    for doc in docs:
        validate(doc)
        assert len(doc["metadata"]["name"]) <= 63
        for value in doc["metadata"].get("labels", {}).values():
            assert len(value) <= 63, value


# --------------------------------------------------------------------------- deploy/k8s


def test_every_manifest_of_deploy_k8s_is_valid() -> None:
    docs = rendered()
    assert sorted(key(d) for d in docs) == [
        ("Deployment", "schooner-default-management"),
        ("Deployment", "schooner-default-query"),
        ("HorizontalPodAutoscaler", "schooner-default-query"),
        ("Namespace", "schooner"),
        ("Service", "schooner-default-management"),
        ("Service", "schooner-default-query"),
        ("Service", "schooner-default-query-rpc"),
        ("Service", "schooner-default-redis"),
        ("StatefulSet", "schooner-default-redis"),
    ]
    for doc in docs:
        validate(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "schooner"


def test_the_manifests_are_the_objects_the_manager_creates() -> None:
    s = KubeSettings("default", namespace="schooner")
    expected = [
        s.namespace_object(),
        s.redis_service(),
        s.redis_stateful_set(DEFAULT_REDIS_IMAGE),
        s.management_deployment(PLACEHOLDER_IMAGE),
        s.management_service(),
        s.query_deployment(PLACEHOLDER_IMAGE, autoscaled=True),
        s.query_service(),
        s.query_rpc_service(),
    ]
    manifests = {key(d): d for d in rendered()}
    for obj in expected:
        doc = to_json(obj)
        assert manifests[key(doc)] == doc, f"deploy/k8s differs from the manager: {key(doc)}"


def test_the_autoscaler_scales_the_query_frontend_on_the_cpu_it_requests() -> None:
    docs = {key(d): d for d in rendered()}
    hpa = docs["HorizontalPodAutoscaler", "schooner-default-query"]
    query = docs["Deployment", "schooner-default-query"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "schooner-default-query",
    }
    assert hpa["spec"]["minReplicas"] >= 2, "one frontend pod is a single point of failure"
    assert "replicas" not in query["spec"], "kubectl apply would undo the autoscaler"
    (container,) = query["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl kustomize renders components")
def test_the_tls_component_makes_the_frontends_the_manager_makes_with_a_tls_secret(
    tmp_path: Path,
) -> None:
    base = Path(os.path.relpath(K8S_DIR, tmp_path)).as_posix()
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{base}]\ncomponents: [{base}/tls]\n", encoding="utf-8"
    )
    out = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    docs = {key(d): d for d in yaml.safe_load_all(out) if d}
    s = KubeSettings("default", namespace="schooner", tls_secret="schooner-tls")
    for obj in (
        s.management_deployment(PLACEHOLDER_IMAGE),
        s.query_deployment(PLACEHOLDER_IMAGE, autoscaled=True),
    ):
        doc = to_json(obj)
        validate(docs[key(doc)])
        assert docs[key(doc)] == doc, f"deploy/k8s/tls differs from the manager: {key(doc)}"
    # Redis is untouched.
    plain = KubeSettings("default", namespace="schooner")
    redis = to_json(plain.redis_stateful_set(DEFAULT_REDIS_IMAGE))
    assert docs[key(redis)] == redis


def test_the_query_frontend_manifest_drains_before_its_pods_go() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in rendered()}
    deployment = docs["Deployment", "schooner-default-query"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    # A preStop wait the frontend's image can run (python; no sleep binary needed) ...
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "-c"] and "time.sleep(5)" in command[2]
    # ... then SIGTERM and the frontend's 30 s drain, within the grace period.
    assert pod["terminationGracePeriodSeconds"] >= 5 + 30
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert (rolling["maxUnavailable"], rolling["maxSurge"]) == (0, 1)
