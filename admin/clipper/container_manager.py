"""The names Clipper's ``clipper_admin.container_manager`` exports that scripts and its
tests import: the Docker label of a cluster's containers, and the image name Clipper
records for a model registered without containers.

Every container the drop-in's ``DockerContainerManager`` starts carries
``CLIPPER_DOCKER_LABEL=<cluster name>`` beside Schooner's own labels, so Clipper-style
``docker ps --filter label=...`` finds them.
"""

from __future__ import annotations

from typing import Final

from admin.container_managers.base import ContainerManager

__all__ = [
    "CLIPPER_DOCKER_LABEL",
    "CLIPPER_INTERNAL_MANAGEMENT_PORT",
    "CLIPPER_INTERNAL_QUERY_PORT",
    "CLIPPER_INTERNAL_REDIS_PORT",
    "CLIPPER_INTERNAL_RPC_PORT",
    "CONTAINERLESS_MODEL_IMAGE",
    "ContainerManager",
]

CLIPPER_DOCKER_LABEL: Final = "ai.clipper.container.label"
CONTAINERLESS_MODEL_IMAGE: Final = "NO_CONTAINER"
CLIPPER_INTERNAL_QUERY_PORT: Final = 1337
CLIPPER_INTERNAL_MANAGEMENT_PORT: Final = 1338
CLIPPER_INTERNAL_RPC_PORT: Final = 7000
CLIPPER_INTERNAL_REDIS_PORT: Final = 6379
