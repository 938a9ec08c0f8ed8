"""Clipper's ``clipper_admin.docker`` package: its ``DockerContainerManager``."""

from __future__ import annotations

from admin.clipper.docker.docker_container_manager import DockerContainerManager

__all__ = ["DockerContainerManager"]
