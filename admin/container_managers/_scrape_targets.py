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

Every write is atomic (a temporary file in the same directory, then ``rename``), and a
file whose content would not change is left alone, so Prometheus never reads half a file
and is not woken for nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

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


def _arg(argv: list[str], flag: str) -> str:
    try:
        return argv[argv.index(flag) + 1]
    except (ValueError, IndexError):
        return ""
