"""Clipper's ``KubernetesContainerManager``: its keyword arguments over Schooner's manager.

``cluster_name`` and ``namespace`` (Clipper's default ``"default"``) are Schooner's;
``redis_ip``/``redis_port`` point the cluster at a Redis of yours; ``service_types``
(Clipper's per-service dict, e.g. ``{"query": "NodePort", ...}``) gives the frontends'
Service type: the query frontend's entry, else the management frontend's. Accepted and
not used: ``kubernetes_proxy_addr`` and ``useInternalIP`` (the manager reaches the
frontends through their Services: pass ``query_addr=``/``management_addr=`` to name
other addresses), ``create_namespace_if_not_exists`` (the namespace is created when
missing anyway). Any other keyword goes to Schooner's ``KubernetesContainerManager``
(``registry=``, ``kube_context=``, ...): Schooner needs ``registry=`` here, where Clipper
took it per deploy.

``stop_all()`` deletes the cluster's objects, Redis's volume claim and its Secrets, as
Clipper's ``stop_all`` left nothing of its Redis behind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from admin.clipper._addresses import ClipperManagerMixin
from admin.container_managers import kubernetes as native
from admin.container_managers._k8s_specs import REDIS

__all__ = ["KubernetesContainerManager"]

logger = logging.getLogger("admin.clipper")


class KubernetesContainerManager(ClipperManagerMixin, native.KubernetesContainerManager):
    """Clipper's ``KubernetesContainerManager(...)`` signature over Schooner's."""

    def __init__(
        self,
        cluster_name: str = "default-cluster",
        kubernetes_proxy_addr: str | None = None,
        redis_ip: str | None = None,
        redis_port: int = 6379,
        useInternalIP: bool = False,  # noqa: N803 (Clipper's keyword)
        namespace: str = "default",
        service_types: Mapping[str, str] | None = None,
        create_namespace_if_not_exists: bool = False,
        **schooner_kwargs: Any,
    ) -> None:
        if kubernetes_proxy_addr is not None:
            logger.warning(
                "kubernetes_proxy_addr=%r is not used: Schooner reaches the frontends "
                "through their Services (pass query_addr=/management_addr= to override)",
                kubernetes_proxy_addr,
            )
        types = dict(service_types or {})
        service_type = types.get("query") or types.get("query_frontend") or types.get("management")
        if service_type:
            schooner_kwargs.setdefault("service_type", service_type)
        if redis_ip:
            schooner_kwargs.setdefault("redis_url", f"redis://{redis_ip}:{redis_port}")
        super().__init__(cluster_name, namespace=namespace, **schooner_kwargs)
        self.cluster_identifier = self.cluster_name
        self.kubernetes_proxy_addr = kubernetes_proxy_addr
        self.redis_ip = redis_ip
        self.redis_port = redis_port
        self.useInternalIP = useInternalIP
        self.service_types = types
        self.create_namespace_if_not_exists = create_namespace_if_not_exists

    def stop_all(self, graceful: bool = True) -> None:
        """Delete the cluster's objects, then Redis's volume claim and the cluster's
        Secrets, as Clipper's ``stop_all`` did; ``graceful`` is accepted (pods always
        get their termination grace period)."""
        del graceful
        super().stop_all()
        for claim in self.api.find("PersistentVolumeClaim", self.settings.label_selector(REDIS)):
            self.api.delete("PersistentVolumeClaim", claim.metadata.name)
        self._credentials.delete()
