"""LocalContainerManager gives every replica a metrics port of its own and records it.

No process is started: the supervisor is replaced by a stand-in that records every
program spec the manager writes as this test process, so that the records look alive.
Nothing here stops them (that would signal the test).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
import pytest
from ports import free_port

from admin import LocalContainerManager
from admin.container_managers._processes import ProcessRecord, RunDir
from admin.container_managers._supervision import SupervisorFiles


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The argv of every program the manager asks the supervisor to run."""
    argvs: list[list[str]] = []
    me = psutil.Process(os.getpid())

    def applied(cm: LocalContainerManager, wanted: Any) -> dict[str, Any]:
        for spec in SupervisorFiles(cm.data_dir).load_specs():
            if spec.name in wanted:
                argvs.append(list(spec.argv))
                labels = spec.labels
                RunDir(cm.data_dir / "run").save(
                    ProcessRecord(
                        spec.name,
                        spec.role,
                        me.pid,
                        me.create_time(),
                        spec.argv,
                        spec.log_path,
                        labels["model"],
                        labels["version"],
                        labels["replica_id"],
                        labels["metrics_addr"],
                    )
                )
        return {}

    monkeypatch.setattr(LocalContainerManager, "_ensure_supervisor", lambda cm: None)
    monkeypatch.setattr(LocalContainerManager, "_await_programs", applied)
    return argvs


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


DIGEST = "ef" * 32


def stored_bundle(data_dir: Path) -> str:
    """A (placeholder) bundle in the manager's store: replicas start only from there."""
    (data_dir / "bundles" / DIGEST).mkdir(parents=True)
    return DIGEST


def test_each_replica_gets_its_own_metrics_port_recorded(
    tmp_path: Path, launched: list[list[str]]
) -> None:
    cm = LocalContainerManager(data_dir=tmp_path, query_port=free_port(), host="127.0.0.1")
    cm.set_num_replicas("summer", "1", "doubles", stored_bundle(tmp_path), 2)

    ports = [int(flag(argv, "--metrics-port")) for argv in launched]
    assert len(ports) == 2 and len(set(ports)) == 2 and all(ports)
    assert {flag(argv, "--metrics-host") for argv in launched} == {"127.0.0.1"}
    records = {r.replica_id: r for r in RunDir(tmp_path / "run").load_all()}
    assert [records[f"summer-1-r{i}"].metrics_addr for i in (0, 1)] == [
        f"127.0.0.1:{port}" for port in ports
    ]
    assert cm.metrics_urls() == {
        "query": f"http://127.0.0.1:{cm.query_port}/metrics",
        "replica-summer-1-r0": f"http://127.0.0.1:{ports[0]}/metrics",
        "replica-summer-1-r1": f"http://127.0.0.1:{ports[1]}/metrics",
    }
    listed = {p["name"]: p for p in cm.processes()}
    assert listed["replica-summer-1-r0"]["metrics_addr"] == f"127.0.0.1:{ports[0]}"


def test_a_wildcard_host_binds_everywhere_and_records_loopback(
    tmp_path: Path, launched: list[list[str]]
) -> None:
    cm = LocalContainerManager(data_dir=tmp_path, host="0.0.0.0")
    cm.set_num_replicas("summer", "1", "doubles", stored_bundle(tmp_path), 1)
    (argv,) = launched
    assert flag(argv, "--metrics-host") == "0.0.0.0"
    (record,) = RunDir(tmp_path / "run").load_all()
    assert record.metrics_addr == f"127.0.0.1:{flag(argv, '--metrics-port')}"


def test_metrics_urls_leave_out_replicas_that_exited(tmp_path: Path) -> None:
    gone = ProcessRecord("replica-m-1-r0", "replica", 1, 0.0, [], "", "m", "1", "m-1-r0", "h:1")
    RunDir(tmp_path / "run").save(gone)
    cm = LocalContainerManager(data_dir=tmp_path, query_port=18080)
    assert cm.metrics_urls() == {"query": "http://127.0.0.1:18080/metrics"}


def test_records_written_before_metrics_load_without_an_address(tmp_path: Path) -> None:
    record = ProcessRecord("query", "query", 1, 0.0, [], "")
    doc = record.to_json()
    del doc["metrics_addr"]
    assert ProcessRecord.from_json(doc) == record
    assert record.metrics_addr == ""
