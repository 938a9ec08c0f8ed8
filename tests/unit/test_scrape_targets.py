"""The Prometheus targets files the managers write (``_scrape_targets``): what they list,
with which labels, and that a write is atomic and skipped when nothing changed. The real
Prometheus reading them is ``tests/integration/test_prometheus.py``."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from admin.container_managers import _docker_specs as docker_specs
from admin.container_managers._processes import ProcessRecord, RunDir
from admin.container_managers._scrape_targets import (
    docker_groups,
    docker_state_dir,
    local_groups,
    render,
    targets_path,
    write_local_targets,
    write_targets,
    write_token,
)
from admin.container_managers._supervision import ProgramSpec, SupervisorFiles


def spec(name: str, role: str, argv: list[str] | None = None, **labels: str) -> ProgramSpec:
    return ProgramSpec(name, role, argv or ["x"], {}, "/", f"/logs/{name}.log", labels)


def replica_spec(rid: str, port: int, model: str = "sum", version: str = "1") -> ProgramSpec:
    return spec(
        f"replica-{rid}",
        "replica",
        model=model,
        version=version,
        replica_id=rid,
        metrics_addr=f"127.0.0.1:{port}",
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    doc = {"cluster_name": "lab", "host": "0.0.0.0", "query_port": 1337, "tls_certfile": None}
    (tmp_path / "cluster.json").write_text(json.dumps(doc))
    files = SupervisorFiles(tmp_path)
    files.write_spec(spec("redis", "redis"))
    files.write_spec(spec("management", "management"))
    files.write_spec(spec("query", "query", ["python", "--frontend-id", "local-lab-query"]))
    files.write_spec(replica_spec("sum-1-r0", 40001))
    files.write_spec(replica_spec("sum-1-r1", 40002))
    return tmp_path


def test_a_local_cluster_lists_its_query_frontend_and_each_replica(data_dir: Path) -> None:
    assert local_groups(data_dir) == [
        {
            "targets": ["127.0.0.1:1337"],  # a wildcard bind address is not one to dial
            "labels": {"role": "query", "cluster": "lab", "frontend": "local-lab-query"},
        },
        {
            "targets": ["127.0.0.1:40001"],
            "labels": {
                "role": "replica",
                "cluster": "lab",
                "model": "sum",
                "version": "1",
                "replica": "sum-1-r0",
            },
        },
        {
            "targets": ["127.0.0.1:40002"],
            "labels": {
                "role": "replica",
                "cluster": "lab",
                "model": "sum",
                "version": "1",
                "replica": "sum-1-r1",
            },
        },
    ]


def test_the_address_a_running_replica_recorded_wins_over_its_specs(data_dir: Path) -> None:
    RunDir(data_dir / "run").save(
        ProcessRecord(
            "replica-sum-1-r1", "replica", 1, 0.0, ["x"], "/l", metrics_addr="127.0.0.1:45000"
        )
    )
    addresses = [g["targets"][0] for g in local_groups(data_dir)]
    assert addresses == ["127.0.0.1:1337", "127.0.0.1:40001", "127.0.0.1:45000"]


def test_a_tls_cluster_is_scraped_over_https(data_dir: Path) -> None:
    doc = json.loads((data_dir / "cluster.json").read_text())
    (data_dir / "cluster.json").write_text(json.dumps({**doc, "tls_certfile": "/c.pem"}))
    query = local_groups(data_dir)[0]
    assert query["labels"]["__scheme__"] == "https"


def test_several_query_frontends_are_one_target_on_their_shared_port(data_dir: Path) -> None:
    files = SupervisorFiles(data_dir)
    files.write_spec(spec("query", "query", ["--frontend-id", "local-lab-query-0"]))
    files.write_spec(spec("query-1", "query", ["--frontend-id", "local-lab-query-1"]))
    (query,) = [g for g in local_groups(data_dir) if g["labels"]["role"] == "query"]
    assert query == {"targets": ["127.0.0.1:1337"], "labels": {"role": "query", "cluster": "lab"}}


def test_a_stopped_cluster_has_no_targets(data_dir: Path) -> None:
    SupervisorFiles(data_dir).remove_all_specs()
    (data_dir / "cluster.json").unlink()
    assert local_groups(data_dir) == []
    path = write_local_targets(data_dir)
    assert json.loads(path.read_text()) == []


def test_writes_are_atomic_readable_and_skipped_when_nothing_changed(data_dir: Path) -> None:
    path = write_local_targets(data_dir)
    assert path == targets_path(data_dir) == data_dir / "prometheus" / "targets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    inode = path.stat().st_ino
    assert not write_targets(path, local_groups(data_dir))
    assert path.stat().st_ino == inode  # left alone: Prometheus is not woken for nothing
    SupervisorFiles(data_dir).remove_spec("replica-sum-1-r1")
    assert write_targets(path, local_groups(data_dir))
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert len(json.loads(path.read_text())) == 2
    assert [p.name for p in path.parent.iterdir()] == ["targets.json"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_local_targets(data_dir)
    before = path.read_text()

    def refuse(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_targets(path, [])
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == ["targets.json"]


def test_the_order_is_stable() -> None:
    a = {"targets": ["h:2"], "labels": {"role": "replica", "replica": "m-1-r1"}}
    b = {"targets": ["h:1"], "labels": {"role": "replica", "replica": "m-1-r0"}}
    q = {"targets": ["h:0"], "labels": {"role": "query"}}
    assert render([a, q, b]) == render([b, a, q])
    assert [g["targets"] for g in json.loads(render([a, q, b]))] == [["h:0"], ["h:1"], ["h:2"]]


# --------------------------------------------------------------------------- Docker


def replica_container(rid: str, port: int) -> tuple[str, dict[str, str]]:
    labels = {
        docker_specs.MODEL: "iris",
        docker_specs.VERSION: "2",
        docker_specs.REPLICA_ID: rid,
        docker_specs.METRICS_PORT: str(port),
    }
    return f"schooner-prod-{rid}", labels


def test_docker_host_mode_lists_host_addresses() -> None:
    s = docker_specs.ClusterSettings("prod", network_mode="host", query_port=8080)
    groups = docker_groups(s, [replica_container("iris-2-r0", 41000)])
    assert groups == [
        {
            "targets": ["127.0.0.1:8080"],
            "labels": {"role": "query", "cluster": "prod", "frontend": "docker-prod-query"},
        },
        {
            "targets": ["127.0.0.1:41000"],
            "labels": {
                "role": "replica",
                "cluster": "prod",
                "model": "iris",
                "version": "2",
                "replica": "iris-2-r0",
            },
        },
    ]


def test_docker_network_mode_lists_names_on_the_clusters_network() -> None:
    """What a Prometheus attached to the cluster's network resolves; the replicas' label
    says port 9100 inside their containers."""
    s = docker_specs.ClusterSettings("prod", query_port=8080)
    groups = docker_groups(s, [replica_container("iris-2-r0", 9100)])
    assert [g["targets"][0] for g in groups] == [
        "schooner-prod-query-net:1337",
        "schooner-prod-iris-2-r0:9100",
    ]


def test_docker_after_stop_all_nothing_is_listed() -> None:
    s = docker_specs.ClusterSettings("prod")
    assert docker_groups(s, [], frontends=False) == []


def test_docker_state_lives_under_schooner_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHOONER_HOME", str(tmp_path))
    assert docker_state_dir("prod") == tmp_path / "docker-clusters" / "prod"


def test_the_token_file_is_private_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "d" / "admin-token"
    write_token(path, "tok")
    assert path.read_text() == "tok\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    write_token(path, "tok2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


class _StubContainer:
    def __init__(self, name: str, labels: dict[str, str], status: str = "running") -> None:
        self.name, self.id, self.labels, self.status = name, name, labels, status


class _StubEngine:
    """What the Docker manager asks its engine while writing targets: its replicas."""

    def __init__(self, cluster_name: str, replicas: list[_StubContainer]) -> None:
        self.cluster_name = cluster_name
        self.replicas = replicas

    def containers(self, role: str | None = None, **labels: str) -> list[_StubContainer]:
        assert role == "replica" and not labels
        return self.replicas


def test_the_docker_manager_writes_its_containers_and_the_token_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from admin import DockerContainerManager

    monkeypatch.setenv("SCHOONER_HOME", str(tmp_path))
    cm = DockerContainerManager(
        "prod",
        network_mode="host",
        query_port=8080,
        docker_client=object(),  # type: ignore[arg-type]
    )
    name, labels = replica_container("iris-2-r0", 41000)
    gone = _StubContainer("schooner-prod-iris-2-r1", labels, status="exited")
    cm._engine = _StubEngine("prod", [_StubContainer(name, labels), gone])  # type: ignore[assignment]
    path = cm.write_prometheus_targets()
    assert path == tmp_path / "docker-clusters" / "prod" / "prometheus" / "targets.json"
    assert [g["targets"][0] for g in json.loads(path.read_text())] == [
        "127.0.0.1:8080",
        "127.0.0.1:41000",  # the exited container is no target
    ]
    assert not (path.parent.parent / "admin-token").exists()
    cm._admin_token = "tok"
    token = cm.write_prometheus_token()
    assert token == path.parent.parent / "admin-token"
    assert token.read_text() == "tok\n" and stat.S_IMODE(token.stat().st_mode) == 0o600
    cm.write_prometheus_targets(running=False)  # stop_all
    assert json.loads(path.read_text()) == []
