"""A real ``python -m model_container`` process serving over the direct unix-socket
transport (``--frontend unix://PATH``, ``docs/wire-protocol.md`` §1.3).

``unix_frontend.UnixFrontend`` (a real listening unix socket speaking the framing and
the protocol) plays the query frontend; ``fake_frontend.FakeFrontend`` (a real CURVE
ROUTER) is the TCP frontend beside it. Waits poll with a deadline; nothing asserts how
long anything took.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from credentials import ClusterSecrets, make_cluster_secrets
from fake_frontend import FakeFrontend
from frontend_side import REPLY_S, STARTUP_S, doubles_config, outputs_of, serving_in_a_thread
from summer_container import StartContainer, make_model, summer_containers
from unix_frontend import UnixFrontend

from model_container import ModelContainer, framing, protocol
from model_container.protocol import (
    Goodbye,
    Heartbeat,
    Hello,
    InputType,
    Predict,
    Result,
    Welcome,
)
from model_container.sessions import MAX_READS_PER_POLL

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterSecrets:
    return make_cluster_secrets(tmp_path / "cluster")


@pytest.fixture
def frontend() -> Iterator[UnixFrontend]:
    fake = UnixFrontend()
    yield fake
    fake.close()


@pytest.fixture
def start_container(tmp_path: Path, cluster: ClusterSecrets) -> Iterator[StartContainer]:
    with summer_containers(tmp_path, cluster) as start:
        yield start


def test_registers_and_answers_a_batch(
    start_container: StartContainer, frontend: UnixFrontend
) -> None:
    start_container(frontend.address)
    identity, hello = frontend.register(heartbeat_ms=250)
    assert (hello.model_name, hello.replica_id) == ("summer", "summer-0")
    assert hello.pid != os.getpid()
    assert frontend.answer(identity, 1, [[1.0, 2.0], [3.0]]) == [3.0, 3.0]
    frontend.predict(identity, 2, [[5.0]])
    frontend.predict(identity, 3, [[6.0]])
    results = [frontend.expect(Result)[1] for _ in range(2)]
    assert [(r.batch_id, outputs_of(r)) for r in results] == [(2, [5.0]), (3, [6.0])]


def test_waits_for_a_frontend_that_is_not_up_yet(start_container: StartContainer) -> None:
    frontend = UnixFrontend()
    path = frontend.path
    frontend.close(remove_dir=False)  # the directory exists, nobody listens
    proc = start_container(f"unix://{path}")
    later = None
    try:
        time.sleep(1.0)  # a few HELLO intervals with nobody there (not a timing assertion)
        assert proc.poll() is None
        later = UnixFrontend(path)
        identity, _ = later.register()
        assert later.answer(identity, 4, [[2.0]]) == [2.0]
    finally:
        if later is not None:
            later.close()
        Path(path).parent.rmdir()


def test_reregisters_with_a_frontend_restarted_at_the_same_path(
    start_container: StartContainer, frontend: UnixFrontend
) -> None:
    start_container(frontend.address)
    frontend.register(heartbeat_ms=100)
    frontend.close(remove_dir=False)
    restarted = UnixFrontend(frontend.path)
    try:
        identity, hello = restarted.register(heartbeat_ms=100)
        assert hello.replica_id == "summer-0"
        assert restarted.answer(identity, 5, [[2.0, 2.0]]) == [4.0]
    finally:
        restarted.close()


def test_a_broken_stream_drops_the_connection_and_it_registers_again(
    start_container: StartContainer, frontend: UnixFrontend
) -> None:
    start_container(frontend.address)
    first, _ = frontend.register(heartbeat_ms=100)
    frontend.send_raw(first, b"\xff\xff\xff\xff not a message")
    frontend.wait_disconnect(first)
    second, _ = frontend.register(heartbeat_ms=100)
    assert second != first
    assert frontend.answer(second, 6, [[1.0]]) == [1.0]


def test_heartbeats_keep_flowing_during_a_long_batch(
    start_container: StartContainer, frontend: UnixFrontend
) -> None:
    start_container(frontend.address)
    identity, _ = frontend.register(heartbeat_ms=100)
    frontend.predict(identity, 7, [[-4.0, 1.0]])  # sleeps 1 s: ten intervals
    _, result = frontend.expect(Result)
    assert outputs_of(result) == [-3.0]
    assert frontend.heartbeats >= 5
    assert frontend.answer(identity, 8, [[3.0]]) == [3.0]


def test_restart_says_goodbye_and_exits_75(
    start_container: StartContainer, frontend: UnixFrontend
) -> None:
    proc = start_container(frontend.address)
    identity, _ = frontend.register(heartbeat_ms=100)
    frontend.send(identity, protocol.Restart("testing"))
    _, goodbye = frontend.expect(Goodbye)
    assert goodbye.reason == f"restart requested by {frontend.address}: testing"
    assert proc.wait(timeout=REPLY_S) == protocol.EXIT_RESTART_REQUESTED


def test_restart_is_obeyed_while_a_batch_hangs(
    start_container: StartContainer, frontend: UnixFrontend
) -> None:
    proc = start_container(frontend.address)
    identity, _ = frontend.register(heartbeat_ms=100)
    frontend.predict(identity, 9, [[-4.0, 600.0]])
    heartbeats = frontend.heartbeats
    while frontend.heartbeats < heartbeats + 3:  # the stand-in heartbeats meanwhile
        frontend.expect(Heartbeat, ignore=())
    frontend.send(identity, protocol.Restart("batch timeout: testing"))
    _, goodbye = frontend.expect(Goodbye)
    assert goodbye.reason.endswith("batch timeout: testing")
    assert proc.wait(timeout=REPLY_S) == protocol.EXIT_RESTART_REQUESTED


def test_sigterm_sends_goodbye_and_exits_0(
    start_container: StartContainer, frontend: UnixFrontend
) -> None:
    proc = start_container(frontend.address)
    frontend.register()
    proc.send_signal(signal.SIGTERM)
    assert frontend.expect(Goodbye)[1] == Goodbye("received SIGTERM")
    assert proc.wait(timeout=REPLY_S) == 0


def test_sigterm_during_a_hung_batch_says_goodbye(
    start_container: StartContainer, frontend: UnixFrontend
) -> None:
    proc = start_container(frontend.address)
    identity, _ = frontend.register(heartbeat_ms=100)
    frontend.predict(identity, 10, [[-4.0, 600.0]])
    frontend.expect(Heartbeat, ignore=())  # the batch is running
    proc.send_signal(signal.SIGTERM)
    assert frontend.expect(Goodbye)[1] == Goodbye("received SIGTERM")
    assert proc.wait(timeout=REPLY_S + 5) == 0  # after its 5 s stop timeout


def test_one_unix_and_one_tcp_frontend_are_both_served(
    start_container: StartContainer, frontend: UnixFrontend, cluster: ClusterSecrets
) -> None:
    tcp = FakeFrontend(secrets=cluster)
    try:
        start_container(f"{frontend.address},{tcp.address}")
        unix_id, unix_hello = frontend.register(heartbeat_ms=250)
        tcp_id, tcp_hello = tcp.register(heartbeat_ms=250)
        assert unix_hello.replica_id == tcp_hello.replica_id == "summer-0"
        assert frontend.answer(unix_id, 11, [[1.0, 1.0]]) == [2.0]
        assert tcp.answer(tcp_id, 12, [[2.0, 2.0]]) == [4.0]
        # One going away leaves the other served.
        frontend.close(remove_dir=False)
        assert tcp.answer(tcp_id, 13, [[3.0]]) == [3.0]
        restarted = UnixFrontend(frontend.path)
        try:
            again, _ = restarted.register()
            assert restarted.answer(again, 14, [[4.0]]) == [4.0]
        finally:
            restarted.close(remove_dir=False)
    finally:
        tcp.close()


def test_the_running_batch_of_a_lost_connection_is_not_answered_on_the_next(
    start_container: StartContainer, frontend: UnixFrontend
) -> None:
    start_container(frontend.address)
    identity, _ = frontend.register(heartbeat_ms=100)
    frontend.predict(identity, 15, [[-4.0, 1.0]])  # sleeps 1 s
    frontend.predict(identity, 16, [[1.0]])  # queued behind it
    frontend.expect(Heartbeat, ignore=())  # the batch is running (the stand-in beats)
    frontend.close(remove_dir=False)
    restarted = UnixFrontend(frontend.path)
    try:
        again, _ = restarted.register(heartbeat_ms=100)
        restarted.predict(again, 17, [[2.0]])
        _, result = restarted.expect(Result)
        assert (result.batch_id, outputs_of(result)) == (17, [2.0])
    finally:
        restarted.close()


def test_more_messages_in_one_read_than_one_turn_handles(
    frontend: UnixFrontend, cluster: ClusterSecrets
) -> None:
    """Messages already read from the socket do not wake the poll: the loop must not
    sleep while some wait (``MAX_READS_PER_POLL`` per turn)."""
    container = ModelContainer(doubles_config(frontend.address, cluster.replica_dir), make_model())
    with serving_in_a_thread(container):
        identity, _ = frontend.expect(Hello, STARTUP_S, ignore=())
        frontend.welcomed.add(identity)
        burst = [Welcome(60_000)] + [Heartbeat()] * (3 * MAX_READS_PER_POLL)
        arrays = [np.asarray([1.0, 2.0], dtype="<f8")]
        lengths, data = protocol.pack_arrays(arrays, np.dtype("<f8"))
        burst.append(Predict(18, InputType.DOUBLES, lengths, data.data))
        stream = b"".join(
            bytes(piece) for msg in burst for piece in framing.encode_message(protocol.encode(msg))
        )
        frontend.send_raw(identity, stream)  # one write; one read takes it all
        _, result = frontend.expect(Result, timeout_s=REPLY_S)
        assert (result.batch_id, outputs_of(result)) == (18, [3.0])
