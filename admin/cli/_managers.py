"""Which cluster a ``schooner`` command drives: the manager, the cluster's name, and how
to reach it.

``--manager`` picks the container manager (``local``, ``docker`` or ``kubernetes``;
default ``$SCHOONER_MANAGER``, else ``local``) and ``--cluster`` the cluster (default
``$SCHOONER_CLUSTER``, else ``default``). Each manager attaches to a running cluster by
that name alone:

- local: the data directory (``--data-dir``, default ``$SCHOONER_HOME/<cluster>`` or
  ``~/.schooner/<cluster>``), whose ``cluster.json`` holds the ports and whose
  ``admin-token`` the admin token;
- docker: the containers labelled ``schooner.cluster=<cluster>``, whose
  ``schooner.settings`` label holds the ports and network, and the credential volume
  ``schooner-<cluster>-credentials``, which holds the admin token;
- kubernetes: the objects labelled ``schooner.io/cluster=<cluster>`` in ``--namespace``
  (default ``$SCHOONER_NAMESPACE``, else ``schooner``) of the kubeconfig's cluster
  (``--kubeconfig``, ``--kube-context``), whose Services give the addresses
  (``--query-addr`` / ``--management-addr`` override them, e.g. through ``kubectl
  port-forward``) and whose Secret the admin token.

What a cluster does not keep is how its images are built: Docker and Kubernetes model
images are built ``FROM --base-image`` (default ``$SCHOONER_BASE_IMAGE``, else the
manager's ``python:3.11-slim``) and pushed to ``--registry`` (``$SCHOONER_REGISTRY``), so
a ``deploy`` passes them again (or the environment carries them).

An option that only one kind of manager understands is refused, as a usage error, with
another (``misplaced_option``), rather than silently ignored.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from admin._connection import Connection
from admin.cli._tables import stderr
from admin.container_managers.base import ContainerManager
from admin.container_managers.docker import DockerContainerManager
from admin.container_managers.kubernetes import KubernetesContainerManager
from admin.container_managers.local import LocalContainerManager, default_data_dir

LOCAL, DOCKER, KUBERNETES = "local", "docker", "kubernetes"
MANAGERS: Final = (LOCAL, DOCKER, KUBERNETES)
MANAGER_ENV: Final = "SCHOONER_MANAGER"
CLUSTER_ENV: Final = "SCHOONER_CLUSTER"
NAMESPACE_ENV: Final = "SCHOONER_NAMESPACE"
BASE_IMAGE_ENV: Final = "SCHOONER_BASE_IMAGE"
REGISTRY_ENV: Final = "SCHOONER_REGISTRY"

# The options that only some managers understand (argparse dest -> those managers);
# every other option applies to all three.
ONLY: Final[Mapping[str, tuple[str, ...]]] = {
    # attaching
    "data_dir": (LOCAL,),
    "namespace": (KUBERNETES,),
    "kube_context": (KUBERNETES,),
    "kubeconfig": (KUBERNETES,),
    "query_addr": (KUBERNETES,),
    "management_addr": (KUBERNETES,),
    # building model images
    "registry": (DOCKER, KUBERNETES),
    "base_image": (DOCKER, KUBERNETES),
    "wheelhouse": (DOCKER, KUBERNETES),
    "frontend_image": (KUBERNETES,),
    # start
    "host": (LOCAL, DOCKER),
    "rpc_port": (LOCAL, DOCKER),
    "redis_port": (LOCAL, DOCKER),
    "python": (LOCAL,),
    "network_mode": (DOCKER,),
    "docker_network": (DOCKER,),
    "tls_certfile": (LOCAL, DOCKER),
    "tls_keyfile": (LOCAL, DOCKER),
    "tls_secret": (KUBERNETES,),
    "service_type": (KUBERNETES,),
}

# What `schooner start` passes on to the manager's constructor, when given.
START_OPTIONS: Final = (
    "host",
    "query_port",
    "management_port",
    "rpc_port",
    "redis_port",
    "redis_url",
    "query_frontends",
    "network_mode",
    "docker_network",
    "tls_certfile",
    "tls_keyfile",
    "tls_secret",
    "service_type",
)


def flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def misplaced_option(args: argparse.Namespace) -> str | None:
    """Why the command line is wrong for its manager, or None: an unknown manager, or an
    option given that this manager does not understand."""
    if args.manager not in MANAGERS:
        return (
            f"unknown manager {args.manager!r} (from --manager or ${MANAGER_ENV}): use "
            f"{', '.join(MANAGERS[:-1])} or {MANAGERS[-1]}"
        )
    for dest, managers in ONLY.items():
        if getattr(args, dest, None) is not None and args.manager not in managers:
            return (
                f"{flag(dest)} does not apply to --manager {args.manager} "
                f"(only to {' and '.join(managers)})"
            )
    return None


def given(**options: Any) -> dict[str, Any]:
    """The options that were given (not None)."""
    return {k: v for k, v in options.items() if v is not None}


def start_options(args: argparse.Namespace) -> dict[str, Any]:
    """The manager's constructor arguments ``schooner start`` was given."""
    options = given(**{dest: getattr(args, dest, None) for dest in START_OPTIONS})
    if options.get("network_mode") == "network":
        options["network_mode"] = None  # the Docker manager's name for a user network
    if args.manager == LOCAL and getattr(args, "python", None):
        options["python_executable"] = args.python
    return options


