"""The chaos benchmark's cluster: a fresh local Schooner cluster per scenario.

Each scenario gets its own data directory (a temporary one) and free ports, so that a
fault that today's code does not recover from (a dead Redis, replicas stuck forever)
cannot spill into the next scenario. The cluster serves:

- ``sklearn`` (model, 2 replicas): the benchmark's LogisticRegression, wrapped so that
  the faults can be switched on from outside: a row whose first feature is
  ``POISON`` makes the call sleep forever, and the replica whose pid is written in the
  cluster's flag file raises ``MemoryError`` on every call;
- app ``sklearn`` (SLO 100 ms by default, default output -1.0) linked to it: the load;
- app ``feedback`` (exp3, the same model): where ``/update`` calls go, as its policy
  state lives in Redis;
- with ``bulk=True``, model ``noop`` (1 replica) behind app ``bulk`` (SLO 1 s): where
  the large bodies go.

Features the code under test may or may not have are detected by trying them
(``Features``), never assumed.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.baselines.model import NUM_FEATURES, train_model
from benchmarks.procs import free_ports, wait_http_ok

POISON = 1234.5  # the first feature of a poison input
PROBE_BODY = b'{"input":[' + b",".join([b"0.5"] * NUM_FEATURES) + b"]}"


@dataclass(frozen=True)
class Features:
    """What the code under test offers, found by looking, not assumed."""

    query_frontends: bool  # LocalContainerManager(query_frontends=N)
    restart_query_frontends: bool  # restart_query_frontends() on the manager or Connection

    @classmethod
    def detect(cls) -> Features:
        from admin import Connection, LocalContainerManager

        params = inspect.signature(LocalContainerManager).parameters
        return cls(
            query_frontends="query_frontends" in params,
            restart_query_frontends=any(
                callable(getattr(c, "restart_query_frontends", None))
                for c in (LocalContainerManager, Connection)
            ),
        )


class Cluster:
    """A started local cluster, its URLs, and what the faults need to reach into it."""

    def __init__(self, manager: Any, conn: Any, data_dir: Path, slo_ms: float) -> None:
        self.manager = manager
        self.conn = conn
        self.data_dir = data_dir
        self.slo_ms = slo_ms
        self.flag_file = data_dir / "chaos-memory-error-pid"
        self.query_url = f"{'https' if manager.tls else 'http'}://{conn.get_query_addr()}"
        self.management_url = str(manager.management_url)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.manager.admin_token()}"}

    def processes(self) -> list[dict[str, Any]]:
        """The manager's process table (``[]`` if it cannot be read)."""
        try:
            return list(self.manager.processes())
        except Exception:
            return []

    def pids(self, role: str) -> list[int]:
        """Running pids of a role, in the manager's order."""
        return [int(p["pid"]) for p in self.processes() if p["role"] == role and p["running"]]

    def supervision(self) -> dict[str, dict[str, Any]]:
        """The supervisor's process table as a query frontend's ``/status`` shows it
        (name -> state, role, restarts...); empty when there is none or no answer."""
        import httpx

        try:
            r = httpx.get(f"{self.query_url}/status", headers=self.admin_headers(), timeout=5.0)
            processes = r.json().get("supervision", {}).get("processes", {})
        except Exception:
            return {}
        return processes if isinstance(processes, dict) else {}

    def snapshot(self) -> dict[str, Any] | str:
        """Apps, models (versions, replica counts), links and the policy state of the apps
        that get no feedback; a string saying why when the admin API cannot answer."""
        try:
            apps = self.conn.get_all_apps(verbose=True)
            names = sorted(str(a["name"]) for a in apps)
            return {
                "apps": sorted(apps, key=lambda a: str(a["name"])),
                "models": sorted(
                    self.conn.get_all_models(verbose=True),
                    key=lambda m: (str(m.get("name")), str(m.get("version"))),
                ),
                "links": {name: sorted(self.conn.get_linked_models(name)) for name in names},
                "policy_state": {
                    name: self.conn.get_policy_state(name) for name in names if name != "feedback"
                },
            }
        except Exception as exc:
            return f"admin API did not answer ({type(exc).__name__})"


