"""A fake of the Kubernetes API server, standing in at the official client's boundary.

No API server can run on the test machines, so the Kubernetes manager's tests hand it
``FakeKubeAPIServer().apps`` and ``.core`` in place of the client's ``AppsV1Api`` and
``CoreV1Api``. They implement exactly the methods the manager calls, with the client's
signatures; keep the objects in memory as the client's own model objects; record every
call (``calls``); and answer as the API server does: 409 for a name taken, 404 for a
name unknown, label selectors on lists, a Deployment's pods deleted with it.

The API server's controllers are played by ``converge()``, run after every write unless
``auto_converge`` is off: each Deployment and StatefulSet gets exactly its replica
count of Running, ready pods (with addresses) of its current pod template -- a pod of an
older template (a patched annotation: ``kubectl rollout restart``) is replaced -- and its
status says so. A test may edit a pod's status by hand to stage a failure.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import (
    V1ConfigMapList,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStatus,
    V1DeploymentList,
    V1DeploymentStatus,
    V1Namespace,
    V1NodeList,
    V1ObjectMeta,
    V1PersistentVolumeClaim,
    V1PersistentVolumeClaimList,
    V1PersistentVolumeClaimSpec,
    V1Pod,
    V1PodList,
    V1PodStatus,
    V1Scale,
    V1ScaleSpec,
    V1SecretList,
    V1ServiceList,
    V1StatefulSetList,
    V1StatefulSetStatus,
    V1Status,
    V1VolumeResourceRequirements,
)
from kubernetes.client.exceptions import ApiException

LISTS = {
    "Deployment": V1DeploymentList,
    "StatefulSet": V1StatefulSetList,
    "Service": V1ServiceList,
    "ConfigMap": V1ConfigMapList,
    "Pod": V1PodList,
    "PersistentVolumeClaim": V1PersistentVolumeClaimList,
    "Secret": V1SecretList,
}
PLURAL = {
    "Deployment": "deployments.apps",
    "StatefulSet": "statefulsets.apps",
    "Service": "services",
    "ConfigMap": "configmaps",
    "Pod": "pods",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Secret": "secrets",
    "Namespace": "namespaces",
}
MUTATING = ("create", "patch", "replace", "delete")


@dataclass
class Call:
    """One request: ``verb`` (create, list, read, patch, delete, log), the kind, the
    object's name ("" for lists), and what was sent: the body of a create or patch, the
    label selector of a list, the propagation policy of a delete."""

    verb: str
    kind: str
    name: str = ""
    sent: Any = None

    @property
    def mutating(self) -> bool:
        return self.verb in MUTATING


def api_error(status: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps(
        {"kind": "Status", "status": "Failure", "message": message, "code": status}
    )
    return exc


def matches(labels: dict[str, str] | None, selector: str) -> bool:
    """Equality-based label selectors (``k=v,k=v``), the only kind the manager sends."""
    have = labels or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if have.get(key) != value:
            return False
    return True


@dataclass
class FakeKubeAPIServer:
    auto_converge: bool = True
    namespaces: set[str] = field(default_factory=lambda: {"default"})
    objects: dict[tuple[str, str, str], Any] = field(default_factory=dict)  # (kind, ns, name)
    calls: list[Call] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)  # pod name -> its log
    nodes: list[Any] = field(default_factory=list)
    # Called after every write and convergence: a test's hook to play the query
    # frontends (which replicas they report connected).
    on_change: Callable[[FakeKubeAPIServer], None] | None = None
    _ips: itertools.count[int] = field(default_factory=lambda: itertools.count(10))
    _uids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _node_ports: itertools.count[int] = field(default_factory=lambda: itertools.count(30080))

    @property
    def apps(self) -> FakeAppsV1Api:
        return FakeAppsV1Api(self)

    @property
    def core(self) -> FakeCoreV1Api:
        return FakeCoreV1Api(self)

    # ------------------------------------------------------------------ what tests read

    def mutations(self) -> list[Call]:
        return [c for c in self.calls if c.mutating]

    def stored(self, kind: str, namespace: str | None = None) -> list[Any]:
        return [
            o
            for (k, ns, _), o in sorted(self.objects.items())
            if k == kind and (namespace is None or ns == namespace)
        ]

    def get(self, kind: str, namespace: str, name: str) -> Any:
        return self.objects[kind, namespace, name]

    def pods_of(self, owner: Any) -> list[Any]:
        selector = owner.spec.selector.match_labels
        return [
            p
            for p in self.stored("Pod", owner.metadata.namespace)
            if all(p.metadata.labels.get(k) == v for k, v in selector.items())
        ]

    # ------------------------------------------------------------------ the store

    def record(self, verb: str, kind: str, name: str, sent: Any, kw: dict[str, Any]) -> None:
        # Every request the manager makes carries a timeout.
        assert kw.get("_request_timeout"), f"{verb} {kind} {name} without _request_timeout"
        self.calls.append(Call(verb, kind, name, sent))

    def create(self, kind: str, namespace: str, body: Any, kw: dict[str, Any]) -> Any:
        name = body.metadata.name
        self.record("create", kind, name, copy.deepcopy(body), kw)
        if namespace not in self.namespaces:
            raise api_error(404, "Not Found", f'namespaces "{namespace}" not found')
        if body.metadata.namespace not in (None, namespace):
            raise api_error(400, "Bad Request", "the namespace of the body does not match")
        if (kind, namespace, name) in self.objects:
            raise api_error(409, "Conflict", f'{PLURAL[kind]} "{name}" already exists')
        obj = copy.deepcopy(body)
        obj.metadata.namespace = namespace
        obj.metadata.uid = f"uid-{next(self._uids)}"
        obj.metadata.generation = 1
        self.objects[kind, namespace, name] = obj
        if kind == "StatefulSet":
            self._claim_volumes(obj)
        if kind == "Service" and obj.spec.type in ("NodePort", "LoadBalancer"):
            for port in obj.spec.ports:  # the API server allocates node ports
                port.node_port = port.node_port or next(self._node_ports)
        self.changed()
        return copy.deepcopy(obj)

    def list(self, kind: str, namespace: str, kw: dict[str, Any]) -> Any:
        selector = kw.get("label_selector") or ""
        self.record("list", kind, "", selector, kw)
        items = [copy.deepcopy(o) for o in self.stored(kind, namespace)]
        return LISTS[kind](items=[o for o in items if matches(o.metadata.labels, selector)])

    def read(self, kind: str, namespace: str, name: str, kw: dict[str, Any]) -> Any:
        self.record("read", kind, name, None, kw)
        if (kind, namespace, name) not in self.objects:
            raise api_error(404, "Not Found", f'{PLURAL[kind]} "{name}" not found')
        return copy.deepcopy(self.objects[kind, namespace, name])

    def patch(self, kind: str, namespace: str, name: str, body: Any, kw: dict[str, Any]) -> Any:
        """A merge patch of what the manager patches: a Secret's ``data`` keys, or the
        annotations of a Deployment's pod template (which changes its generation)."""
        self.record("patch", kind, name, copy.deepcopy(body), kw)
        if (kind, namespace, name) not in self.objects:
            raise api_error(404, "Not Found", f'{PLURAL[kind]} "{name}" not found')
        obj = self.objects[kind, namespace, name]
        if kind == "Deployment":
            meta = obj.spec.template.metadata
            new = body["spec"]["template"]["metadata"]["annotations"]
            meta.annotations = {**(meta.annotations or {}), **new}
            obj.metadata.generation = (obj.metadata.generation or 1) + 1
        else:
            obj.data = {**(obj.data or {}), **body["data"]}
        self.changed()
        return copy.deepcopy(obj)

    def delete(self, kind: str, namespace: str, name: str, kw: dict[str, Any]) -> Any:
        self.record("delete", kind, name, kw.get("propagation_policy"), kw)
        obj = self.objects.pop((kind, namespace, name), None)
        if obj is None:
            raise api_error(404, "Not Found", f'{PLURAL[kind]} "{name}" not found')
        if kind in ("Deployment", "StatefulSet"):  # the garbage collector
            for pod in self.pods_of(obj):
                self.objects.pop(("Pod", namespace, pod.metadata.name), None)
        self.changed()
        return V1Status(status="Success")

    def changed(self) -> None:
        if self.auto_converge:
            self.converge()
        if self.on_change is not None:
            self.on_change(self)

    # ------------------------------------------------------------------ the controllers

    def converge(self) -> None:
        """Give every Deployment and StatefulSet its replica count of ready pods."""
        for kind in ("Deployment", "StatefulSet"):
            for owner in self.stored(kind):
                want = owner.spec.replicas if owner.spec.replicas is not None else 1
                template = owner.spec.template.metadata.annotations or {}
                for pod in self.pods_of(owner):  # of an older template: replaced
                    if (pod.metadata.annotations or {}) != template:
                        del self.objects["Pod", owner.metadata.namespace, pod.metadata.name]
                pods = self.pods_of(owner)
                for pod in pods[want:]:
                    del self.objects["Pod", owner.metadata.namespace, pod.metadata.name]
                for index in range(len(pods), want):
                    self._start_pod(kind, owner, index)
                ready = len(self.pods_of(owner))
                if kind == "Deployment":
                    owner.status = V1DeploymentStatus(
                        replicas=ready,
                        ready_replicas=ready,
                        updated_replicas=ready,
                        available_replicas=ready,
                        observed_generation=owner.metadata.generation,
                    )
                else:
                    owner.status = V1StatefulSetStatus(replicas=ready, ready_replicas=ready)

    def _start_pod(self, kind: str, owner: Any, index: int) -> None:
        name = owner.metadata.name
        while True:  # a StatefulSet's pods are <name>-<ordinal>; others get a suffix
            pod_name = f"{name}-{index}" if kind == "StatefulSet" else f"{name}-fake{index}"
            if ("Pod", owner.metadata.namespace, pod_name) not in self.objects:
                break
            index += 1
        template = owner.spec.template
        pod = V1Pod(
            api_version="v1",
            kind="Pod",
            metadata=V1ObjectMeta(
                name=pod_name,
                namespace=owner.metadata.namespace,
                labels=dict(template.metadata.labels),
                annotations=dict(template.metadata.annotations or {}) or None,
                uid=f"uid-{next(self._uids)}",
            ),
            spec=copy.deepcopy(template.spec),
            status=V1PodStatus(
                phase="Running",
                pod_ip=f"10.244.0.{next(self._ips)}",
                container_statuses=[
                    V1ContainerStatus(
                        name=c.name,
                        image=c.image,
                        image_id=f"sha256:{c.image}",
                        ready=True,
                        restart_count=0,
                        state=V1ContainerState(running=V1ContainerStateRunning()),
                    )
                    for c in template.spec.containers
                ],
            ),
        )
        self.objects["Pod", owner.metadata.namespace, pod_name] = pod

    def _claim_volumes(self, stateful_set: Any) -> None:
        for template in stateful_set.spec.volume_claim_templates or []:
            claim_name = f"{template.metadata.name}-{stateful_set.metadata.name}-0"
            claim = V1PersistentVolumeClaim(
                api_version="v1",
                kind="PersistentVolumeClaim",
                metadata=V1ObjectMeta(
                    name=claim_name,
                    namespace=stateful_set.metadata.namespace,
                    labels=dict(template.metadata.labels or {}),
                ),
                spec=V1PersistentVolumeClaimSpec(
                    access_modes=template.spec.access_modes,
                    resources=V1VolumeResourceRequirements(
                        requests=dict(template.spec.resources.requests)
                    ),
                ),
            )
            key = ("PersistentVolumeClaim", stateful_set.metadata.namespace, claim_name)
            self.objects.setdefault(key, claim)


