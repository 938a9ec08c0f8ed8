"""Waiting until the cluster has caught up with a change a ``Connection`` just made.

Two waits: for a model version's replicas to connect to the query frontends (after a
deploy, a scale or a restart), and for the query frontend to route as the management
API was just told (after a new app, link, policy or current version). A ``Connection``
method returns once its change is in effect, so that a query sent right after it sees
the change. Both poll with a deadline (``_progress.wait_for``), never a fixed sleep;
the first fails fast when a replica exits, the second only warns on a timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from admin._http import JSONClient, JSONObject, ManagementClient
from admin._progress import ProgressCallback, wait_for
from admin.container_managers.base import ContainerManager
from admin.exceptions import ModelStartError, SchoonerError

logger = logging.getLogger(__name__)

# A condition on the ``apps`` of the query frontend's ``/status`` (see ``_status``).
RoutesDone = Callable[[dict[str, Any]], bool]


def wait_for_replicas(
    api: ManagementClient,
    cm: ContainerManager,
    name: str,
    version: str,
    num_replicas: int,
    *,
    timeout: float,
    report: ProgressCallback,
) -> None:
    """Poll until ``num_replicas`` of the manager's replicas are connected; fail fast
    with the log tail of one that exited.

    A replica that serves several query frontends is connected once per frontend (on
    Kubernetes); the manager says how many connections to wait for.
    """
    if num_replicas == 0:
        return
    connected = 0
    wanted = num_replicas

    def done() -> bool:
        nonlocal connected, wanted
        states = cm.replica_states(name, version)
        for state in states:
            if not state.running:
                raise ModelStartError(
                    f"{name}:{version} did not start: {state.detail}\nFix the model or "
                    "its packages and deploy again; all logs: conn.get_logs(dir)"
                )
        pids = {s.replica_id: s.pid for s in states}
        wanted = cm.connections_expected(name, version, num_replicas)
        connected = sum(
            1
            for r in api.list_replicas()
            if r.get("model_name") == name
            and str(r.get("model_version")) == version
            and _is_replica(r, pids)
        )
        return connected >= wanted

    def counted() -> str:
        if wanted == num_replicas:
            return f"{connected}/{num_replicas} replica(s) connected"
        return (
            f"{connected}/{wanted} connections of {num_replicas} replica(s) to the query frontends"
        )

    ok = wait_for(
        done,
        timeout=timeout,
        on_progress=lambda t: report(f"waiting for {name}:{version}: {counted()} ({t:.0f} s)"),
    )
    if not ok:
        raise ModelStartError(
            f"{name}:{version} did not connect within {timeout:g} s "
            f"({counted()}). Its replicas may still be loading (raise "
            "Connection(deploy_timeout=...)), or cannot reach the query frontend's RPC "
            "port: see their logs with conn.get_logs(dir)"
        )
    report(f"{name}:{version}: {num_replicas} replica(s) connected")


def _is_replica(record: JSONObject, pids: dict[str, int | None]) -> bool:
    """Whether a connected-replica record is one of the replicas the manager started.

    The pids must agree when both are known: a record left behind by an earlier process
    with the same replica id (a crash, a restart) is not the new replica.
    """
    replica_id = record.get("replica_id")
    if replica_id not in pids:
        return False
    ours, theirs = pids[replica_id], record.get("pid")
    return not ours or not theirs or ours == theirs


def await_routes(client: JSONClient, done: RoutesDone, what: str, *, timeout: float) -> None:
    """Wait (briefly) until the query frontend routes as just changed.

    Changes reach query frontends through the change feed within milliseconds; waiting
    for it here means a query sent right after this call sees the change. ``done``
    gets the ``apps`` of the query frontend's ``/status`` (``client``). Not fatal on a
    timeout.
    """

    def check() -> bool:
        try:
            apps = client.get_object("/status").get("apps")
        except SchoonerError:
            return False
        return done(dict(apps) if isinstance(apps, dict) else {})

    if not wait_for(check, timeout=timeout):
        logger.warning("the query frontend had not applied %s after %g s", what, timeout)
