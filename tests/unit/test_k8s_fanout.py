"""The model pods' supervisor (``_k8s_fanout``): its pure parts. Running it, with real
processes and real query frontends, is in ``tests/integration/test_k8s_fanout_processes.py``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from admin.container_managers import _k8s_fanout as fanout


def test_it_runs_with_the_standard_library_alone() -> None:
    """It is shipped to model images as a file: it may import nothing of Schooner's."""
    tree = ast.parse(Path(fanout.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.partition(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_plan_starts_what_is_new_and_stops_what_is_gone() -> None:
    assert fanout.plan([], ["tcp://a:1"]) == (["tcp://a:1"], [])
    assert fanout.plan(["tcp://a:1", "tcp://b:1"], ["tcp://b:1", "tcp://c:1"]) == (
        ["tcp://c:1"],
        ["tcp://a:1"],
    )
    assert fanout.plan(["tcp://a:1"], ["tcp://a:1"]) == ([], [])


def test_slots_are_reused_lowest_first() -> None:
    assert fanout.free_slot([]) == 0
    assert fanout.free_slot([0, 1, 3]) == 2


def test_each_child_gets_its_frontend_replica_id_and_metrics_port() -> None:
    env = {
        "SCHOONER_FRONTEND_SERVICE": "q:7000",
        "SCHOONER_MODEL_NAME": "iris",
        "SCHOONER_RESOLVE_INTERVAL_S": "1",
    }
    child = fanout.child_env(env, "tcp://10.0.0.7:7000", "iris-1-abc", 9100, 2)
    assert child == {
        "SCHOONER_MODEL_NAME": "iris",
        "SCHOONER_FRONTEND": "tcp://10.0.0.7:7000",
        "SCHOONER_REPLICA_ID": "iris-1-abc@10.0.0.7:7000",
        "SCHOONER_METRICS_PORT": "9102",
    }
    assert fanout.child_env({}, "tcp://[fd00::7]:7000", "p", 0, 1)["SCHOONER_METRICS_PORT"] == "0"
    assert fanout.child_replica_id("p", "tcp://[fd00::7]:7000") == "p@[fd00::7]:7000"


def test_addresses_put_ipv6_hosts_in_brackets() -> None:
    assert fanout.frontend_address("10.0.0.1", 7000) == "tcp://10.0.0.1:7000"
    assert fanout.frontend_address("fd00::1", 7000) == "tcp://[fd00::1]:7000"


@pytest.mark.parametrize(("returncode", "status"), [(2, 2), (1, 1), (0, 1), (-9, 137)])
def test_a_childs_exit_becomes_the_supervisors(returncode: int, status: int) -> None:
    assert fanout.exit_status(returncode) == status


def test_the_service_resolves_to_every_address() -> None:
    found = fanout.dns_lookup("localhost", 7000)()
    assert found is not None and "tcp://127.0.0.1:7000" in found
    assert fanout.dns_lookup("no-such-host.invalid", 7000)() is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "exactly one of"),
        ({"SCHOONER_FRONTEND_SERVICE": "q:7000", "SCHOONER_FRONTENDS": "tcp://a:1"}, "one of"),
        ({"SCHOONER_FRONTEND_SERVICE": "q"}, "not HOST:PORT"),
        ({"SCHOONER_FRONTENDS": "tcp://a:1", "SCHOONER_METRICS_PORT": "x"}, "METRICS_PORT"),
        ({"SCHOONER_FRONTENDS": "tcp://a:1", "SCHOONER_RESOLVE_INTERVAL_S": "0"}, "positive"),
    ],
)
def test_a_bad_environment_says_what_is_wrong(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fanout.from_environment(env, ["true"])


def test_the_environment_names_the_frontends_and_the_pod() -> None:
    f = fanout.from_environment(
        {"SCHOONER_FRONTENDS": "tcp://a:1, tcp://b:2", "SCHOONER_REPLICA_ID": "pod-0"}, ["x"]
    )
    assert f.lookup() == {"tcp://a:1", "tcp://b:2"}
    assert (f.replica_base, f.metrics_base, f.interval_s) == ("pod-0", 0, 2.0)
    f = fanout.from_environment(
        {"SCHOONER_FRONTEND_SERVICE": "[::1]:7000", "SCHOONER_METRICS_PORT": "9100"}, ["x"]
    )
    assert f.metrics_base == 9100
    assert f.lookup() in ({"tcp://[::1]:7000"}, None)  # None where IPv6 is off


def test_a_bad_environment_exits_with_status_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHOONER_FRONTENDS", raising=False)
    monkeypatch.delenv("SCHOONER_FRONTEND_SERVICE", raising=False)
    assert fanout.main([]) == fanout.EXIT_CONFIG
