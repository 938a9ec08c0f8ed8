"""LocalContainerManager without starting a cluster: data dir, refusals, build_model.

Starting Redis, the frontends and replicas for real is the integration suite's job.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from ports import free_port

from admin import (
    ClusterAlreadyRunningError,
    ClusterNotRunningError,
    ContainerManagerError,
    IncompatibleModelError,
    InvalidRequestError,
    LocalContainerManager,
)
from admin.container_managers._processes import ProcessRecord, RunDir
from model_container.bundle import bundle_digest, write_closure_bundle


def manager(data_dir: Path, **kwargs: object) -> LocalContainerManager:
    ports = {
        "query_port": free_port(),
        "management_port": free_port(),
        "rpc_port": free_port(),
        "redis_port": free_port(),
    }
    return LocalContainerManager(data_dir=data_dir, **{**ports, **kwargs})  # type: ignore[arg-type]


def this_process_record(name: str, role: str) -> ProcessRecord:
    me = psutil.Process(os.getpid())
    return ProcessRecord(name, role, me.pid, me.create_time(), [], "")


def double(xs: list[float]) -> list[float]:
    return [2 * x for x in xs]


def bundle(tmp_path: Path, pkgs: tuple[str, ...] = (), **runtime: str) -> Path:
    path = tmp_path / "bundle"
    write_closure_bundle(path, double, "doubles", pkgs)
    if runtime:
        doc = json.loads((path / "model.json").read_text())
        doc["runtime"].update(runtime)
        (path / "model.json").write_text(json.dumps(doc))
    return path


@pytest.fixture
def listening_socket() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def test_data_dir_defaults_under_schooner_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHOONER_HOME", str(tmp_path))
    assert LocalContainerManager().data_dir == tmp_path / "default"
    assert LocalContainerManager(cluster_name="dev").data_dir == tmp_path / "dev"
    monkeypatch.delenv("SCHOONER_HOME")
    assert LocalContainerManager().data_dir == Path.home() / ".schooner" / "default"


def test_addresses() -> None:
    cm = LocalContainerManager(data_dir="/nonexistent", host="0.0.0.0")
    assert cm.get_query_addr() == "127.0.0.1:1337"  # a wildcard bind is not dialable
    assert cm.get_management_addr() == "127.0.0.1:1338"
    assert cm.management_url == "http://127.0.0.1:1338"
    assert cm.effective_redis_url == "redis://127.0.0.1:16379/0"


def test_bad_port_is_refused_at_construction() -> None:
    with pytest.raises(InvalidRequestError, match="query_port=0"):
        LocalContainerManager(query_port=0)


def test_start_refuses_when_the_cluster_is_already_running(tmp_path: Path) -> None:
    RunDir(tmp_path / "run").save(this_process_record("management", "management"))
    with pytest.raises(ClusterAlreadyRunningError, match=r"connect\(\).*schooner stop"):
        manager(tmp_path).start_cluster()


def test_start_refuses_a_busy_port_before_starting_anything(
    tmp_path: Path, listening_socket: socket.socket
) -> None:
    busy = listening_socket.getsockname()[1]
    with pytest.raises(ContainerManagerError, match=f"management_port={busy}") as info:
        manager(tmp_path, management_port=busy).start_cluster()
    assert str(info.value) == (
        f"port(s) in use on 127.0.0.1: management_port={busy}. Another Schooner (other data "
        "dir) or another program holds them: stop it, or pass other ports to "
        "LocalContainerManager(...)"
    )
    assert RunDir(tmp_path / "run").load_all() == []
    assert not (tmp_path / "cluster.json").exists()


def test_connect_without_a_cluster_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(ClusterNotRunningError, match="schooner start"):
        manager(tmp_path).connect()


def test_connect_to_a_cluster_whose_processes_exited(tmp_path: Path) -> None:
    cm = manager(tmp_path)
    cm._write_cluster_file()
    with pytest.raises(ClusterNotRunningError, match="not running"):
        manager(tmp_path).connect()


def test_connect_adopts_the_running_clusters_ports(tmp_path: Path) -> None:
    started = manager(tmp_path, host="127.0.0.1")
    started._write_cluster_file()
    for role in ("management", "query"):
        RunDir(tmp_path / "run").save(this_process_record(role, role))
    other = LocalContainerManager(data_dir=tmp_path)  # default ports
    other.connect()
    assert other.get_query_addr() == started.get_query_addr()
    assert other.get_management_addr() == started.get_management_addr()
    assert other.rpc_port == started.rpc_port


def test_stop_all_on_a_data_dir_that_does_not_exist_does_nothing(tmp_path: Path) -> None:
    LocalContainerManager(data_dir=tmp_path / "never").stop_all()
    assert not (tmp_path / "never").exists()


def test_stop_all_never_signals_a_process_whose_record_does_not_match(tmp_path: Path) -> None:
    me = this_process_record("query", "query")
    stale = ProcessRecord("query", "query", me.pid, me.create_time - 100.0, [], "")
    RunDir(tmp_path / "run").save(stale)
    manager(tmp_path).stop_all()  # this test process is still alive to assert it
    assert RunDir(tmp_path / "run").load_all() == []


def test_build_model_refuses_a_pickle_from_another_python(tmp_path: Path) -> None:
    cm = manager(tmp_path / "data")
    with pytest.raises(IncompatibleModelError) as info:
        cm.build_model("m", "1", bundle(tmp_path, python="3.10.13"))
    message = str(info.value)
    assert "3.10.13" in message
    assert platform.python_version() in message
    assert not (tmp_path / "data" / "models").exists(), "refused, yet something was built"


def test_build_model_refuses_names_that_are_not_dns_labels(tmp_path: Path) -> None:
    cm = manager(tmp_path / "data")
    with pytest.raises(InvalidRequestError, match="DNS-1123"):
        cm.build_model("../evil", "1", bundle(tmp_path))
    with pytest.raises(InvalidRequestError, match="version"):
        cm.build_model("m", "../1", bundle(tmp_path))
    assert not (tmp_path / "data").exists()


def test_build_model_stores_the_bundle_under_its_digest_and_installs_nothing_already_there(
    tmp_path: Path,
) -> None:
    cm = manager(tmp_path / "data")
    source = bundle(tmp_path, pkgs=("numpy", "packaging>=20"))
    digest = cm.build_model("m", "1", source)
    assert digest == bundle_digest(source)
    stored = tmp_path / "data" / "bundles" / digest
    assert (stored / "model.json").is_file()
    assert (stored / "func.pkl").is_file()
    assert bundle_digest(stored) == digest
    assert stat.S_IMODE(stored.stat().st_mode) == 0o700  # the operator's alone
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert not (tmp_path / "data" / "models" / "m" / "1" / "site-packages").exists()
    assert [p.name for p in stored.parent.iterdir()] == [digest], "a temporary copy was left"


def test_build_model_replaces_a_stored_bundle_that_was_changed(tmp_path: Path) -> None:
    cm = manager(tmp_path / "data")
    source = bundle(tmp_path)
    digest = cm.build_model("m", "1", source)
    stored = tmp_path / "data" / "bundles" / digest
    (stored / "func.pkl").write_bytes(b"tampered")
    assert cm.build_model("m", "2", source) == digest
    assert bundle_digest(stored) == digest


def test_build_model_probes_another_replica_interpreter(tmp_path: Path) -> None:
    bin_dir, exe = os.path.split(sys.executable)
    other = os.path.join(bin_dir, "..", os.path.basename(bin_dir), exe)
    cm = manager(tmp_path / "data", python_executable=other)
    with pytest.raises(IncompatibleModelError, match=rf"3\.10\.13.*{platform.python_version()}"):
        cm.build_model("m", "1", bundle(tmp_path, python="3.10.13"))


def test_several_query_frontends_take_consecutive_rpc_ports_checked_at_construction() -> None:
    with pytest.raises(InvalidRequestError, match=r"management_port and rpc_port\+1"):
        LocalContainerManager(
            query_port=7100, management_port=7001, rpc_port=7000, query_frontends=2
        )
    with pytest.raises(InvalidRequestError, match="rpc_port"):
        LocalContainerManager(rpc_port=65535, query_frontends=2)
    for bad in (0, -1, True, 1.5, 65):
        with pytest.raises(InvalidRequestError, match="query_frontends"):
            LocalContainerManager(query_frontends=bad)  # type: ignore[arg-type]
    # One query frontend: no second RPC port, so the next port is anyone's.
    assert LocalContainerManager(management_port=7001, rpc_port=7000).query_frontends == 1


def test_a_memory_limit_is_a_number_of_bytes(tmp_path: Path) -> None:
    cm = manager(tmp_path)
    for bad in (-1, True, 1.5, "1Gi"):
        with pytest.raises(InvalidRequestError, match="memory_limit"):
            cm.set_num_replicas("m", "1", "doubles", "ab" * 32, 1, memory_limit=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "supervisor" / "programs").exists()  # refused: nothing written
