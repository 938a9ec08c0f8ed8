"""One model container serving several frontends, against real ZeroMQ ROUTERs.

Each ``fake_frontend.FakeFrontend`` (a real ROUTER) plays a query frontend's side of
the wire protocol. The container is a real
``python -m model_container`` process (list and ``dns+tcp://localhost`` forms), or runs
in-process with an injected resolver where a test changes what a name resolves to
(frontends then listen on 127.0.0.1 and 127.0.0.2 with the same port, as the pods of a
headless Service do). Waits poll with a deadline; nothing asserts how long anything took.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import zmq
from credentials import ClusterSecrets, make_cluster_secrets
from fake_frontend import FakeFrontend
from frontend_side import REPLY_S, STARTUP_S, doubles_config, serving_in_a_thread
from polling import eventually
from ports import free_port
from summer_container import StartContainer, make_model, summer_containers

from model_container import ModelContainer
from model_container.connection import LinkEvent
from model_container.metrics import ContainerMetrics
from model_container.protocol import (
    Goodbye,
    Heartbeat,
    Hello,
    InputType,
    Result,
    Welcome,
)
from model_container.rpc_keys import ClientKeys
from model_container.sessions import FrontendSession, SessionSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MakeFrontend = Callable[..., FakeFrontend]  # (host="127.0.0.1", port=None)


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterSecrets:
    """The keys every fake frontend and replica of a test share."""
    return make_cluster_secrets(tmp_path / "cluster")


@pytest.fixture
def frontends(cluster: ClusterSecrets) -> Iterator[MakeFrontend]:
    made: list[FakeFrontend] = []

    def make(host: str = "127.0.0.1", port: int | None = None) -> FakeFrontend:
        frontend = FakeFrontend(host, port, secrets=cluster)
        made.append(frontend)
        return frontend

    yield make
    for frontend in made:
        frontend.close()


@pytest.fixture
def start_container(tmp_path: Path, cluster: ClusterSecrets) -> Iterator[StartContainer]:
    with summer_containers(tmp_path, cluster, "--discovery-interval-s", "0.2") as start:
        yield start


# -------------------------------------------------------------------------- processes


def test_a_list_registers_with_each_frontend_and_answers_on_its_own_connection(
    frontends: MakeFrontend,
    start_container: StartContainer,
) -> None:
    a, b = frontends(), frontends()
    proc = start_container(f"{a.address},{b.address}")
    id_a, hello_a = a.register()
    id_b, hello_b = b.register()
    assert hello_a.replica_id == hello_b.replica_id == "summer-0"
    assert hello_a.pid == hello_b.pid == proc.pid  # one process, one model
    # The same batch id on both: each answer must come back on its own connection.
    a.predict(id_a, 1, [[1.0, 2.0]])
    b.predict(id_b, 1, [[10.0, 20.0]])
    _, result_a = a.expect(Result)
    _, result_b = b.expect(Result)
    assert orjson.loads(bytes(result_a.data)) == 3.0
    assert orjson.loads(bytes(result_b.data)) == 30.0
    proc.send_signal(signal.SIGTERM)
    assert a.expect(Goodbye)[1] == Goodbye("received SIGTERM")
    assert b.expect(Goodbye)[1] == Goodbye("received SIGTERM")
    assert proc.wait(timeout=REPLY_S) == 0


def test_dns_form_registers_with_localhost(
    frontends: MakeFrontend,
    start_container: StartContainer,
) -> None:
    frontend = frontends()
    start_container(f"dns+tcp://localhost:{frontend.port}")
    identity, hello = frontend.register()
    assert hello.model_name == "summer"
    assert frontend.answer(identity, 7, [[2.0, 2.0]]) == [4.0]


def test_one_frontend_going_away_leaves_the_other_serving(
    frontends: MakeFrontend,
    start_container: StartContainer,
) -> None:
    a, b = frontends(), frontends()
    start_container(f"{a.address},{b.address}")
    a.register(heartbeat_ms=100)
    id_b, _ = b.register(heartbeat_ms=100)
    a.close()  # frontend A dies
    for batch_id in range(5):
        assert b.answer(id_b, batch_id, [[float(batch_id)]]) == [float(batch_id)]
    restarted = frontends(port=a.port)  # A comes back on its address
    id_a, _ = restarted.register(heartbeat_ms=100)
    assert restarted.answer(id_a, 100, [[1.0, 1.0]]) == [2.0]
    assert b.answer(id_b, 101, [[3.0]]) == [3.0]


def test_batches_of_two_frontends_share_the_model(
    frontends: MakeFrontend,
    start_container: StartContainer,
) -> None:
    a, b = frontends(), frontends()
    start_container(f"{a.address},{b.address}")
    id_a, _ = a.register()
    id_b, _ = b.register()
    a.predict(id_a, 1, [[-4.0, 0.3]])  # occupies the model a while
    for batch_id in range(2, 5):
        a.predict(id_a, batch_id, [[float(batch_id)]])
        b.predict(id_b, batch_id, [[float(batch_id)]])
    assert [a.expect(Result)[1].batch_id for _ in range(4)] == [1, 2, 3, 4]  # FIFO
    assert [b.expect(Result)[1].batch_id for _ in range(3)] == [2, 3, 4]


# ------------------------------------------------------------- one session, step by step


def turn_session_until(
    session: FrontendSession,
    poller: zmq.Poller,
    done: Callable[[], bool],
    what: str,
    timeout: float,
) -> None:
    """Turn the session's loop (as the server does: wait up to 10 ms for its sockets, then
    handle what is ready and what is due) until ``done``."""

    def turned() -> bool:
        if done():
            return True
        ready = dict(poller.poll(10))
        now = time.monotonic()
        session.on_ready(ready, now)
        session.on_timers(now)
        return False

    eventually(turned, what, timeout, interval=0)


def run_session_until(session: FrontendSession, poller: zmq.Poller, frontend: FakeFrontend) -> None:
    """Turn the session's loop until ``frontend`` has a message."""
    what = f"something to reach {frontend.address}"
    turn_session_until(session, poller, lambda: bool(frontend.socket.poll(0)), what, STARTUP_S)


