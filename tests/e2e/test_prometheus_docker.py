"""Prometheus scraping a Docker cluster (host networking) through the targets file the
Docker manager keeps: the shipped ``deploy/prometheus/prometheus.yml`` copied beside it,
the admin token written on request, every target up, and the targets following a scale.
The user-network layout (container names) is checked in ``tests/unit/test_scrape_targets.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polling
import pytest
from ports import cluster_ports
from prometheus_server import Prometheus, require_tool

from admin import Connection, DockerContainerManager
from admin.deployers.python import deploy_python_closure

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$SCHOONER_HOME for this module: where the manager writes the targets file."""
    path = tmp_path_factory.mktemp("schooner-home")
    before = os.environ.get("SCHOONER_HOME")
    os.environ["SCHOONER_HOME"] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop("SCHOONER_HOME", None)
        else:
            os.environ["SCHOONER_HOME"] = before


@pytest.fixture(scope="module")
def conn(docker_client: Any, session_id: str, home: Path) -> Iterator[Connection]:
    require_tool("prometheus")
    cm = DockerContainerManager(
        f"e2e-{session_id}-prom",
        network_mode="host",
        base_image=os.environ.get("SCHOONER_TEST_BASE_IMAGE", "schooner/base-python:3.11"),
        **cluster_ports(),
    )
    c = Connection(cm, deploy_timeout=120)
    try:
        c.start()
        yield c
    finally:
        c.close()
        cm.destroy()


def test_prometheus_scrapes_every_container_and_follows_a_scale(
    conn: Connection, home: Path, tmp_path: Path
) -> None:
    cm = conn.cm
    assert isinstance(cm, DockerContainerManager)
    targets = cm.prometheus_targets_file
    assert targets == home / "docker-clusters" / cm.cluster_name / "prometheus" / "targets.json"
    assert [g["labels"]["role"] for g in json.loads(targets.read_text())] == ["query"]
    assert not (targets.parent.parent / "admin-token").exists()  # only when asked

    conn.register_application("prom-docker", "doubles", -1, 5_000_000)
    deploy_python_closure(conn, "prom-sum", "1", "doubles", lambda xs: [sum(x) for x in xs])
    conn.link_model_to_app("prom-docker", "prom-sum")
    groups = json.loads(targets.read_text())
    assert [g["labels"].get("replica") for g in groups] == [None, "prom-sum-1-r0"]

    token = cm.write_prometheus_token()
    assert token == targets.parent.parent / "admin-token"
    assert oct(token.stat().st_mode & 0o777) == "0o600"
    server = Prometheus(require_tool("prometheus"), targets.parent, tmp_path / "tsdb")
    try:
        polling.eventually(
            lambda: server.client.get("/-/ready").status_code == 200,
            "prometheus is ready",
            60,
            ignoring=(httpx.TransportError,),
        )

        def health() -> dict[str, str]:
            return {
                t["labels"].get("replica", "query"): t["health"] for t in server.active_targets()
            }

        polling.eventually(
            lambda: health() == {"query": "up", "prom-sum-1-r0": "up"}, health, 90, interval=0.5
        )
        conn.set_num_replicas("prom-sum", 2)
        want = {"query": "up", "prom-sum-1-r0": "up", "prom-sum-1-r1": "up"}
        polling.eventually(lambda: health() == want, health, 90, interval=0.5)
        info = server.get("/api/v1/query", query='schooner_model_info{role="replica"}')
        assert len(info["result"]) == 2

        # A rotation rewrites the token file Prometheus reads: scrapes keep working.
        conn.rotate_admin_token()
        assert token.read_text().strip() == cm.admin_token()
        conn.set_num_replicas("prom-sum", 1)
        polling.eventually(
            lambda: health() == {"query": "up", "prom-sum-1-r0": "up"}, health, 90, interval=0.5
        )
    finally:
        server.close()
    conn.stop_all()
    assert json.loads(targets.read_text()) == []
