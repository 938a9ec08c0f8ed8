"""The interface every container manager implements (local processes, Docker, Kubernetes).

A container manager runs things; it does not decide what should run. ``Connection``
records desired state through the management API first (Redis is the source of truth)
and then asks the manager to enact it: start the cluster, store a model's bundle, run
N replicas of a model version, stop them. ``Connection`` then waits for the
replicas to connect, and uses ``replica_states`` to fail fast when one exits.

A manager that talks to an engine or an API server (Docker, Kubernetes) opens its client
on first use and closes it in ``close()``; every manager is a context manager that
closes on exit, and ``Connection.close()`` closes its manager. Closing releases
connections only: what runs keeps running, and the next call opens the client again.

No code from the network: a model version is recorded with its bundle's sha256, never a
path or an image. The manager stores the bundle under a name it derives from (name,
version, digest) -- a content-addressed directory, an image tag -- finds it again from
those alone, and passes the digest to every replica, which refuses a bundle that does
not match (``model_container.bundle.verify_bundle``).
"""

from __future__ import annotations

import abc
import os
import ssl
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from admin._closing import Closing
from admin._http import tls_context
from admin._progress import Reporter
from admin.exceptions import ContainerManagerError, DeployError

# model_container.cli.EXIT_CONFIG: the model cannot be loaded; restarting will not help.
EXIT_CONFIG: Final = 2
# A replica restarting this many times without staying up is reported as failing.
CRASH_LOOP_RESTARTS: Final = 3
# The CA (PEM file) the admin client verifies HTTPS frontends with, when no tls_ca= is given.
TLS_CA_ENV: Final = "SCHOONER_TLS_CA"


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """A replica the manager started, as the manager sees it."""

    replica_id: str
    running: bool
    # The replica's process id on this host, when the manager knows it; the connected
    # replica record carries the same pid, which tells a fresh replica from a stale record.
    pid: int | None = None
    # Why it is not running: exit status and the tail of its log.
    detail: str = ""
    # Restarts after it exited unintended (a supervised local replica; 0 elsewhere).
    restarts: int = 0
    # As its manager reports it: "running", "backoff", "failed", ... ("" if not told).
    state: str = ""
    # Whether it last ended by hitting its memory limit.
    memory_limit_hit: bool = False


def replica_id(name: str, version: str, index: int) -> str:
    """The id of replica ``index`` of a model version, as the local and Docker managers
    name them (a Kubernetes replica is named by its pod)."""
    return f"{name}-{version}-r{index}"


def new_replica_ids(name: str, version: str, used: Collection[str], count: int) -> list[str]:
    """``count`` ids for new replicas of a model version: the lowest indexes not ``used``."""
    ids: list[str] = []
    index = 0
    while len(ids) < count:
        if (rid := replica_id(name, version, index)) not in used:
            ids.append(rid)
        index += 1
    return ids


def memory_size(n: int) -> str:
    """Bytes as Kubernetes writes a quantity: ``"128Mi"``, ``"2Gi"``, else bytes."""
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


