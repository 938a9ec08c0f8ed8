"""Rows 6, 8, 9 and 12 of issue 12's attacker table, against real processes.

A real ``python -m management_frontend`` registers apps and models in the session's
Redis, a real ``python -m query_frontend`` serves them, and real ``python -m
model_container`` replicas answer. Every client here is hostile or careless: bodies
nested past the limit, numbers past their type, a model whose exception names a secret
file, and connections that never finish their headers or bodies. Waits poll with a
deadline; nothing asserts how long anything took.
"""

from __future__ import annotations

import selectors
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from credentials import ClusterSecrets, make_cluster_secrets
from polling import eventually
from ports import free_port
from spawning import Spawner

from management_frontend.state.rules import MAX_JSON_DEPTH
from model_container import write_closure_bundle
from model_container.bundle import bundle_digest
from model_container.protocol import InputType

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

STARTUP_S = 60.0
CLOSE_S = 60.0  # generous: the servers are told to close after 1 s and 2 s
STARTING = (httpx.HTTPError,)  # a process still starting refuses connections
SECRET = "/srv/secret/db-password.txt"

Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def secrets(tmp_path: Path) -> ClusterSecrets:
    return make_cluster_secrets(tmp_path)


@pytest.fixture
def spawn(logs: Path) -> Iterator[Spawn]:
    spawner = Spawner(logs)
    yield spawner
    spawner.stop()


# Short deadlines, so that the test sees the servers close connections soon.
DEADLINES = ("--header-timeout", "1", "--body-timeout", "2")


def start_management(redis_url: str, spawn: Spawn, secrets: ClusterSecrets) -> str:
    port = free_port()
    spawn("management", "-m", "management_frontend", "--redis-url", redis_url,
          "--host", "127.0.0.1", "--port", str(port), *DEADLINES,
          "--secrets-dir", str(secrets.frontend_dir))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=10) as http:
        eventually(lambda: http.get(f"{url}/healthz").status_code == 200, "management up",
                   STARTUP_S, STARTING)  # fmt: skip
    return url


def start_query(redis_url: str, spawn: Spawn, secrets: ClusterSecrets) -> tuple[str, str]:
    """A query frontend: its HTTP URL and RPC address."""
    http_port, rpc_port = free_port(), free_port()
    spawn("query-frontend", "-m", "query_frontend", "--redis-url", redis_url,
          "--host", "127.0.0.1", "--port", str(http_port), "--rpc-host", "127.0.0.1",
          "--rpc-port", str(rpc_port), *DEADLINES,
          "--secrets-dir", str(secrets.frontend_dir))  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    with httpx.Client(timeout=10) as http:
        eventually(lambda: http.get(f"{url}/healthz").status_code == 200, "query frontend up",
                   STARTUP_S, STARTING)  # fmt: skip
    return url, f"tcp://127.0.0.1:{rpc_port}"


# ------------------------------------------------------------------ row 8: slowloris


