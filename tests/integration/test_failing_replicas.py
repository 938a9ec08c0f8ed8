"""Replicas that hang, run out of memory or keep failing, against the real RPC server.

The query frontend's RPC server and dispatcher run in the test's event loop on a real
ZeroMQ ROUTER (CURVE, the cluster's keys); replicas are real ``python -m model_container``
processes, except one scripted DEALER that stands for a container written in another
language which answers every batch with a container-level ERROR and never exits by
itself. No timing assertions: every wait polls for its outcome with a generous deadline.

What an operator would notice, per test: a poison input that hangs its model gets the
default, its replica's process exits (status 75) for its manager to restart, later
queries go to the other replica, and after hanging replicas twice the input is refused
at once (``QuarantinedError``, the 422 of ``POST /predict``) without reaching one, as
``/status`` shows; a model that raises MemoryError has its queries answered by a sibling
while its process exits with 76 saying why; a replica failing in a row while a sibling
succeeds is ejected and told to restart; the batch watchdog ends a process whose model
holds the GIL past its batch timeout.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
import zmq
import zmq.asyncio
from credentials import ClusterSecrets, make_cluster_secrets
from fake_frontend import FakeFrontend
from frontend_side import doubles_config, serving_in_a_thread
from polling import eventually, eventually_async
from ports import free_port
from rpc_frontend import STARTUP_S, RpcFrontend, container_argv, outcomes, predictions, spawn_logged
from spawning import Spawner

from model_container import ModelContainer, protocol, write_closure_bundle
from model_container.bundle import bundle_digest
from model_container.protocol import (
    CAP_RESTART,
    EXIT_MEMORY_LIMIT,
    EXIT_RESTART_REQUESTED,
    Error,
    ErrorKind,
    Goodbye,
    Heartbeat,
    Hello,
    InputType,
    Predict,
    Restart,
)
from model_container.rpc_keys import ClientKeys
from query_frontend.batching.quarantine import QuarantinedError
from query_frontend.batching.replicas import Replica
from query_frontend.queries import Expired, Failure, Query

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

KEY = ("m", "1")
POISON = 666.0  # the input the model hangs on
WAIT_S = 30.0


def make_model() -> Callable[[Any], Any]:
    """x -> 10 x. It hangs (sleeping: its stand-in thread still serves) on POISON; with
    SCHOONER_TEST_OOM set it raises MemoryError, with SCHOONER_TEST_RAISE ValueError,
    and with SCHOONER_TEST_HOG it computes forever in C, holding the GIL."""

    def model(xs: Any) -> Any:
        import os as _os
        import time as _time

        if _os.environ.get("SCHOONER_TEST_OOM"):
            raise MemoryError("cannot allocate the test's imaginary tensor")
        if _os.environ.get("SCHOONER_TEST_RAISE"):
            raise ValueError("this model rejects every input")
        if _os.environ.get("SCHOONER_TEST_HOG"):
            sum(range(10**15))  # one C call: the GIL is never released
        if any(float(x[0]) == 666.0 for x in xs):
            while True:
                _time.sleep(0.05)
        return [float(x[0]) * 10 for x in xs]

    return model


class Frontend(RpcFrontend):
    """The RPC server and dispatcher of a query frontend, and replica processes; ``sent``
    is (replica id, batch size) of each PREDICT."""

    def __init__(self, tmp_path: Path, secrets: ClusterSecrets, bundle: Path) -> None:
        # Objective 30 s (no query is benched as stuck before its batch times out); an
        # explicit batch timeout of 1 s.
        super().__init__(tmp_path, 30_000, (KEY,), secrets=secrets, timeout_s=1.0)
        self.bundle = bundle
        self.sent: list[tuple[str, int]] = []
        send = self.rpc.send

        def recording_send(identity: bytes, frames: list[protocol.Frame]) -> None:
            replica = self.dispatcher.by_identity.get(identity)
            msg = protocol.decode(frames)
            if isinstance(msg, Predict) and replica is not None:
                self.sent.append((replica.replica_id, msg.size))
            send(identity, frames)

        self.rpc.send = recording_send  # type: ignore[method-assign]

    async def replica(self, replica_id: str, **env: str) -> subprocess.Popen[bytes]:
        """Start a model container and wait until it is registered."""
        argv = container_argv(self.bundle, self.address, KEY, replica_id, self.secrets)
        proc, _ = await self.started(replica_id, argv, env)
        return proc

    def history(self, replica_id: str) -> dict[str, Any]:
        status = self.dispatcher.status()["m:1"]["replica_history"]
        return dict(status[replica_id])


def spawn_container(
    bundle: Path,
    frontend: str,
    replica_id: str,
    secrets: ClusterSecrets,
    log: Any,
    env: dict[str, str],
    cwd: Path,
) -> subprocess.Popen[bytes]:
    argv = container_argv(bundle, frontend, KEY, replica_id, secrets)
    return spawn_logged(argv, log, env, cwd)


async def exited(proc: subprocess.Popen[bytes], what: str) -> int:
    await eventually_async(lambda: proc.poll() is not None, what, WAIT_S)
    code = proc.returncode
    assert code is not None
    return code


@pytest.fixture
def secrets(tmp_path: Path) -> ClusterSecrets:
    return make_cluster_secrets(tmp_path / "cluster")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "bundle"
    write_closure_bundle(path, make_model(), InputType.DOUBLES, ["numpy"])
    return path


@pytest_asyncio.fixture
async def fe(tmp_path: Path, secrets: ClusterSecrets, bundle: Path) -> AsyncIterator[Frontend]:
    frontend = Frontend(tmp_path, secrets, bundle)
    frontend.start()
    try:
        yield frontend
    finally:
        await frontend.stop()


async def test_a_poison_input_restarts_the_replicas_it_hangs_then_is_quarantined(
    fe: Frontend,
) -> None:
    first = await fe.replica("a")
    second = await fe.replica("b")

    # The poison input hangs the replica it reaches: its client gets the default, in time.
    (poisoned,) = await outcomes(fe.submit([POISON], timeout_s=0.5))
    assert isinstance(poisoned, Expired)
    # Past the batch timeout its replica is told to restart, and its process exits.
    hung_id = fe.sent[-1][0]
    hung, other = (first, second) if hung_id == "a" else (second, first)
    assert await exited(hung, "the hung replica exits") == EXIT_RESTART_REQUESTED
    await eventually_async(lambda: fe.find(hung_id) is None, "the hung replica removed", WAIT_S)
    assert fe.history(hung_id)["timeouts"] == 1
    assert "told to restart" in fe.history(hung_id)["last_removal"]
    assert fe.dispatcher.events[KEY, "restart:timeout"] == 1

    # Later queries go to the other replica.
    other_id = "b" if hung_id == "a" else "a"
    assert await outcomes(fe.submit([1.0, 2.0], timeout_s=20)) == predictions([1.0, 2.0])
    assert fe.sent[-1][0] == other_id
    # Its manager starts the hung one afresh: the same id, another process.
    restarted = await fe.replica(hung_id)
    assert fe.history(hung_id)["restarts"] == 1

    # A suspect now, the poison input travels alone; it hangs a second replica...
    (again,) = await outcomes(fe.submit([POISON], timeout_s=0.5))
    assert isinstance(again, Expired)
    assert fe.sent[-1][1] == 1
    second_victim_id = fe.sent[-1][0]
    victim = restarted if second_victim_id == hung_id else other
    assert await exited(victim, "the second hung replica exits") == EXIT_RESTART_REQUESTED
    # ... and is quarantined: refused at once, without reaching a replica.
    sent_before = len(fe.sent)
    with pytest.raises(QuarantinedError, match=r"input quarantined.*model 'm' version '1'"):
        fe.submit([POISON], timeout_s=20)
    assert len(fe.sent) == sent_before
    quarantine = fe.dispatcher.quarantine_status()
    assert quarantine["count"] == 1
    (entry,) = quarantine["inputs"]
    assert (entry["model"], entry["version"]) == KEY and "timeout" in entry["reason"]
    assert entry["until"] > time.time()
    assert fe.dispatcher.events[KEY, "quarantine_refusal"] == 1

    # Other inputs are still served by the replica left.
    survivor_id = hung_id if second_victim_id != hung_id else other_id
    await eventually_async(lambda: fe.find(second_victim_id) is None, "victim gone", WAIT_S)
    assert await outcomes(fe.submit([3.0], timeout_s=20)) == predictions([3.0])
    assert fe.sent[-1][0] == survivor_id


async def test_a_replica_out_of_memory_exits_saying_why_and_its_queries_are_retried(
    fe: Frontend, tmp_path: Path
) -> None:
    oom = await fe.replica("oom", SCHOONER_TEST_OOM="1")
    await fe.replica("healthy")
    removed: list[Replica] = []
    fe.dispatcher.on_replica_removed = removed.append

    # The first batch goes to the replica registered first: it fails with MemoryError,
    # and its queries are answered by the healthy one.
    xs = [1.0, 2.0, 3.0]
    assert await outcomes(fe.submit(xs, timeout_s=20)) == predictions(xs)
    assert [r for r, _ in fe.sent[:2]] == ["oom", "healthy"]
    assert fe.dispatcher.events[KEY, "retry"] == 1
    assert await exited(oom, "the replica out of memory exits") == EXIT_MEMORY_LIMIT
    await eventually_async(lambda: bool(removed), "the replica removed", WAIT_S)
    assert removed[0].removed.startswith("said goodbye (memory limit"), removed[0].removed
    assert await outcomes(fe.submit([4.0], timeout_s=20)) == predictions([4.0])


async def test_a_replica_failing_in_a_row_while_a_sibling_succeeds_is_ejected(
    fe: Frontend,
) -> None:
    failing = ScriptedReplica(fe.address, fe.secrets, "failing")
    failing_task = asyncio.create_task(failing.serve())
    try:
        await eventually_async(lambda: fe.find("failing") is not None, "registered", WAIT_S)
        await fe.replica("healthy")
        everything: list[Query] = []
        sent: list[float] = []
        for i in range(12):  # one query at a time: the idle replica registered first gets it
            everything += fe.submit([float(i)], timeout_s=20)
            sent.append(float(i))
            await outcomes(everything[-1:])
        # Clients saw only predictions: each failure was retried on the sibling.
        assert await outcomes(everything) == predictions(sent)
        await eventually_async(lambda: bool(failing.restarts), "RESTART received", WAIT_S)
        assert failing.restarts[0].startswith("ejected: its last 5 batches failed")
        assert "replica healthy answered" in failing.restarts[0]
        assert failing.batches == 5  # out of rotation after the fifth
        assert fe.dispatcher.events[KEY, "restart:ejected"] == 1
        assert fe.history("failing")["ejections"] == 1
        status = fe.dispatcher.status()["m:1"]
        assert status["unavailable"]["failing"].startswith("ejected")
    finally:
        failing_task.cancel()
        await asyncio.gather(failing_task, return_exceptions=True)
        failing.close()


async def test_a_model_that_raises_everywhere_is_a_failure_naming_it_without_retries(
    fe: Frontend,
) -> None:
    await fe.replica("a", SCHOONER_TEST_RAISE="1")
    await fe.replica("b", SCHOONER_TEST_RAISE="1")
    for i in range(8):
        (outcome,) = await outcomes(fe.submit([float(i)], timeout_s=20))
        assert isinstance(outcome, Failure)
        assert outcome.message.startswith("model 'm' version '1' (replica ")
        assert outcome.message.endswith("raised ValueError")
    assert len(fe.sent) == 8  # each once: no retry
    assert fe.dispatcher.events[KEY, "retry"] == 0
    assert not any(kind.startswith("restart") for _, kind in fe.dispatcher.events)
    assert sorted(fe.dispatcher.status()["m:1"]["replicas"]) == ["a", "b"]
    assert fe.dispatcher.status()["m:1"]["unavailable"] == {}


def test_the_watchdog_ends_a_container_whose_model_holds_the_gil_past_its_timeout(
    tmp_path: Path, secrets: ClusterSecrets, bundle: Path
) -> None:
    frontend = FakeFrontend(secrets=secrets)
    log_path = tmp_path / "hog.log"
    try:
        with log_path.open("wb") as log:
            proc = spawn_container(
                bundle, frontend.address, "hog", secrets, log, {"SCHOONER_TEST_HOG": "1"}, tmp_path
            )
            try:
                identity, hello = frontend.register()
                assert CAP_RESTART in hello.caps
                frames = protocol.encode(
                    Predict(1, InputType.DOUBLES, *_one_double(), timeout_ms=200)
                )
                frontend.send_frames(identity, [bytes(f) for f in frames])
                eventually(lambda: proc.poll() is not None, "the watchdog ends it", WAIT_S)
                assert proc.returncode == 1
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=WAIT_S)
    finally:
        frontend.close()
    text = log_path.read_text(errors="replace")
    assert "Timeout (" in text and "in model" in text, text[-2000:]


def _one_double() -> tuple[bytes, bytes]:
    lengths, data = protocol.pack_arrays([np.array([1.0])], np.dtype("<f8"))
    return lengths, data.tobytes()


class ScriptedReplica:
    """A replica in the protocol's terms only (as one written in another language might
    be): it declares RESTART, answers every batch with a container-level ERROR
    (MemoryError) and does not exit; it records the RESTARTs it receives."""

    def __init__(self, address: str, secrets: ClusterSecrets, replica_id: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        ClientKeys.load(str(secrets.replica_dir)).apply(self.sock)
        self.sock.connect(address)
        self.hello = Hello(
            *KEY, InputType.DOUBLES, replica_id, pid=os.getpid(), caps=(CAP_RESTART,)
        )
        self.batches = 0
        self.restarts: list[str] = []

    async def serve(self) -> None:
        await self.sock.send_multipart(protocol.encode(self.hello))
        while True:
            if not await self.sock.poll(1000):
                # Never silent for long, however slowly the test's other replica starts.
                await self.sock.send_multipart(protocol.encode(Heartbeat()))
                continue
            msg = protocol.decode(await self.sock.recv_multipart())
            if isinstance(msg, Predict):
                self.batches += 1
                error = Error(
                    msg.batch_id, ErrorKind.MODEL_RAISED, "MemoryError: no", "MemoryError"
                )
                await self.sock.send_multipart(protocol.encode(error))
            elif isinstance(msg, Restart):
                self.restarts.append(msg.reason)  # and stays: the frontend keeps it benched

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


# ------------------------------------------------- the whole data plane, over HTTP


def test_over_http_a_poison_input_gets_defaults_then_422_and_the_cluster_is_unchanged(
    redis_url: str, tmp_path: Path, secrets: ClusterSecrets, bundle: Path
) -> None:
    """A real management frontend, query frontend and two replicas: the poison input's
    clients get the default while it hangs replicas, then 422 saying why; /status and
    /metrics show it; the cluster's apps, links and versions are as they were."""
    spawn = Spawner(tmp_path)
    try:
        mgmt, query, rpc = _start_frontends(redis_url, spawn, secrets)
        admin = httpx.Client(timeout=10, headers=secrets.admin_headers)
        http = httpx.Client(timeout=30)
        with admin, http:
            app = {"name": "poisoned", "input_type": "doubles", "default_output": -1,
                   "slo_micros": 100_000}  # fmt: skip
            assert admin.post(f"{mgmt}/admin/apps", json=app).status_code == 201
            # Its own batch timeout, rather than 10 x the SLO (1 s).
            version = {"name": "m", "version": "1", "input_type": "doubles",
                       "batch_timeout_micros": 800_000}  # fmt: skip
            assert admin.post(f"{mgmt}/admin/models", json=version).status_code == 201
            link = {"model_name": "m"}
            assert admin.post(f"{mgmt}/admin/apps/poisoned/links", json=link).status_code == 200
            replicas = [
                spawn(
                    f"replica-{i}",
                    "-m",
                    "model_container",
                    "--bundle",
                    str(bundle),
                    "--bundle-sha256",
                    bundle_digest(bundle),
                    "--frontend",
                    rpc,
                    "--name",
                    "m",
                    "--version",
                    "1",
                    "--replica-id",
                    f"m-{i}",
                    "--secrets-dir",
                    str(secrets.replica_dir),
                )
                for i in range(2)
            ]
            predict = f"{query}/poisoned/predict"

            def served() -> bool:
                reply = http.post(predict, json={"input": [1.0]}).json()
                return reply["default"] is False and reply["output"] == 10.0

            eventually(served, "a replica answers", STARTUP_S, (httpx.HTTPError,))
            before = _cluster_state(admin, mgmt)

            for hung in (1, 2):
                reply = http.post(predict, json={"input": [POISON]})
                assert reply.status_code == 200 and reply.json()["default"] is True
                eventually(
                    lambda n=hung: sum(p.poll() == EXIT_RESTART_REQUESTED for p in replicas) == n,
                    f"{hung} replica(s) exit for a restart",
                    WAIT_S,
                )
            refused = http.post(predict, json={"input": [POISON]})
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"] == "input_quarantined"
            message = refused.json()["message"]
            assert "input quarantined" in message and "model 'm' version '1'" in message
            assert "until " in message

            status = admin.get(f"{query}/status").json()
            assert status["models"]["m:1"]["batch_timeout_s"] == 0.8
            assert status["quarantine"]["count"] == 1
            assert status["quarantine"]["inputs"][0]["model"] == "m"
            assert status["models"]["m:1"]["replica_history"]["m-0"]["timeouts"] == 1
            metrics = admin.get(f"{query}/metrics").text
            assert 'schooner_quarantined_inputs{model="m",version="1"} 1.0' in metrics
            assert 'schooner_quarantine_refusals_total{model="m",version="1"} 1.0' in metrics
            assert (
                'schooner_replica_restarts_requested_total{model="m",reason="timeout",'
                'version="1"} 2.0' in metrics
            )
            assert _cluster_state(admin, mgmt) == before
    finally:
        spawn.stop()


