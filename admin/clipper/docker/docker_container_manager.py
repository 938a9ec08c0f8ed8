"""Clipper's ``DockerContainerManager``: its keyword arguments over Schooner's manager.

    from admin.clipper import ClipperConnection, DockerContainerManager

    conn = ClipperConnection(DockerContainerManager(cluster_name="c", clipper_query_port=1337))

Every Clipper keyword is accepted. ``clipper_query_port``, ``clipper_management_port``,
``clipper_rpc_port`` and ``redis_port`` are Schooner's ports; ``docker_ip_address`` is the
address the ports are published on and dialled at (``"localhost"``: 127.0.0.1);
``redis_ip`` points the cluster at a Redis of yours (``redis://redis_ip:redis_port``);
``docker_network`` is the user-defined network (Clipper's default ``"clipper_network"``),
and ``"host"`` -- which Clipper refused -- runs every container in the host's network
stack. ``$SCHOONER_DOCKER_NETWORK`` replaces the default network when the argument is
left out, and ``$SCHOONER_BASE_IMAGE`` (as for the ``schooner`` command) the Python image
models are built from. Accepted and not
used: ``prometheus_port`` (metrics are the query frontend's ``/metrics``), and
``use_centralized_log``/``fluentd_port`` (no Fluentd: ``get_clipper_logs`` collects each
container's log). ``extra_container_kwargs`` go to every ``containers.run``; its
``labels`` are added to every container's, as Clipper did. Any other keyword goes to
Schooner's ``DockerContainerManager`` (``base_image=``, ``registry=``, ``tls_certfile=``...).

Every container also carries Clipper's label ``ai.clipper.container.label=<cluster>``.
``stop_all()`` removes the cluster's containers and its Redis data and credential
volumes, as Clipper's ``stop_all`` left nothing of its Redis behind; the next
``start_clipper()`` starts empty. (The native manager keeps them until ``destroy()``.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from admin.clipper._addresses import ClipperManagerMixin
from admin.clipper.container_manager import CLIPPER_DOCKER_LABEL
from admin.container_managers import docker as native
from admin.container_managers._docker_engine import ClusterEngine

if TYPE_CHECKING:
    import docker

__all__ = ["DockerContainerManager"]

logger = logging.getLogger("admin.clipper")

NETWORK_ENV = "SCHOONER_DOCKER_NETWORK"
BASE_IMAGE_ENV = "SCHOONER_BASE_IMAGE"
CLIPPER_NETWORK = "clipper_network"
CLIPPER_FLUENTD_PORT = 24224


class _LabelledEngine(ClusterEngine):
    """The cluster's engine, adding Clipper's label (and the user's) to every container."""

    def __init__(self, *args: Any, labels: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.labels = dict(labels)

    def run(self, spec: Mapping[str, Any]) -> Any:
        labels = {**self.labels, **dict(spec.get("labels") or {})}
        return super().run({**spec, "labels": labels})


class DockerContainerManager(ClipperManagerMixin, native.DockerContainerManager):
    """Clipper's ``DockerContainerManager(...)`` signature over Schooner's."""

    def __init__(
        self,
        cluster_name: str = "default-cluster",
        docker_ip_address: str = "localhost",
        use_centralized_log: bool = False,
        fluentd_port: int = CLIPPER_FLUENTD_PORT,
        clipper_query_port: int = 1337,
        clipper_management_port: int = 1338,
        clipper_rpc_port: int = 7000,
        redis_ip: str | None = None,
        redis_port: int = 6379,
        prometheus_port: int = 9090,
        docker_network: str | None = None,
        extra_container_kwargs: Mapping[str, Any] | None = None,
        **schooner_kwargs: Any,
    ) -> None:
        network = docker_network or os.environ.get(NETWORK_ENV, "").strip() or CLIPPER_NETWORK
        extra = dict(extra_container_kwargs or {})
        user_labels = dict(extra.pop("labels", None) or {})
        extra.pop("network", None)  # the network is docker_network's
        extra.pop("detach", None)
        if os.environ.get(BASE_IMAGE_ENV, "").strip():
            schooner_kwargs.setdefault("base_image", os.environ[BASE_IMAGE_ENV].strip())
        host = "127.0.0.1" if docker_ip_address == "localhost" else docker_ip_address
        super().__init__(
            cluster_name,
            network_mode="host" if network == "host" else None,
            docker_network=None if network == "host" else network,
            host=host,
            query_port=clipper_query_port,
            management_port=clipper_management_port,
            rpc_port=clipper_rpc_port,
            redis_port=redis_port,
            redis_url=f"redis://{redis_ip}:{redis_port}" if redis_ip else None,
            extra_container_kwargs=extra,
            **schooner_kwargs,
        )
        self._clipper_labels = {**user_labels, CLIPPER_DOCKER_LABEL: self.cluster_name}
        # Clipper's attributes, for code that reads them.
        self.cluster_identifier = self.cluster_name
        self.public_hostname = docker_ip_address
        self.clipper_query_port = clipper_query_port
        self.clipper_management_port = clipper_management_port
        self.clipper_rpc_port = clipper_rpc_port
        self.redis_ip = redis_ip
        self.external_redis = redis_ip is not None
        self.redis_port = redis_port
        self.prometheus_port = prometheus_port
        self.centralize_log = use_centralized_log
        self.fluentd_port = fluentd_port
        self.docker_network = network
        self.common_labels = dict(self._clipper_labels)
        if use_centralized_log:
            logger.warning(
                "use_centralized_log=True: Schooner runs no Fluentd; get_clipper_logs() "
                "collects every container's own log instead"
            )

    def _check_distinct_ports(self) -> None:
        """Checked by ``start_cluster`` instead: Clipper code makes managers only to stop
        or attach to a cluster with ports picked at random, which may coincide."""

    def start_cluster(self) -> None:
        super()._check_distinct_ports()
        super().start_cluster()

    @property
    def docker_client(self) -> docker.DockerClient:
        """The Docker SDK client (Clipper's attribute name)."""
        return self.client

    @property
    def engine(self) -> ClusterEngine:
        if self._engine is None or self._engine.cluster_name != self.cluster_name:
            self._engine = _LabelledEngine(
                self.client,
                self.cluster_name,
                stop_timeout=self.stop_timeout,
                extra_run_kwargs=self.extra_container_kwargs,
                labels=self._clipper_labels,
            )
        return self._engine

    def stop_all(self, graceful: bool = True) -> None:
        """Remove the cluster's containers, then its Redis data and credentials, as
        Clipper's ``stop_all`` did (its Redis kept nothing). ``graceful`` is accepted:
        containers get SIGTERM first, and are killed only after ``stop_timeout``."""
        del graceful
        super().stop_all()
        self.engine.remove_volume(self.settings.volume)
        for volume in self.settings.credential_volumes:
            self.engine.remove_volume(volume)
        self._admin_token = None
