"""Container managers: where Schooner's processes run (locally, Docker, Kubernetes)."""

from __future__ import annotations

from admin.container_managers.base import ContainerManager, ReplicaState
from admin.container_managers.docker import DockerContainerManager
from admin.container_managers.kubernetes import KubernetesContainerManager
from admin.container_managers.local import LocalContainerManager

__all__ = [
    "ContainerManager",
    "DockerContainerManager",
    "KubernetesContainerManager",
    "LocalContainerManager",
    "ReplicaState",
]