def _start_frontends(
    redis_url: str, spawn: Spawner, secrets: ClusterSecrets
) -> tuple[str, str, str]:
    """A management and a query frontend: their URLs, and the query frontend's RPC."""
    mgmt_port, http_port, rpc_port = free_port(), free_port(), free_port()
    spawn("management", "-m", "management_frontend", "--redis-url", redis_url,
          "--host", "127.0.0.1", "--port", str(mgmt_port),
          "--secrets-dir", str(secrets.frontend_dir))  # fmt: skip
    spawn("query-frontend", "-m", "query_frontend", "--redis-url", redis_url,
          "--host", "127.0.0.1", "--port", str(http_port), "--rpc-host", "127.0.0.1",
          "--rpc-port", str(rpc_port), "--secrets-dir", str(secrets.frontend_dir))  # fmt: skip
    mgmt, query = f"http://127.0.0.1:{mgmt_port}", f"http://127.0.0.1:{http_port}"
    with httpx.Client(timeout=10) as http:
        for url in (mgmt, query):
            eventually(lambda u=url: http.get(f"{u}/healthz").status_code == 200,
                       f"{url} up", STARTUP_S, (httpx.HTTPError,))  # fmt: skip
    return mgmt, query, f"tcp://127.0.0.1:{rpc_port}"


