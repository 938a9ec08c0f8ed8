"""The model pods' supervisor with real processes: it keeps one model process per query
frontend as frontends come and go, stops them all on SIGTERM, and -- with real query
frontends and real model containers -- makes one model pod serve two frontends.

This is how a Kubernetes model pod serves a query frontend scaled to several pods; the
Kubernetes e2e suite needs a cluster, this needs none.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from admin import Connection, LocalContainerManager
from admin.container_managers import _k8s_fanout as fanout
from model_container.bundle import write_closure_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FANOUT = Path(fanout.__file__)
WAIT_S = 30.0

# A stand-in model container: records what it was given, then waits for SIGTERM.
CHILD = """\
import json, os, signal, sys, time
out = os.path.join(sys.argv[1], str(os.getpid()))
env = {k: v for k, v in os.environ.items() if k.startswith("SCHOONER_")}
stopped = []
signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
with open(out + ".tmp", "w") as f:
    json.dump(env, f)
os.rename(out + ".tmp", out + ".json")
code = int(os.environ.get("CHILD_EXIT", "-1"))
if code >= 0 and env.get("SCHOONER_FRONTEND") == os.environ.get("CHILD_EXIT_FOR"):
    sys.exit(code)
while not stopped:
    time.sleep(0.01)
open(out + ".stopped", "w").close()
"""


def eventually(check: Callable[[], Any], what: str, within: float = WAIT_S) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    pytest.fail(f"not within {within} s: {what}")


@pytest.fixture
def child(tmp_path: Path) -> tuple[list[str], Path]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    records = tmp_path / "children"
    records.mkdir()
    return [sys.executable, str(script), str(records)], records


def started(records: Path) -> dict[str, dict[str, str]]:
    """The stand-in children that started, by frontend address."""
    out = {}
    for path in records.glob("*.json"):
        env = json.loads(path.read_text())
        out[env["SCHOONER_FRONTEND"]] = {**env, "pid": path.stem}
    return out


def stopped(records: Path, pid: str) -> bool:
    return (records / f"{pid}.stopped").exists()


# --------------------------------------------------------------------------- the supervisor


def test_it_follows_the_frontends_as_they_come_and_go(child: tuple[list[str], Path]) -> None:
    command, records = child
    a, b = "tcp://10.0.0.1:7000", "tcp://10.0.0.2:7000"
    script: list[Callable[[fanout.Fanout], set[str] | None]] = [
        lambda f: {a},
        lambda f: {a, b} if a in started(records) else {a},
        lambda f: {b} if len(started(records)) == 2 else {a, b},
        lambda f: None,  # a failed DNS lookup changes nothing
        lambda f: {b},
    ]
    seen: list[set[str] | None] = []
    deadline = time.monotonic() + WAIT_S

    def lookup() -> set[str] | None:
        step = script[min(len(seen), len(script) - 1)]
        answer = step(f)
        if answer != {a, b} or len(started(records)) == 2:
            seen.append(answer)
        gone = len(seen) >= len(script) and not f.retiring and a not in f.children
        if gone or time.monotonic() > deadline:
            f.stopping = True
        return answer

    f = fanout.Fanout(command, lookup, "iris-1-pod", metrics_base=9100, interval_s=0.02)
    assert f.run() == 0
    children = started(records)
    assert set(children) == {a, b}
    assert children[a]["SCHOONER_REPLICA_ID"] == "iris-1-pod@10.0.0.1:7000"
    assert children[b]["SCHOONER_REPLICA_ID"] == "iris-1-pod@10.0.0.2:7000"
    assert (children[a]["SCHOONER_METRICS_PORT"], children[b]["SCHOONER_METRICS_PORT"]) == (
        "9100",
        "9101",
    )
    assert None in seen
    # a's child was stopped when a left; b's when the supervisor stopped.
    assert stopped(records, children[a]["pid"]) and stopped(records, children[b]["pid"])
    assert f.children == {} and f.retiring == []


def test_a_child_that_exits_stops_the_others_and_sets_the_status(
    child: tuple[list[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    command, records = child
    a, b = "tcp://10.0.0.1:7000", "tcp://10.0.0.2:7000"
    monkeypatch.setenv("CHILD_EXIT", "2")
    monkeypatch.setenv("CHILD_EXIT_FOR", b)
    frontends = {a}

    def lookup() -> set[str]:
        if a in started(records):
            frontends.add(b)  # b's child exits with status 2 at once
        return set(frontends)

    f = fanout.Fanout(command, lookup, "pod", interval_s=0.02, env=dict(os.environ))
    assert f.run() == 2
    assert stopped(records, started(records)[a]["pid"])


def test_sigterm_stops_every_child_then_the_supervisor_exits_0(
    child: tuple[list[str], Path], tmp_path: Path
) -> None:
    command, records = child
    env = {
        **os.environ,
        "SCHOONER_FRONTENDS": "tcp://127.0.0.1:7001,tcp://127.0.0.1:7002",
        "SCHOONER_REPLICA_ID": "pod-0",
    }
    log = (tmp_path / "fanout.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(FANOUT), "--", *command], env=env, stdout=log, stderr=log
    )
    try:
        eventually(lambda: len(started(records)) == 2, "both children started")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    for env_seen in started(records).values():
        assert stopped(records, env_seen["pid"])
    text = (tmp_path / "fanout.log").read_text()
    assert "serving frontend tcp://127.0.0.1:7001 as replica pod-0@127.0.0.1:7001" in text


# --------------------------------------------------------------------------- for real


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two_frontends(tmp_path: Path) -> Iterator[tuple[Connection, list[str], list[int]]]:
    """A local cluster (Redis, management, query frontend A) plus query frontend B on the
    same Redis: the shape of a Kubernetes cluster with two query frontend pods."""
    ports = {n: free_port() for n in ("query_port", "management_port", "rpc_port", "redis_port")}
    cm = LocalContainerManager(data_dir=tmp_path / "cluster", **ports)
    conn = Connection(cm)
    conn.start()
    query_b, rpc_b = free_port(), free_port()
    log = (tmp_path / "query-b.log").open("wb")
    b = subprocess.Popen(
        [
            *(sys.executable, "-m", "query_frontend"),
            *("--redis-url", cm.effective_redis_url, "--host", "127.0.0.1"),
            *("--port", str(query_b), "--rpc-host", "127.0.0.1", "--rpc-port", str(rpc_b)),
            *("--frontend-id", "query-b"),
        ],
        stdout=log,
        stderr=log,
    )
    try:
        eventually(
            lambda: _healthy(f"http://127.0.0.1:{query_b}/healthz"), "query frontend B ready"
        )
        yield (
            conn,
            [conn.get_query_addr(), f"127.0.0.1:{query_b}"],
            [ports["rpc_port"], rpc_b],
        )
    finally:
        b.terminate()
        try:
            b.wait(timeout=15)
        except subprocess.TimeoutExpired:
            b.kill()
            b.wait()
        log.close()
        conn.stop_all()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def make_tripler() -> Callable[[Any], list[float]]:
    # Made in a function, so that cloudpickle pickles it by value: the replicas do not
    # import this test module.
    def triple(xs: Any) -> list[float]:
        return [3.0 * float(x[0]) for x in xs]

    return triple


def test_one_model_pod_serves_two_query_frontends(
    two_frontends: tuple[Connection, list[str], list[int]], tmp_path: Path
) -> None:
    conn, query_addrs, rpc_ports = two_frontends
    bundle = tmp_path / "bundle"
    write_closure_bundle(bundle, make_tripler(), "doubles")
    conn.register_application("fan", "doubles", "-1.0", 2_000_000)
    conn.register_model("tripler", "1", "doubles")  # its replicas run elsewhere: here
    conn.link_model_to_app("fan", "tripler")
    env = {
        **os.environ,
        "SCHOONER_FRONTENDS": ",".join(f"tcp://127.0.0.1:{p}" for p in rpc_ports),
        "SCHOONER_REPLICA_ID": "tripler-1-pod",
        "SCHOONER_BUNDLE": str(bundle),
        "SCHOONER_MODEL_NAME": "tripler",
        "SCHOONER_MODEL_VERSION": "1",
        "SCHOONER_INPUT_TYPE": "doubles",
    }
    log = (tmp_path / "fanout.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(FANOUT)], env=env, stdout=log, stderr=log)
    try:
        wanted = {f"tripler-1-pod@127.0.0.1:{p}" for p in rpc_ports}

        def registered() -> bool:
            if proc.poll() is not None:
                log.flush()
                text = (tmp_path / "fanout.log").read_text()
                pytest.fail(f"the supervisor exited ({proc.returncode}):\n{text}")
            return wanted <= {r["replica_id"] for r in conn.get_all_model_replicas(True)}

        eventually(registered, "the pod registered with both frontends")
        for i, addr in enumerate(query_addrs):
            reply = httpx.post(f"http://{addr}/fan/predict", json={"input": [i + 1.0]}, timeout=10)
            assert reply.status_code == 200, reply.text
            assert reply.json()["default"] is False, (addr, reply.json())
            assert reply.json()["output"] == 3.0 * (i + 1)
        records = redis_records(conn)
        frontends = {records[r]["frontend"] for r in wanted}
        assert len(frontends) == 2, "each connection is recorded by its own frontend"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) == 0
        eventually(
            lambda: not wanted & {r["replica_id"] for r in conn.get_all_model_replicas(True)},
            "both connections said goodbye",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def redis_records(conn: Connection) -> dict[str, dict[str, Any]]:
    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    client = redis.Redis.from_url(cm.effective_redis_url, decode_responses=True)
    try:
        raw = client.hgetall(f"{cm.key_prefix}:replicas")
    finally:
        client.close()
    return {k: json.loads(v) for k, v in raw.items()}
