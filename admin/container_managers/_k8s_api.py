"""One cluster's share of a Kubernetes namespace: the only module that calls the API server.

``KubeAPI`` wraps the official client's ``AppsV1Api`` and ``CoreV1Api``. It creates,
lists -- always by a label selector, so that nothing here touches another cluster's
objects --, scales and deletes, with a timeout on every request, and translates the
client's errors (``ApiException``, and the ``urllib3`` errors it lets through) into
Schooner's. Which method it calls for a kind is spelled out in ``_KINDS``: those are the
methods a test fake of the API server implements.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, cast

from admin.exceptions import ContainerManagerError

DEFAULT_TIMEOUT: Final = 30.0

# kind -> (which API, the suffix of its create/list/read/delete_namespaced_* methods)
_KINDS: Final = {
    "Deployment": ("apps", "deployment"),
    "StatefulSet": ("apps", "stateful_set"),
    "Service": ("core", "service"),
    "Pod": ("core", "pod"),
    "PersistentVolumeClaim": ("core", "persistent_volume_claim"),
    "Secret": ("core", "secret"),
}


def api_errors() -> tuple[type[Exception], ...]:
    """What the client raises when the API server refuses or cannot be reached: its
    ``ApiException``, the ``urllib3`` and socket errors it lets through, and the
    ``ConfigException`` of a credential plugin that fails when a token is refreshed."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    return (ApiException, HTTPError, OSError, ConfigException)


def load_client(kube_context: str | None, kubeconfig: str | None) -> tuple[Any, Any, Any]:
    """The ``ApiClient`` (its connection pool: ``close()`` it when done) and the
    ``AppsV1Api`` and ``CoreV1Api`` over it, of the cluster the kubeconfig (``KUBECONFIG``,
    or ``~/.kube/config``; its ``kube_context``, else the current one) points at, or of
    the cluster this process runs in when there is no kubeconfig."""
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise ContainerManagerError(
            "KubernetesContainerManager needs the kubernetes client: "
            "pip install 'schooner[kubernetes]'"
        ) from None
    default = Path(os.path.expanduser(config.KUBE_CONFIG_DEFAULT_LOCATION))
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not (
        kubeconfig or kube_context or os.environ.get("KUBECONFIG") or default.exists()
    )
    try:
        if in_cluster:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            api = client.ApiClient(configuration)
        else:
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=kube_context
            )
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or str(default)
        raise ContainerManagerError(
            f"cannot load the Kubernetes configuration from {where} ({exc}): point KUBECONFIG "
            "at your cluster's kubeconfig, pass kube_context= one of its contexts, or run "
            "inside a cluster"
        ) from exc
    return api, client.AppsV1Api(api), client.CoreV1Api(api)