def open_slow(port: int, sent: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(sent)
    sock.setblocking(False)
    return sock


def wait_until_closed(socks: list[socket.socket], what: str) -> None:
    """Read each socket until the server closes it (EOF or reset); fail the test if one
    is still open after CLOSE_S."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    open_socks = set(socks)

    def all_closed() -> bool:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            if not data:
                selector.unregister(sock)
                open_socks.discard(sock)
        return not open_socks

    try:
        eventually(all_closed, lambda: f"{len(open_socks)} of {len(socks)} {what} closed",
                   CLOSE_S)  # fmt: skip
    finally:
        selector.close()
        for sock in socks:
            sock.close()


HEADERS = b"POST /app/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def half_a_body(path: str) -> bytes:
    return b'POST %b HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"inp' % path.encode()


@pytest.mark.parametrize("server", ["query", "management"])
def test_connections_that_never_finish_their_request_are_closed(
    redis_url: str, spawn: Spawn, secrets: ClusterSecrets, server: str
) -> None:
    """Row 8: 500 connections that never finished their headers were all held open."""
    if server == "query":
        url, _ = start_query(redis_url, spawn, secrets)
        path = "/app/predict"
    else:
        url = start_management(redis_url, spawn, secrets)
        path = "/admin/apps"
    port = int(url.rsplit(":", 1)[1])
    # Connections that send nothing, part of their headers, or part of their body.
    slow = [open_slow(port, b"") for _ in range(100)]
    slow += [open_slow(port, HEADERS) for _ in range(300)]
    slow += [open_slow(port, half_a_body(path)) for _ in range(100)]
    with httpx.Client(timeout=10) as http:
        # They take nothing from a client that sends its request whole ...
        assert http.get(f"{url}/healthz").status_code == 200
        wait_until_closed(slow, "slow connections")
        # ... and a keep-alive connection that starts its next request and stops is closed.
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /heal")
        sock.setblocking(False)
        wait_until_closed([sock], "keep-alive connection with half a request")
        assert http.get(f"{url}/healthz").status_code == 200


# ------------------------------------------------- rows 6, 9, 12: bodies and models


def models() -> dict[str, Callable[[Any], Any]]:
    """The models, made here so that cloudpickle ships them by value."""

    def echo(xs: Any) -> Any:
        return list(xs)

    def float_sum(xs: Any) -> Any:
        return [float(sum(x)) for x in xs]

    def leaky(xs: Any) -> Any:
        with open("/srv/secret/db-password.txt") as secret:  # no such file: it raises
            return [secret.read()] * len(xs)

    return {"echo-model": echo, "sum-model": float_sum, "leaky-model": leaky}


@pytest.fixture
def cluster(redis_url: str, spawn: Spawn, logs: Path, secrets: ClusterSecrets) -> str:
    """A query frontend serving apps "echo" (json), "sums" (floats), "leaky" and
    "leaky-dev" (doubles; the model raises, and "leaky-dev" exposes model errors)."""
    mgmt = start_management(redis_url, spawn, secrets)
    query, rpc = start_query(redis_url, spawn, secrets)
    apps = [
        ("echo", "json", "echo-model", {}),
        ("sums", "floats", "sum-model", {}),
        ("leaky", "doubles", "leaky-model", {}),
        ("leaky-dev", "doubles", "leaky-model", {"expose_model_errors": True}),
    ]
    with httpx.Client(timeout=10, headers=secrets.admin_headers) as http:
        started: set[str] = set()
        for app, input_type, model, extra in apps:
            body = {"name": app, "input_type": input_type, "default_output": "late",
                    "slo_micros": 10_000_000, **extra}  # fmt: skip
            assert http.post(f"{mgmt}/admin/apps", json=body).status_code == 201
            if model not in started:
                started.add(model)
                version = {"name": model, "version": "1", "input_type": input_type}
                assert http.post(f"{mgmt}/admin/models", json=version).status_code == 201
                bundle = logs / f"{model}-bundle"
                write_closure_bundle(bundle, models()[model], InputType(input_type), ["numpy"])
                spawn(model, "-m", "model_container", "--bundle", str(bundle),
                      "--bundle-sha256", bundle_digest(bundle), "--frontend", rpc,
                      "--name", model, "--version", "1", "--replica-id", f"{model}-0",
                      "--secrets-dir", str(secrets.replica_dir))  # fmt: skip
            link = http.post(f"{mgmt}/admin/apps/{app}/links", json={"model_name": model})
            assert link.status_code == 200, link.text
        for app, value in [("echo", 1), ("sums", [1.0]), ("leaky", [1.0]), ("leaky-dev", [1.0])]:

            def answered(app: str = app, value: Any = value) -> bool:
                reply = http.post(f"{query}/{app}/predict", json={"input": value})
                return reply.status_code != 200 or reply.json()["default"] is False

            eventually(answered, f"a replica answers {app}", STARTUP_S, STARTING)
    return query


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def post(url: str, body: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=30) as http:
        return http.post(url, content=body, headers=headers)


def test_bad_bodies_are_400s_saying_what_to_fix_and_models_keep_their_secrets(
    cluster: str, logs: Path
) -> None:
    # Row 6: a JSON input 255 to 1023 deep was a plain-text 500 (orjson encodes 254).
    for depth in (MAX_JSON_DEPTH, 255, 1023, 1024, 1025):
        for path, body in [
            ("echo/predict", b'{"input": %b}' % nested(depth)),
            ("echo/predict", b'{"input_batch": [1, %b]}' % nested(depth)),
            ("echo/update", b'{"input": 1, "label": %b}' % nested(depth)),
            ("echo/update", b'{"input": %b, "label": 1}' % nested(depth)),
        ]:
            reply = post(f"{cluster}/{path}", body)
            assert reply.status_code == 400, (path, depth, reply.text[:200])
            assert reply.json()["error"] == "invalid_input"
            assert f"nested deeper than {MAX_JSON_DEPTH} levels" in reply.json()["message"]
    deepest = MAX_JSON_DEPTH - 1  # the body's object is one level more
    within = post(f"{cluster}/echo/predict", b'{"input": %b}' % nested(deepest))
    assert within.status_code == 200 and within.json()["output"] == orjson_nested(deepest)

    # A body that stops half-way: the connection is closed, and the app answers the next.
    port = int(cluster.rsplit(":", 1)[1])
    wait_until_closed([open_slow(port, half_a_body("/echo/predict"))], "half a predict body")
    assert post(f"{cluster}/echo/predict", b'{"input": 7}').json()["output"] == 7

    # Row 12: 1e308 became inf in float32 and was answered with a 200.
    reply = post(f"{cluster}/sums/predict", b'{"input": [1e308, 1]}')
    assert reply.status_code == 400
    message = reply.json()["message"]
    assert "input[0] is 1e+308" in message and "3.4028235e+38" in message
    assert post(f"{cluster}/sums/predict", b'{"input": [3e38, 1]}').status_code == 200

    # Row 9: the model's exception named a secret file, and the client saw it.
    for path in ("leaky/predict", "leaky/update"):
        body = b'{"input": [1.0], "label": 1}' if "update" in path else b'{"input": [1.0]}'
        reply = post(f"{cluster}/{path}", body)
        assert reply.status_code == 500 and reply.json()["error"] == "model_error"
        message = reply.json()["message"]
        assert "leaky-model" in message and "raised FileNotFoundError" in message
        assert "secret" not in message and "No such file" not in message
    # ... the replica's log has it, with the traceback ...
    replica_log = (logs / "leaky-model.log").read_text(errors="replace")
    assert SECRET in replica_log and "Traceback" in replica_log
    # ... and an app that exposes model errors shows it to its clients.
    reply = post(f"{cluster}/leaky-dev/predict", b'{"input": [1.0]}')
    assert reply.status_code == 500
    assert (
        f"raised FileNotFoundError: [Errno 2] No such file or directory: '{SECRET}'"
        in (reply.json()["message"])
    )


def orjson_nested(depth: int) -> Any:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value
