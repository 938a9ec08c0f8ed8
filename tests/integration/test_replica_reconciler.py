"""A replica count recorded through the REST API alone is enacted by a local cluster.

The dashboard's *scale* calls ``PUT /admin/models/{m}/versions/{v}/replicas`` and
nothing else; the reconciler that the local manager runs under the cluster's supervisor
starts and stops the replicas, with no notebook attached.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from admin import Connection
from admin.deployers.python import deploy_python_closure
from tests.clusters import started
from tests.polling import eventually

SCALE_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def conn(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., Any]
) -> Iterator[Connection]:
    with started(local_manager(tmp_path_factory.mktemp("reconciled"))) as c:
        deploy_python_closure(c, "scaled", "1", "doubles", lambda xs: [sum(x) for x in xs])
        c.register_application("scaled-app", "doubles", "null", 1_000_000)
        c.link_model_to_app("scaled-app", "scaled")
        yield c


def _admin(conn: Connection) -> httpx.Client:
    return httpx.Client(
        base_url=conn.cm.management_url,
        headers={"Authorization": f"Bearer {conn.cm.admin_token()}"},
        timeout=10,
    )


def _running_replicas(conn: Connection) -> list[str]:
    return [r.replica_id for r in conn.cm.replica_states("scaled", "1") if r.running and r.pid]


def _connected(conn: Connection) -> int:
    body = httpx.get(
        f"{conn.cm.query_url}/status",
        headers={"Authorization": f"Bearer {conn.cm.admin_token()}"},
        timeout=10,
    ).json()
    return len(body["models"].get("scaled:1", {}).get("replicas", []))


def test_a_count_put_through_the_rest_api_starts_and_stops_replicas(conn: Connection) -> None:
    with _admin(conn) as admin:
        answer = admin.put("/admin/models/scaled/versions/1/replicas", json={"num_replicas": 3})
        assert answer.status_code == 200, answer.text
        eventually(
            lambda: len(_running_replicas(conn)) == 3,
            what="three replicas running after the REST API recorded 3",
            timeout=SCALE_TIMEOUT,
        )
        eventually(
            lambda: _connected(conn) == 3,
            what="three replicas connected to the query frontend",
            timeout=SCALE_TIMEOUT,
        )
        reply = httpx.post(f"{conn.cm.query_url}/scaled-app/predict", json={"input": [1.0, 2.0]})
        assert reply.json()["output"] == 3.0

        answer = admin.put("/admin/models/scaled/versions/1/replicas", json={"num_replicas": 1})
        assert answer.status_code == 200, answer.text
        eventually(
            lambda: len(_running_replicas(conn)) == 1,
            what="one replica left after the REST API recorded 1",
            timeout=SCALE_TIMEOUT,
        )
        reply = httpx.post(f"{conn.cm.query_url}/scaled-app/predict", json={"input": [2.0, 2.0]})
        assert reply.json()["output"] == 4.0


def test_the_reconciler_is_supervised_and_comes_back(conn: Connection) -> None:
    def reconciler_pid() -> int | None:
        for p in conn.cm.processes():
            if p["role"] == "reconciler" and p["running"]:
                return int(p["pid"])
        return None

    eventually(lambda: reconciler_pid() is not None, what="the reconciler running")
    first = reconciler_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    eventually(
        lambda: (pid := reconciler_pid()) is not None and pid != first,
        what="the reconciler restarted by the supervisor",
        timeout=SCALE_TIMEOUT,
    )
    with _admin(conn) as admin:
        admin.put("/admin/models/scaled/versions/1/replicas", json={"num_replicas": 2})
    eventually(
        lambda: len(_running_replicas(conn)) == 2,
        what="the restarted reconciler enacting a new count",
        timeout=SCALE_TIMEOUT,
    )
    conn.set_num_replicas("scaled", 1, "1")  # the notebook's way agrees with it
    assert len(_running_replicas(conn)) == 1


def test_a_stopped_cluster_does_not_bring_replicas_back(
    tmp_path: Path, local_manager: Callable[..., Any]
) -> None:
    cm = local_manager(tmp_path / "stopping")
    with started(cm) as c:
        deploy_python_closure(c, "brief", "1", "doubles", lambda xs: [0.0 for _ in xs])
    assert not [p for p in cm.processes() if p["running"]]
