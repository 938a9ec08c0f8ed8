"""What the Docker manager asks the engine for: container names, labels and run arguments.

Pure functions of the cluster's settings, with no Docker SDK import, so that both
network modes can be checked without an engine (the tests here can only run host
networking). Every container of a cluster carries the labels::

    schooner.cluster=<cluster name>      what stop_all() and connect() select on
    schooner.role=redis|management|query|query-net|replica
    schooner.frontend_index=<i>          query frontends only (0 .. query_frontends-1)
    schooner.model, schooner.version,    replicas only
    schooner.replica_id, schooner.input_type, schooner.metrics_port
    schooner.settings=<json>             frontends only: ports and network, for connect()

Two network modes:

- ``network`` (the production default): every container joins a user-defined network
  and finds the others by container name -- the frontends reach Redis at
  ``schooner-<cluster>-redis:6379``. The query frontends run in the network stack of a
  holder container, ``schooner-<cluster>-query-net`` (as a Kubernetes pod's containers
  share its pause container's): it publishes the query port and every frontend's RPC
  port, and replicas dial ``tcp://schooner-<cluster>-query-net:7000`` (and ``:7001`` ...
  with several frontends). The frontends' ports (and Redis's) are published on ``host``
  (127.0.0.1 by default) at the configured port numbers.
- ``host``: every container shares the host's network stack; each component listens
  on ``host`` at its configured port, and replicas dial ``tcp://127.0.0.1:<rpc_port>``.

``query_frontends=N`` runs N query frontend containers (``schooner-<cluster>-query``,
``-query-1`` ...), which share the query port through ``SO_REUSEPORT`` (``--reuse-port``:
the kernel spreads connections over them, and one that exits leaves the others
serving), each with its own RPC port (``rpc_port + i``) and frontend id; every replica
registers with every one of them. The holder runs nothing but a sleep; if it is killed
all the same, its restart gives it a new network stack and the frontends are cut off from
theirs: ``DockerContainerManager.connect()`` and ``restart_query_frontends()`` restart
them into the new one (``frontends_cut_off``).

A query frontend stops by draining (SIGTERM: ``/healthz`` answers 503, no new
connections, what it accepted is answered) for up to ``drain_timeout`` seconds.
``stop_all()`` and ``restart_query_frontends()`` give its container longer to stop (the
label ``schooner.stop_timeout``), so that they do not kill it before it is done; the
engine's own default is 10 s, so stop one by hand with ``docker stop -t <that>``.

Every container runs without privileges: all capabilities dropped, no-new-privileges
(setuid binaries cannot raise them), and -- Redis from Schooner's image, the frontends
and every replica -- as the images' user ``schooner`` (uid 10001), never root.
Credentials (``_docker_credentials``) live in named volumes the cluster keeps across
``stop_all()``/``start()``: ``schooner-<cluster>-credentials`` (every credential; mounted
by no running container), ``-secrets-frontend`` and ``-secrets-replica`` (each kind of
process's files, mounted read-only at ``/run/schooner/secrets``, named by
``SCHOONER_SECRETS_DIR``), and ``-secrets-redis`` (Redis's ``redis.conf`` with
``requirepass``, mounted read-only at ``/run/schooner/redis``). No secret is in an image,
an environment variable or a command line.

Every container restarts ``unless-stopped``: a replica that crashes comes back, and
connects and registers again; one that cannot load its model exits with status 2 at
every start, which ``replica_state`` reports as a failure with the container's log. A
replica with a memory limit (``mem_limit``, with swap equal: no swap to escape to) that
hits it is killed by the kernel (``OOMKilled``) or exits with status 76 (its model raised
``MemoryError``); one whose query frontend asked for a restart (a batch past its
timeout, or ejected) exits with status 75. Both are restarts, not failures: they are
reported with their reason, and a crash loop only when they keep happening right after
the start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Final

from admin.container_managers._frontend_args import access_log_args, check_access_log_sample
from admin.container_managers._net import check_port, connect_host, netloc
from admin.container_managers.base import (
    CRASH_LOOP_RESTARTS,
    EXIT_CONFIG,
    ReplicaState,
    memory_size,
)
from admin.exceptions import ClusterNotRunningError, InvalidRequestError
from model_container.credentials import SECRETS_DIR_ENV

CLUSTER, ROLE = "schooner.cluster", "schooner.role"
MODEL, VERSION, REPLICA_ID = "schooner.model", "schooner.version", "schooner.replica_id"
INPUT_TYPE, METRICS_PORT = "schooner.input_type", "schooner.metrics_port"
SETTINGS = "schooner.settings"
FRONTEND_INDEX = "schooner.frontend_index"
# Seconds the manager gives a container to stop (the SDK cannot set the engine's own
# StopTimeout): a query frontend's drain and exit.
STOP_TIMEOUT = "schooner.stop_timeout"
REDIS, MANAGEMENT, QUERY, REPLICA = "redis", "management", "query", "replica"
# The holder of the query frontends' network stack (network mode).
QUERY_NET: Final = "query-net"

HOST_MODE, NETWORK_MODE = "host", "network"
# Ports inside the containers in network mode (each container has its own address).
INNER_PORTS: Final = {REDIS: 6379, MANAGEMENT: 1338, QUERY: 1337, "rpc": 7000, "metrics": 9100}
BUNDLE_DIR: Final = "/opt/schooner/model"
# Where the frontends find the TLS certificate and key, mounted read-only from the host.
TLS_DIR: Final = "/run/schooner/tls"
# Where the frontends and replicas find their credentials, and Redis its redis.conf.
SECRETS_DIR: Final = "/run/schooner/secrets"
REDIS_CONF_DIR: Final = "/run/schooner/redis"
REDIS_CONF: Final = "redis.conf"
# The credential volumes: every credential (the source), and what each kind of process
# mounts. "all" is mounted by no running container.
CREDENTIALS, FRONTEND_SECRETS, REPLICA_SECRETS, REDIS_SECRETS = (
    "credentials",
    "secrets-frontend",
    "secrets-replica",
    "secrets-redis",
)
RESTART_POLICY: Final = {"Name": "unless-stopped"}
# The images' user "schooner" (deploy/docker): no container of ours runs as root.
USER: Final = "10001:10001"
# What a container of the cluster may do beyond its user's rights: nothing.
NO_PRIVILEGES: Final = {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]}
# What a Redis image of the user's own (``redis_image=``) gets back: the official image's
# entrypoint starts as root, gives /data to its user "redis" and switches to it.
REDIS_ENTRYPOINT_CAPS: Final = ["CHOWN", "SETGID", "SETUID"]
# Bounded logs: a crash-looping replica must not fill the disk.
LOG_CONFIG: Final = {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
# What the holder of the query frontends' network stack runs: nothing, until stopped.
HOLDER_COMMAND: Final = ["python", "-c", "import signal; signal.pause()"]
# How long a query frontend drains on SIGTERM (the frontend's --drain-timeout default),
# and how much longer its container's stop timeout is: the time to close and exit.
DEFAULT_DRAIN_TIMEOUT: Final = 30
DRAIN_MARGIN: Final = 5
# Exit statuses of a replica that ask for a restart, not a failure to start
# (model_container.protocol.EXIT_RESTART_REQUESTED / EXIT_MEMORY_LIMIT).
EXIT_RESTART_REQUESTED: Final = 75
EXIT_MEMORY_LIMIT: Final = 76
# A replica that ran this long before exiting was not crash looping (Docker's restart
# policy resets its back-off after the same time).
STAYED_UP_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """Where a cluster's components listen and how they find each other."""

    cluster_name: str
    network_mode: str = NETWORK_MODE  # "network" or "host"
    network: str = ""  # the user-defined network (network mode); "" -> schooner-<cluster>
    host: str = "127.0.0.1"  # where ports are bound (host mode) or published (network)
    query_port: int = 1337
    management_port: int = 1338
    rpc_port: int = 7000
    redis_port: int = 6379
    redis_url: str | None = None  # an external Redis; None runs one in a container
    key_prefix: str = "schooner"
    # The frontends' HTTPS certificate and key on the host (absolute), or None for HTTP.
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    # Query frontend containers sharing the query port; each has RPC port rpc_port + i.
    query_frontends: int = 1
    # Seconds a query frontend drains on SIGTERM before it exits.
    drain_timeout: int = DEFAULT_DRAIN_TIMEOUT
    # The share of requests the access log records (None: the frontend's default, 1).
    access_log_sample: float | None = None

    def __post_init__(self) -> None:
        if self.network_mode not in (HOST_MODE, NETWORK_MODE):
            raise InvalidRequestError(
                f"network_mode={self.network_mode!r}: use None (a user-defined network, "
                "the default) or 'host'"
            )
        if self.network_mode == NETWORK_MODE and not self.network:
            object.__setattr__(self, "network", f"schooner-{self.cluster_name}")
        for f in ("query_port", "management_port", "rpc_port", "redis_port"):
            check_port(f, getattr(self, f))
        for f in ("query_frontends", "drain_timeout"):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"{f} must be an integer >= 1, got {value!r}")
        check_port("rpc_port + query_frontends - 1", self.rpc_port + self.query_frontends - 1)
        check_access_log_sample(self.access_log_sample)

    # ------------------------------------------------------------------ serialised

    def to_label(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def adopt(self, label: str, source: str = "the query frontend") -> ClusterSettings:
        """These settings updated from a running cluster's ``schooner.settings`` label
        (read from the container ``source``); ``ClusterNotRunningError`` if it is damaged."""
        try:
            doc = json.loads(label)
        except ValueError as exc:
            raise _damaged(source, exc) from exc
        if not isinstance(doc, dict):
            raise _damaged(source, "not a JSON object")
        known = {f.name for f in fields(self)}
        try:
            return replace(self, **{k: v for k, v in doc.items() if k in known})
        except (InvalidRequestError, TypeError) as exc:
            raise _damaged(source, exc) from exc

    # ------------------------------------------------------------------ names

    def container_name(self, role: str) -> str:
        return f"schooner-{self.cluster_name}-{role}"

    def replica_name(self, replica_id: str) -> str:
        return f"schooner-{self.cluster_name}-{replica_id}"

    def query_name(self, index: int) -> str:
        """Query frontend ``index``'s container: ``schooner-<c>-query``, ``-query-1`` ..."""
        base = self.container_name(QUERY)
        return base if index == 0 else f"{base}-{index}"

    def frontend_id(self, index: int) -> str:
        """A fixed id per frontend: on restart it drops the replica records it left."""
        base = f"docker-{self.cluster_name}-query"
        return base if index == 0 else f"{base}-{index}"

    @property
    def rpc_ports(self) -> list[int]:
        """The query frontends' RPC ports on the host (host mode) or published there."""
        return [self.rpc_port + i for i in range(self.query_frontends)]

    @property
    def query_stop_timeout(self) -> int:
        """Seconds ``docker stop`` waits for a query frontend: its drain, then its exit."""
        return self.drain_timeout + DRAIN_MARGIN

    @property
    def volume(self) -> str:
        """The named volume Redis keeps its append-only file in."""
        return f"schooner-{self.cluster_name}-redis-data"

    def credentials_volume(self, kind: str = CREDENTIALS) -> str:
        """The named volume of one kind of credentials (``CREDENTIALS`` ... ``REDIS_SECRETS``)."""
        return f"schooner-{self.cluster_name}-{kind}"

    @property
    def credential_volumes(self) -> list[str]:
        kinds = (CREDENTIALS, FRONTEND_SECRETS, REPLICA_SECRETS, REDIS_SECRETS)
        return [self.credentials_volume(kind) for kind in kinds]

    def _secrets_mount(self, kind: str) -> dict[str, dict[str, str]]:
        return {self.credentials_volume(kind): {"bind": SECRETS_DIR, "mode": "ro"}}

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None

    @property
    def host_mode(self) -> bool:
        return self.network_mode == HOST_MODE

    @property
    def connect_host(self) -> str:
        """The address a client on this host dials: a wildcard bind address is not one."""
        return connect_host(self.host)

    # ------------------------------------------------------------------ addresses

    def labels(self, role: str, **extra: str) -> dict[str, str]:
        labels = {CLUSTER: self.cluster_name, ROLE: role, **extra}
        if role in (MANAGEMENT, QUERY):
            labels[SETTINGS] = self.to_label()
        return labels

    @property
    def inner_redis_url(self) -> str:
        """Redis as the frontends' containers reach it."""
        if self.redis_url:
            return self.redis_url
        if self.host_mode:
            return f"redis://{netloc(self.connect_host, self.redis_port)}/0"
        return f"redis://{self.container_name(REDIS)}:{INNER_PORTS[REDIS]}/0"

    @property
    def inner_rpc_address(self) -> str:
        """Every query frontend's RPC address as replica containers dial them: the
        model container's ``--frontend`` list (comma-separated)."""
        if self.host_mode:
            hosts = [netloc(self.connect_host, port) for port in self.rpc_ports]
        else:
            holder = self.container_name(QUERY_NET)
            hosts = [f"{holder}:{INNER_PORTS['rpc'] + i}" for i in range(self.query_frontends)]
        return ",".join(f"tcp://{h}" for h in hosts)

    def _network_kwargs(self, published: Mapping[str, int] | None = None) -> dict[str, Any]:
        """``network_mode="host"``, or the user network with ``published`` inner ports."""
        if self.host_mode:
            return {"network_mode": HOST_MODE}
        kwargs: dict[str, Any] = {"network": self.network}
        if published:
            kwargs["ports"] = {f"{inner}/tcp": (self.host, out) for inner, out in published.items()}
        return kwargs

    def _bind(self, role: str, port: int) -> tuple[str, int]:
        """The (address, port) a component listens on inside its container."""
        if self.host_mode:
            return self.host, port
        return "0.0.0.0", INNER_PORTS[role]

    def with_tls(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A frontend's ``spec`` (management or query) serving HTTPS when the cluster has
        a certificate: it and its key mounted read-only (readable by uid 10001), and the
        flags that point the frontend at them. Unchanged without TLS."""
        if self.tls_certfile is None or self.tls_keyfile is None:
            return spec
        cert, key = f"{TLS_DIR}/cert.pem", f"{TLS_DIR}/key.pem"
        volumes = spec.setdefault("volumes", {})
        volumes[self.tls_certfile] = {"bind": cert, "mode": "ro"}
        volumes[self.tls_keyfile] = {"bind": key, "mode": "ro"}
        spec["command"] = [*spec["command"], "--tls-certfile", cert, "--tls-keyfile", key]
        return spec

    # ------------------------------------------------------------------ containers

    def _common(self, role: str, image: str, command: list[str], **labels: str) -> dict[str, Any]:
        return {
            "image": image,
            "command": command,
            "labels": self.labels(role, **labels),
            "detach": True,
            "restart_policy": dict(RESTART_POLICY),
            "log_config": dict(LOG_CONFIG),
            "environment": {"PYTHONUNBUFFERED": "1"},
            "user": USER,
            **{k: list(v) for k, v in NO_PRIVILEGES.items()},
        }

    def _with_secrets(self, spec: dict[str, Any], kind: str) -> dict[str, Any]:
        """``spec`` with ``kind``'s credentials mounted and ``SCHOONER_SECRETS_DIR`` set."""
        spec["volumes"] = {**spec.get("volumes", {}), **self._secrets_mount(kind)}
        spec["environment"] = {**spec["environment"], SECRETS_DIR_ENV: SECRETS_DIR}
        return spec

    def redis_spec(self, image: str, *, own_image: bool = True) -> dict[str, Any]:
        """Redis with its data in the volume. ``own_image``: Schooner's Redis image, which
        runs as uid 10001 like the rest; ``False`` (``redis_image=``), the image's own user
        and entrypoint, which needs the capabilities to switch to that user."""
        bind, port = self._bind(REDIS, self.redis_port)
        command = [
            # First, the config file requiring the cluster's password: on no command line.
            *("redis-server", f"{REDIS_CONF_DIR}/{REDIS_CONF}"),
            *("--port", str(port), "--bind", bind),
            # Append-only file on, RDB snapshots off: every change is on disk within a
            # second, and a SIGTERM (docker stop, docker restart) flushes the rest.
            *("--dir", "/data", "--appendonly", "yes", "--save", ""),
        ]
        spec = self._common(REDIS, image, command)
        if not own_image:
            del spec["user"]
            spec["cap_add"] = list(REDIS_ENTRYPOINT_CAPS)
        return {
            **spec,
            "name": self.container_name(REDIS),
            "volumes": {
                self.volume: {"bind": "/data", "mode": "rw"},
                self.credentials_volume(REDIS_SECRETS): {"bind": REDIS_CONF_DIR, "mode": "ro"},
            },
            "stop_signal": "SIGTERM",
            **self._network_kwargs({str(INNER_PORTS[REDIS]): self.redis_port}),
        }

    def management_spec(self, image: str) -> dict[str, Any]:
        bind, port = self._bind(MANAGEMENT, self.management_port)
        command = [
            *("python", "-m", "management_frontend"),
            *("--redis-url", self.inner_redis_url, "--key-prefix", self.key_prefix),
            *("--host", bind, "--port", str(port)),
        ]
        return {
            **self._with_secrets(self._common(MANAGEMENT, image, command), FRONTEND_SECRETS),
            "name": self.container_name(MANAGEMENT),
            "init": True,
            **self._network_kwargs({str(INNER_PORTS[MANAGEMENT]): self.management_port}),
        }

    def query_net_spec(self, image: str) -> dict[str, Any]:
        """The holder of the query frontends' network stack (network mode only): it
        joins the user network, publishes the query port and every frontend's RPC port,
        and runs nothing but a sleep, so that it has no reason to exit."""
        published = {str(INNER_PORTS[QUERY]): self.query_port}
        for i, port in enumerate(self.rpc_ports):
            published[str(INNER_PORTS["rpc"] + i)] = port
        return {
            **self._common(QUERY_NET, image, list(HOLDER_COMMAND)),
            "name": self.container_name(QUERY_NET),
            "init": True,
            # A sleep needs little; the cap keeps a mistake from costing the host more.
            "mem_limit": 64 * 2**20,
            **self._network_kwargs(published),
        }

    def query_spec(self, image: str, index: int = 0) -> dict[str, Any]:
        """Query frontend ``index``: in the holder's network stack (network mode) or the
        host's, on the shared query port (``--reuse-port`` when there are several) and
        its own RPC port."""
        if not 0 <= index < self.query_frontends:
            raise InvalidRequestError(
                f"query frontend {index} of {self.query_frontends}: use 0 .. "
                f"{self.query_frontends - 1}"
            )
        bind, port = self._bind(QUERY, self.query_port)
        rpc_bind, rpc_port = self._bind("rpc", self.rpc_port)
        command = [
            *("python", "-m", "query_frontend"),
            *("--redis-url", self.inner_redis_url, "--key-prefix", self.key_prefix),
            *("--host", bind, "--port", str(port)),
            *("--rpc-host", rpc_bind, "--rpc-port", str(rpc_port + index)),
            # A fixed id: on restart the frontend drops the replica records it left.
            *("--frontend-id", self.frontend_id(index)),
        ]
        if self.query_frontends > 1:
            command.append("--reuse-port")
        if self.drain_timeout != DEFAULT_DRAIN_TIMEOUT:
            command += ["--drain-timeout", str(self.drain_timeout)]
        command += access_log_args(self.access_log_sample)
        labels = {FRONTEND_INDEX: str(index), STOP_TIMEOUT: str(self.query_stop_timeout)}
        spec = self._common(QUERY, image, command, **labels)
        network: dict[str, Any] = {"network_mode": HOST_MODE}
        if not self.host_mode:
            network = {"network_mode": f"container:{self.container_name(QUERY_NET)}"}
        return {
            **self._with_secrets(spec, FRONTEND_SECRETS),
            "name": self.query_name(index),
            "init": True,
            # SIGTERM, then the drain, then SIGKILL: stop_all() and restart_query_frontends()
            # wait the STOP_TIMEOUT label's seconds; by hand, docker stop -t that many.
            "stop_signal": "SIGTERM",
            **network,
        }

    def replica_spec(
        self,
        image: str,
        *,
        name: str,
        version: str,
        input_type: str,
        bundle_sha256: str,
        replica_id: str,
        metrics_port: int = 0,
        memory_limit: int = 0,
    ) -> dict[str, Any]:
        """A model replica. ``metrics_port`` is its host port in host mode (each replica
        needs its own there); in network mode every replica serves on the inner port.
        ``bundle_sha256`` is the digest recorded in Redis: the replica refuses a bundle in
        the image that does not match it. ``memory_limit``: bytes (0: none), memory and
        swap together, so that the replica cannot page out past it."""
        if self.host_mode:
            metrics_host, port = self.host, metrics_port
        else:
            metrics_host, port = "0.0.0.0", INNER_PORTS["metrics"]
        spec = self._common(
            REPLICA,
            image,
            ["python", "-m", "model_container"],
            **{
                MODEL: name,
                VERSION: version,
                REPLICA_ID: replica_id,
                INPUT_TYPE: input_type,
                METRICS_PORT: str(port),
            },
        )
        spec["environment"].update(
            {
                "SCHOONER_BUNDLE": BUNDLE_DIR,
                "SCHOONER_BUNDLE_SHA256": bundle_sha256,
                "SCHOONER_FRONTEND": self.inner_rpc_address,
                "SCHOONER_MODEL_NAME": name,
                "SCHOONER_MODEL_VERSION": version,
                "SCHOONER_INPUT_TYPE": input_type,
                "SCHOONER_REPLICA_ID": replica_id,
                "SCHOONER_METRICS_HOST": metrics_host,
                "SCHOONER_METRICS_PORT": str(port),
            }
        )
        if memory_limit > 0:
            spec["mem_limit"] = memory_limit
            spec["memswap_limit"] = memory_limit
        return {
            **self._with_secrets(spec, REPLICA_SECRETS),
            "name": self.replica_name(replica_id),
            "init": True,
            **self._network_kwargs(),
        }


def _damaged(source: str, why: object) -> ClusterNotRunningError:
    return ClusterNotRunningError(
        f"the {SETTINGS} label of {source} is damaged ({why}): stop_all() and start() the "
        "cluster again"
    )


def replica_index(replica: str) -> int:
    """The index of a replica id made by ``base.replica_id`` (-1 for any other id)."""
    tail = replica.rpartition("-r")[2]
    return int(tail) if tail.isdigit() else -1


def cut_off(holder: Mapping[str, Any], frontend: Mapping[str, Any]) -> bool:
    """Whether a query frontend (``docker inspect`` attributes) runs in a network stack
    its holder no longer has: it started before the holder last started."""
    try:
        held = parse_timestamp(str((holder.get("State") or {})["StartedAt"]))
        started = parse_timestamp(str((frontend.get("State") or {})["StartedAt"]))
    except (KeyError, ValueError):
        return False
    return started < held


def status_replicas(status: Mapping[str, Any]) -> set[str]:
    """The replicas a query frontend's ``/status`` says are connected, as
    ``model:version/replica id``."""
    models = status.get("models")
    found: set[str] = set()
    for arm, queue in (models if isinstance(models, dict) else {}).items():
        replicas = queue.get("replicas") if isinstance(queue, dict) else None
        found.update(f"{arm}/{r}" for r in (replicas if isinstance(replicas, list) else []))
    return found


def replica_state(
    replica: str,
    container: str,
    attrs: Mapping[str, Any],
    log_tail: str = "",
    last_exit_code: int | None = None,
) -> ReplicaState:
    """A replica container's ``docker inspect`` attributes as a ``ReplicaState``.

    Running, or restarting after a crash, counts as running: the engine brings it back
    and it registers again. Restarting after exit status 2 (the model cannot be loaded),
    restarting over and over, or stopped for good counts as failed, with the exit status
    and the end of the container's log in ``detail``. A restart the replica asked for
    (status 75: its query frontend asked; status 76 or killed by the kernel: it hit its
    memory limit) is a crash loop only when it keeps happening within ``STAYED_UP_S`` of
    the start. ``restarts``, ``memory_limit_hit`` and, for a running replica that was
    restarted, ``detail`` say why it last restarted: ``last_exit_code`` is the status of
    its last exit (the engine's ``die`` event), which a running container's attributes
    no longer carry.
    """
    state = attrs.get("State") or {}
    status = str(state.get("Status", "unknown"))
    restarts = int(attrs.get("RestartCount") or 0)
    error = str(state.get("Error") or "")
    limit = int((attrs.get("HostConfig") or {}).get("Memory") or 0)
    restarting = status == "restarting" or bool(state.get("Restarting"))
    up = not restarting and (status in ("running", "paused") or (status == "created" and not error))
    code = last_exit_code if up else state.get("ExitCode")
    oom = bool(state.get("OOMKilled")) and (restarts > 0 or not up)
    memory_hit = oom or code == EXIT_MEMORY_LIMIT
    why = _exit_reason(code, memory_hit=memory_hit, limit=limit)
    reason = ""
    if restarting:
        asked = memory_hit or code == EXIT_RESTART_REQUESTED
        if code == EXIT_CONFIG:
            reason = "exits at start with status 2 (its model cannot be loaded)"
        elif asked and restarts >= CRASH_LOOP_RESTARTS and _ran_s(state) < STAYED_UP_S:
            reason = f"keeps exiting right after it starts ({why}; restarted {restarts} times)"
        elif not asked and restarts >= CRASH_LOOP_RESTARTS:
            reason = f"keeps exiting (last status {code}, restarted {restarts} times)"
    elif not up:
        reason = f"is {status} (exit status {code}"
        reason += f", {why})" if memory_hit else ")"
        if error:
            reason += f": {error}"
    if reason:
        detail = f"replica {replica} (container {container}) {reason}; the end of its log:\n"
        detail = (detail + log_tail).rstrip()
        return ReplicaState(replica, False, None, detail, restarts, "failed", memory_hit)
    detail = ""
    if restarts and (why or restarting):
        detail = f"replica {replica} was restarted {restarts} time(s); it last {why or 'exited'}"
    return ReplicaState(
        replica, True, None, detail, restarts, "restarting" if restarting else "running", memory_hit
    )


def _exit_reason(code: object, *, memory_hit: bool, limit: int) -> str:
    """Why a replica last exited, as a phrase ("" when its status is not known)."""
    if memory_hit:
        if not limit:
            return "killed for lack of memory"
        return f"hit its memory limit ({memory_size(limit)})"
    if code == EXIT_RESTART_REQUESTED:
        return "exited at its query frontend's request (a batch past its timeout, or ejected)"
    if code is None:
        return ""
    return f"exited with status {code}"


def _ran_s(state: Mapping[str, Any]) -> float:
    """How long the container's last run lasted (inf when unknown: not a crash loop)."""
    try:
        started = parse_timestamp(str(state["StartedAt"]))
        finished = parse_timestamp(str(state["FinishedAt"]))
    except (KeyError, ValueError):
        return float("inf")
    if finished < started:  # running again: FinishedAt is of the run before
        return float("inf")
    return (finished - started).total_seconds()


def parse_timestamp(text: str) -> datetime:
    """An engine timestamp (RFC 3339 with nanoseconds) as a datetime."""
    head, _, frac = text.rstrip("Z").partition(".")
    micros = (frac + "000000")[:6] if frac else "0"
    return datetime.fromisoformat(head).replace(microsecond=int(micros), tzinfo=UTC)
