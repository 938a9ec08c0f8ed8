"""Row 2 of issue 12: a process without the cluster's keys can neither register as a
replica nor read queries.

Real Redis, a real management frontend and query frontend (``python -m``), a real
replica with the cluster's keys, and two impostors on raw pyzmq DEALERs dialling the RPC
port with a well-formed HELLO for the linked model: one with no keys at all, one with a
CURVE key pair of its own (and the server's public key, as an attacker who read it
would have). Neither completes the handshake, neither is listed by the frontend, and
while the real replica answers, no query reaches them. Waits poll with a deadline.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zmq
from credentials import ClusterSecrets, make_cluster_secrets
from polling import eventually
from ports import free_port
from spawning import Spawner
from zmq.utils.monitor import recv_monitor_message

from model_container import protocol, runtime_versions, write_closure_bundle
from model_container.bundle import bundle_digest
from model_container.protocol import Hello, InputType

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

STARTUP_S = 60.0
STARTING = (httpx.HTTPError,)
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


def make_model() -> Callable[[Any], Any]:
    def model(xs: Any) -> Any:
        return [float(sum(x)) for x in xs]

    return model


Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterSecrets:
    return make_cluster_secrets(tmp_path / "cluster")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    spawner = Spawner(tmp_path)
    yield spawner
    spawner.stop()


class Impostor:
    """A raw DEALER that dials the RPC port and queues a well-formed HELLO."""

    def __init__(self, ctx: zmq.Context[Any], address: str, keys: tuple[bytes, bytes] | None,
                 server_public: bytes) -> None:  # fmt: skip
        self.socket = ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if keys is not None:
            self.socket.setsockopt(zmq.CURVE_SERVERKEY, server_public)
            self.socket.setsockopt(zmq.CURVE_PUBLICKEY, keys[0])
            self.socket.setsockopt(zmq.CURVE_SECRETKEY, keys[1])
        self.monitor = self.socket.get_monitor_socket(
            HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED
        )
        self.socket.connect(address)
        hello = Hello("summer", "1", InputType.DOUBLES, "impostor-0", runtime_versions(), 1, 0)
        self.socket.send_multipart(protocol.encode(hello), copy=False)
        self.refusals = 0
        self.handshakes = 0

    def poll_events(self) -> None:
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)
            if event["event"] & HANDSHAKE_FAILED:
                self.refusals += 1
            elif event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshakes += 1

    def received(self) -> bool:
        return bool(self.socket.poll(0))

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=0)


def test_a_process_without_the_cluster_keys_neither_registers_nor_reads_queries(
    redis_url: str, spawn: Spawn, cluster: ClusterSecrets, tmp_path: Path
) -> None:
    secrets = {"SCHOONER_SECRETS_DIR": str(cluster.frontend_dir)}
    mgmt_port, http_port, rpc_port = free_port(), free_port(), free_port()
    spawn("management", "-m", "management_frontend", "--redis-url", redis_url,
          "--host", "127.0.0.1", "--port", str(mgmt_port), env=secrets)  # fmt: skip
    spawn("query-frontend", "-m", "query_frontend", "--redis-url", redis_url,
          "--host", "127.0.0.1", "--port", str(http_port), "--rpc-host", "127.0.0.1",
          "--rpc-port", str(rpc_port), env=secrets)  # fmt: skip
    mgmt, query = f"http://127.0.0.1:{mgmt_port}", f"http://127.0.0.1:{http_port}"
    rpc = f"tcp://127.0.0.1:{rpc_port}"
    admin = cluster.admin_headers

    ctx: zmq.Context[Any] = zmq.Context()
    impostors: list[Impostor] = []
    with httpx.Client(timeout=10, headers=admin) as http:
        eventually(lambda: http.get(f"{mgmt}/healthz").status_code == 200, "management up",
                   STARTUP_S, STARTING)  # fmt: skip
        app = {"name": "adder", "input_type": "doubles", "default_output": "none",
               "slo_micros": 5_000_000}  # fmt: skip
        assert http.post(f"{mgmt}/admin/apps", json=app).status_code == 201
        model = {"name": "summer", "version": "1", "input_type": "doubles"}
        assert http.post(f"{mgmt}/admin/models", json=model).status_code == 201
        link = http.post(f"{mgmt}/admin/apps/adder/links", json={"model_name": "summer"})
        assert link.status_code == 200, link.text
        eventually(lambda: http.get(f"{query}/healthz").status_code == 200, "query frontend up",
                   STARTUP_S, STARTING)  # fmt: skip

        def replicas() -> list[str]:
            status = http.get(f"{query}/status").json()
            listed = status["models"].get("summer:1", {}).get("replicas", [])
            return sorted(listed)

        try:
            server_public = cluster.creds.rpc_server_public.encode()
            impostors = [
                Impostor(ctx, rpc, None, server_public),
                Impostor(ctx, rpc, zmq.curve_keypair(), server_public),
            ]

            def all_refused() -> bool:
                for impostor in impostors:
                    impostor.poll_events()
                return all(i.refusals > 0 for i in impostors)

            eventually(all_refused, "both impostors' handshakes refused", STARTUP_S)
            assert [i.handshakes for i in impostors] == [0, 0]
            assert replicas() == []
            assert http.get(f"{mgmt}/admin/replicas").json() == []

            bundle = tmp_path / "bundle"
            write_closure_bundle(bundle, make_model(), InputType.DOUBLES, ["numpy"])
            spawn("replica", "-m", "model_container", "--bundle", str(bundle),
                  "--bundle-sha256", bundle_digest(bundle),
                  "--frontend", rpc, "--name", "summer", "--version", "1",
                  "--replica-id", "summer-0",
                  env={"SCHOONER_SECRETS_DIR": str(cluster.replica_dir)})  # fmt: skip
            eventually(lambda: replicas() == ["summer-0"], "the real replica registered",
                       STARTUP_S, STARTING)  # fmt: skip

            for i in range(60):  # distinct inputs: no cache hits
                reply = http.post(f"{query}/adder/predict", json={"input": [float(i), 0.5]})
                assert reply.status_code == 200, reply.text
                assert (reply.json()["output"], reply.json()["default"]) == (i + 0.5, False)
            for impostor in impostors:
                impostor.poll_events()
                assert impostor.handshakes == 0
                assert not impostor.received(), "a query reached a process without the keys"
            assert replicas() == ["summer-0"]
            listed = http.get(f"{mgmt}/admin/replicas").json()
            assert [r["replica_id"] for r in listed] == ["summer-0"]
        finally:
            for impostor in impostors:
                impostor.close()
            ctx.term()


def test_a_query_frontend_without_keys_refuses_to_start(
    redis_url: str, spawn: Spawn, tmp_path: Path
) -> None:
    proc = spawn("query-frontend", "-m", "query_frontend", "--redis-url", redis_url,
                 "--port", str(free_port()), "--rpc-port", str(free_port()))  # fmt: skip
    assert proc.wait(timeout=STARTUP_S) == 2
    log = (tmp_path / "query-frontend.log").read_text(errors="replace")
    assert "no secrets directory was given: pass --secrets-dir" in log
    assert "Traceback" not in log
