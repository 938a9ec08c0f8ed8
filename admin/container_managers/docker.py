"""``DockerContainerManager``: Redis, both frontends and every model replica as containers.

    from admin import Connection, DockerContainerManager

    conn = Connection(DockerContainerManager("prod"))        # a user-defined network
    conn = Connection(DockerContainerManager("ci", network_mode="host"))

``start()`` builds what is missing of the cluster's images from ``deploy/docker/`` (see
``_docker_images``: Redis, the model-container base, the frontends), then runs Redis
with its data in a named volume, and the management and query frontends. The first
start generates the cluster's credentials (admin token, Redis password, RPC keys) and
keeps them in named volumes (``_docker_credentials``) that every later start reuses. Deploying a
model builds an image ``FROM`` the model-container base with the model's
``pkgs_to_install`` and its bundle, streaming the build's output as progress, and runs
its replicas from it: the image is named by the model's version and bundle digest, and
each replica is given the digest recorded in Redis, which the bundle in the image must
match. Containers carry labels (``_docker_specs``): ``connect()`` finds
a running cluster by them, and ``stop_all()`` removes this cluster's containers and no
others (the Redis and credential volumes stay: state persists until ``destroy()``).

Every container restarts ``unless-stopped``. A replica that dies comes back and
registers again with the query frontends; meanwhile its queries go to other replicas or
get the default. So does a replica that exits because a query frontend asked it to (a
batch past its timeout, or ejected for failing: status 75) or because it hit its memory
limit (``memory_limit`` of the version: ``mem_limit``; killed by the kernel, or status 76
after a ``MemoryError``): ``replica_states`` reports its restarts and why. A replica that
cannot load its model (exit status 2 at every start) is reported with its log by
``replica_states``, which fails the deploy.

``query_frontends=N`` runs N query frontends on the one query port (``SO_REUSEPORT``),
each with its own RPC port (``rpc_port + i``), every replica connected to each: one that
dies loses only the queries it held, while the others serve. ``restart_query_frontends()``
restarts them one at a time, each draining what it accepted (``drain_timeout``) and
serving again before the next goes.

The ``docker`` SDK is an optional dependency (``pip install 'schooner[docker]'``); it is
imported when the manager first talks to the engine. The manager opens its SDK client
then, and ``close()`` (or leaving ``with DockerContainerManager(...) as cm:``, or closing
the ``Connection`` that holds it) closes it again; the containers keep running.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from admin._files import os_errors
from admin._http import JSONClient
from admin._names import check_name, check_num_replicas, check_version
from admin._progress import wait_for
from admin.container_managers import _docker_specs as specs
from admin.container_managers._bundles import (
    digest_of,
    read_model_bundle,
    require_compatible,
    require_digest,
)
from admin.container_managers._docker_credentials import DockerCredentialStore
from admin.container_managers._docker_engine import (
    ClusterEngine,
    connect_to_engine,
    container_name,
    container_role,
    engine_errors,
    log_tail,
)
from admin.container_managers._docker_images import (
    DEFAULT_BASE_IMAGE,
    IMAGE_CLUSTER,
    IMAGE_MODEL,
    IMAGE_VERSION,
    ImageBuilder,
)
from admin.container_managers._docker_specs import (
    MANAGEMENT,
    QUERY,
    REDIS,
    REPLICA,
    ClusterSettings,
)
from admin.container_managers._net import (
    absolute_path,
    check_distinct_ports,
    free_port,
    healthz_check,
    netloc,
    require_ports_free,
    tls_files,
)
from admin.container_managers._scrape_targets import (
    docker_groups,
    docker_state_dir,
    targets_path,
    write_targets,
    write_token,
)
from admin.container_managers.base import ContainerManager, ReplicaState, new_replica_ids
from admin.exceptions import (
    ClusterAlreadyRunningError,
    ClusterNotRunningError,
    ContainerManagerError,
    SchoonerError,
    TLSVerificationError,
)

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

_ALIVE: Final = ("running", "restarting", "created", "paused")


class DockerContainerManager(ContainerManager):
    """Runs a Schooner cluster as containers of one Docker engine.

    ``network_mode=None`` puts the containers on the user-defined network
    ``docker_network`` (default ``schooner-<cluster>``, created when missing), where
    they find each other by name, and publishes the frontends' ports on ``host``;
    ``network_mode="host"`` runs them in the host's network stack. ``registry``
    prefixes every image name (``push_images`` pushes what is built). ``base_image`` is
    the Python the images are built ``FROM``; ``wheelhouse``, a directory of wheels,
    makes builds install from it alone; ``dockerfiles`` replaces ``deploy/docker``.
    ``extra_container_kwargs`` are passed to every ``containers.run`` (resource limits,
    for example). ``build_timeout`` bounds the engine's silence during a build.

    ``query_frontends`` query frontend containers share the query port, each with RPC
    port ``rpc_port + i`` (so ``rpc_port`` .. ``rpc_port + query_frontends - 1`` are
    taken). ``drain_timeout`` is how long a query frontend answers what it accepted after
    SIGTERM (``docker stop``, ``restart_query_frontends()``) before it exits.
    ``access_log_sample`` (0..1) is the share of requests the frontends' access log
    records (errors and defaults always are; default: every request:
    docs/observability.md).

    ``tls_certfile``/``tls_keyfile`` (PEM files on this host, both or neither) are mounted
    read-only into both frontends, which then serve HTTPS: the containers run as uid
    10001, which must be able to read the key (``chgrp 10001 key.pem; chmod 0640
    key.pem``, or an ACL). ``tls_ca`` is the CA (PEM) the admin client verifies them with,
    else ``$SCHOONER_TLS_CA``, else the system's trust store.

    ``docker_client`` is an SDK client to use instead of one made from ``DOCKER_HOST``;
    it stays the caller's: ``close()`` closes only a client this manager opened.
    """

    def __init__(
        self,
        cluster_name: str = "default",
        *,
        network_mode: str | None = None,
        docker_network: str | None = None,
        host: str = "127.0.0.1",
        query_port: int = 1337,
        management_port: int = 1338,
        rpc_port: int = 7000,
        redis_port: int = 6379,
        redis_url: str | None = None,
        key_prefix: str = "schooner",
        registry: str = "",
        push_images: bool = False,
        base_image: str = DEFAULT_BASE_IMAGE,
        redis_image: str | None = None,
        wheelhouse: str | os.PathLike[str] | None = None,
        build_network_mode: str | None = None,
        dockerfiles: str | os.PathLike[str] | None = None,
        extra_container_kwargs: Mapping[str, Any] | None = None,
        docker_client: docker.DockerClient | None = None,
        start_timeout: float = 60.0,
        build_timeout: float = 900.0,
        stop_timeout: float = 10.0,
        tls_certfile: str | os.PathLike[str] | None = None,
        tls_keyfile: str | os.PathLike[str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        query_frontends: int = 1,
        drain_timeout: int = specs.DEFAULT_DRAIN_TIMEOUT,
        access_log_sample: float | None = None,
    ) -> None:
        super().__init__()
        certfile, keyfile = tls_files(tls_certfile, tls_keyfile)
        self.settings = ClusterSettings(
            cluster_name=check_name(cluster_name, "cluster name"),
            network_mode=network_mode or specs.NETWORK_MODE,
            network=docker_network or "",
            host=host,
            query_port=query_port,
            management_port=management_port,
            rpc_port=rpc_port,
            redis_port=redis_port,
            redis_url=redis_url,
            key_prefix=key_prefix,
            tls_certfile=certfile,
            tls_keyfile=keyfile,
            query_frontends=query_frontends,
            drain_timeout=drain_timeout,
            access_log_sample=access_log_sample,
        )
        self.tls = self.settings.tls
        self.tls_ca = absolute_path(tls_ca)
        self._check_distinct_ports()
        self.registry = registry
        self.push_images = push_images
        self.base_image = base_image
        self.redis_image = redis_image
        self.wheelhouse = Path(wheelhouse).expanduser().absolute() if wheelhouse else None
        # Builds reach the package index through the host's network when the containers
        # do (the engine's default bridge may not exist then).
        self.build_network_mode = build_network_mode or (
            "host" if self.settings.host_mode else None
        )
        self.dockerfiles = Path(dockerfiles).expanduser().absolute() if dockerfiles else None
        self.extra_container_kwargs = dict(extra_container_kwargs or {})
        self.start_timeout = start_timeout
        self.build_timeout = build_timeout
        self.stop_timeout = stop_timeout
        self._docker = docker_client
        self._owns_client = False  # whether self._docker was opened here (and closes here)
        self._engine: ClusterEngine | None = None
        self._admin_token: str | None = None  # read from the cluster once, then kept

    def _check_distinct_ports(self) -> None:
        """Refuse two servers of the cluster on one port (``InvalidRequestError``)."""
        s = self.settings
        check_distinct_ports(
            {
                "query_port": s.query_port,
                "management_port": s.management_port,
                "rpc_port": s.rpc_port,
                # Only a Redis this manager runs binds redis_port.
                "redis_port": None if s.redis_url else s.redis_port,
                # Each further query frontend has the next RPC port.
                **{f"rpc_port + {i}": s.rpc_port + i for i in range(1, s.query_frontends)},
            },
            "DockerContainerManager",
        )

    def __repr__(self) -> str:
        s = self.settings
        where = "host network" if s.host_mode else f"network {s.network!r}"
        return f"DockerContainerManager(cluster_name={s.cluster_name!r}, {where})"

    @property
    def cluster_name(self) -> str:
        return self.settings.cluster_name

    @property
    def client(self) -> docker.DockerClient:
        """The SDK client, connected to the engine on first use."""
        if self._docker is None:
            self._docker = connect_to_engine()
            self._owns_client = True
        return self._docker

    def close(self) -> None:
        """Close the SDK client this manager opened (a ``docker_client`` given to it is
        left open); the cluster keeps running, and the next call connects again."""
        if self._owns_client and self._docker is not None:
            self._docker.close()
            self._docker, self._engine = None, None
        self._owns_client = False

    @property
    def engine(self) -> ClusterEngine:
        if self._engine is None or self._engine.cluster_name != self.cluster_name:
            self._engine = ClusterEngine(
                self.client,
                self.cluster_name,
                stop_timeout=self.stop_timeout,
                extra_run_kwargs=self.extra_container_kwargs,
            )
        return self._engine

    @property
    def images(self) -> ImageBuilder:
        return ImageBuilder(
            self.client,
            registry=self.registry,
            base_image=self.base_image,
            network_mode=self.build_network_mode,
            wheelhouse=self.wheelhouse,
            timeout=self.build_timeout,
            push=self.push_images,
            report=self.report,
            dockerfiles=self.dockerfiles,
        )

    # ------------------------------------------------------------------ addresses

    def get_query_addr(self) -> str:
        return netloc(self.settings.connect_host, self.settings.query_port)

    def get_management_addr(self) -> str:
        return netloc(self.settings.connect_host, self.settings.management_port)

    # ------------------------------------------------------------------ the cluster

    def start_cluster(self) -> None:
        s = self.settings
        mine = self.engine.containers()
        running = [
            c
            for c in mine
            if container_role(c) != REPLICA and c.status in ("running", "restarting")
        ]
        if running:
            raise ClusterAlreadyRunningError(
                f"Schooner cluster {s.cluster_name!r} is already running (containers "
                f"{', '.join(sorted(container_name(c) for c in running))}): attach to it with "
                "Connection(...).connect(), or stop it first with stop_all()"
            )
        # Replicas left by a cluster that crashed would otherwise join the new one beside
        # the replicas start() relaunches; stopped frontends are made anew.
        self.engine.remove(mine)
        redis_image = None
        if s.redis_url is None:
            redis_image = self.redis_image or self.images.redis_image()
        model_container = self.images.model_container_image()
        frontend = self.images.frontend_image(model_container)
        if s.host_mode:  # after the builds, which may take minutes
            self._check_ports_free()
        if not s.host_mode and self.engine.ensure_network(s.network):
            self.report(f"created Docker network {s.network}")
        creds = self._credentials(lambda: model_container).ensure()
        self._admin_token = creds.admin_token
        try:
            if redis_image is not None:
                self.engine.ensure_volume(s.volume)
                spec = s.redis_spec(redis_image, own_image=self.redis_image is None)
                redis = self.engine.run(spec)
                self._wait_ready(redis, "Redis", lambda: self._redis_ping(redis))
            management = self.engine.run(s.with_tls(s.management_spec(frontend)))
            if not s.host_mode:
                self.engine.run(s.query_net_spec(frontend))
            queries = [
                self.engine.run(s.with_tls(s.query_spec(frontend, i)))
                for i in range(s.query_frontends)
            ]
            verify = self.tls_verify()
            self._wait_ready(
                management, "the management frontend", healthz_check(self.management_url, verify)
            )
            for i, query in enumerate(queries):
                self._wait_ready(query, _frontend_what(i), self._serves(s.frontend_id(i)))
        except BaseException:
            self.engine.remove(self.engine.containers())
            raise
        self._update_scrape_targets()
        self.report(
            f"Schooner cluster {s.cluster_name!r} is running in Docker: queries at "
            f"{self.query_url}, management at {self.management_url}"
        )

    def connect(self) -> None:
        """Attach to the running cluster. Query frontends cut off from the network (its
        holder restarted after them) are restarted into the new one first."""
        mine = self.engine.containers()
        frontends = {container_role(c): c for c in mine if container_role(c) in (MANAGEMENT, QUERY)}
        if not frontends:
            raise ClusterNotRunningError(
                f"no Schooner cluster {self.cluster_name!r} runs in Docker (no container "
                f"labelled {specs.CLUSTER}={self.cluster_name}): start one with "
                f"Connection(DockerContainerManager({self.cluster_name!r})).start()"
            )
        down = [
            r
            for r in (MANAGEMENT, QUERY)
            if not any(c.status == "running" for c in mine if container_role(c) == r)
        ]
        if down:
            raise ClusterNotRunningError(
                f"Schooner cluster {self.cluster_name!r} is not running ({' and '.join(down)} "
                "frontend down): restart it with Connection(...).stop_all() then start(); "
                "apps, models and replicas come back from Redis"
            )
        label = frontends[QUERY].labels.get(specs.SETTINGS, "")
        self.settings = self.settings.adopt(label, container_name(frontends[QUERY]))
        self.tls = self.settings.tls
        self._reattach_query_frontends(mine)

    def _reattach_query_frontends(self, mine: Sequence[Container]) -> None:
        """Restart the query frontends that started before their network holder last did
        (network mode): the holder's restart left them without a network."""
        holders = [c for c in mine if container_role(c) == specs.QUERY_NET]
        if self.settings.host_mode or not holders:
            return
        holder = holders[0]
        if holder.status != "running":
            raise ClusterNotRunningError(
                f"the query frontends of Schooner cluster {self.cluster_name!r} have no "
                f"network: its holder {container_name(holder)} is {holder.status}; restart "
                "the cluster with Connection(...).stop_all() then start()"
            )
        for c in mine:
            if container_role(c) == QUERY and specs.cut_off(holder.attrs, c.attrs):
                self.report(
                    f"restarting {container_name(c)}: its network holder "
                    f"{container_name(holder)} restarted after it"
                )
                try:
                    c.restart(timeout=1)  # no network, nothing to drain
                except engine_errors() as exc:
                    raise ContainerManagerError(
                        f"cannot restart {container_name(c)} (cut off from the network by a "
                        f"restart of {container_name(holder)}): {exc}; restart it with docker "
                        "restart"
                    ) from exc

    def restart_query_frontends(self) -> None:
        """Restart the query frontends one at a time: each drains what it accepted
        (SIGTERM; up to ``drain_timeout`` seconds) while the others serve, and serves
        again, with the replicas it had, before the next one goes. With one frontend the
        query port is closed while it restarts."""
        s = self.settings
        mine = self.engine.containers()
        if not any(container_role(c) == QUERY for c in mine):
            raise ClusterNotRunningError(
                f"no query frontend of Schooner cluster {self.cluster_name!r} runs in Docker: "
                "start the cluster first"
            )
        self._reattach_query_frontends(mine)
        queries = sorted(
            (c for c in mine if container_role(c) == QUERY),
            key=lambda c: int(c.labels.get(specs.FRONTEND_INDEX, "0") or 0),
        )
        for c in queries:
            index = int(c.labels.get(specs.FRONTEND_INDEX, "0") or 0)
            frontend_id, what = s.frontend_id(index), _frontend_what(index)
            before = self._replicas_of(frontend_id)
            self.report(
                f"restarting {what} ({container_name(c)}): draining for up to {s.drain_timeout} s"
            )
            try:
                c.restart(timeout=s.query_stop_timeout)
            except engine_errors() as exc:
                raise ContainerManagerError(
                    f"cannot restart {what} ({container_name(c)}): {exc}"
                ) from exc
            self._wait_ready(c, what, self._serves(frontend_id, before))

    def _frontend_status(self, frontend_id: str) -> dict[str, Any] | None:
        """``/status`` of the query frontend ``frontend_id``, if the one that answers one
        new connection to the shared query port is that one (None otherwise)."""
        with JSONClient(
            self.query_url, timeout=2.0, verify=self.tls_verify(), token=self.admin_token()
        ) as client:
            try:
                body = client.get_object("/status")
            except TLSVerificationError:
                raise
            except SchoonerError:
                return None
        return body if body.get("frontend") == frontend_id else None

    def _replicas_of(self, frontend_id: str, tries: int = 32) -> set[str]:
        """The replicas (``model:version/replica``) query frontend ``frontend_id`` has
        connected; empty if ``tries`` connections never reached it."""
        for _ in range(tries):
            body = self._frontend_status(frontend_id)
            if body is not None:
                return specs.status_replicas(body)
        return set()

    def _serves(self, frontend_id: str, replicas: Collection[str] = ()) -> Callable[[], bool]:
        """A check that query frontend ``frontend_id`` answers on the query port, has
        loaded its configuration, and has ``replicas`` connected again."""

        def check() -> bool:
            body = self._frontend_status(frontend_id)
            return (
                body is not None
                and bool(body.get("ready"))
                and set(replicas) <= specs.status_replicas(body)
            )

        return check

    def stop_all(self) -> None:
        left = self.engine.remove(self.engine.containers())
        if left:
            raise ContainerManagerError(
                f"could not remove containers {', '.join(left)}: remove them by hand "
                "(docker rm -f NAME)"
            )
        if not self.settings.host_mode:
            self.engine.remove_network(self.settings.network)
        self._update_scrape_targets(running=False)

    def destroy(self) -> None:
        """``stop_all()``, then delete the cluster's Redis volume (all its state), its
        credential volumes, its network, the model images built for it and its
        Prometheus files (``docker_state_dir``)."""
        self.stop_all()
        self.engine.remove_volume(self.settings.volume)
        for volume in self.settings.credential_volumes:
            self.engine.remove_volume(volume)
        self._admin_token = None
        self.engine.remove_images(f"{IMAGE_CLUSTER}={self.cluster_name}")
        # What Prometheus read: the targets file, and the token file if one was written.
        shutil.rmtree(docker_state_dir(self.cluster_name), ignore_errors=True)

    # ------------------------------------------------------------------ credentials

    def _credentials(self, image: Callable[[], str] | None = None) -> DockerCredentialStore:
        return DockerCredentialStore(self.engine, self.settings, image or self._helper_image)

    def _helper_image(self) -> str:
        """An image to copy credentials with: a frontend's, else the model-container
        base (built if missing)."""
        for container in self.engine.containers():
            if container_role(container) in (MANAGEMENT, QUERY):
                image = container.image
                if image is not None:
                    return image.tags[0] if image.tags else str(image.id)
        return self.images.model_container_image()

    def admin_token(self) -> str:
        if self._admin_token is None:
            creds = self._credentials().load()
            if creds is None:
                raise ClusterNotRunningError(
                    f"Schooner cluster {self.cluster_name!r} has no credentials in Docker (no "
                    f"volume {self.settings.credentials_volume()}): start it with "
                    f"Connection(DockerContainerManager({self.cluster_name!r})).start()"
                )
            self._admin_token = creds.admin_token
        return self._admin_token

    def rotate_admin_token(self) -> str:
        rotated = self._credentials().rotate_admin_token()
        if rotated is None:
            raise ClusterNotRunningError(
                f"Schooner cluster {self.cluster_name!r} has no credentials in Docker: start "
                "it first"
            )
        self._admin_token = rotated.admin_token
        token_file = docker_state_dir(self.cluster_name) / "admin-token"
        if token_file.is_file():  # Prometheus reads it: keep it the current one
            with os_errors(f"write the admin token for Prometheus to {token_file}"):
                write_token(token_file, rotated.admin_token)
        return rotated.admin_token

    def get_logs(self, logging_dir: str | os.PathLike[str]) -> list[str]:
        out_dir = Path(logging_dir)
        written = []
        with os_errors(f"write the logs into {out_dir}"):
            out_dir.mkdir(parents=True, exist_ok=True)
            for container in self.engine.containers():
                path = out_dir / f"{container_name(container)}.log"
                try:
                    path.write_bytes(container.logs(stdout=True, stderr=True))
                except engine_errors() as exc:
                    name = container_name(container)
                    path.write_text(f"cannot read the logs of {name}: {exc}\n")
                written.append(str(path))
        return sorted(written)

    def metrics_urls(self) -> dict[str, str]:
        """Where Prometheus scrapes: the query frontend (``"query"``) and, in host mode,
        every running replica (by container name; on a user network Prometheus scrapes
        them from inside it, at ``<container name>:9100``)."""
        urls = {QUERY: f"{self.query_url}/metrics"}
        if self.settings.host_mode:
            for c in self.engine.containers(role=REPLICA):
                port = int(c.labels.get(specs.METRICS_PORT, "0"))
                if c.status == "running" and port:
                    where = netloc(self.settings.connect_host, port)
                    urls[container_name(c)] = f"http://{where}/metrics"
        return urls

    @property
    def prometheus_targets_file(self) -> Path:
        """Prometheus's ``file_sd_configs`` file for this cluster, kept current by this
        manager (``deploy/prometheus``, ``docs/metrics.md``): host addresses in host
        mode, container names on the cluster's network otherwise."""
        return targets_path(docker_state_dir(self.cluster_name))

    def write_prometheus_token(self) -> Path:
        """Write the admin token (0600) where ``deploy/prometheus/prometheus.yml`` copied
        beside the targets file reads it (``../admin-token``); its path. Call it again
        after ``rotate_admin_token()``."""
        path = docker_state_dir(self.cluster_name) / "admin-token"
        with os_errors(f"write the admin token for Prometheus to {path}"):
            write_token(path, self.admin_token())
        return path

    def write_prometheus_targets(self, *, running: bool = True) -> Path:
        """Bring the targets file up to date with the containers; its path."""
        replicas = []
        if running:
            replicas = [
                (container_name(c), dict(c.labels))
                for c in self.engine.containers(role=REPLICA)
                if c.status in _ALIVE
            ]
        path = self.prometheus_targets_file
        if not running and not path.exists():
            return path  # a cluster that never ran here leaves no file behind
        with os_errors(f"write the Prometheus targets {path}"):
            write_targets(path, docker_groups(self.settings, replicas, frontends=running))
        return path

    def _update_scrape_targets(self, *, running: bool = True) -> None:
        """Rewrite the targets file from the containers (best effort: a scale does not
        fail because Prometheus's file could not be written)."""
        try:
            self.write_prometheus_targets(running=running)
        except ContainerManagerError as exc:
            self.report(str(exc))

    # ------------------------------------------------------------------ models

    def build_model(self, name: str, version: str, bundle_dir: str | os.PathLike[str]) -> str:
        info = read_model_bundle(name, version, bundle_dir)
        base = self.images.model_container_image()
        require_compatible(
            name,
            version,
            info,
            self.engine.image_runtime(base),
            runs_on=f"its image {base} runs",
            fix="Deploy it from a matching environment, or pass "
            "DockerContainerManager(base_image=...) a base with that Python",
        )
        if any(c.status in _ALIVE for c in self.engine.replicas(name, version)):
            raise ContainerManagerError(
                f"replicas of {name}:{version} are running: deploy under a new version, or "
                f"stop_models({name!r}) first"
            )
        digest = digest_of(name, version, bundle_dir)
        labels = {IMAGE_CLUSTER: self.cluster_name, IMAGE_MODEL: name, IMAGE_VERSION: version}
        self.images.model_image(base, name, version, Path(bundle_dir), digest, info.pkgs, labels)
        return digest

    def adopt_image(self, name: str, version: str, image: str) -> str:
        check_name(name)
        check_version(version)
        return self.images.adopt_model_image(image, name, version)

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
        image = ""
        if num_replicas > 0:
            digest = require_digest(name, version, bundle_sha256)
            image = self.images.model_image_name(name, version, digest)
            self.engine.require_image(image, f"{name}:{version}", pull=bool(self.registry))
        replicas = self.engine.replicas(name, version)
        live = [c for c in replicas if c.status in _ALIVE]
        self.engine.remove([c for c in replicas if c not in live])  # stopped for good
        live.sort(key=lambda c: specs.replica_index(c.labels.get(specs.REPLICA_ID, "")))
        self.engine.remove(live[num_replicas:])
        used = {c.labels.get(specs.REPLICA_ID, "") for c in live[:num_replicas]}
        taken_ports: set[int] = set()
        if self.settings.host_mode and len(used) < num_replicas:  # ports will be picked
            taken_ports = {
                int(c.labels.get(specs.METRICS_PORT, "0"))
                for c in self.engine.containers(role=REPLICA)
            }
        for rid in new_replica_ids(name, version, used, num_replicas - len(used)):
            port = 0
            if self.settings.host_mode:
                port = free_port(self.settings.host, avoid=taken_ports)
                taken_ports.add(port)
            spec = self.settings.replica_spec(
                image,
                name=name,
                version=version,
                input_type=input_type,
                bundle_sha256=bundle_sha256,
                replica_id=rid,
                metrics_port=port,
                memory_limit=memory_limit,
            )
            self.engine.run(spec)
        self._update_scrape_targets()

    def stop_models(self, name: str, versions: Sequence[str] | None = None) -> None:
        self.engine.remove(
            c
            for c in self.engine.replicas(name)
            if versions is None or c.labels.get(specs.VERSION) in versions
        )
        self._update_scrape_targets()

    def replica_states(self, name: str, version: str) -> list[ReplicaState]:
        states = []
        for container in self.engine.replicas(name, version):
            rid, cname = (
                container.labels.get(specs.REPLICA_ID, container_name(container)),
                container_name(container),
            )
            last_exit = None
            if container.status == "running" and container.attrs.get("RestartCount"):
                last_exit = self.engine.last_exit_code(container)
            state = specs.replica_state(rid, cname, container.attrs, last_exit_code=last_exit)
            if not state.running:
                state = specs.replica_state(rid, cname, container.attrs, log_tail(container))
            states.append(state)
        return sorted(states, key=lambda s: specs.replica_index(s.replica_id))

    # ------------------------------------------------------------------ waiting

    def _wait_ready(self, container: Container, what: str, ready: Callable[[], bool]) -> None:
        def done() -> bool:
            try:
                container.reload()
            except engine_errors() as exc:
                raise ContainerManagerError(
                    f"{what} ({container_name(container)}) vanished: {exc}"
                ) from exc
            if container.status not in ("running", "created"):
                raise ContainerManagerError(
                    f"{what} ({container_name(container)}) exited while starting "
                    f"({container.status}); the end of its log:\n{log_tail(container)}"
                )
            return container.status == "running" and ready()

        self.report(f"waiting for {what} ({container_name(container)})")
        if not wait_for(
            done,
            timeout=self.start_timeout,
            on_progress=lambda t: self.report(f"still waiting for {what} ({t:.0f} s)"),
        ):
            raise ContainerManagerError(
                f"{what} ({container_name(container)}) did not become ready within "
                f"{self.start_timeout:g} s; the end of its log:\n{log_tail(container)}"
            )

    def _redis_ping(self, container: Container) -> bool:
        s = self.settings
        port = s.redis_port if s.host_mode else specs.INNER_PORTS[REDIS]
        host = s.connect_host if s.host_mode else "127.0.0.1"
        try:
            _, out = container.exec_run(["redis-cli", "-h", host, "-p", str(port), "ping"])
        except engine_errors():
            return False
        # NOAUTH: up, and requiring the cluster's password (which stays out of argv).
        return b"PONG" in (out or b"") or b"NOAUTH" in (out or b"")

    def _check_ports_free(self) -> None:
        s = self.settings
        ports = {"query_port": s.query_port, "management_port": s.management_port}
        for i, port in enumerate(s.rpc_ports):
            ports["rpc_port" if i == 0 else f"rpc_port + {i}"] = port
        if s.redis_url is None:
            ports["redis_port"] = s.redis_port
        require_ports_free(
            s.host, ports, holder="Another Schooner", manager="DockerContainerManager"
        )


def _frontend_what(index: int) -> str:
    return "the query frontend" if index == 0 else f"query frontend {index}"
