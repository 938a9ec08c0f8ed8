"""What runs of a cluster, and its logs, as each kind of manager sees them.

``schooner status`` lists a cluster's parts and ``schooner logs`` lists and prints their
logs. A local cluster's parts are processes with log files under its data directory;
a Docker cluster's are containers (named ``schooner-<cluster>-<part>``, shown without
that prefix: ``query``, ``redis``, ``m-1-r0``); a Kubernetes cluster's are pods. Each
kind answers the same three questions: ``components`` (rows for a table, and its
columns), ``log_names`` and ``log_tail``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from admin.container_managers import _docker_specs as docker_specs
from admin.container_managers import _k8s_specs as k8s_specs
from admin.container_managers import _k8s_status as k8s_status
from admin.container_managers._docker_engine import container_name, container_role
from admin.container_managers._docker_engine import engine_errors as docker_errors
from admin.container_managers._processes import log_tail as file_tail
from admin.container_managers.base import ContainerManager
from admin.container_managers.docker import DockerContainerManager
from admin.container_managers.kubernetes import KubernetesContainerManager
from admin.container_managers.local import LocalContainerManager
from admin.exceptions import ContainerManagerError

Rows = list[dict[str, Any]]

LOCAL_COLUMNS = ("name", "role", "pid", "running", "state", "restarts", "reason")
DOCKER_COLUMNS = ("name", "role", "status", "restarts", "model", "container")
KUBE_COLUMNS = ("name", "role", "phase", "ready", "restarts", "model")


def components(cm: ContainerManager) -> tuple[Rows, Sequence[str]]:
    """The cluster's parts (processes, containers or pods) and the columns to show."""
    if isinstance(cm, LocalContainerManager):
        return cm.processes(), LOCAL_COLUMNS
    if isinstance(cm, DockerContainerManager):
        return [_container_row(cm, c) for c in _containers(cm)], DOCKER_COLUMNS
    if isinstance(cm, KubernetesContainerManager):
        return [_pod_row(p) for p in _pods(cm)], KUBE_COLUMNS
    raise ContainerManagerError(f"schooner cannot list the parts of a {type(cm).__name__}")


def log_names(cm: ContainerManager) -> list[str]:
    """The names ``log_tail`` takes: log files, containers or pods."""
    if isinstance(cm, LocalContainerManager):
        return [log.stem for log in sorted((cm.data_dir / "logs").glob("*.log"))]
    if isinstance(cm, DockerContainerManager):
        return [_short(cm, c) for c in _containers(cm)]
    if isinstance(cm, KubernetesContainerManager):
        return [k8s_status.pod_name(p) for p in _pods(cm)]
    raise ContainerManagerError(f"schooner cannot read the logs of a {type(cm).__name__}")


def log_tail(cm: ContainerManager, name: str, lines: int) -> str | None:
    """The last ``lines`` lines of the log of ``name``; None if there is no such part."""
    if isinstance(cm, LocalContainerManager):
        path = cm.data_dir / "logs" / f"{name}.log"
        return file_tail(path, lines) if path.is_file() else None
    if isinstance(cm, DockerContainerManager):
        for container in _containers(cm):
            if name in (_short(cm, container), container_name(container)):
                try:
                    data = bytes(container.logs(stdout=True, stderr=True, tail=lines))
                except docker_errors() as exc:
                    raise ContainerManagerError(
                        f"cannot read the log of {container_name(container)}: {exc}"
                    ) from exc
                return data.decode("utf-8", errors="replace").rstrip()
        return None
    if isinstance(cm, KubernetesContainerManager):
        if name not in log_names(cm):
            return None
        return cm.api.pod_log(name, tail_lines=lines)
    return None


# --------------------------------------------------------------------------- Docker


def _containers(cm: DockerContainerManager) -> list[Any]:
    return sorted(cm.engine.containers(), key=container_name)


def _short(cm: DockerContainerManager, container: Any) -> str:
    """``query`` for ``schooner-<cluster>-query``: the name as the local manager's logs."""
    name = container_name(container)
    prefix = f"schooner-{cm.cluster_name}-"
    return name[len(prefix) :] if name.startswith(prefix) else name


def _container_row(cm: DockerContainerManager, container: Any) -> dict[str, Any]:
    labels = container.labels or {}
    model = labels.get(docker_specs.MODEL)
    version = labels.get(docker_specs.VERSION)
    return {
        "name": _short(cm, container),
        "container": container_name(container),
        "role": container_role(container),
        "status": container.status,
        "restarts": container.attrs.get("RestartCount"),
        "model": f"{model}:{version}" if model and version else None,
    }


# --------------------------------------------------------------------------- Kubernetes


def _pods(cm: KubernetesContainerManager) -> list[Any]:
    return k8s_status.live(cm.api.find("Pod", cm.settings.label_selector()))


def _pod_row(pod: Any) -> dict[str, Any]:
    labels = pod.metadata.labels or {}
    status = pod.status
    statuses = (status.container_statuses if status is not None else None) or []
    model = labels.get(k8s_specs.MODEL)
    version = labels.get(k8s_specs.VERSION)
    return {
        "name": k8s_status.pod_name(pod),
        "role": labels.get(k8s_specs.ROLE),
        "phase": status.phase if status is not None else None,
        "ready": bool(statuses) and all(cs.ready for cs in statuses),
        "restarts": sum(int(cs.restart_count or 0) for cs in statuses),
        "model": f"{model}:{version}" if model and version else None,
    }