class ContainerManager(Closing):
    """Starts and stops Redis, the frontends and model replicas somewhere.

    A manager whose frontends serve HTTPS (``tls_certfile=``) sets ``tls``; the admin
    client then verifies them against ``tls_ca`` (a PEM file), else ``$SCHOONER_TLS_CA``,
    else the system's trust store.
    """

    tls: bool = False
    tls_ca: str | None = None

    def __init__(self) -> None:
        # Progress lines of long steps; Connection installs the user's callback here.
        self.report = Reporter()

    # ------------------------------------------------------------------ resources

    def close(self) -> None:
        """Close the clients this manager opened (none for local processes); what runs
        keeps running. Idempotent; a later call opens them again."""

    # ------------------------------------------------------------------ the cluster

    @abc.abstractmethod
    def start_cluster(self) -> None:
        """Start Redis and both frontends and wait until they answer.

        Raises ``ClusterAlreadyRunningError`` if this cluster is already running.
        """

    @abc.abstractmethod
    def connect(self) -> None:
        """Attach to a running cluster; raises ``ClusterNotRunningError`` if there is none."""

    @abc.abstractmethod
    def stop_all(self) -> None:
        """Stop every replica, both frontends and Redis (whose state persists)."""

    @abc.abstractmethod
    def get_query_addr(self) -> str:
        """``host:port`` of the query frontend, where applications send predictions."""

    @abc.abstractmethod
    def get_management_addr(self) -> str:
        """``host:port`` of the management frontend."""

    @abc.abstractmethod
    def get_logs(self, logging_dir: str | os.PathLike[str]) -> list[str]:
        """Copy every component's log into ``logging_dir``; the paths written."""

    # ------------------------------------------------------------------ credentials

    def admin_token(self) -> str:
        """The cluster's admin token, as the cluster keeps it (generated by its first
        start); what the admin client sends as ``Authorization: Bearer``."""
        raise ContainerManagerError(f"{type(self).__name__} does not keep an admin token")

    def rotate_admin_token(self) -> str:
        """Replace the admin token with a new one where the cluster keeps it, and where
        its frontends and replicas check it; return the new token."""
        raise ContainerManagerError(f"{type(self).__name__} cannot rotate the admin token")

    # ------------------------------------------------------------------ models

    @abc.abstractmethod
    def build_model(self, name: str, version: str, bundle_dir: str | os.PathLike[str]) -> str:
        """Store a model bundle where this cluster's replicas load it; return its sha256.

        Refuses with ``IncompatibleModelError`` (before doing anything else) when the
        bundle was pickled under a Python or cloudpickle the replicas will not run.
        """

    def adopt_image(self, name: str, version: str, image: str) -> str:
        """Take a prebuilt model image for a version; return the bundle digest it carries.

        Only managers that run images do; the image must carry the label
        ``schooner.bundle-sha256`` that their own builds put there.
        """
        raise DeployError(
            f"cannot deploy {name}:{version} from {image!r}: {type(self).__name__} runs "
            "model bundles it stores itself, not images: pass the bundle directory"
        )

    @abc.abstractmethod
    def set_num_replicas(
        self,
        name: str,
        version: str,
        input_type: str,
        bundle_sha256: str,
        num_replicas: int,
        *,
        memory_limit: int = 0,
    ) -> None:
        """Run exactly ``num_replicas`` replicas of a model version (0 stops them all).

        ``bundle_sha256`` is the digest recorded with the version: the manager finds the
        bundle by it and the replicas refuse any other. ``memory_limit``: the bytes one
        replica may use (0: no limit); a replica that hits it is restarted. Returns once
        the replicas are started, not once they are connected.
        """

    @abc.abstractmethod
    def stop_models(self, name: str, versions: Sequence[str] | None = None) -> None:
        """Stop the replicas of some versions of a model (all versions when ``None``)."""

    @abc.abstractmethod
    def replica_states(self, name: str, version: str) -> list[ReplicaState]:
        """The replicas of a model version this manager started, running or not."""

    def replica_ids(self, name: str, version: str) -> list[str]:
        return [state.replica_id for state in self.replica_states(name, version)]

    def connections_expected(self, name: str, version: str, num_replicas: int) -> int:
        """How many connected replicas the query frontends report once ``num_replicas``
        replicas of a version serve: one each, unless each replica connects to several
        query frontends under several ids (Kubernetes: one per frontend pod)."""
        del name, version
        return num_replicas

    def restart_query_frontends(self) -> None:
        """Restart the query frontends one at a time, each draining what it accepted."""
        raise ContainerManagerError(
            f"{type(self).__name__} cannot restart the query frontends one by one"
        )

    # ------------------------------------------------------------------ derived

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def management_url(self) -> str:
        return f"{self.scheme}://{self.get_management_addr()}"

    @property
    def query_url(self) -> str:
        return f"{self.scheme}://{self.get_query_addr()}"

    def tls_verify(self) -> ssl.SSLContext | bool:
        """How the admin client verifies the frontends' HTTPS certificates (never off)."""
        return tls_context(self.tls_ca or os.environ.get(TLS_CA_ENV))