def manager(args: argparse.Namespace, **options: Any) -> ContainerManager:
    """The container manager of the cluster the command line names; ``options`` are
    more of its constructor's arguments (``schooner start``'s)."""
    tls_ca = given(tls_ca=getattr(args, "tls_ca", None))
    if args.manager == LOCAL:
        return local_manager(args, **tls_ca, **options)
    build = given(
        registry=getattr(args, "registry", None) or os.environ.get(REGISTRY_ENV),
        base_image=getattr(args, "base_image", None) or os.environ.get(BASE_IMAGE_ENV),
        wheelhouse=getattr(args, "wheelhouse", None),
    )
    if args.manager == DOCKER:
        return DockerContainerManager(args.cluster, **build, **tls_ca, **options)
    kube = given(
        namespace=getattr(args, "namespace", None) or os.environ.get(NAMESPACE_ENV),
        kube_context=getattr(args, "kube_context", None),
        kubeconfig=getattr(args, "kubeconfig", None),
        query_addr=getattr(args, "query_addr", None),
        management_addr=getattr(args, "management_addr", None),
        frontend_image=getattr(args, "frontend_image", None),
    )
    return KubernetesContainerManager(args.cluster, **build, **kube, **tls_ca, **options)


def local_manager(args: argparse.Namespace, **options: Any) -> LocalContainerManager:
    data_dir: Path | None = getattr(args, "data_dir", None)
    return LocalContainerManager(
        data_dir=data_dir or default_data_dir(args.cluster), cluster_name=args.cluster, **options
    )


def connection(args: argparse.Namespace, cm: ContainerManager) -> Connection:
    """A Connection (not yet started or connected) over ``cm``, progress on stderr."""
    deploy_timeout = getattr(args, "deploy_timeout", None)
    return Connection(cm, progress=stderr, **given(deploy_timeout=deploy_timeout))


def connect(args: argparse.Namespace, cm: ContainerManager | None = None) -> Connection:
    """A Connection attached to the running cluster, to use in a ``with`` block."""
    conn = connection(args, cm or manager(args))
    try:
        conn.connect()
    except BaseException:
        conn.close()
        raise
    return conn


def where(args: argparse.Namespace, cm: ContainerManager) -> str:
    """The cluster, as the command's messages name it."""
    if isinstance(cm, LocalContainerManager):
        return f"data dir {cm.data_dir}"
    if isinstance(cm, KubernetesContainerManager):
        return f"cluster {args.cluster!r} (kubernetes, namespace {cm.namespace})"
    return f"cluster {args.cluster!r} ({args.manager})"


def command_line(args: argparse.Namespace, cm: ContainerManager, verb: str) -> str:
    """``schooner ... VERB`` naming this cluster as this command did, for a hint."""
    parts = ["schooner"]
    if args.manager != LOCAL:
        parts += ["--manager", args.manager]
    if args.cluster != "default":
        parts += ["--cluster", args.cluster]
    if isinstance(cm, LocalContainerManager):
        parts += ["--data-dir", str(cm.data_dir)]
    if isinstance(cm, KubernetesContainerManager) and cm.namespace != "schooner":
        parts += ["--namespace", cm.namespace]
    return " ".join([*parts, verb])
