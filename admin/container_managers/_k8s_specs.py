"""What the Kubernetes manager asks the API server for: object names, labels and specs.

Pure functions of the cluster's settings that build ``kubernetes.client`` model objects
(apps/v1 Deployments and StatefulSets, v1 Services) and read pods back,
with no API call, so that every object can be checked without a cluster. The objects of
a cluster ``<c>`` in its namespace::

    StatefulSet schooner-<c>-redis        Redis, append-only file on a PersistentVolumeClaim
    Service     schooner-<c>-redis        headless: the StatefulSet's pod, port 6379
    Deployment  schooner-<c>-management   the management frontend (one pod)
    Service     schooner-<c>-management   port 1338 (``service_type``)
    Deployment  schooner-<c>-query        the query frontend, ``query_replicas`` pods
    Service     schooner-<c>-query        port 1337 (``service_type``): where apps POST
    Service     schooner-<c>-query-rpc    headless, not-ready pods included: every query
                                          frontend pod's RPC port 7000, for model pods
    Deployment  schooner-<c>-<model>-<version>   one per model version, its replicas
    Secret      schooner-<c>-credentials  every credential, the admin token included:
                                          read by the admin client, mounted by no pod
    Secret      schooner-<c>-frontend-secrets  the frontends' files (``credentials``),
    Secret      schooner-<c>-replica-secrets   the model pods' files, each mounted
                                          read-only at /run/schooner/secrets
    Secret      schooner-<c>-redis-config      redis.conf with ``requirepass``, mounted
                                          by Redis (its password on no command line)

The Secrets are made at the first ``start()`` (or by ``deploy/k8s/make-secrets.sh``
for ``kubectl apply -k``) and kept by ``stop_all()``.

Every object (and pod template) carries the recommended ``app.kubernetes.io/*`` labels
and Schooner's own, which ``connect()``, ``stop_all()`` and the model verbs select on::

    schooner.io/cluster=<c>   schooner.io/role=redis|management|query|replica
    schooner.io/model, schooner.io/version, schooner.io/input-type   (model versions)

A query frontend pod that is deleted (a rolling update, ``restart_query_frontends()``,
scaling in) first waits ``PRE_STOP_S`` in its ``preStop`` hook, still serving, while the
Service's endpoints forget it; then SIGTERM: its ``/healthz`` answers 503, it stops
accepting and answers what it accepted within ``drain_timeout``, and exits. The pod's
``terminationGracePeriodSeconds`` covers both. Its Deployment replaces a pod only once
the new one is ready (maxUnavailable 0, maxSurge 1).

A model pod's container restarts (``restartPolicy: Always``) when the model container
exits: a query frontend asked it to (a batch past its timeout, or ejected: status 75), or
it hit its memory limit (``resources.limits.memory`` from the version's
``memory_limit``: killed as ``OOMKilled``, or status 76 after a ``MemoryError``). That is
Kubernetes' way to start a replica afresh; the kubelet delays a container that restarts
often (10 s, doubling up to 5 min, reset after 10 min up).

Query frontend and model pods carry ``prometheus.io/scrape: "true"``, ``prometheus.io/port``
(1337, 9100) and ``prometheus.io/path: /metrics`` annotations (and ``prometheus.io/scheme:
https`` on a query frontend serving TLS): where Prometheus finds their metrics
(``deploy/prometheus``).

Every pod runs as the images' user (uid 10001) without privileges, so the cluster may
enforce the "restricted" Pod Security Standard. With ``tls_secret`` (a Secret of type
``kubernetes.io/tls``) both frontends serve HTTPS with it, mounted read-only, and their
readiness probes use HTTPS. Images are referenced by content-hashed
tags, hence ``imagePullPolicy: IfNotPresent``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from admin.container_managers._frontend_args import access_log_args, check_access_log_sample
from admin.container_managers._net import check_port
from admin.container_managers.base import memory_size
from admin.exceptions import InvalidRequestError
from management_frontend.state import rules
from management_frontend.state.errors import InvalidValue
from model_container.credentials import SECRETS_DIR_ENV

if TYPE_CHECKING:
    from kubernetes.client import (
        V1Container,
        V1Deployment,
        V1ObjectMeta,
        V1PodSpec,
        V1Secret,
        V1Service,
        V1StatefulSet,
    )

CLUSTER, ROLE = "schooner.io/cluster", "schooner.io/role"
MODEL, VERSION, INPUT_TYPE = "schooner.io/model", "schooner.io/version", "schooner.io/input-type"
REDIS, MANAGEMENT, QUERY, REPLICA = "redis", "management", "query", "replica"
ROLES: Final = (REDIS, MANAGEMENT, QUERY, REPLICA)
CREDENTIALS: Final = "credentials"  # the role label of the cluster's Secrets
COMPONENTS: Final = {
    REDIS: "redis",
    MANAGEMENT: "management-frontend",
    QUERY: "query-frontend",
    REPLICA: "model",
    CREDENTIALS: "credentials",
}
# The Secrets of a cluster (``secret_name``): every credential, and what each mounts.
ALL_SECRETS, FRONTEND_SECRETS, REPLICA_SECRETS, REDIS_CONFIG = (
    "credentials",
    "frontend-secrets",
    "replica-secrets",
    "redis-config",
)
SECRETS_DIR: Final = "/run/schooner/secrets"
REDIS_CONF_DIR: Final = "/run/schooner/redis"
REDIS_CONF: Final = "redis.conf"
# Secret files: readable by the pods' group (fsGroup 10001) and no one else.
SECRET_MODE: Final = 0o440
SERVICE_TYPES: Final = ("ClusterIP", "NodePort", "LoadBalancer")

# Container ports: every pod has its own address, so these never change.
PORTS: Final = {REDIS: 6379, MANAGEMENT: 1338, QUERY: 1337, "rpc": 7000, "metrics": 9100}
USER_ID: Final = 10001  # user "schooner" of the images (deploy/docker)
BUNDLE_DIR: Final = "/opt/schooner/model"
TLS_DIR: Final = "/run/schooner/tls"  # the frontends' TLS Secret: tls.crt and tls.key

DEFAULT_REDIS_IMAGE: Final = "redis:7.2-bookworm"
DEFAULT_RESOURCES: Final[dict[str, dict[str, dict[str, str]]]] = {
    REDIS: {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    MANAGEMENT: {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"memory": "512Mi"}},
    # The query frontend: requests are what the HorizontalPodAutoscaler measures against.
    QUERY: {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    },
    # Per model pod: one model process, connected to every query frontend.
    REPLICA: {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "4Gi"}},
}

# A query frontend's drain: the frontend's --drain-timeout default; the preStop wait before
# SIGTERM (in Python: the image need not have a sleep binary); the grace for the rest.
DEFAULT_DRAIN_TIMEOUT: Final = 30
PRE_STOP_S: Final = 5
EXIT_MARGIN_S: Final = 5
# Changed to restart a Deployment's pods, as `kubectl rollout restart` does.
RESTARTED_AT: Final = "kubectl.kubernetes.io/restartedAt"
# Where Prometheus scrapes a pod (the prometheus.io/* convention that annotation-based
# kubernetes_sd configs and many charts follow; deploy/prometheus/podmonitor.yaml is the
# Prometheus Operator's way). Scrapes need the admin token as a bearer token.
SCRAPE, SCRAPE_PORT, SCRAPE_PATH, SCRAPE_SCHEME = (
    "prometheus.io/scrape",
    "prometheus.io/port",
    "prometheus.io/path",
    "prometheus.io/scheme",
)

_MAX_NAME: Final = 63  # a DNS-1123 label: Service names, and safe for every other kind
_NOT_DNS: Final = re.compile(r"[^a-z0-9-]+")


def dns_label(*parts: str) -> str:
    """``parts`` joined with '-' as a DNS-1123 label: lowercased, other characters made
    '-', and when that changed anything or the result is too long, cut and suffixed with
    a hash of the original, so that distinct parts never share a name."""
    raw = "-".join(parts)
    name = _NOT_DNS.sub("-", raw.lower()).strip("-")
    if name == raw and len(name) <= _MAX_NAME:
        return name
    digest = hashlib.sha256(raw.encode()).hexdigest()[:8]
    return f"{name[: _MAX_NAME - 9].rstrip('-')}-{digest}"


@dataclass(frozen=True, slots=True)
class KubeSettings:
    """Where a cluster lives and how its objects are shaped."""

    cluster_name: str
    namespace: str = "schooner"
    query_replicas: int = 2
    service_type: str = "ClusterIP"  # of the query and management Services
    query_port: int = 1337  # the query Service's port
    management_port: int = 1338  # the management Service's port
    redis_url: str | None = None  # an external Redis; None runs one in the cluster
    key_prefix: str = "schooner"
    redis_storage: str = "1Gi"
    storage_class: str | None = None  # None: the cluster's default StorageClass
    image_pull_secrets: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"  # the cluster's DNS domain (kubelet --cluster-domain)
    tls_secret: str | None = None  # a kubernetes.io/tls Secret: the frontends serve HTTPS
    drain_timeout: int = DEFAULT_DRAIN_TIMEOUT  # seconds a query frontend drains on SIGTERM
    access_log_sample: float | None = None  # the access log's share (None: the default, 1)
    resources: Mapping[str, Mapping[str, Mapping[str, str]]] = field(
        default_factory=lambda: dict(DEFAULT_RESOURCES)
    )

    def __post_init__(self) -> None:
        if self.service_type not in SERVICE_TYPES:
            raise InvalidRequestError(
                f"service_type={self.service_type!r}: use one of {', '.join(SERVICE_TYPES)}"
            )
        if isinstance(self.query_replicas, bool) or not isinstance(self.query_replicas, int):
            raise InvalidRequestError(
                f"query_replicas must be an integer >= 1, got {self.query_replicas!r}"
            )
        if self.query_replicas < 1:
            raise InvalidRequestError(f"query_replicas must be >= 1, got {self.query_replicas}")
        drain = self.drain_timeout
        if isinstance(drain, bool) or not isinstance(drain, int) or drain < 1:
            raise InvalidRequestError(f"drain_timeout must be an integer >= 1, got {drain!r}")
        for f in ("query_port", "management_port"):
            check_port(f, getattr(self, f))
        check_access_log_sample(self.access_log_sample)
        unknown = set(self.resources) - set(ROLES)
        if unknown:
            raise InvalidRequestError(
                f"resources for unknown role(s) {', '.join(sorted(unknown))}: "
                f"use {', '.join(ROLES)}"
            )
        object.__setattr__(self, "resources", {**DEFAULT_RESOURCES, **self.resources})
        object.__setattr__(self, "image_pull_secrets", tuple(self.image_pull_secrets))

    # ------------------------------------------------------------------ names, labels

    def name(self, role: str) -> str:
        """The name of the Deployment/StatefulSet and Service of a cluster component."""
        return dns_label("schooner", self.cluster_name, role)

    @property
    def rpc_service(self) -> str:
        return dns_label("schooner", self.cluster_name, "query-rpc")

    def model_name(self, name: str, version: str) -> str:
        """The Deployment of a model version (its labels, not its name, identify it)."""
        return dns_label("schooner", self.cluster_name, name, version)

    def labels(self, role: str, **extra: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "schooner",
            "app.kubernetes.io/instance": self.cluster_name,
            "app.kubernetes.io/component": COMPONENTS[role],
            "app.kubernetes.io/part-of": "schooner",
            "app.kubernetes.io/managed-by": "schooner",
            **self.selector(role, **extra),
        }

    def selector(self, role: str | None = None, **extra: str) -> dict[str, str]:
        """The labels that pick this cluster's objects (of one role): stable, so they
        are the Deployments' immutable selectors too."""
        out = {CLUSTER: self.cluster_name}
        if role is not None:
            out[ROLE] = role
        return {**out, **extra}

    def label_selector(self, role: str | None = None, **extra: str) -> str:
        """``selector`` as the API's ``labelSelector`` string."""
        return ",".join(f"{k}={v}" for k, v in self.selector(role, **extra).items())

    def secret_name(self, kind: str) -> str:
        return dns_label("schooner", self.cluster_name, kind)

    def secret(self, kind: str, files: Mapping[str, str]) -> V1Secret:
        """The Secret ``kind`` holding ``files`` (name -> text)."""
        from kubernetes.client import V1Secret

        data: dict[str, bytes | str] = {
            name: base64.b64encode(text.strip().encode("utf-8")).decode("ascii")
            for name, text in sorted(files.items())
        }
        meta = self._meta(self.secret_name(kind), CREDENTIALS)
        return V1Secret(api_version="v1", kind="Secret", metadata=meta, type="Opaque", data=data)

    @staticmethod
    def secret_files(secret: Any) -> dict[str, str]:
        """What ``secret`` (read back from the API server) holds, as name -> text."""
        data = getattr(secret, "data", None) or {}
        return {k: base64.b64decode(v).decode("utf-8") for k, v in data.items()}

    def _secret_volume(self, kind: str, name: str = "secrets") -> Any:
        from kubernetes.client import V1SecretVolumeSource, V1Volume

        source = V1SecretVolumeSource(secret_name=self.secret_name(kind), default_mode=SECRET_MODE)
        return V1Volume(name=name, secret=source)

    @staticmethod
    def _secrets_mount(name: str = "secrets", path: str = SECRETS_DIR) -> Any:
        from kubernetes.client import V1VolumeMount

        return V1VolumeMount(name=name, mount_path=path, read_only=True)

    @staticmethod
    def model_labels(name: str, version: str | None = None) -> dict[str, str]:
        return {MODEL: name} if version is None else {MODEL: name, VERSION: version}

    # ------------------------------------------------------------------ addresses

    @property
    def redis_address(self) -> str:
        """Redis as the frontends' pods reach it."""
        if self.redis_url:
            return self.redis_url
        return f"redis://{self.name(REDIS)}:{PORTS[REDIS]}/0"

    @property
    def rpc_frontends(self) -> str:
        """The model pods' ``SCHOONER_FRONTEND``: the headless Service whose A/AAAA
        records are every query frontend pod, which the model container re-resolves and
        registers with each (fully qualified: no search-path lookups every few seconds)."""
        host = f"{self.rpc_service}.{self.namespace}.svc.{self.cluster_domain}"
        return f"dns+tcp://{host}:{PORTS['rpc']}"

    def in_cluster_address(self, role: str) -> str:
        port = self.query_port if role == QUERY else self.management_port
        return f"{self.name(role)}.{self.namespace}.svc:{port}"

    def namespace_object(self) -> Any:
        from kubernetes.client import V1Namespace, V1ObjectMeta

        labels = {"app.kubernetes.io/part-of": "schooner"}
        meta = V1ObjectMeta(name=self.namespace, labels=labels)
        return V1Namespace(api_version="v1", kind="Namespace", metadata=meta)

    # ------------------------------------------------------------------ building blocks

    def _meta(self, name: str, role: str, **extra: str) -> V1ObjectMeta:
        from kubernetes.client import V1ObjectMeta

        return V1ObjectMeta(name=name, namespace=self.namespace, labels=self.labels(role, **extra))

    def _resources(self, role: str) -> Any:
        from kubernetes.client import V1ResourceRequirements

        spec = self.resources[role]
        return V1ResourceRequirements(
            requests=dict(spec.get("requests") or {}) or None,
            limits=dict(spec.get("limits") or {}) or None,
        )

    def _replica_resources(self, memory_limit: int) -> Any:
        """The replica role's resources, with ``memory_limit`` bytes (if any) as the
        memory limit and the memory request no higher."""
        resources = self._resources(REPLICA)
        if memory_limit <= 0:
            return resources
        limits = {**(resources.limits or {}), "memory": memory_size(memory_limit)}
        requests = dict(resources.requests or {})
        try:
            asked = rules.memory_limit(str(requests.get("memory", "")))
        except InvalidValue:
            asked = memory_limit  # a quantity only Kubernetes reads: cap it to be sure
        if "memory" in requests and asked > memory_limit:
            requests["memory"] = memory_size(memory_limit)
        resources.limits, resources.requests = limits, requests or None
        return resources

    @staticmethod
    def _security() -> Any:
        from kubernetes.client import V1Capabilities, V1SecurityContext

        return V1SecurityContext(
            allow_privilege_escalation=False, capabilities=V1Capabilities(drop=["ALL"])
        )

    @property
    def query_grace_s(self) -> int:
        """A query frontend pod's termination grace: preStop, drain, exit."""
        return PRE_STOP_S + self.drain_timeout + EXIT_MARGIN_S

    def _pod_spec(self, containers: Sequence[V1Container], **kw: Any) -> V1PodSpec:
        from kubernetes.client import (
            V1LocalObjectReference,
            V1PodSecurityContext,
            V1PodSpec,
            V1SeccompProfile,
        )

        secrets = [V1LocalObjectReference(name=s) for s in self.image_pull_secrets] or None
        return V1PodSpec(
            containers=list(containers),
            security_context=V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=USER_ID,
                run_as_group=USER_ID,
                fs_group=USER_ID,
                seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
            ),
            # No pod here talks to the API server, and none needs the Services as
            # environment variables.
            automount_service_account_token=False,
            enable_service_links=False,
            image_pull_secrets=secrets,
            **{"termination_grace_period_seconds": 30, **kw},
        )

    def _spread(self, role: str, **extra: str) -> list[Any]:
        """Prefer pods of one role on different nodes: a node lost takes fewer of them."""
        from kubernetes.client import V1LabelSelector, V1TopologySpreadConstraint

        return [
            V1TopologySpreadConstraint(
                max_skew=1,
                topology_key="kubernetes.io/hostname",
                when_unsatisfiable="ScheduleAnyway",
                label_selector=V1LabelSelector(match_labels=self.selector(role, **extra)),
            )
        ]

    def _deployment(
        self,
        name: str,
        role: str,
        replicas: int | None,
        pod: V1PodSpec,
        selector: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> V1Deployment:
        """``selector``: labels that pick its pods besides cluster and role; ``labels``:
        more labels of the Deployment and its pods; ``annotations``: its pods'."""
        from kubernetes.client import (
            V1Deployment,
            V1DeploymentSpec,
            V1DeploymentStrategy,
            V1LabelSelector,
            V1ObjectMeta,
            V1PodTemplateSpec,
            V1RollingUpdateDeployment,
        )

        extra = {**(selector or {}), **(labels or {})}
        return V1Deployment(
            api_version="apps/v1",
            kind="Deployment",
            metadata=self._meta(name, role, **extra),
            spec=V1DeploymentSpec(
                replicas=replicas,
                selector=V1LabelSelector(match_labels=self.selector(role, **(selector or {}))),
                # Replace a pod only once its successor is ready: capacity never drops.
                strategy=V1DeploymentStrategy(
                    type="RollingUpdate",
                    rolling_update=V1RollingUpdateDeployment(max_surge=1, max_unavailable=0),
                ),
                template=V1PodTemplateSpec(
                    metadata=V1ObjectMeta(
                        labels=self.labels(role, **extra),
                        annotations=dict(annotations) if annotations else None,
                    ),
                    spec=pod,
                ),
            ),
        )

    def _service(
        self, name: str, role: str, port: int, port_name: str, *, headless: bool = False
    ) -> V1Service:
        from kubernetes.client import V1Service, V1ServicePort, V1ServiceSpec

        spec = V1ServiceSpec(
            selector=self.selector(role),
            ports=[V1ServicePort(name=port_name, port=port, target_port=port_name)],
        )
        if headless:
            spec.cluster_ip = "None"
            # Model pods dial a query frontend while it is still starting, so that it is
            # ready with its replicas connected; Redis is reached as soon as it listens.
            spec.publish_not_ready_addresses = True
        else:
            spec.type = self.service_type
        return V1Service(
            api_version="v1", kind="Service", metadata=self._meta(name, role), spec=spec
        )

    @staticmethod
    def _env(name: str, value: str | None = None, field_path: str | None = None) -> Any:
        from kubernetes.client import V1EnvVar, V1EnvVarSource, V1ObjectFieldSelector

        if field_path is None:
            return V1EnvVar(name=name, value=value)
        return V1EnvVar(
            name=name,
            value_from=V1EnvVarSource(field_ref=V1ObjectFieldSelector(field_path=field_path)),
        )

    def _serve_tls(self, container: V1Container) -> list[Any]:
        """Make a frontend ``container`` serve HTTPS with ``tls_secret``, mounted read-only
        (group-readable: the pod's fsGroup is the user's group); the pod volumes that takes
        (none without TLS)."""
        from kubernetes.client import V1SecretVolumeSource, V1Volume, V1VolumeMount

        if not self.tls_secret:
            return []
        cert, key = f"{TLS_DIR}/tls.crt", f"{TLS_DIR}/tls.key"
        container.args = [*(container.args or []), "--tls-certfile", cert, "--tls-keyfile", key]
        mount = V1VolumeMount(name="tls", mount_path=TLS_DIR, read_only=True)
        container.volume_mounts = [*(container.volume_mounts or []), mount]
        source = V1SecretVolumeSource(secret_name=self.tls_secret, default_mode=0o440)
        return [V1Volume(name="tls", secret=source)]

    @staticmethod
    def scrape_annotations(port: int, *, https: bool = False) -> dict[str, str]:
        """The ``prometheus.io/*`` annotations of a pod serving ``/metrics`` on ``port``."""
        out = {SCRAPE: "true", SCRAPE_PORT: str(port), SCRAPE_PATH: "/metrics"}
        if https:
            out[SCRAPE_SCHEME] = "https"
        return out

    def _http_probes(self, port_name: str) -> dict[str, Any]:
        """Ready when ``/healthz`` answers; alive while the port accepts connections (a
        frontend waiting for Redis is not ready, but restarting it would not help)."""
        from kubernetes.client import V1HTTPGetAction, V1Probe, V1TCPSocketAction

        return {
            "readiness_probe": V1Probe(
                http_get=V1HTTPGetAction(
                    path="/healthz", port=port_name, scheme="HTTPS" if self.tls_secret else None
                ),
                period_seconds=5,
                timeout_seconds=2,
                failure_threshold=3,
            ),
            "liveness_probe": V1Probe(
                tcp_socket=V1TCPSocketAction(port=port_name),
                initial_delay_seconds=10,
                period_seconds=10,
                timeout_seconds=2,
                failure_threshold=6,
            ),
        }

    # ------------------------------------------------------------------ Redis

    def redis_service(self) -> V1Service:
        return self._service(self.name(REDIS), REDIS, PORTS[REDIS], "redis", headless=True)

    def redis_stateful_set(self, image: str) -> V1StatefulSet:
        from kubernetes.client import (
            V1Container,
            V1ContainerPort,
            V1ExecAction,
            V1LabelSelector,
            V1ObjectMeta,
            V1PersistentVolumeClaim,
            V1PersistentVolumeClaimSpec,
            V1PodTemplateSpec,
            V1Probe,
            V1StatefulSet,
            V1StatefulSetPersistentVolumeClaimRetentionPolicy,
            V1StatefulSetSpec,
            V1TCPSocketAction,
            V1VolumeMount,
            V1VolumeResourceRequirements,
        )

        name = self.name(REDIS)
        container = V1Container(
            name="redis",
            image=image,
            image_pull_policy="IfNotPresent",
            # Append-only file on, RDB snapshots off: every change is on disk within a
            # second, and the SIGTERM of a pod's deletion flushes the rest.
            # First, redis.conf from the Secret: requirepass, on no command line.
            command=[
                *("redis-server", f"{REDIS_CONF_DIR}/{REDIS_CONF}"),
                *("--port", str(PORTS[REDIS]), "--bind", "0.0.0.0"),
                *("--dir", "/data", "--appendonly", "yes", "--save", ""),
            ],
            ports=[V1ContainerPort(name="redis", container_port=PORTS[REDIS])],
            # Ready once it answers; NOAUTH is its answer to a client without the password.
            readiness_probe=V1Probe(
                _exec=V1ExecAction(command=["sh", "-c", "redis-cli ping | grep -qE 'PONG|NOAUTH'"]),
                period_seconds=5,
                timeout_seconds=2,
            ),
            liveness_probe=V1Probe(
                tcp_socket=V1TCPSocketAction(port="redis"),
                initial_delay_seconds=10,
                period_seconds=10,
                timeout_seconds=2,
                failure_threshold=6,
            ),
            resources=self._resources(REDIS),
            security_context=self._security(),
            volume_mounts=[
                V1VolumeMount(name="data", mount_path="/data"),
                self._secrets_mount("redis-config", REDIS_CONF_DIR),
            ],
        )
        claim = V1PersistentVolumeClaim(
            metadata=V1ObjectMeta(name="data", labels=self.labels(REDIS)),
            spec=V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                resources=V1VolumeResourceRequirements(requests={"storage": self.redis_storage}),
                storage_class_name=self.storage_class,
            ),
        )
        return V1StatefulSet(
            api_version="apps/v1",
            kind="StatefulSet",
            metadata=self._meta(name, REDIS),
            spec=V1StatefulSetSpec(
                service_name=name,
                replicas=1,
                selector=V1LabelSelector(match_labels=self.selector(REDIS)),
                template=V1PodTemplateSpec(
                    metadata=V1ObjectMeta(labels=self.labels(REDIS)),
                    spec=self._pod_spec(
                        [container], volumes=[self._secret_volume(REDIS_CONFIG, "redis-config")]
                    ),
                ),
                volume_claim_templates=[claim],
                # The state outlives the StatefulSet: stop_all() keeps it, destroy() not.
                persistent_volume_claim_retention_policy=(
                    V1StatefulSetPersistentVolumeClaimRetentionPolicy(
                        when_deleted="Retain", when_scaled="Retain"
                    )
                ),
            ),
        )

    # ------------------------------------------------------------------ frontends

    def management_service(self) -> V1Service:
        return self._service(self.name(MANAGEMENT), MANAGEMENT, self.management_port, "http")

    def management_deployment(self, image: str) -> V1Deployment:
        from kubernetes.client import V1Container, V1ContainerPort

        container = V1Container(
            name="management-frontend",
            image=image,
            image_pull_policy="IfNotPresent",
            command=["python", "-m", "management_frontend"],
            args=[
                *("--redis-url", self.redis_address, "--key-prefix", self.key_prefix),
                *("--host", "0.0.0.0", "--port", str(PORTS[MANAGEMENT])),
            ],
            env=[self._env(SECRETS_DIR_ENV, SECRETS_DIR)],
            ports=[V1ContainerPort(name="http", container_port=PORTS[MANAGEMENT])],
            resources=self._resources(MANAGEMENT),
            security_context=self._security(),
            volume_mounts=[self._secrets_mount()],
            **self._http_probes("http"),
        )
        pod = self._pod_spec(
            [container],
            volumes=[self._secret_volume(FRONTEND_SECRETS), *self._serve_tls(container)],
        )
        return self._deployment(self.name(MANAGEMENT), MANAGEMENT, 1, pod)

    def query_service(self) -> V1Service:
        return self._service(self.name(QUERY), QUERY, self.query_port, "http")

    def query_rpc_service(self) -> V1Service:
        return self._service(self.rpc_service, QUERY, PORTS["rpc"], "rpc", headless=True)

    def query_deployment(self, image: str, *, autoscaled: bool = False) -> V1Deployment:
        """``query_replicas`` pods; ``autoscaled`` leaves the count unset, to the
        HorizontalPodAutoscaler of deploy/k8s (which ``kubectl apply`` would otherwise
        reset at every apply)."""
        from kubernetes.client import (
            V1Container,
            V1ContainerPort,
            V1ExecAction,
            V1Lifecycle,
            V1LifecycleHandler,
        )

        drain = []
        if self.drain_timeout != DEFAULT_DRAIN_TIMEOUT:
            drain = ["--drain-timeout", str(self.drain_timeout)]
        container = V1Container(
            name="query-frontend",
            image=image,
            image_pull_policy="IfNotPresent",
            command=["python", "-m", "query_frontend"],
            args=[
                *("--redis-url", self.redis_address, "--key-prefix", self.key_prefix),
                *("--host", "0.0.0.0", "--port", str(PORTS[QUERY])),
                *("--rpc-host", "0.0.0.0", "--rpc-port", str(PORTS["rpc"])),
                *drain,
                *access_log_args(self.access_log_sample),
            ],
            # Each pod names itself in the replica records it keeps in Redis by its own
            # name: distinct across pods, and in `kubectl get pods`.
            env=[
                self._env("SCHOONER_FRONTEND_ID", field_path="metadata.name"),
                self._env(SECRETS_DIR_ENV, SECRETS_DIR),
            ],
            ports=[
                V1ContainerPort(name="http", container_port=PORTS[QUERY]),
                V1ContainerPort(name="rpc", container_port=PORTS["rpc"]),
            ],
            resources=self._resources(QUERY),
            security_context=self._security(),
            volume_mounts=[self._secrets_mount()],
            # Keep serving while the Service's endpoints forget this pod, then SIGTERM:
            # the frontend drains. Python's sleep: the image needs no sleep binary.
            lifecycle=V1Lifecycle(
                pre_stop=V1LifecycleHandler(
                    _exec=V1ExecAction(
                        command=["python", "-c", f"import time; time.sleep({PRE_STOP_S})"]
                    )
                )
            ),
            **self._http_probes("http"),
        )
        pod = self._pod_spec(
            [container],
            topology_spread_constraints=self._spread(QUERY),
            volumes=[self._secret_volume(FRONTEND_SECRETS), *self._serve_tls(container)],
            termination_grace_period_seconds=self.query_grace_s,
        )
        count = None if autoscaled else self.query_replicas
        scrape = self.scrape_annotations(PORTS[QUERY], https=bool(self.tls_secret))
        return self._deployment(self.name(QUERY), QUERY, count, pod, annotations=scrape)

    # ------------------------------------------------------------------ model versions

    def replica_deployment(
        self,
        image: str,
        *,
        name: str,
        version: str,
        input_type: str,
        bundle_sha256: str,
        replicas: int,
        memory_limit: int = 0,
    ) -> V1Deployment:
        """The pods of a model version: each runs the image's model container, which
        checks the bundle in the image against ``bundle_sha256`` (recorded in Redis),
        finds every query frontend pod through the headless RPC Service and registers
        with each, as replica ``<pod name>``. ``memory_limit`` (bytes; 0: the role's
        resources) is the container's memory limit, and caps its request."""
        from kubernetes.client import V1Container, V1ContainerPort, V1Probe, V1TCPSocketAction

        model = self.model_labels(name, version)
        container = V1Container(
            name="model",
            image=image,
            image_pull_policy="IfNotPresent",
            command=["python", "-m", "model_container"],
            env=[
                self._env("SCHOONER_BUNDLE", BUNDLE_DIR),
                self._env("SCHOONER_BUNDLE_SHA256", bundle_sha256),
                self._env("SCHOONER_MODEL_NAME", name),
                self._env("SCHOONER_MODEL_VERSION", version),
                self._env("SCHOONER_INPUT_TYPE", input_type),
                self._env("SCHOONER_REPLICA_ID", field_path="metadata.name"),
                self._env("SCHOONER_FRONTEND", self.rpc_frontends),
                self._env("SCHOONER_METRICS_HOST", "0.0.0.0"),
                self._env("SCHOONER_METRICS_PORT", str(PORTS["metrics"])),
                self._env(SECRETS_DIR_ENV, SECRETS_DIR),
            ],
            ports=[V1ContainerPort(name="metrics", container_port=PORTS["metrics"])],
            # The model container listens here once its model is loaded. No liveness
            # probe: the metrics port has no unauthenticated health check, and the kernel
            # accepts its TCP connections even while the process hangs. A replica that
            # hangs or fails is restarted from inside instead: its query frontend asks it
            # to exit (a batch past its timeout, or ejected), its watchdog ends a batch
            # that holds the interpreter, and the container restarts.
            readiness_probe=V1Probe(
                tcp_socket=V1TCPSocketAction(port="metrics"), period_seconds=5, timeout_seconds=2
            ),
            resources=self._replica_resources(memory_limit),
            security_context=self._security(),
            volume_mounts=[self._secrets_mount()],
        )
        pod = self._pod_spec(
            [container],
            topology_spread_constraints=self._spread(REPLICA, **model),
            volumes=[self._secret_volume(REPLICA_SECRETS)],
        )
        return self._deployment(
            self.model_name(name, version),
            REPLICA,
            replicas,
            pod,
            selector=model,
            labels={INPUT_TYPE: input_type},
            annotations=self.scrape_annotations(PORTS["metrics"]),
        )


def restart_patch(when: str) -> dict[str, Any]:
    """The merge patch that restarts a Deployment's pods, as ``kubectl rollout restart``
    writes it: a new ``restartedAt`` annotation (an RFC 3339 time) on the pod template."""
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: when}}}}}


def to_json(obj: Any) -> Any:
    """A model object as the API server's JSON (camelCase keys, no nulls)."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]
