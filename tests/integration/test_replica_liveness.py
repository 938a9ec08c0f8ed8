"""Replicas that stop answering, against the real RPC server and real model containers.

The query frontend's RPC server and dispatcher run in the test's event loop on a real
ZeroMQ ROUTER (on a ``ports.free_port``); every replica is a real ``python -m
model_container`` process. A replica is killed (SIGKILL), stopped (SIGSTOP) or stuck in
its model, and the tests check what happens to it and to the queries it held: why it
left rotation, that it comes back when it should, and that every query is answered
once, with its own prediction or the default. Nothing asserts how long anything took:
waits poll a condition with a generous deadline.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import uvloop
from polling import eventually_async
from rpc_frontend import RpcFrontend, block_the_event_loop, container_argv, outcomes, predictions

from model_container import protocol, write_closure_bundle
from model_container.protocol import Heartbeat, InputType
from query_frontend.batching.replicas import Replica
from query_frontend.queries import Expired, Query

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

KEY = ("m", "1")
WAIT_S = 15.0


def make_model() -> Callable[[Any], Any]:
    """x -> 10 x; with SCHOONER_TEST_GATE set, first waits until that file exists
    (a model stuck in its computation: the replica's I/O thread keeps heartbeating),
    and with SCHOONER_TEST_SPIN, burns that many seconds of pure-Python CPU per batch."""

    def model(xs: Any) -> Any:
        import os as _os
        import time as _time

        gate = _os.environ.get("SCHOONER_TEST_GATE")
        while gate and not _os.path.exists(gate):
            _time.sleep(0.005)
        spin = float(_os.environ.get("SCHOONER_TEST_SPIN", "0"))
        end = _time.perf_counter() + spin
        while _time.perf_counter() < end:
            sum(i * i for i in range(200))  # holds the GIL in short slices
        return [float(x[0]) * 10 for x in xs]

    return model


class Frontend(RpcFrontend):
    """The RPC server and dispatcher of a query frontend, plus replicas to start."""

    def __init__(self, heartbeat_ms: int, tmp_path: Path) -> None:
        super().__init__(tmp_path, heartbeat_ms, (KEY,))
        self.bundle = tmp_path / "bundle"
        write_closure_bundle(self.bundle, make_model(), InputType.DOUBLES, ["numpy"])

    async def replica(self, replica_id: str, **env: str) -> tuple[subprocess.Popen[bytes], Replica]:
        """Start a model container and wait until it is registered."""
        argv = container_argv(self.bundle, self.address, KEY, replica_id, self.secrets)
        return await self.started(replica_id, argv, env)


def open_gate(gate: Path) -> None:
    """Let the model that waits on ``gate`` finish its batch."""
    gate.touch()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "gate"
    yield path
    open_gate(path)


@pytest_asyncio.fixture
async def frontend_factory(tmp_path: Path) -> AsyncIterator[Callable[[int], Frontend]]:
    made: list[Frontend] = []

    def make(heartbeat_ms: int) -> Frontend:
        fe = Frontend(heartbeat_ms, tmp_path)
        fe.start()
        made.append(fe)
        return fe

    try:
        yield make
    finally:
        for fe in made:
            await fe.stop()


async def test_a_killed_replica_is_removed_as_disconnected_and_its_queries_move(
    frontend_factory: Callable[[int], Frontend], gate: Path
) -> None:
    # Heartbeats every 30 s: within this test nothing can be noticed by missing them.
    fe = frontend_factory(30_000)
    victim_proc, victim = await fe.replica("victim", SCHOONER_TEST_GATE=str(gate))
    xs = [1.0, 2.0, 3.0, 4.0, 5.0]
    queries = fe.submit(xs, timeout_s=20)
    await eventually_async(lambda: victim.outstanding == 1, "the victim holds the batch", WAIT_S)
    await fe.replica("healthy")
    assert victim.fd >= 0  # its connection is known from its HELLO

    victim_proc.kill()
    assert await outcomes(queries) == predictions(xs)  # each answered by the other one
    assert fe.removed == [victim]
    assert victim.removed.startswith("disconnected"), victim.removed
    assert fe.suspensions == []
    assert fe.dispatcher.status()["m:1"]["replicas"] == ["healthy"]


async def test_killing_a_replica_under_load_loses_no_query(
    frontend_factory: Callable[[int], Frontend],
) -> None:
    fe = frontend_factory(30_000)
    victim_proc, victim = await fe.replica("victim", SCHOONER_TEST_SPIN="0.002")
    await fe.replica("other", SCHOONER_TEST_SPIN="0.002")
    everything: list[Query] = []
    sent: list[float] = []
    for i in range(60):  # 60 waves of 5 queries, one wave per millisecond or so
        xs = [float(5 * i + k) for k in range(5)]
        everything += fe.submit(xs, timeout_s=20)
        sent += xs
        if i == 20:
            victim_proc.kill()
        await asyncio.sleep(0.001)
    assert await outcomes(everything) == predictions(sent)
    assert victim.removed.startswith("disconnected"), victim.removed
    assert [r.replica_id for r in fe.removed] == ["victim"]


async def test_a_stopped_replica_leaves_rotation_then_returns_when_continued(
    frontend_factory: Callable[[int], Frontend], gate: Path
) -> None:
    fe = frontend_factory(400)
    victim_proc, victim = await fe.replica("victim", SCHOONER_TEST_GATE=str(gate))
    xs = [1.0, 2.0, 3.0]
    queries = fe.submit(xs, timeout_s=20)
    await eventually_async(lambda: victim.outstanding == 1, "the victim holds the batch", WAIT_S)
    await fe.replica("healthy")

    victim_proc.send_signal(signal.SIGSTOP)
    try:
        await eventually_async(lambda: not victim.available, "the stopped replica benched", WAIT_S)
    finally:
        victim_proc.send_signal(signal.SIGCONT)
    assert victim.unavailable.startswith("silent"), victim.unavailable
    assert await outcomes(queries) == predictions(xs)  # retried on the healthy replica

    # Continued, it heartbeats again but still owes the batch it was computing.
    open_gate(gate)
    await eventually_async(lambda: victim.available, "back in rotation after answering", WAIT_S)
    assert fe.find("victim") is victim and fe.removed == []
    assert [replica_id for replica_id, _ in fe.suspensions] == ["victim"]


async def test_a_replica_stuck_in_its_model_leaves_rotation_and_returns_when_it_answers(
    frontend_factory: Callable[[int], Frontend], gate: Path
) -> None:
    fe = frontend_factory(300)
    _, victim = await fe.replica("victim", SCHOONER_TEST_GATE=str(gate))
    stuck = fe.submit([1.0, 2.0], timeout_s=0.2)
    await eventually_async(lambda: victim.outstanding == 1, "the victim holds the batch", WAIT_S)
    assert all(isinstance(o, Expired) for o in await outcomes(stuck))  # the default, in time
    await eventually_async(lambda: not victim.available, "the stuck replica benched", WAIT_S)
    assert victim.unavailable.startswith("stuck"), victim.unavailable

    # Its heartbeats keep it registered, but new work goes elsewhere.
    await fe.replica("healthy")
    later = fe.submit([7.0, 8.0], timeout_s=20)
    assert await outcomes(later) == predictions([7.0, 8.0])
    assert fe.find("victim") is victim and not victim.available

    open_gate(gate)
    await eventually_async(lambda: victim.available, "back in rotation after answering", WAIT_S)
    assert fe.removed == []


async def test_a_closed_connection_report_for_a_reused_descriptor_spares_a_live_replica(
    frontend_factory: Callable[[int], Frontend], monkeypatch: pytest.MonkeyPatch
) -> None:
    fe = frontend_factory(300)
    _, replica = await fe.replica("alive")
    probes: list[float] = []
    probe = fe.rpc._probe

    def counting_probe(identity: bytes, r: Any, next_delay: float) -> None:
        probes.append(next_delay)
        probe(identity, r, next_delay)

    monkeypatch.setattr(fe.rpc, "_probe", counting_probe)
    # What the monitor reports when a connection that had this descriptor before closes
    # after the descriptor went to this replica's connection.
    fe.rpc._connection_dropped(replica.fd)
    await eventually_async(lambda: bool(probes) and probes[-1] >= 0.3, "the last probe", WAIT_S)
    # A query's round trip to the replica: whatever the last probe set off has run by then.
    assert await outcomes(fe.submit([3.0], timeout_s=20)) == predictions([3.0])
    assert fe.find("alive") is replica and replica.available and fe.removed == []


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_a_frontend_too_busy_to_read_does_not_bench_its_replicas(
    tmp_path: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    """The frontend runs on uvloop in production, which runs due timers before it polls
    for input: the liveness check must not judge before the reader has caught up."""

    async def scenario() -> None:
        fe = Frontend(300, tmp_path)
        fe.start()
        try:
            _, replica = await fe.replica("patient")
            beats = replica.last_seen
            await eventually_async(lambda: replica.last_seen > beats, "a heartbeat", WAIT_S)
            for _ in range(3):
                # The loop is blocked for well over an interval, though for less than the
                # replica's own limit of three (counted from a heartbeat sent just before):
                # its heartbeats wait, unread, in the socket meanwhile.
                fe.rpc.send(replica.identity, protocol.encode(Heartbeat()))
                blocked_at = asyncio.get_running_loop().time()
                block_the_event_loop(0.5)
                await eventually_async(
                    lambda t=blocked_at: replica.last_seen > t, "beats read", WAIT_S
                )
            assert fe.suspensions == [] and fe.removed == []
            assert replica.available
        finally:
            await fe.stop()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())


async def test_a_replica_busy_with_a_gil_heavy_model_keeps_serving(
    frontend_factory: Callable[[int], Frontend],
) -> None:
    fe = frontend_factory(250)
    await fe.replica("busy", SCHOONER_TEST_SPIN="0.15")
    sent: list[float] = []
    everything: list[Query] = []
    for i in range(20):
        xs = [float(i)]
        everything += fe.submit(xs, timeout_s=20)
        sent += xs
        await asyncio.sleep(0.05)
    assert await outcomes(everything) == predictions(sent)
    assert fe.removed == [] and fe.suspensions == []