class FakeAppsV1Api:
    """The ``AppsV1Api`` methods the manager calls, served by a ``FakeKubeAPIServer``."""

    def __init__(self, server: FakeKubeAPIServer) -> None:
        self.server = server

    def create_namespaced_deployment(self, namespace: str, body: Any, **kw: Any) -> Any:
        return self.server.create("Deployment", namespace, body, kw)

    def list_namespaced_deployment(self, namespace: str, **kw: Any) -> Any:
        return self.server.list("Deployment", namespace, kw)

    def read_namespaced_deployment(self, name: str, namespace: str, **kw: Any) -> Any:
        return self.server.read("Deployment", namespace, name, kw)

    def delete_namespaced_deployment(self, name: str, namespace: str, **kw: Any) -> Any:
        return self.server.delete("Deployment", namespace, name, kw)

    def patch_namespaced_deployment(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        return self.server.patch("Deployment", namespace, name, body, kw)

    def patch_namespaced_deployment_scale(
        self, name: str, namespace: str, body: Any, **kw: Any
    ) -> Any:
        server = self.server
        server.record("patch", "Deployment/scale", name, copy.deepcopy(body), kw)
        if ("Deployment", namespace, name) not in server.objects:
            raise api_error(404, "Not Found", f'deployments.apps "{name}" not found')
        deployment = server.objects["Deployment", namespace, name]
        deployment.spec.replicas = int(body["spec"]["replicas"])
        server.changed()
        return V1Scale(
            metadata=V1ObjectMeta(name=name, namespace=namespace),
            spec=V1ScaleSpec(replicas=deployment.spec.replicas),
        )

    def create_namespaced_stateful_set(self, namespace: str, body: Any, **kw: Any) -> Any:
        return self.server.create("StatefulSet", namespace, body, kw)

    def list_namespaced_stateful_set(self, namespace: str, **kw: Any) -> Any:
        return self.server.list("StatefulSet", namespace, kw)

    def read_namespaced_stateful_set(self, name: str, namespace: str, **kw: Any) -> Any:
        return self.server.read("StatefulSet", namespace, name, kw)

    def delete_namespaced_stateful_set(self, name: str, namespace: str, **kw: Any) -> Any:
        return self.server.delete("StatefulSet", namespace, name, kw)


class FakeCoreV1Api:
    """The ``CoreV1Api`` methods the manager calls, served by a ``FakeKubeAPIServer``."""

    def __init__(self, server: FakeKubeAPIServer) -> None:
        self.server = server

    # Services, ConfigMaps, pods, volume claims
    def create_namespaced_service(self, namespace: str, body: Any, **kw: Any) -> Any:
        return self.server.create("Service", namespace, body, kw)

    def list_namespaced_service(self, namespace: str, **kw: Any) -> Any:
        return self.server.list("Service", namespace, kw)

    def read_namespaced_service(self, name: str, namespace: str, **kw: Any) -> Any:
        return self.server.read("Service", namespace, name, kw)

    def delete_namespaced_service(self, name: str, namespace: str, **kw: Any) -> Any:
        return self.server.delete("Service", namespace, name, kw)

    def create_namespaced_config_map(self, namespace: str, body: Any, **kw: Any) -> Any:
        return self.server.create("ConfigMap", namespace, body, kw)

    def list_namespaced_config_map(self, namespace: str, **kw: Any) -> Any:
        return self.server.list("ConfigMap", namespace, kw)

    def delete_namespaced_config_map(self, name: str, namespace: str, **kw: Any) -> Any:
        return self.server.delete("ConfigMap", namespace, name, kw)

    def create_namespaced_secret(self, namespace: str, body: Any, **kw: Any) -> Any:
        return self.server.create("Secret", namespace, body, kw)

    def list_namespaced_secret(self, namespace: str, **kw: Any) -> Any:
        return self.server.list("Secret", namespace, kw)

    def read_namespaced_secret(self, name: str, namespace: str, **kw: Any) -> Any:
        return self.server.read("Secret", namespace, name, kw)

    def patch_namespaced_secret(self, name: str, namespace: str, body: Any, **kw: Any) -> Any:
        return self.server.patch("Secret", namespace, name, body, kw)

    def delete_namespaced_secret(self, name: str, namespace: str, **kw: Any) -> Any:
        return self.server.delete("Secret", namespace, name, kw)

    def list_namespaced_pod(self, namespace: str, **kw: Any) -> Any:
        return self.server.list("Pod", namespace, kw)

    def read_namespaced_pod_log(self, name: str, namespace: str, **kw: Any) -> str:
        self.server.record("log", "Pod", name, {k: v for k, v in kw.items() if k[0] != "_"}, kw)
        if ("Pod", namespace, name) not in self.server.objects:
            raise api_error(404, "Not Found", f'pods "{name}" not found')
        return self.server.logs.get(name, "")

    def list_namespaced_persistent_volume_claim(self, namespace: str, **kw: Any) -> Any:
        return self.server.list("PersistentVolumeClaim", namespace, kw)

    def delete_namespaced_persistent_volume_claim(
        self, name: str, namespace: str, **kw: Any
    ) -> Any:
        return self.server.delete("PersistentVolumeClaim", namespace, name, kw)

    # Cluster-wide
    def read_namespace(self, name: str, **kw: Any) -> Any:
        self.server.record("read", "Namespace", name, None, kw)
        if name not in self.server.namespaces:
            raise api_error(404, "Not Found", f'namespaces "{name}" not found')
        return V1Namespace(metadata=V1ObjectMeta(name=name))

    def create_namespace(self, body: Any, **kw: Any) -> Any:
        self.server.record("create", "Namespace", body.metadata.name, copy.deepcopy(body), kw)
        if body.metadata.name in self.server.namespaces:
            raise api_error(409, "Conflict", f'namespaces "{body.metadata.name}" already exists')
        self.server.namespaces.add(body.metadata.name)
        return copy.deepcopy(body)

    def list_node(self, **kw: Any) -> Any:
        self.server.record("list", "Node", "", None, kw)
        return V1NodeList(items=copy.deepcopy(self.server.nodes))
