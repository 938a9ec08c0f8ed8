"""Prometheus file-based service discovery: where a cluster's metrics are, kept current.

Replicas come and go (``set_num_replicas``, ``stop_models``, a restart on a new port),
so a static scrape config goes stale within minutes. Instead the managers write a
``file_sd_configs`` targets file, and Prometheus re-reads it whenever it changes
(``deploy/prometheus/prometheus.yml``). The file is a JSON list of target groups::

    [{"targets": ["127.0.0.1:1337"],
      "labels": {"role": "query", "cluster": "default", "frontend": "local-default-query"}},
     {"targets": ["127.0.0.1:40213"],
      "labels": {"role": "replica", "cluster": "default", "model": "sum",
                 "version": "1", "replica": "sum-1-r0"}}]

``role`` is ``query`` (a query frontend) or ``replica``; a replica's ``model``,
``version`` and ``replica`` are the label values the query frontend's own series use,
so the two sides join. ``__scheme__`` is ``https`` for a frontend serving TLS.

Local clusters: ``<data dir>/prometheus/targets.json``, rewritten by the manager after it
changes the process set and by the supervisor when it starts a process (a replica it
restarts may listen on another port). Built from the supervisor's program specs (what
should run: a replica being restarted stays a target, and shows as down meanwhile),
with the address a running replica recorded taking precedence over its spec's.

Docker clusters: ``$SCHOONER_HOME/docker-clusters/<cluster>/prometheus/targets.json``
(``docker_state_dir``), rewritten by the manager after ``start``, a scale and a stop. In
host mode the addresses are the host's (a Prometheus on the host scrapes them); on a
user-defined network they are container names and inner ports
(``schooner-<c>-query-net:1337``, ``schooner-<c>-<replica id>:9100``), which only a
Prometheus attached to that network resolves. The admin token file beside it,
``admin-token``, is written only when asked (``write_prometheus_token``): the cluster's
credentials otherwise stay in its Docker volumes.

Every write is atomic (a temporary file in the same directory, then ``rename``), and a
file whose content would not change is left alone, so Prometheus never reads half a file
and is not woken for nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from admin.container_managers import _docker_specs as docker_specs
from admin.container_managers._net import connect_host, netloc
from admin.container_managers._processes import RunDir
from admin.container_managers._supervision import QUERY, REPLICA, SupervisorFiles

#: Under a local cluster's data directory (and the Docker manager's state directory).
TARGETS_DIR: Final = "prometheus"
TARGETS_FILE: Final = "targets.json"

TargetGroup = dict[str, Any]


def targets_path(root: Path) -> Path:
    """The targets file of the cluster whose directory is ``root``."""
    return root / TARGETS_DIR / TARGETS_FILE


def group(address: str, **labels: str) -> TargetGroup:
    """One target group: one address, its labels (empty values dropped)."""
    return {"targets": [address], "labels": {k: v for k, v in labels.items() if v}}


def query_group(
    address: str, cluster: str, frontend: str = "", *, tls: bool = False
) -> TargetGroup:
    extra = {"__scheme__": "https"} if tls else {}
    return group(address, role=QUERY, cluster=cluster, frontend=frontend, **extra)


def replica_group(
    address: str, cluster: str, model: str, version: str, replica: str
) -> TargetGroup:
    return group(
        address, role=REPLICA, cluster=cluster, model=model, version=version, replica=replica
    )


def render(groups: Iterable[TargetGroup]) -> str:
    """The file's text: groups in a stable order (query frontends first), so that an
    unchanged cluster gives the same bytes."""

    def key(g: TargetGroup) -> tuple[int, str, str]:
        labels = g.get("labels", {})
        return (0 if labels.get("role") == QUERY else 1, labels.get("replica", ""), g["targets"][0])

    return json.dumps(sorted(groups, key=key), indent=2, sort_keys=True) + "\n"


def write_targets(path: Path, groups: Iterable[TargetGroup]) -> bool:
    """Write ``groups`` to ``path`` atomically, unless it already holds them; whether it
    wrote. Raises ``OSError`` as the filesystem does."""
    text = render(groups)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        # Prometheus may run as another user: the addresses are no secret (the token is).
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


# ------------------------------------------------------------------ local clusters


def local_groups(data_dir: Path) -> list[TargetGroup]:
    """The targets of the local cluster in ``data_dir``, from its cluster file and its
    supervisor's specs; none when the cluster file is missing (a stopped cluster)."""
    try:
        cluster = json.loads((data_dir / "cluster.json").read_text(encoding="utf-8"))
        host = connect_host(str(cluster["host"]))
        query_port = int(cluster["query_port"])
        name = str(cluster.get("cluster_name", ""))
        tls = bool(cluster.get("tls_certfile"))
    except (OSError, ValueError, KeyError, TypeError):
        return []
    specs = SupervisorFiles(data_dir).load_specs()
    records = {r.name: r for r in RunDir(data_dir / "run").load_all()}
    groups: list[TargetGroup] = []
    frontends = [s for s in specs if s.role == QUERY]
    if frontends:
        # Several frontends share the query port (SO_REUSEPORT): each scrape reaches one
        # of them. One target; docs/metrics.md says what that means for N > 1.
        ids = [_arg(s.argv, "--frontend-id") for s in frontends]
        only = ids[0] if len(ids) == 1 else ""
        groups.append(query_group(netloc(host, query_port), name, only, tls=tls))
    for spec in specs:
        if spec.role != REPLICA:
            continue
        labels = spec.labels
        record = records.get(spec.name)
        address = (record.metrics_addr if record else "") or labels.get("metrics_addr", "")
        if address:
            groups.append(
                replica_group(
                    address,
                    name,
                    labels.get("model", ""),
                    labels.get("version", ""),
                    labels.get("replica_id", ""),
                )
            )
    return groups