def test_a_welcome_left_by_a_dropped_connection_does_not_register_the_replica(
    frontends: MakeFrontend, cluster: ClusterSecrets
) -> None:
    """The frontend welcomes the replica and dies before the replica reads the WELCOME.
    The replica must not count itself registered: a frontend restarted on the address
    never saw its HELLO, and must get one rather than bare heartbeats."""
    context: zmq.Context[Any] = zmq.Context()
    poller = zmq.Poller()
    settings = SessionSettings.for_replica(
        "summer", "1", InputType.DOUBLES, "summer-0", 0, 0.05, 0.05, 0.2, replica_keys(cluster)
    )
    metrics = ContainerMetrics("summer", "1", "doubles", "summer-0", process_metrics=False)
    old = frontends()
    session = FrontendSession(old.address, settings, metrics, context, poller, time.monotonic())
    try:
        run_session_until(session, poller, old)
        identity, _ = old.expect(Hello, ignore=(Heartbeat,))
        link = session.link
        while link.monitor.poll(100):  # the handshake's event, handled
            session.on_ready({link.monitor: zmq.POLLIN}, time.monotonic())
        old.send(identity, Welcome(100))
        assert link.socket.poll(int(REPLY_S * 1000)), "the WELCOME never reached the replica"
        old.close()
        assert link.monitor.poll(int(REPLY_S * 1000)), "the drop was never reported"
        # One wake-up sees both: the drop first, then the WELCOME still in the socket.
        session.on_ready({link.monitor: zmq.POLLIN, link.socket: zmq.POLLIN}, time.monotonic())
        assert not session.registered

        restarted = frontends(port=old.port)
        run_session_until(session, poller, restarted)
        new_identity, hello = restarted.expect(Hello, ignore=())  # a HELLO, not a heartbeat
        assert hello.replica_id == "summer-0"
        restarted.send(new_identity, Welcome(100))
        turn_session_until(
            session,
            poller,
            lambda: session.registered,
            "registered with the restarted one",
            REPLY_S,
        )
    finally:
        session.leave("test over", linger_ms=0)
        context.term()


