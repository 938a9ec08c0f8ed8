"""What the Kubernetes manager reads back from the API server: pods and Services.

Pure functions over ``kubernetes.client`` model objects, as ``_k8s_specs`` is for the
objects it creates: whether a pod will serve or needs someone's help (and why), how many
replicas a model version has connected as ``Connection`` counts them, and where a client
outside the cluster reaches a Service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from admin.container_managers._net import netloc
from admin.container_managers.base import (
    CRASH_LOOP_RESTARTS,
    EXIT_CONFIG,
    ReplicaState,
)

# Exit statuses of a model container that ask for a restart, not a failure to start
# (model_container.protocol.EXIT_RESTART_REQUESTED / EXIT_MEMORY_LIMIT).
EXIT_RESTART_REQUESTED: Final = 75
EXIT_MEMORY_LIMIT: Final = 76
# A container that ran this long before it exited was not crash looping.
STAYED_UP_S: Final = 10.0

# Why a container is waiting that waiting longer will not fix.
FATAL_WAITING: Final = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def pod_name(pod: Any) -> str:
    return str(pod.metadata.name)


def live(pods: Iterable[Any]) -> list[Any]:
    """The pods not being deleted, by name."""
    return sorted((p for p in pods if p.metadata.deletion_timestamp is None), key=pod_name)


def frontends(query_pods: Iterable[Any]) -> list[str]:
    """The query frontend pods model pods find through the headless RPC Service (those
    with an address, ready or not), by name."""
    return [pod_name(p) for p in live(query_pods) if p.status is not None and p.status.pod_ip]


def pod_problem(pod: Any, *, model: bool = False) -> str:
    """Why a pod will not serve without someone's help; "" while it runs or starts.

    A container waiting on an image it cannot pull or a configuration it cannot use,
    one that keeps exiting, a pod that failed; for a model pod (``model``) also a model
    container that exited with status 2 (its model cannot be loaded).
    """
    status = pod.status
    if status is None:
        return ""
    if status.phase in ("Failed", "Succeeded"):
        why = ": ".join(x for x in (status.reason, status.message) if x)
        return f"is {status.phase}" + (f" ({why})" if why else "")
    for cs in status.container_statuses or []:
        state, last = cs.state, cs.last_state
        waiting = state.waiting if state is not None else None
        if waiting is not None and waiting.reason in FATAL_WAITING:
            message = f"cannot start its container ({waiting.reason}: {waiting.message or ''})"
            if "Image" in str(waiting.reason):
                message += (
                    f"; can the cluster pull {cs.image}? Check the registry, the image "
                    "name and image_pull_secrets"
                )
            return message
        terminated = (state.terminated if state is not None else None) or (
            last.terminated if last is not None else None
        )
        code = terminated.exit_code if terminated is not None else None
        if model and code == EXIT_CONFIG:
            return "exits at start with status 2 (its model cannot be loaded)"
        restarts = int(cs.restart_count or 0)
        if restarts < CRASH_LOOP_RESTARTS:
            continue
        if model and _asked_for(terminated):
            # Restarts a query frontend or the memory limit asked for: a crash loop only
            # when they keep coming right after the start.
            if _ran_s(terminated) < STAYED_UP_S:
                why = last_exit(pod)
                return f"keeps exiting right after it starts ({why}; restarted {restarts} times)"
            continue
        return f"keeps exiting (last status {code}, restarted {restarts} times)"
    return ""


def _asked_for(terminated: Any) -> bool:
    """Whether a container's exit asked for a restart: its query frontend's request,
    or its memory limit."""
    if terminated is None:
        return False
    return terminated.reason == "OOMKilled" or terminated.exit_code in (
        EXIT_RESTART_REQUESTED,
        EXIT_MEMORY_LIMIT,
    )


def _ran_s(terminated: Any) -> float:
    """How long the run that ended in ``terminated`` lasted (inf when unknown)."""
    started, finished = terminated.started_at, terminated.finished_at
    if started is None or finished is None:
        return float("inf")
    try:
        return float((finished - started).total_seconds())
    except TypeError:  # not datetimes (a client that did not parse them)
        return float("inf")


def memory_limit_hit(pod: Any) -> bool:
    """Whether a model pod's container last ended at its memory limit: killed by the
    kernel (OOMKilled), or exited with status 76 after a ``MemoryError``."""
    for cs in (pod.status.container_statuses if pod.status is not None else None) or []:
        for st in (cs.state, cs.last_state):
            terminated = st.terminated if st is not None else None
            if terminated is not None and (
                terminated.reason == "OOMKilled" or terminated.exit_code == EXIT_MEMORY_LIMIT
            ):
                return True
            if terminated is not None:
                return False
    return False


def last_exit(pod: Any) -> str:
    """Why a model pod's container last ended, as a phrase ("" if it never did)."""
    for cs in (pod.status.container_statuses if pod.status is not None else None) or []:
        for st in (cs.state, cs.last_state):
            terminated = st.terminated if st is not None else None
            if terminated is None:
                continue
            if memory_limit_hit(pod):
                limit = _memory_limit(pod)
                return f"hit its memory limit ({limit})" if limit else "killed for lack of memory"
            if terminated.exit_code == EXIT_RESTART_REQUESTED:
                return (
                    "exited at its query frontend's request (a batch past its timeout, or ejected)"
                )
            why = f" ({terminated.reason})" if terminated.reason else ""
            return f"exited with status {terminated.exit_code}{why}"
    return ""


