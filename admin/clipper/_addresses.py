"""What Clipper's container managers offered beyond Schooner's interface, for both
drop-in managers: the management address under Clipper's name, the metrics address,
and a replica count read from the manager.
"""

from __future__ import annotations

from admin.container_managers.base import ContainerManager

__all__ = ["ClipperManagerMixin"]


class ClipperManagerMixin(ContainerManager):
    """Clipper's extra container-manager methods, over a Schooner ``ContainerManager``."""

    # Clipper's managers logged under this name; it is the cluster's name here too.
    cluster_identifier: str

    def get_admin_addr(self) -> str:
        """``host:port`` of the management API (Clipper's name for it)."""
        return self.get_management_addr()

    def get_metric_addr(self) -> str:
        """``host:port`` serving Prometheus metrics: the query frontend's ``/metrics``
        (Clipper ran a Prometheus server of its own; Schooner's frontends are scraped
        directly)."""
        return self.get_query_addr()

    def get_num_replicas(self, name: str, version: str) -> int:
        """How many replicas of ``name:version`` the manager runs now."""
        return sum(1 for state in self.replica_states(name, str(version)) if state.running)