def _reason(exc: Exception) -> str:
    """The API server's own message for a refusal, else the exception's text."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    if status is None:
        return str(exc)
    try:
        message = json.loads(body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"HTTP {status}: {message or getattr(exc, 'reason', '') or body or 'no reason given'}"


class KubeAPI:
    """The calls the Kubernetes manager makes, in one namespace, each with a timeout."""

    def __init__(self, apps: Any, core: Any, namespace: str, timeout: float = DEFAULT_TIMEOUT):
        self.apps = apps
        self.core = core
        self.namespace = namespace
        self.timeout = timeout

    def _method(self, verb: str, kind: str) -> Callable[..., Any]:
        api, suffix = _KINDS[kind]
        method = getattr(self.apps if api == "apps" else self.core, f"{verb}_namespaced_{suffix}")
        return cast("Callable[..., Any]", method)

    def _call(
        self,
        what: str,
        method: Callable[..., Any],
        *args: Any,
        allow: tuple[int, ...] = (),
        **kw: Any,
    ) -> Any:
        """``method(*args, **kw)`` with the timeout; ``None`` when the API server answers
        with a status in ``allow``; otherwise its errors as ``ContainerManagerError``."""
        try:
            return method(*args, _request_timeout=self.timeout, **kw)
        except api_errors() as exc:
            if getattr(exc, "status", None) in allow:
                return None
            if getattr(exc, "status", None) is None:
                raise ContainerManagerError(
                    f"cannot reach the Kubernetes API server to {what}: {exc}; check that the "
                    "cluster is up and KUBECONFIG / kube_context point at it"
                ) from exc
            raise ContainerManagerError(f"cannot {what}: {_reason(exc)}") from exc

    # ------------------------------------------------------------------ objects

    def create(self, obj: Any, *, exist_ok: bool = False) -> bool:
        """Create ``obj`` in the namespace; ``False`` if it exists and ``exist_ok``."""
        kind, name = obj.kind, obj.metadata.name
        done = self._call(
            f"create {kind} {name} in namespace {self.namespace}",
            self._method("create", kind),
            self.namespace,
            obj,
            allow=(409,) if exist_ok else (),
        )
        return done is not None

    def find(self, kind: str, selector: str) -> list[Any]:
        """The objects of a kind whose labels match ``selector`` (``k=v,k=v``)."""
        found = self._call(
            f"list the {kind}s of namespace {self.namespace}",
            self._method("list", kind),
            self.namespace,
            label_selector=selector,
        )
        return list(found.items or [])

    def read(self, kind: str, name: str) -> Any | None:
        """The object, or ``None`` if there is none of that name."""
        return self._call(
            f"read {kind} {name}", self._method("read", kind), name, self.namespace, allow=(404,)
        )

    def delete(self, kind: str, name: str, *, foreground: bool = False) -> None:
        """Delete an object (gone already is fine). ``foreground``: the object goes once
        what it owns (a Deployment's ReplicaSets and pods) is gone."""
        self._call(
            f"delete {kind} {name}",
            self._method("delete", kind),
            name,
            self.namespace,
            propagation_policy="Foreground" if foreground else "Background",
            allow=(404,),
        )

    def patch(self, kind: str, name: str, body: Any) -> None:
        """Merge-patch an object (``{"data": {...}}`` replaces those keys of a Secret).
        Errors name the object, never the body: it may hold secrets."""
        self._call(f"update {kind} {name}", self._method("patch", kind), name, self.namespace, body)

    def scale(self, deployment: str, replicas: int) -> None:
        """Patch a Deployment's replica count (its scale subresource)."""
        self._call(
            f"scale Deployment {deployment} to {replicas}",
            self.apps.patch_namespaced_deployment_scale,
            deployment,
            self.namespace,
            {"spec": {"replicas": replicas}},
        )

    # ------------------------------------------------------------------ the namespace

    def ensure_namespace(self, namespace: Any) -> bool:
        """Create the namespace unless it exists; whether it was created. Without the
        right to read namespaces, assume it exists (creating in it will tell)."""
        name = namespace.metadata.name
        found = self._call(
            f"read namespace {name}", self.core.read_namespace, name, allow=(403, 404)
        )
        if found is not None:
            return False
        created = self._call(
            f"create namespace {name} (create it with kubectl create namespace {name})",
            self.core.create_namespace,
            namespace,
            allow=(403, 409),
        )
        return created is not None

    def nodes(self) -> list[Any]:
        """The cluster's nodes ([] without the right to list them)."""
        found = self._call("list the nodes", self.core.list_node, allow=(403,))
        return list(found.items or []) if found is not None else []

    def pod_log(self, pod: str, *, tail_lines: int | None = None, previous: bool = False) -> str:
        """A pod's log (of its previous container with ``previous``); on failure, why."""
        kw: dict[str, Any] = {"previous": previous}
        if tail_lines is not None:
            kw["tail_lines"] = tail_lines
        try:
            text = self._call(
                f"read the log of pod {pod}",
                self.core.read_namespaced_pod_log,
                pod,
                self.namespace,
                **kw,
            )
        except ContainerManagerError as exc:
            return f"({exc})"
        return str(text or "").rstrip()