def _memory_limit(pod: Any) -> str:
    """The memory limit of a pod's (first) container, as written ("" for none)."""
    containers = (pod.spec.containers if pod.spec is not None else None) or []
    for c in containers:
        limits = c.resources.limits if c.resources is not None else None
        if limits and limits.get("memory"):
            return str(limits["memory"])
    return ""


def _restarts(pod: Any) -> int:
    statuses = (pod.status.container_statuses if pod.status is not None else None) or []
    return sum(int(cs.restart_count or 0) for cs in statuses)


def replica_states(
    pods: Iterable[Any], logs: Mapping[str, str] | None = None
) -> list[ReplicaState]:
    """The replicas of a model version as ``Connection`` counts them.

    Each model pod is one replica, its id the pod's name, connected once to every query
    frontend pod. A pod with a problem is a failed replica, with the end of its log
    (``logs``, by pod name) in ``detail``. A serving pod whose container restarted says
    how often, and why it last did, in ``restarts`` and ``detail``.
    """
    states: list[ReplicaState] = []
    for pod in live(pods):
        problem = pod_problem(pod, model=True)
        restarts, memory_hit = _restarts(pod), memory_limit_hit(pod)
        if problem:
            tail = (logs or {}).get(pod_name(pod), "")
            detail = f"replica pod {pod_name(pod)} {problem}; the end of its log:\n{tail}"
            states.append(
                ReplicaState(
                    pod_name(pod), False, None, detail.rstrip(), restarts, "failed", memory_hit
                )
            )
            continue
        detail = ""
        if restarts and (why := last_exit(pod)):
            detail = f"replica pod {pod_name(pod)} was restarted {restarts} time(s); it last {why}"
        states.append(
            ReplicaState(pod_name(pod), True, None, detail, restarts, "running", memory_hit)
        )
    return states


def rolled_out(deployment: Any) -> bool:
    """Whether a Deployment's rollout is complete, as ``kubectl rollout status`` decides:
    the controller has seen its latest spec, and every pod wanted runs that spec, ready,
    with no old pod left."""
    meta, spec, status = deployment.metadata, deployment.spec, deployment.status
    if status is None:
        return False
    if (status.observed_generation or 0) < (meta.generation or 0):
        return False
    wanted = spec.replicas if spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    return (
        updated >= wanted
        and (status.replicas or 0) <= updated
        and (status.available_replicas or 0) >= updated
    )


def now_rfc3339() -> str:
    """The time now as Kubernetes writes it (``kubectl rollout restart``'s annotation)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_address(nodes: Iterable[Any]) -> str:
    """An address of a ready node (external preferred), where NodePorts answer."""
    ready = []
    for node in nodes:
        conditions = (node.status.conditions or []) if node.status is not None else []
        if any(c.type == "Ready" and c.status == "True" for c in conditions):
            ready.append(node)
    for kind in ("ExternalIP", "InternalIP", "Hostname"):
        for node in sorted(ready, key=lambda n: str(n.metadata.name)):
            for address in node.status.addresses or []:
                if address.type == kind and address.address:
                    return str(address.address)
    return ""


def service_netloc(service: Any, *, node: str = "") -> str:
    """``host:port`` where a client outside the cluster reaches ``service`` ("" if not
    yet: a LoadBalancer being provisioned; ClusterIP Services answer in the cluster)."""
    spec = service.spec
    port = spec.ports[0]
    kind = spec.type or "ClusterIP"
    if kind == "LoadBalancer":
        lb = service.status.load_balancer if service.status is not None else None
        for ingress in (lb.ingress if lb is not None else None) or []:
            host = ingress.ip or ingress.hostname
            if host:
                return netloc(str(host), int(port.port))
        return ""
    if kind == "NodePort":
        return netloc(node, int(port.node_port)) if node and port.node_port else ""
    meta = service.metadata
    return f"{meta.name}.{meta.namespace}.svc:{port.port}"
