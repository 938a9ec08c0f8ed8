"""``KubernetesContainerManager``: Redis, both frontends and every model version on Kubernetes.

    from admin import Connection, KubernetesContainerManager

    conn = Connection(KubernetesContainerManager(
        namespace="ml", registry="registry.example.com/team", kube_context="prod"))
    conn.start()

``start()`` builds the frontends' image from ``deploy/docker/`` with the local Docker
engine and pushes it to ``registry`` (or takes ``frontend_image=``), then creates
through the official ``kubernetes`` client (``_k8s_specs`` builds the objects,
``_k8s_status`` reads pods back, ``_k8s_api`` is the only module that calls the API
server): Redis as a StatefulSet with
its append-only file on a PersistentVolumeClaim (or an external ``redis_url``), the
management frontend, and ``query_frontends`` query frontend pods behind one Service,
each with readiness and liveness probes, resource requests and limits. It returns once
they are ready. ``restart_query_frontends()`` restarts those pods as ``kubectl rollout
restart`` does -- one new pod at a time, each old one draining what it accepted before it
goes -- and waits for the rollout.

A model version is a Deployment of model pods. Deploying builds the model's image as
the Docker manager does (named by version and bundle digest), pushes it, and creates the
Deployment that runs it, passing the digest recorded in Redis to its pods;
``set_num_replicas`` patches its replica count, ``stop_models`` deletes it (and its
pods), and ``set_model_version`` is state in Redis that the query frontends follow: no
pod restarts. A version's ``memory_limit`` is its pods' memory limit. A model container
that hits it, or that a query frontend asks to restart (a batch past its timeout, or
ejected for failing), exits, and the kubelet restarts it in its pod: Kubernetes' way to
start the replica afresh (``replica_states`` says how often, and why). Every query
frontend pod reaches every model pod: the model container resolves a headless Service
(``dns+tcp://``) to every query frontend pod, follows it as pods come and go, and
registers with each (docs/kubernetes.md).

Objects carry the label ``schooner.io/cluster=<cluster>``: ``connect()`` finds a running
cluster by it, and ``stop_all()`` deletes that cluster's objects and no others. Redis's
volume claim stays, so state survives ``stop_all()``; ``destroy()`` deletes it too.

The ``kubernetes`` client is an optional dependency (``pip install
'schooner[kubernetes]'``), and building images needs the ``docker`` SDK and an engine;
both are imported when first used. The clients the manager opens then (the API
server's ``ApiClient``, the Docker SDK's client) are closed by ``close()`` (or by leaving
``with KubernetesContainerManager(...) as cm:``, or by closing the ``Connection`` that
holds it); the cluster keeps running.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from admin._files import os_errors
from admin._names import check_name, check_num_replicas, check_version
from admin._progress import wait_for
from admin.container_managers import _k8s_specs as specs
from admin.container_managers import _k8s_status as readback
from admin.container_managers._bundles import (
    digest_of,
    read_model_bundle,
    require_compatible,
    require_digest,
)
from admin.container_managers._docker_engine import ClusterEngine, connect_to_engine
from admin.container_managers._docker_images import (
    DEFAULT_BASE_IMAGE,
    IMAGE_CLUSTER,
    IMAGE_MODEL,
    IMAGE_VERSION,
    ImageBuilder,
    model_image_name,
)
from admin.container_managers._k8s_api import DEFAULT_TIMEOUT, KubeAPI, load_client
from admin.container_managers._k8s_credentials import KubeCredentialStore
from admin.container_managers._k8s_specs import (
    DEFAULT_REDIS_IMAGE,
    MANAGEMENT,
    QUERY,
    REDIS,
    REPLICA,
    KubeSettings,
)
from admin.container_managers._net import absolute_path, check_distinct_ports
from admin.container_managers.base import ContainerManager, ReplicaState
from admin.exceptions import (
    ClusterAlreadyRunningError,
    ClusterNotRunningError,
    ContainerManagerError,
    DeployError,
    InvalidRequestError,
)

if TYPE_CHECKING:
    import docker

_LOG_TAIL: Final = 30
_DEFAULT_QUERY_FRONTENDS: Final = 2

NEEDS_REGISTRY: Final = (
    "Kubernetes runs images from a registry, and this KubernetesContainerManager has none: "
    "pass registry='registry.example.com/team' -- a registry this machine can push to and "
    "the cluster can pull from (for kind or k3s, a local registry: see docs/kubernetes.md)"
)


class KubernetesContainerManager(ContainerManager):
    """Runs a Schooner cluster in one namespace of a Kubernetes cluster.

    ``kube_context`` picks a context of the kubeconfig (``kubeconfig`` or ``KUBECONFIG``,
    else ``~/.kube/config``; in a pod without one, the pod's service account).
    ``registry`` is where model images (and the frontends' image) are pushed and pulled
    from; ``frontend_image`` skips building that one. ``service_type`` (``ClusterIP``,
    ``NodePort`` or ``LoadBalancer``) exposes the query and management Services;
    ``query_addr`` / ``management_addr`` override where this client reaches them (e.g.
    ``"127.0.0.1:1338"`` through ``kubectl port-forward``). ``query_frontends`` is the
    number of query frontend pods (``query_replicas`` is its older name);
    ``drain_timeout`` how long one answers what it accepted after SIGTERM before it exits
    (its pod's termination grace is longer); ``access_log_sample`` (0..1) the share of
    requests its access log records (errors and defaults always are; default: every
    request: docs/observability.md). ``resources`` replaces the
    requests/limits of a role (``redis``, ``management``, ``query``, ``replica``):
    ``{"replica": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {...}}}``.
    ``tls_secret`` names a Secret of type ``kubernetes.io/tls`` in the namespace (``kubectl
    create secret tls NAME --cert=... --key=...``, or cert-manager's): both frontends serve
    HTTPS with it, and ``tls_ca`` is the CA (PEM) the admin client verifies them with,
    else ``$SCHOONER_TLS_CA``, else the system's trust store; the certificate must name
    the address this client dials.
    ``base_image``, ``wheelhouse``, ``build_network_mode`` and ``dockerfiles`` are the
    image-building options of ``DockerContainerManager``. ``apps_api`` / ``core_api``
    replace the client's ``AppsV1Api`` / ``CoreV1Api`` (pre-configured clients, tests),
    and ``docker_client`` the Docker SDK client builds use; the clients given stay the
    caller's: ``close()`` closes only those this manager opened.
    """

    def __init__(
        self,
        cluster_name: str = "default",
        *,
        namespace: str = "schooner",
        registry: str = "",
        kube_context: str | None = None,
        kubeconfig: str | os.PathLike[str] | None = None,
        query_frontends: int | None = None,
        query_replicas: int | None = None,
        drain_timeout: int = specs.DEFAULT_DRAIN_TIMEOUT,
        access_log_sample: float | None = None,
        service_type: str = "ClusterIP",
        query_port: int = 1337,
        management_port: int = 1338,
        query_addr: str | None = None,
        management_addr: str | None = None,
        redis_url: str | None = None,
        key_prefix: str = "schooner",
        redis_image: str = DEFAULT_REDIS_IMAGE,
        redis_storage: str = "1Gi",
        storage_class: str | None = None,
        frontend_image: str | None = None,
        image_pull_secrets: Sequence[str] = (),
        cluster_domain: str = "cluster.local",
        resources: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
        base_image: str = DEFAULT_BASE_IMAGE,
        wheelhouse: str | os.PathLike[str] | None = None,
        build_network_mode: str | None = None,
        dockerfiles: str | os.PathLike[str] | None = None,
        apps_api: Any = None,
        core_api: Any = None,
        docker_client: docker.DockerClient | None = None,
        start_timeout: float = 300.0,
        build_timeout: float = 900.0,
        request_timeout: float = DEFAULT_TIMEOUT,
        tls_secret: str | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if query_frontends is not None and query_replicas not in (None, query_frontends):
            raise InvalidRequestError(
                f"query_frontends={query_frontends!r} and query_replicas={query_replicas!r}: "
                "query_replicas is the older name of query_frontends; pass one of them"
            )
        frontends = query_frontends if query_frontends is not None else query_replicas
        self.settings = KubeSettings(
            cluster_name=check_name(cluster_name, "cluster name"),
            namespace=check_name(namespace, "namespace"),
            query_replicas=_DEFAULT_QUERY_FRONTENDS if frontends is None else frontends,
            drain_timeout=drain_timeout,
            access_log_sample=access_log_sample,
            service_type=service_type,
            query_port=query_port,
            management_port=management_port,
            redis_url=redis_url,
            key_prefix=key_prefix,
            redis_storage=redis_storage,
            storage_class=storage_class,
            image_pull_secrets=tuple(image_pull_secrets),
            cluster_domain=cluster_domain,
            resources=dict(resources or {}),
            tls_secret=tls_secret,
        )
        self.tls = bool(tls_secret)
        self.tls_ca = absolute_path(tls_ca)
        # Equal Service ports collide wherever both are exposed on one address (a node's
        # port, some load balancers, port-forwarding).
        check_distinct_ports(
            {"query_port": query_port, "management_port": management_port},
            "KubernetesContainerManager",
        )
        self.registry = registry.rstrip("/")
        self.kube_context = kube_context
        self.kubeconfig = os.fspath(kubeconfig) if kubeconfig is not None else None
        self.redis_image = redis_image
        self.frontend_image = frontend_image
        self.base_image = base_image
        self.wheelhouse = Path(wheelhouse).expanduser().absolute() if wheelhouse else None
        self.build_network_mode = build_network_mode
        self.dockerfiles = Path(dockerfiles).expanduser().absolute() if dockerfiles else None
        self.start_timeout = start_timeout
        self.build_timeout = build_timeout
        self.request_timeout = request_timeout
        self._overrides = {QUERY: query_addr, MANAGEMENT: management_addr}
        self._addresses: dict[str, str] = {}
        self._admin_token: str | None = None  # read from the cluster once, then kept
        self._given = (apps_api, core_api, docker_client)  # the caller's: never closed here
        self._apps, self._core = apps_api, core_api
        self._api_client: Any = None  # the ApiClient this manager opened, if any
        self._api: KubeAPI | None = None
        self._docker = docker_client
        self._engine: ClusterEngine | None = None

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"KubernetesContainerManager(cluster_name={s.cluster_name!r}, "
            f"namespace={s.namespace!r})"
        )

    @property
    def cluster_name(self) -> str:
        return self.settings.cluster_name

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    @property
    def api(self) -> KubeAPI:
        """The API server's calls, through a client loaded from the kubeconfig on first
        use (unless ``apps_api`` and ``core_api`` were given)."""
        if self._api is None:
            if self._apps is None or self._core is None:
                api_client, apps, core = load_client(self.kube_context, self.kubeconfig)
                self._api_client = api_client
                self._apps = self._apps if self._apps is not None else apps
                self._core = self._core if self._core is not None else core
            self._api = KubeAPI(self._apps, self._core, self.namespace, self.request_timeout)
        return self._api

    @property
    def docker_client(self) -> docker.DockerClient:
        if self._docker is None:
            self._docker = connect_to_engine()
        return self._docker

    def close(self) -> None:
        """Close the clients this manager opened -- the API server's ``ApiClient`` and the
        Docker SDK's client -- but none given to it; the cluster keeps running, and the
        next call opens them again."""
        given_apps, given_core, given_docker = self._given
        if self._api_client is not None:
            self._api_client.close()
            self._api_client = None
            self._apps, self._core, self._api = given_apps, given_core, None
        if self._docker is not None and self._docker is not given_docker:
            self._docker.close()
            self._docker, self._engine = given_docker, None

    @property
    def engine(self) -> ClusterEngine:
        """The local Docker engine, as far as building needs it: it reads (and remembers,
        per image id) the Python runtime of the model-container base."""
        if self._engine is None:
            self._engine = ClusterEngine(self.docker_client, self.cluster_name, stop_timeout=0)
        return self._engine

    @property
    def images(self) -> ImageBuilder:
        return ImageBuilder(
            self.docker_client,
            registry=self.registry,
            base_image=self.base_image,
            network_mode=self.build_network_mode,
            wheelhouse=self.wheelhouse,
            timeout=self.build_timeout,
            push=False,  # pushed by this manager, also when the image was built before
            report=self.report,
            dockerfiles=self.dockerfiles,
        )

    # ------------------------------------------------------------------ addresses

    def get_query_addr(self) -> str:
        return self._address(QUERY)

    def get_management_addr(self) -> str:
        return self._address(MANAGEMENT)

    def _address(self, role: str) -> str:
        return (
            self._overrides[role]
            or self._addresses.get(role)
            or self.settings.in_cluster_address(role)
        )

    def _resolve_addresses(self, *, wait: bool) -> None:
        """Where this client reaches the two Services (a LoadBalancer's address may take
        a while to be assigned: ``wait`` for it)."""
        node = ""
        inside_only = False
        for role in (QUERY, MANAGEMENT):
            if self._overrides[role]:
                continue
            service = self.api.read("Service", self.settings.name(role))
            if service is None:
                raise ClusterNotRunningError(
                    f"the Service {self.settings.name(role)} of Schooner cluster "
                    f"{self.cluster_name!r} is missing: stop_all() and start() it again"
                )
            kind = service.spec.type or "ClusterIP"
            if kind == "NodePort" and not node:
                node = readback.node_address(self.api.nodes())
            netloc = readback.service_netloc(service, node=node)
            if not netloc and wait:
                netloc = self._wait_for_service(role)
            if not netloc:
                raise ContainerManagerError(
                    f"the Service {self.settings.name(role)} ({kind}) has no address this "
                    f"client can reach yet: pass {role}_addr='HOST:PORT'"
                )
            self._addresses[role] = netloc
            inside_only = inside_only or kind == "ClusterIP"
        if inside_only:
            self.report(
                f"the frontends answer inside the cluster at {self.get_query_addr()} and "
                f"{self.get_management_addr()}; from outside it, use service_type='NodePort' "
                "or 'LoadBalancer', or run kubectl -n "
                f"{self.namespace} port-forward svc/{self.settings.name(MANAGEMENT)} "
                f"{self.settings.management_port} and pass management_addr="
                f"'127.0.0.1:{self.settings.management_port}'"
            )

    def _wait_for_service(self, role: str) -> str:
        found = ""

        def assigned() -> bool:
            nonlocal found
            service = self.api.read("Service", self.settings.name(role))
            found = readback.service_netloc(service) if service is not None else ""
            return bool(found)

        self.report(f"waiting for the load balancer of {self.settings.name(role)}")
        wait_for(
            assigned,
            timeout=self.start_timeout,
            on_progress=lambda t: self.report(f"still waiting for a load balancer ({t:.0f} s)"),
        )
        return found

    # ------------------------------------------------------------------ the cluster

    def start_cluster(self) -> None:
        s = self.settings
        running = self._components()
        if running:
            raise ClusterAlreadyRunningError(
                f"Schooner cluster {s.cluster_name!r} is already running in namespace "
                f"{s.namespace} ({', '.join(sorted(running))}): attach to it with "
                "Connection(...).connect(), or stop it first with stop_all()"
            )
        if self.api.ensure_namespace(s.namespace_object()):
            self.report(f"created namespace {s.namespace}")
        # Model Deployments left by a cluster that was not stopped would otherwise serve
        # beside those start() brings back from Redis.
        self._delete_all()
        frontend = self._frontend_image()
        self._admin_token = self._credentials.ensure().admin_token
        try:
            if s.redis_url is None:
                self.api.create(s.redis_service())
                self.api.create(s.redis_stateful_set(self.redis_image))
                self._wait_ready("StatefulSet", REDIS, "Redis")
            self.api.create(s.management_deployment(frontend))
            self.api.create(s.management_service())
            self.api.create(s.query_deployment(frontend))
            self.api.create(s.query_service())
            self.api.create(s.query_rpc_service())
            self._wait_ready("Deployment", MANAGEMENT, "the management frontend")
            self._wait_ready("Deployment", QUERY, "the query frontend")
            self._resolve_addresses(wait=True)
        except BaseException:
            self._delete_all()
            raise
        self.report(
            f"Schooner cluster {s.cluster_name!r} is running in namespace {s.namespace}: "
            f"queries at {self.query_url}, management at {self.management_url}"
        )

    def connect(self) -> None:
        frontends = {
            d.metadata.labels.get(specs.ROLE): d
            for d in self.api.find("Deployment", self.settings.label_selector())
            if d.metadata.labels.get(specs.ROLE) in (MANAGEMENT, QUERY)
        }
        if not frontends:
            raise ClusterNotRunningError(
                f"no Schooner cluster {self.cluster_name!r} runs in namespace "
                f"{self.namespace} (no Deployment labelled {specs.CLUSTER}="
                f"{self.cluster_name}): start one with Connection(KubernetesContainerManager("
                f"{self.cluster_name!r}, namespace={self.namespace!r}, ...)).start(), or "
                "kubectl apply -k deploy/k8s"
            )
        down = [
            role
            for role in (MANAGEMENT, QUERY)
            if role not in frontends or not (frontends[role].status.ready_replicas or 0)
        ]
        if down:
            raise ClusterNotRunningError(
                f"Schooner cluster {self.cluster_name!r} is not ready (no ready "
                f"{' or '.join(down)} frontend pod): see kubectl -n {self.namespace} get pods "
                f"-l {specs.CLUSTER}={self.cluster_name}"
            )
        # HTTPS when the running frontends were started with a certificate.
        containers = frontends[MANAGEMENT].spec.template.spec.containers or []
        self.tls = any(
            str(a).startswith("--tls-certfile") for c in containers for a in c.args or []
        )
        self._resolve_addresses(wait=False)

    def stop_all(self) -> None:
        left = self._delete_all()
        if left:
            raise ContainerManagerError(
                f"could not delete {', '.join(left)}: delete them with kubectl -n "
                f"{self.namespace} delete ... (they carry {specs.CLUSTER}={self.cluster_name})"
            )
        self._addresses.clear()

    def destroy(self) -> None:
        """``stop_all()``, then delete Redis's volume claim (all the cluster's state) and
        the cluster's Secrets."""
        self.stop_all()
        for claim in self.api.find("PersistentVolumeClaim", self.settings.label_selector(REDIS)):
            self.api.delete("PersistentVolumeClaim", claim.metadata.name)
        self._credentials.delete()
        self._admin_token = None

    # ------------------------------------------------------------------ credentials

    @property
    def _credentials(self) -> KubeCredentialStore:
        return KubeCredentialStore(self.api, self.settings)

    def admin_token(self) -> str:
        if self._admin_token is None:
            creds = self._credentials.load()
            if creds is None:
                raise ClusterNotRunningError(
                    f"Schooner cluster {self.cluster_name!r} has no Secret "
                    f"{self.settings.secret_name(specs.ALL_SECRETS)} in namespace "
                    f"{self.namespace}: start it with Connection(KubernetesContainerManager("
                    f"{self.cluster_name!r}, ...)).start(), or make it with "
                    "deploy/k8s/make-secrets.sh before kubectl apply -k deploy/k8s"
                )
            self._admin_token = creds.admin_token
        return self._admin_token

    def rotate_admin_token(self) -> str:
        rotated = self._credentials.rotate_admin_token()
        if rotated is None:
            raise ClusterNotRunningError(
                f"Schooner cluster {self.cluster_name!r} has no credentials in namespace "
                f"{self.namespace}: start it first"
            )
        self._admin_token = rotated.admin_token
        return rotated.admin_token

    def get_logs(self, logging_dir: str | os.PathLike[str]) -> list[str]:
        out_dir = Path(logging_dir)
        written = []
        with os_errors(f"write the logs into {out_dir}"):
            out_dir.mkdir(parents=True, exist_ok=True)
            for pod in self.api.find("Pod", self.settings.label_selector()):
                path = out_dir / f"{readback.pod_name(pod)}.log"
                path.write_text(self.api.pod_log(readback.pod_name(pod)) + "\n", encoding="utf-8")
                written.append(str(path))
        return sorted(written)

    def push_cluster_images(self) -> dict[str, str]:
        """Build and push the images the manifests of ``deploy/k8s`` run; their names."""
        if not self.registry:
            raise ContainerManagerError(NEEDS_REGISTRY)
        images = self.images
        model_container = images.model_container_image()
        frontend = images.frontend_image(model_container)
        for image in (model_container, frontend):
            images.push_image(image)
        return {"model-container": model_container, "frontend": frontend}

    def _components(self) -> list[str]:
        """This cluster's Redis and frontends, as "Kind name"."""
        selector = self.settings.label_selector()
        found = [
            f"Deployment {d.metadata.name}"
            for d in self.api.find("Deployment", selector)
            if d.metadata.labels.get(specs.ROLE) != REPLICA
        ]
        return found + [
            f"StatefulSet {s.metadata.name}" for s in self.api.find("StatefulSet", selector)
        ]

    def _delete_all(self) -> list[str]:
        """Delete the cluster's objects but Redis's volume claim: model versions first,
        then the frontends, then Redis; what could not be deleted."""
        selector = self.settings.label_selector()
        order = {REPLICA: 0, QUERY: 1, MANAGEMENT: 2, REDIS: 3}
        doomed: list[tuple[str, str]] = []
        for kind in ("Deployment", "StatefulSet", "Service"):
            objects = sorted(
                self.api.find(kind, selector),
                key=lambda o: (order.get(o.metadata.labels.get(specs.ROLE), 4), o.metadata.name),
            )
            doomed += [(kind, o.metadata.name) for o in objects]
        left = []
        for kind, name in doomed:
            try:
                self.api.delete(kind, name)
            except ContainerManagerError:
                left.append(f"{kind} {name}")
        return left

    def _frontend_image(self) -> str:
        if self.frontend_image:
            return self.frontend_image
        if not self.registry:
            raise ContainerManagerError(
                f"{NEEDS_REGISTRY}. The frontends' image is built and pushed there too, "
                "unless you pass frontend_image= one built by push_cluster_images()"
            )
        images = self.images
        frontend = images.frontend_image(images.model_container_image())
        images.push_image(frontend)
        return frontend

    def _wait_ready(self, kind: str, role: str, what: str) -> None:
        name = self.settings.name(role)

        def ready() -> bool:
            found = self.api.read(kind, name)
            if found is None:
                raise ContainerManagerError(f"{what} ({kind} {name}) vanished while starting")
            for pod in readback.live(self.api.find("Pod", self.settings.label_selector(role))):
                problem = readback.pod_problem(pod)
                if problem:
                    log = self.api.pod_log(readback.pod_name(pod), tail_lines=_LOG_TAIL)
                    raise ContainerManagerError(
                        f"{what} did not start: pod {readback.pod_name(pod)} {problem}; the end "
                        f"of its log:\n{log}"
                    )
            status = found.status
            return status is not None and (status.ready_replicas or 0) >= 1

        self.report(f"waiting for {what} ({kind} {name})")
        if not wait_for(
            ready,
            timeout=self.start_timeout,
            on_progress=lambda t: self.report(f"still waiting for {what} ({t:.0f} s)"),
        ):
            raise ContainerManagerError(
                f"{what} ({kind} {name}) was not ready within {self.start_timeout:g} s: see "
                f"kubectl -n {self.namespace} describe pods -l "
                f"{self.settings.label_selector(role)}"
            )

    # ------------------------------------------------------------------ models

    def build_model(self, name: str, version: str, bundle_dir: str | os.PathLike[str]) -> str:
        check_name(name)
        check_version(version)
        if not self.registry:
            raise DeployError(f"cannot deploy {name}:{version}: {NEEDS_REGISTRY}")
        info = read_model_bundle(name, version, bundle_dir)
        if self._model_deployments(name, version):
            raise ContainerManagerError(
                f"{name}:{version} already runs in namespace {self.namespace}: deploy under a "
                f"new version, or stop_models({name!r}) first"
            )
        images = self.images
        base = images.model_container_image()
        require_compatible(
            name,
            version,
            info,
            self.engine.image_runtime(base),
            runs_on=f"its image {base} runs",
            fix="Deploy it from a matching environment, or pass "
            "KubernetesContainerManager(base_image=...) a base with that Python",
        )
        digest = digest_of(name, version, bundle_dir)
        labels = {IMAGE_CLUSTER: self.cluster_name, IMAGE_MODEL: name, IMAGE_VERSION: version}
        image = images.model_image(base, name, version, Path(bundle_dir), digest, info.pkgs, labels)
        images.push_image(image, DeployError)
        return digest

    def adopt_image(self, name: str, version: str, image: str) -> str:
        """Tag a prebuilt image (labelled with its bundle digest by the Docker or
        Kubernetes manager that built it) as this version's, and push it."""
        check_name(name)
        check_version(version)
        if not self.registry:
            raise DeployError(f"cannot deploy {name}:{version}: {NEEDS_REGISTRY}")
        images = self.images
        digest = images.adopt_model_image(image, name, version)
        images.push_image(images.model_image_name(name, version, digest), DeployError)
        return digest

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
        check_num_replicas(num_replicas)
        existing = self._model_deployments(name, version)
        if existing:
            for deployment in existing:
                self.api.scale(deployment.metadata.name, num_replicas)
            return
        if num_replicas == 0:
            return
        digest = require_digest(name, version, bundle_sha256)
        self.api.create(
            self.settings.replica_deployment(
                model_image_name(self.registry, name, version, digest),
                name=name,
                version=version,
                input_type=input_type,
                bundle_sha256=digest,
                replicas=num_replicas,
                memory_limit=memory_limit,
            )
        )

    def stop_models(self, name: str, versions: Sequence[str] | None = None) -> None:
        for deployment in self._model_deployments(name):
            if versions is None or deployment.metadata.labels.get(specs.VERSION) in versions:
                self.api.delete("Deployment", deployment.metadata.name, foreground=True)

    def replica_states(self, name: str, version: str) -> list[ReplicaState]:
        s = self.settings
        pods = self.api.find("Pod", s.label_selector(REPLICA, **s.model_labels(name, version)))
        logs = {
            readback.pod_name(pod): self._log_tail(pod)
            for pod in readback.live(pods)
            if readback.pod_problem(pod, model=True)
        }
        return readback.replica_states(pods, logs)

    def restart_query_frontends(self) -> None:
        """Restart the query frontend pods as ``kubectl rollout restart`` does (a new
        ``restartedAt`` annotation on the pod template), and wait for the rollout: the
        Deployment starts one new pod at a time and deletes an old one only once the new
        one is ready; each old pod leaves the Service's endpoints during its preStop wait,
        then drains what it accepted."""
        name = self.settings.name(QUERY)
        if self.api.read("Deployment", name) is None:
            raise ClusterNotRunningError(
                f"no query frontend Deployment {name} in namespace {self.namespace}: start "
                "the cluster first"
            )
        self.api.patch("Deployment", name, specs.restart_patch(readback.now_rfc3339()))
        self.report(f"restarting the query frontend pods (Deployment {name}), one at a time")
        self._wait_rolled_out(name)

    def _wait_rolled_out(self, name: str) -> None:
        """Wait until every pod of Deployment ``name`` runs its current template, ready;
        fail early on a new pod that will not start."""

        def done() -> bool:
            deployment = self.api.read("Deployment", name)
            if deployment is None:
                raise ContainerManagerError(f"Deployment {name} vanished during its rollout")
            for pod in readback.live(self.api.find("Pod", self.settings.label_selector(QUERY))):
                problem = readback.pod_problem(pod)
                if problem:
                    log = self.api.pod_log(readback.pod_name(pod), tail_lines=_LOG_TAIL)
                    raise ContainerManagerError(
                        f"the restart of the query frontends stopped: pod "
                        f"{readback.pod_name(pod)} {problem}; the end of its log:\n{log}"
                    )
            return readback.rolled_out(deployment)

        grace = self.settings.query_grace_s
        timeout = max(self.start_timeout, grace * 2) * max(1, self.settings.query_replicas)
        if not wait_for(
            done,
            timeout=timeout,
            on_progress=lambda t: self.report(
                f"still restarting the query frontend pods ({t:.0f} s)"
            ),
        ):
            raise ContainerManagerError(
                f"the query frontend pods did not all restart within {timeout:g} s: see "
                f"kubectl -n {self.namespace} rollout status deployment/{name}"
            )

    def connections_expected(self, name: str, version: str, num_replicas: int) -> int:
        """Each replica registers once with each query frontend pod."""
        return num_replicas * max(1, len(readback.frontends(self._query_pods())))

    def _query_pods(self) -> list[Any]:
        return self.api.find("Pod", self.settings.label_selector(QUERY))

    def _model_deployments(self, name: str, version: str | None = None) -> list[Any]:
        s = self.settings
        selector = s.label_selector(REPLICA, **s.model_labels(name, version))
        return sorted(self.api.find("Deployment", selector), key=lambda d: d.metadata.name)

    def _log_tail(self, pod: Any) -> str:
        """The end of a model pod's log: of its last run, when it restarted."""
        restarted = any((cs.restart_count or 0) > 0 for cs in (pod.status.container_statuses or []))
        return self.api.pod_log(readback.pod_name(pod), tail_lines=_LOG_TAIL, previous=restarted)