def test_events_of_a_replaced_connection_are_not_applied_to_its_successor(
    monkeypatch: pytest.MonkeyPatch, cluster: ClusterSecrets
) -> None:
    """A drop while registering replaces the socket; whatever else the old socket's
    monitor reported in the same wake-up is about the old socket. Applied to the new
    one, a stale drop would replace it again, a stale handshake would send a HELLO that
    fails and put the next one off."""
    context: zmq.Context[Any] = zmq.Context()
    poller = zmq.Poller()
    settings = SessionSettings.for_replica(
        "summer", "1", InputType.DOUBLES, "summer-0", 0, 0.05, 0.05, 0.2, replica_keys(cluster)
    )
    metrics = ContainerMetrics("summer", "1", "doubles", "summer-0", process_metrics=False)
    address = f"tcp://127.0.0.1:{free_port()}"  # nobody listens
    now = time.monotonic()
    session = FrontendSession(address, settings, metrics, context, poller, now)
    try:
        old = session.link
        stale = [LinkEvent.DISCONNECTED, LinkEvent.DISCONNECTED, LinkEvent.CONNECTED]
        monkeypatch.setattr(old, "events", lambda *_: stale)
        session.on_ready({old.monitor: zmq.POLLIN}, now)
        assert old.closed and session.link is not old
        assert session.epoch == 1, "the new socket was replaced again"
        assert session.hello_due == now, "a stale handshake put the HELLO off"
    finally:
        session.leave("test over", linger_ms=0)
        context.term()


def replica_keys(cluster: ClusterSecrets) -> ClientKeys:
    return ClientKeys.load(str(cluster.replica_dir))


# -------------------------------------------------------------------------- discovery


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class Names:
    """A resolver the test rewrites while the container runs."""

    def __init__(self, *addresses: str) -> None:
        self._lock = threading.Lock()
        self._addresses = list(addresses)
        self.failing = False
        self.failures = 0

    def set(self, *addresses: str) -> None:
        with self._lock:
            self._addresses = list(addresses)

    def __call__(self, host: str, port: int) -> list[str]:
        assert host in {"frontends.test", "v6.test"}
        with self._lock:
            if self.failing:
                self.failures += 1
                raise OSError("Temporary failure in name resolution")
            return list(self._addresses)


def test_discovery_follows_the_name(frontends: MakeFrontend, cluster: ClusterSecrets) -> None:
    port = free_port("127.0.0.1", "127.0.0.2")
    a, b = frontends("127.0.0.1", port), frontends("127.0.0.2", port)
    names = Names("127.0.0.1")
    config = doubles_config(
        f"dns+tcp://frontends.test:{port}",
        cluster.replica_dir,
        model_name="summer",
        replica_id="summer-0",
        discovery_interval_s=0.05,
    )
    container = ModelContainer(config, make_model(), resolver=names)
    with serving_in_a_thread(container):
        id_a, _ = a.register()
        assert a.answer(id_a, 1, [[1.0]]) == [1.0]

        names.set("127.0.0.1", "127.0.0.2")  # a second frontend pod became ready
        id_b, hello_b = b.register()
        assert hello_b.replica_id == "summer-0"
        assert b.answer(id_b, 2, [[2.0]]) == [2.0]
        eventually(lambda: sum(container.frontends.values()) == 2, "registered with both")

        names.failing = True  # DNS is down: keep serving both
        eventually(lambda: names.failures >= 3, "resolution failed a few times")
        assert sum(container.frontends.values()) == 2
        assert a.answer(id_a, 3, [[3.0]]) == [3.0]
        names.failing = False

        a.predict(id_a, 4, [[-4.0, 0.5]])  # A's batch is running when A goes away ...
        a.predict(id_a, 5, [[5.0]])  # ... and this one is queued
        names.set("127.0.0.2")  # pod A is gone from the Service
        _, goodbye = a.expect(Goodbye, ignore=(Heartbeat, Result))
        assert goodbye == Goodbye("frontend no longer discovered")
        eventually(lambda: set(container.frontends) == {b.address}, "only B left")
        assert b.answer(id_b, 6, [[6.0]]) == [6.0]  # the model is free for B
    assert b.expect(Goodbye)[1] == Goodbye("test over")


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_discovered_ipv6_frontends_are_reached(
    frontends: MakeFrontend, cluster: ClusterSecrets
) -> None:
    frontend = frontends("[::1]")
    config = doubles_config(
        f"dns+tcp://v6.test:{frontend.port}",
        cluster.replica_dir,
        model_name="summer",
        replica_id="summer-6",
    )
    container = ModelContainer(config, make_model(), resolver=Names("::1"))
    with serving_in_a_thread(container):
        identity, hello = frontend.register()
        assert hello.replica_id == "summer-6"
        assert frontend.answer(identity, 1, [[1.0, 5.0]]) == [6.0]
        assert container.frontends == {f"tcp://[::1]:{frontend.port}": True}
