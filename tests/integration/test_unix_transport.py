"""The frontend's direct unix-socket transport, against real sockets and real processes.

One ``RpcServer`` (a CURVE ROUTER on TCP, plus ``unix_path``) and its dispatcher run in
the test's event loop; every test runs on asyncio's loop and on uvloop's (production's).
Replicas on the unix socket are ``tests/unix_peer.py``: driven message by message from
the test (``UnixPeer``, its blocking calls made in a thread), or run as a separate
process that answers. The ZeroMQ replica is a real ``python -m model_container``
process. Nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import struct
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from credentials import make_cluster_secrets
from polling import eventually, eventually_async
from ports import free_port
from prometheus_client.parser import text_string_to_metric_families
from rpc_frontend import (
    STARTUP_S,
    RpcFrontend,
    block_the_event_loop,
    container_argv,
    outcomes,
    predictions,
)
from spawning import Spawner
from unix_peer import UnixPeer

from model_container import protocol, write_closure_bundle
from model_container.protocol import Heartbeat, InputType, Predict, Reject, Result
from query_frontend.batching.replicas import Replica
from query_frontend.rpc.unix_listener import UNIX_IDENTITY_PREFIX

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
PEER = REPO / "tests" / "unix_peer.py"
UNIX_KEY = ("u", "1")
ZMQ_KEY = ("z", "1")
WAIT_S = 15.0


class Frontend(RpcFrontend):
    """Serves ``UNIX_KEY`` and ``ZMQ_KEY`` on its ROUTER and at ``path``."""

    def __init__(self, tmp_path: Path, heartbeat_ms: int) -> None:
        rpc_dir = tmp_path / "rpc"
        rpc_dir.mkdir(mode=0o700)
        self.path = str(rpc_dir / "q.sock")
        super().__init__(tmp_path, heartbeat_ms, (UNIX_KEY, ZMQ_KEY), unix_path=self.path)
        self.peers: list[UnixPeer] = []

    async def stop(self) -> None:
        await super().stop()
        for peer in self.peers:
            peer.close()

    async def peer(self) -> UnixPeer:
        peer = await asyncio.to_thread(UnixPeer, self.path)
        self.peers.append(peer)
        return peer

    async def peer_process(self, replica_id: str, key: tuple[str, str] = UNIX_KEY) -> Replica:
        """A ``unix_peer.py`` process that answers; waits until it is registered."""
        argv = [sys.executable, str(PEER), self.path, key[0], key[1], replica_id]
        return (await self.started(replica_id, argv))[1]

    async def zmq_replica(self, replica_id: str) -> Replica:
        """A real model container on the ROUTER (CURVE), serving ``ZMQ_KEY``."""
        bundle = self.tmp_path / "bundle"
        write_closure_bundle(bundle, lambda xs: [float(x[0]) * 10 for x in xs],
                             InputType.DOUBLES, ["numpy"])  # fmt: skip
        argv = container_argv(bundle, self.address, ZMQ_KEY, replica_id, self.secrets)
        return (await self.started(replica_id, argv))[1]


def exists(path: str) -> bool:
    return os.path.exists(path)


Scenario = Callable[[Frontend], Coroutine[Any, Any, None]]
Run = Callable[..., None]


@pytest.fixture(
    params=[
        pytest.param(asyncio.new_event_loop, id="asyncio"),
        pytest.param(uvloop.new_event_loop, id="uvloop"),  # the frontend's, in production
    ]
)
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Run:
    """Run a scenario against a started frontend, on each event loop."""

    def run(scenario: Scenario, heartbeat_ms: int = 30_000) -> None:
        async def main() -> None:
            fe = Frontend(tmp_path, heartbeat_ms)
            fe.start()
            try:
                await scenario(fe)
            finally:
                await fe.stop()

        with asyncio.Runner(loop_factory=request.param) as runner:
            runner.run(main())

    return run


def test_hello_gets_welcome_and_heartbeats_follow(run: Run) -> None:
    async def scenario(fe: Frontend) -> None:
        assert stat.S_IMODE(os.stat(fe.path).st_mode) == 0o600
        peer = await fe.peer()
        welcome = await asyncio.to_thread(peer.register, *UNIX_KEY, "p1")
        assert welcome.heartbeat_ms == 100
        replica = fe.find("p1")
        assert replica is not None
        assert replica.identity.startswith(UNIX_IDENTITY_PREFIX) and len(replica.identity) == 13
        assert isinstance(await asyncio.to_thread(peer.recv), Heartbeat)

    run(scenario, heartbeat_ms=100)


def test_a_batch_reaches_the_peer_and_its_result_resolves_the_queries(run: Run) -> None:
    async def scenario(fe: Frontend) -> None:
        peer = await fe.peer()
        await asyncio.to_thread(peer.register, *UNIX_KEY, "p1")
        xs = [1.0, 2.0, 3.0]
        queries = fe.submit(xs)
        predict = await asyncio.to_thread(peer.recv_next)
        assert isinstance(predict, Predict) and predict.size == 3
        lengths, data = protocol.pack_outputs([x * 10 for x in xs])
        await asyncio.to_thread(peer.send, Result(predict.batch_id, lengths, data))
        assert await outcomes(queries) == predictions(xs)

    run(scenario)


def test_a_message_that_does_not_decode_is_rejected_on_its_connection(run: Run) -> None:
    async def scenario(fe: Frontend) -> None:
        peer = await fe.peer()
        await asyncio.to_thread(peer.send_frames, [b"\xc1 not msgpack"])
        reply = await asyncio.to_thread(peer.recv_next)
        assert isinstance(reply, Reject) and reply.reason.startswith("protocol error")
        # The connection stays: a HELLO on it registers.
        await asyncio.to_thread(peer.register, *UNIX_KEY, "p1")

    run(scenario)


def test_a_peer_that_disconnects_mid_batch_has_its_queries_retried(run: Run) -> None:
    async def scenario(fe: Frontend) -> None:
        peer = await fe.peer()
        await asyncio.to_thread(peer.register, *UNIX_KEY, "victim")
        victim = fe.find("victim")
        xs = [1.0, 2.0, 3.0, 4.0]
        queries = fe.submit(xs)
        assert isinstance(await asyncio.to_thread(peer.recv_next), Predict)
        await fe.peer_process("healthy")

        peer.close()
        assert await outcomes(queries) == predictions(xs)  # answered by the other one
        assert fe.removed == [victim]
        assert victim is not None and victim.removed.startswith("disconnected"), victim.removed
        # A send to its identity now finds no connection: as EHOSTUNREACH, nothing breaks.
        fe.rpc.send(victim.identity, protocol.encode(Heartbeat()))
        assert fe.find("victim") is None

    run(scenario)


def test_a_killed_peer_process_is_removed_and_another_serves(run: Run) -> None:
    async def scenario(fe: Frontend) -> None:
        victim = await fe.peer_process("victim")
        victim_proc = fe.procs[-1][0]
        await fe.peer_process("healthy")
        victim_proc.send_signal(signal.SIGKILL)
        await eventually_async(lambda: fe.removed == [victim], "the killed peer removed", WAIT_S)
        xs = [5.0, 6.0]
        assert await outcomes(fe.submit(xs)) == predictions(xs)

    run(scenario)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(struct.pack("<I", 0), id="zero-frames"),
        pytest.param(struct.pack("<II", 1, 0xFFFF_FFFF), id="over-the-limit"),
    ],
)
def test_a_garbage_prefix_closes_only_that_connection(run: Run, garbage: bytes) -> None:
    async def scenario(fe: Frontend) -> None:
        healthy = await fe.peer_process("healthy")
        peer = await fe.peer()
        await asyncio.to_thread(peer.register, *UNIX_KEY, "garbled")
        garbled = fe.find("garbled")

        await asyncio.to_thread(peer.send_raw, garbage)
        assert await asyncio.to_thread(peer.closed_by_frontend)
        await eventually_async(lambda: fe.removed == [garbled], "the garbled peer removed", WAIT_S)
        assert fe.find("healthy") is healthy
        xs = [7.0, 8.0, 9.0]
        assert await outcomes(fe.submit(xs)) == predictions(xs)

    run(scenario)


def test_a_zeromq_replica_and_a_unix_replica_at_once(run: Run) -> None:
    async def scenario(fe: Frontend) -> None:
        over_unix = await fe.peer_process("over-unix", UNIX_KEY)
        over_zmq = await fe.zmq_replica("over-zmq")
        assert over_unix.identity.startswith(UNIX_IDENTITY_PREFIX)
        assert not over_zmq.identity.startswith(UNIX_IDENTITY_PREFIX)
        for wave in range(5):
            xs = [float(10 * wave + k) for k in range(6)]
            unix_queries, zmq_queries = fe.submit(xs, UNIX_KEY), fe.submit(xs, ZMQ_KEY)
            assert await outcomes(unix_queries) == predictions(xs)
            assert await outcomes(zmq_queries) == predictions(xs)
            await asyncio.sleep(0.1)  # heartbeats go both ways meanwhile
        assert fe.removed == []

    run(scenario, heartbeat_ms=250)


def test_a_frontend_too_busy_to_read_does_not_bench_its_unix_replicas(run: Run) -> None:
    """Silence is judged after the loop has read what waits in the unix sockets."""

    async def scenario(fe: Frontend) -> None:
        replica = await fe.peer_process("patient")
        beats = replica.last_seen
        await eventually_async(lambda: replica.last_seen > beats, "a heartbeat", WAIT_S)
        for _ in range(3):
            # Blocked for well over an interval: the peer's heartbeats wait in the socket.
            blocked_at = asyncio.get_running_loop().time()
            block_the_event_loop(0.5)
            await eventually_async(lambda t=blocked_at: replica.last_seen > t, "beats read", WAIT_S)
        assert fe.suspensions == [] and fe.removed == []
        assert replica.available

    run(scenario, heartbeat_ms=300)


def test_a_peer_that_does_not_read_does_not_hold_up_the_frontend(run: Run) -> None:
    """Writes to it are buffered (its transport pauses); the loop serves the others."""

    async def scenario(fe: Frontend) -> None:
        await fe.peer_process("healthy")
        peer = await fe.peer()
        await asyncio.to_thread(peer.register, *ZMQ_KEY, "deaf")  # (gets no batches here)
        deaf = fe.find("deaf")
        assert deaf is not None and fe.rpc._unix is not None
        for _ in range(16):  # 16 MiB it never reads, far beyond the socket's buffers
            fe.rpc.send(deaf.identity, [b"\0" * (1 << 20)])
        conn = fe.rpc._unix.connections[deaf.identity]
        await eventually_async(lambda: conn.paused, "its transport paused", WAIT_S)
        xs = [1.0, 2.0, 3.0]
        assert await outcomes(fe.submit(xs)) == predictions(xs)
        assert fe.removed == []

    run(scenario)


def test_closing_the_server_closes_connections_and_removes_the_socket_file(run: Run) -> None:
    async def scenario(fe: Frontend) -> None:
        peer = await fe.peer()
        await asyncio.to_thread(peer.register, *UNIX_KEY, "p1")
        fe.rpc.close()
        assert not exists(fe.path)
        assert await asyncio.to_thread(peer.closed_by_frontend)

    run(scenario)


# A peer of another uid: the kernel's SO_PEERCRED names it. Only root can make one.
_OTHER_UID = 65534


def _connect_as_other_uid(directory: str, name: str) -> int:
    """Fork a child that becomes another uid and connects; 0 if the frontend closed it."""
    pid = os.fork()
    if pid == 0:  # the child: no loop, no threads of its own; it only exits
        code = 3
        try:
            os.chdir(directory)  # (its ancestors stay out of the other uid's reach)
            os.setgroups([])
            os.setgid(_OTHER_UID)
            os.setuid(_OTHER_UID)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(WAIT_S)
            sock.connect(name)
            try:
                code = 0 if sock.recv(1) == b"" else 1
            except ConnectionResetError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.getuid() != 0, reason="only root can connect as another uid")
def test_a_peer_of_another_uid_is_refused_and_counted(run: Run) -> None:
    async def scenario(fe: Frontend) -> None:
        # Let the other uid reach the socket, as a misconfigured directory would.
        directory, name = os.path.split(fe.path)
        os.chmod(directory, 0o711)
        os.chmod(fe.path, 0o666)
        assert await asyncio.to_thread(_connect_as_other_uid, directory, name) == 0
        assert fe.rpc._refusals.total == 1
        assert fe.rpc.unix_refusals() == {"other_uid": 1, "unknown_peer": 0}
        assert fe.dispatcher.by_identity == {}
        # The listener still serves its own user.
        peer = await fe.peer()
        await asyncio.to_thread(peer.register, *UNIX_KEY, "p1")

    run(scenario)


@pytest.mark.skipif(os.getuid() != 0, reason="only root can connect as another uid")
def test_the_query_frontend_process_exports_the_peers_of_another_uid_it_refused(
    redis_url: str, tmp_path: Path
) -> None:
    """``python -m query_frontend --rpc-unix``: its /metrics counts a peer of another uid
    in ``schooner_rpc_refused_peers_total{transport="unix"}``, and its own replicas not."""
    secrets = make_cluster_secrets(tmp_path / "cluster")
    rpc_dir = tmp_path / "rpc"
    rpc_dir.mkdir(mode=0o700)
    path = str(rpc_dir / "q.sock")
    port = free_port()
    spawner = Spawner(tmp_path)

    def refused(reason: str) -> float | None:
        """The counter on the query port's /metrics (the operator's: the admin token)."""
        url = f"http://127.0.0.1:{port}/metrics"
        reply = httpx.get(url, headers=secrets.admin_headers, timeout=WAIT_S)
        assert reply.status_code == 200, reply.text
        labels = {"transport": "unix", "reason": reason}
        for family in text_string_to_metric_families(reply.text):
            for sample in family.samples:
                if sample.name == "schooner_rpc_refused_peers_total" and sample.labels == labels:
                    return sample.value
        return None

    try:
        spawner(
            "query-frontend", "-m", "query_frontend", "--redis-url", redis_url,
            "--host", "127.0.0.1", "--port", str(port), "--rpc-host", "127.0.0.1",
            "--rpc-port", str(free_port()), "--rpc-unix", path,
            env={"SCHOONER_SECRETS_DIR": str(secrets.frontend_dir)},
        )  # fmt: skip
        eventually(lambda: exists(path), "the socket file made", STARTUP_S)
        eventually(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200,
            "the query frontend up",
            STARTUP_S,
            ignoring=(httpx.TransportError,),
        )
        # A replica of this user, registered and gone: not a refusal.
        peer = UnixPeer(path)
        try:
            assert peer.register(*UNIX_KEY, "p1").heartbeat_ms > 0
        finally:
            peer.close()
        assert (refused("other_uid"), refused("unknown_peer")) == (0.0, 0.0)
        # Let the other uid reach the socket, as a misconfigured directory would.
        os.chmod(rpc_dir, 0o711)
        os.chmod(path, 0o666)
        assert _connect_as_other_uid(str(rpc_dir), os.path.basename(path)) == 0
        assert (refused("other_uid"), refused("unknown_peer")) == (1.0, 0.0)
        # The listener still serves its own user, and that does not move the counter.
        peer = UnixPeer(path)
        try:
            assert peer.register(*UNIX_KEY, "p2").heartbeat_ms > 0
        finally:
            peer.close()
        assert refused("other_uid") == 1.0
    finally:
        spawner.stop()


def test_the_query_frontend_process_serves_rpc_unix_and_removes_it_on_exit(
    redis_url: str, tmp_path: Path
) -> None:
    """``python -m query_frontend --rpc-unix`` on uvloop, wired as in production."""
    secrets = make_cluster_secrets(tmp_path / "cluster")
    rpc_dir = tmp_path / "rpc"
    rpc_dir.mkdir(mode=0o700)
    path = str(rpc_dir / "q.sock")
    spawner = Spawner(tmp_path)
    try:
        proc = spawner(
            "query-frontend", "-m", "query_frontend", "--redis-url", redis_url,
            "--port", str(free_port()), "--rpc-port", str(free_port()), "--rpc-unix", path,
            env={"SCHOONER_SECRETS_DIR": str(secrets.frontend_dir)},
        )  # fmt: skip
        eventually(lambda: exists(path), "the socket file made", STARTUP_S)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        peer = UnixPeer(path)
        try:
            assert peer.register(*UNIX_KEY, "p1").heartbeat_ms > 0
            proc.terminate()
            assert peer.closed_by_frontend()
        finally:
            peer.close()
        assert proc.wait(timeout=WAIT_S) == 0
        assert not exists(path)
    finally:
        spawner.stop()