def _sklearn_closure(flag_file: Path) -> Any:
    model = train_model()
    flag = str(flag_file)

    # Nested, so cloudpickle ships it by value, not as a reference to this module.
    def predict(xs: Any) -> list[Any]:
        import os
        import time

        import numpy as np

        if os.path.exists(flag):
            try:
                with open(flag, encoding="ascii") as f:
                    bad_pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                bad_pid = 0
            if bad_pid == os.getpid():
                raise MemoryError("chaos benchmark: this replica is out of memory")
        rows = np.asarray(xs, dtype=np.float64)
        if rows.ndim == 2 and bool((rows[:, 0] == POISON).any()):
            while True:  # the poison input: never answers
                time.sleep(3600)
        return list(model.predict(rows).tolist())

    return predict


def _noop(xs: Any) -> list[int]:
    return [0] * len(xs)


@contextlib.contextmanager
def local_cluster(
    name: str,
    *,
    slo_ms: float,
    query_frontends: int,
    features: Features,
    bulk: bool,
    log_dir: Path | None,
    start_timeout: float = 120.0,
) -> Iterator[Cluster]:
    """Start a cluster as described above; stop it (and keep its logs) after."""
    from admin import Connection, LocalContainerManager
    from admin.deployers.python import deploy_python_closure

    query_port, management_port, rpc_port, redis_port = free_ports(4)
    kwargs: dict[str, Any] = {}
    if query_frontends != 1:
        if not features.query_frontends:
            raise RuntimeError("LocalContainerManager does not take query_frontends")
        kwargs["query_frontends"] = query_frontends
    with tempfile.TemporaryDirectory(prefix=f"chaos-{name}-") as tmp:
        manager = LocalContainerManager(
            data_dir=tmp,
            cluster_name=f"chaos-{name}",
            query_port=query_port,
            management_port=management_port,
            rpc_port=rpc_port,
            redis_port=redis_port,
            **kwargs,
        )
        conn = Connection(manager, progress=lambda line: None)
        try:
            conn.start()
            cluster = Cluster(manager, conn, Path(tmp), slo_ms)
            slo = round(slo_ms * 1000)
            deploy_python_closure(
                conn, "sklearn", "1", "doubles", _sklearn_closure(cluster.flag_file), num_replicas=2
            )
            conn.register_application("sklearn", "doubles", -1.0, slo)
            conn.link_model_to_app("sklearn", "sklearn")
            conn.register_application("feedback", "doubles", -1.0, slo, policy="exp3")
            conn.link_model_to_app("feedback", "sklearn")
            apps = ["sklearn", "feedback"]
            if bulk:
                deploy_python_closure(conn, "noop", "1", "doubles", _noop)
                conn.register_application("bulk", "doubles", -1.0, 1_000_000)
                conn.link_model_to_app("bulk", "noop")
                apps.append("bulk")
            for app in apps:
                wait_http_ok(f"{cluster.query_url}/{app}/predict", PROBE_BODY, start_timeout, None)
            yield cluster
        finally:
            if log_dir is not None:
                with contextlib.suppress(Exception):
                    conn.get_logs(log_dir / name)
            with contextlib.suppress(Exception):
                conn.stop_all()
            _stop_leftovers(manager)


def _stop_leftovers(manager: Any) -> None:
    """Whatever ``stop_all`` could not stop (it raised, or a process was not recorded):
    SIGKILL the recorded processes still running, so no scenario outlives its run."""
    from benchmarks.procs import terminate

    with contextlib.suppress(Exception):
        left = [int(p["pid"]) for p in manager.processes() if p["running"]]
        if left:
            terminate([pid for pid in left if pid != os.getpid()], timeout=5.0)