def write_local_targets(data_dir: Path) -> Path:
    """Bring ``<data_dir>/prometheus/targets.json`` up to date; its path."""
    path = targets_path(data_dir)
    write_targets(path, local_groups(data_dir))
    return path


# ------------------------------------------------------------------ Docker clusters


def docker_state_dir(cluster_name: str) -> Path:
    """Where the Docker manager keeps what Prometheus reads (nothing else lives here)."""
    home = Path(os.environ.get("SCHOONER_HOME", "~/.schooner")).expanduser()
    return home / "docker-clusters" / cluster_name


def docker_groups(
    settings: docker_specs.ClusterSettings,
    replicas: Iterable[tuple[str, Mapping[str, str]]],
    *,
    frontends: bool = True,
) -> list[TargetGroup]:
    """The targets of a Docker cluster: its query frontend (when ``frontends``) and each
    replica, given as (container name, container labels)."""
    s = settings
    inner = docker_specs.INNER_PORTS
    cluster = s.cluster_name
    groups: list[TargetGroup] = []
    if frontends:
        if s.host_mode:
            query = netloc(s.connect_host, s.query_port)
        else:
            query = f"{s.container_name(docker_specs.QUERY_NET)}:{inner[docker_specs.QUERY]}"
        only = s.frontend_id(0) if s.query_frontends == 1 else ""
        groups.append(query_group(query, cluster, only, tls=s.tls))
    for name, labels in replicas:
        if s.host_mode:
            port = labels.get(docker_specs.METRICS_PORT, "0")
            if not port.isdigit() or int(port) == 0:
                continue
            address = netloc(s.connect_host, int(port))
        else:
            address = f"{name}:{inner['metrics']}"
        groups.append(
            replica_group(
                address,
                cluster,
                labels.get(docker_specs.MODEL, ""),
                labels.get(docker_specs.VERSION, ""),
                labels.get(docker_specs.REPLICA_ID, ""),
            )
        )
    return groups


def write_token(path: Path, token: str) -> None:
    """The admin token for Prometheus's ``credentials_file``: mode 0600 from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    os.chmod(path, 0o600)


def _arg(argv: list[str], flag: str) -> str:
    try:
        return argv[argv.index(flag) + 1]
    except (ValueError, IndexError):
        return ""