def _cluster_state(admin: httpx.Client, mgmt: str) -> list[Any]:
    return [
        admin.get(f"{mgmt}/admin/apps").json(),
        admin.get(f"{mgmt}/admin/apps/poisoned/links").json(),
        admin.get(f"{mgmt}/admin/models").json(),
        admin.get(f"{mgmt}/admin/models/m/versions/1").json(),
    ]


# ------------------------------------------------------- the container, on a thread


@pytest.mark.parametrize("told", ["restart", "memory"])
def test_a_container_says_goodbye_why_then_exits_with_its_status(told: str) -> None:
    """RESTART from a frontend, or MemoryError from the model: GOODBYE saying why on the
    connection (after the ERROR of the batch), then the exit status its manager reads."""

    def model(xs: Any) -> Any:
        raise MemoryError("out")

    frontend = FakeFrontend()
    codes: list[int] = []
    config = doubles_config(
        frontend.address, frontend.secrets.replica_dir, model_name="m", replica_id="r"
    )
    container = ModelContainer(config, model, exit=codes.append)
    try:
        with serving_in_a_thread(container):
            identity, _ = frontend.register()
            if told == "restart":
                frontend.send(identity, Restart("batch timeout: testing"))
            else:
                lengths, data = _one_double()
                frontend.send(identity, Predict(4, InputType.DOUBLES, lengths, data))
                _, error = frontend.expect(Error)
                assert error.batch_id == 4 and error.exc_type == "MemoryError"
            _, goodbye = frontend.expect(Goodbye)
            eventually(lambda: bool(codes), "the container exits", WAIT_S)
    finally:
        frontend.close()
    if told == "restart":
        assert goodbye.reason == f"restart requested by {frontend.address}: batch timeout: testing"
        assert codes == [EXIT_RESTART_REQUESTED]
    else:
        assert goodbye.reason.startswith("memory limit: the model raised MemoryError")
        assert codes == [EXIT_MEMORY_LIMIT]
