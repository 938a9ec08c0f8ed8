"""Clipper's ``clipper_admin.kubernetes`` package: its ``KubernetesContainerManager``."""

from __future__ import annotations

from admin.clipper.kubernetes.kubernetes_container_manager import KubernetesContainerManager

__all__ = ["KubernetesContainerManager"]
