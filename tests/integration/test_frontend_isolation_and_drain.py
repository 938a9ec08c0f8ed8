"""Issue 13, points 7, 8 and the query frontend's side of 2, against real processes.

A real ``python -m management_frontend`` registers apps and models in the session's
Redis, real ``python -m query_frontend`` processes serve them, and real ``python -m
model_container`` replicas answer. Large bodies are held to a budget of bytes in flight
(503 with Retry-After beyond it, every byte given back after), two frontends share one
port with SO_REUSEPORT and the port outlives a kill -9 of one, and a frontend told to stop
(SIGTERM) answers every query it had accepted, refuses new connections, and exits 0.
Waits poll with a deadline; nothing asserts how long anything took.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from credentials import ClusterSecrets, make_cluster_secrets
from polling import eventually
from ports import free_port
from spawning import Spawner

from model_container import write_closure_bundle
from model_container.bundle import bundle_digest
from model_container.protocol import InputType

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STARTUP_S = 60.0
STARTING = (httpx.HTTPError,)  # a process still starting refuses connections
MiB = 1024 * 1024

Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def secrets(tmp_path: Path) -> ClusterSecrets:
    return make_cluster_secrets(tmp_path)


@pytest.fixture
def spawner(tmp_path: Path) -> Iterator[Spawner]:
    spawner = Spawner(tmp_path)
    yield spawner
    spawner.stop()


def start_management(redis_url: str, spawn: Spawn, secrets: ClusterSecrets) -> str:
    port = free_port()
    spawn("management", "-m", "management_frontend", "--redis-url", redis_url,
          "--host", "127.0.0.1", "--port", str(port),
          "--secrets-dir", str(secrets.frontend_dir))  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(timeout=10) as http:
        eventually(lambda: http.get(f"{url}/healthz").status_code == 200, "management up",
                   STARTUP_S, STARTING)  # fmt: skip
    return url


def start_query(
    redis_url: str,
    spawn: Spawn,
    secrets: ClusterSecrets,
    *extra: str,
    name: str = "query-frontend",
    port: int | None = None,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """A query frontend: its process, HTTP URL and RPC address (once /healthz says ok,
    from it or, sharing a port, from another)."""
    http_port, rpc_port = port or free_port(), free_port()
    proc = spawn(name, "-m", "query_frontend", "--redis-url", redis_url,
                 "--host", "127.0.0.1", "--port", str(http_port), "--rpc-host", "127.0.0.1",
                 "--rpc-port", str(rpc_port), "--frontend-id", name,
                 "--secrets-dir", str(secrets.frontend_dir), *extra)  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    with httpx.Client(timeout=10) as http:
        eventually(lambda: http.get(f"{url}/healthz").status_code == 200, f"{name} up",
                   STARTUP_S, STARTING)  # fmt: skip
    return proc, url, f"tcp://127.0.0.1:{rpc_port}"


def models() -> dict[str, Callable[[Any], Any]]:
    """The models, made here so that cloudpickle ships them by value."""

    def count(xs: Any) -> Any:
        return [len(x) for x in xs]

    def slow_count(xs: Any) -> Any:  # long enough that queries are still held when we look
        import time

        time.sleep(1.5)
        return [len(x) for x in xs]

    def slow_sum(xs: Any) -> Any:
        import time

        time.sleep(1.0)
        return [float(sum(x)) for x in xs]

    return {"count": count, "slow-count": slow_count, "slow-sum": slow_sum}


def deploy(
    http: httpx.Client,
    mgmt: str,
    spawn: Spawn,
    secrets: ClusterSecrets,
    logs: Path,
    model: str,
    rpcs: list[str],
    batch_size: int = -1,
) -> None:
    version = {"name": model, "version": "1", "input_type": "doubles", "batch_size": batch_size}
    reply = http.post(f"{mgmt}/admin/models", json=version)
    assert reply.status_code == 201, reply.text
    bundle = logs / f"{model}-bundle"
    write_closure_bundle(bundle, models()[model], InputType.DOUBLES, ["numpy"])
    spawn(model, "-m", "model_container", "--bundle", str(bundle),
          "--bundle-sha256", bundle_digest(bundle), "--frontend", ",".join(rpcs),
          "--name", model, "--version", "1", "--replica-id", f"{model}-0",
          "--secrets-dir", str(secrets.replica_dir))  # fmt: skip


def register(http: httpx.Client, mgmt: str, app: str, model: str, slo_micros: int) -> None:
    body = {"name": app, "input_type": "doubles", "default_output": "late",
            "slo_micros": slo_micros}  # fmt: skip
    assert http.post(f"{mgmt}/admin/apps", json=body).status_code == 201
    link = http.post(f"{mgmt}/admin/apps/{app}/links", json={"model_name": model})
    assert link.status_code == 200, link.text


def wait_answered(http: httpx.Client, url: str, app: str) -> None:
    def answered() -> bool:
        reply = http.post(f"{url}/{app}/predict", json={"input": [1.0]})
        return reply.status_code == 200 and reply.json()["default"] is False

    eventually(answered, f"a replica answers {app} at {url}", STARTUP_S, STARTING)


def big_body(values: int) -> bytes:
    return orjson.dumps({"input": [0.123456789012345] * values})


# ------------------------------------------------------------------- bytes in flight


def test_large_bodies_beyond_the_budget_get_503_and_other_apps_are_still_answered(
    redis_url: str, spawner: Spawner, secrets: ClusterSecrets, tmp_path: Path
) -> None:
    """16 concurrent 10 MiB bodies to one app took ~535 MiB; now a 32 MiB budget (16 MiB
    for one app) refuses those that do not fit, before reading them, and gives every byte
    back however the request ended."""
    mgmt = start_management(redis_url, spawner, secrets)
    proc, url, rpc = start_query(
        redis_url, spawner, secrets, "--max-body-bytes-in-flight", str(32 * MiB)
    )
    with httpx.Client(timeout=60, headers=secrets.admin_headers) as http:
        deploy(http, mgmt, spawner, secrets, tmp_path, "slow-count", [rpc])
        deploy(http, mgmt, spawner, secrets, tmp_path, "count", [rpc])
        register(http, mgmt, "big", "slow-count", 120_000_000)
        register(http, mgmt, "small", "count", 60_000_000)
        wait_answered(http, url, "big")
        wait_answered(http, url, "small")
        status = http.get(f"{url}/status").json()["bodies"]
        assert status == {"held_bytes": 0, "limit_bytes": 32 * MiB, "app_limit_bytes": 16 * MiB}

        values = 580_000  # ~10 MiB of JSON, under the 10 MiB limit
        body = big_body(values)
        assert 9 * MiB < len(body) <= 10 * MiB
        replies: list[httpx.Response] = []
        small_replies: list[httpx.Response] = []
        lock = threading.Lock()
        go = threading.Barrier(17)

        def send_big() -> None:
            with httpx.Client(timeout=120) as client:
                go.wait()
                reply = client.post(f"{url}/big/predict", content=body,
                                    headers={"content-type": "application/json"})  # fmt: skip
            with lock:
                replies.append(reply)

        def send_small() -> None:
            with httpx.Client(timeout=60) as client:
                go.wait()
                for i in range(20):
                    small_replies.append(
                        client.post(f"{url}/small/predict", json={"input": [1.0] * (i + 1)})
                    )

        threads = [threading.Thread(target=send_big) for _ in range(16)]
        threads.append(threading.Thread(target=send_small))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert len(replies) == 16

        # Each big body was either answered correctly or refused at once, saying why.
        answered = [r for r in replies if r.status_code == 200]
        refused = [r for r in replies if r.status_code == 503]
        assert len(answered) + len(refused) == 16, [r.text[:200] for r in replies]
        assert answered and refused
        for reply in answered:
            assert reply.json()["output"] == values and reply.json()["default"] is False
        for reply in refused:
            assert reply.headers["retry-after"] == "1"
            assert reply.json()["error"] == "overloaded"
            assert "retry shortly" in reply.json()["message"]
            assert "app 'big'" in reply.json()["message"]
        # ... and the other app was answered meanwhile, every time.
        assert [(r.status_code, r.json()["output"]) for r in small_replies] == [
            (200, i + 1) for i in range(20)
        ]

        # A client that leaves half-way through its body gives its bytes back too.
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /big/predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body))  # fmt: skip
            sock.sendall(body[: 4 * MiB])

            def holding() -> bool:
                return bool(http.get(f"{url}/status").json()["bodies"]["held_bytes"] > 0)

            eventually(holding, "the half-sent body holds its bytes", 30)
        eventually(
            lambda: http.get(f"{url}/status").json()["bodies"]["held_bytes"] == 0,
            "every byte given back",
            60,
        )
        # A body in chunks, without a Content-Length, counts as it arrives.
        chunked = http.post(
            f"{url}/big/predict",
            content=iter([body[:MiB], body[MiB:]]),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 200 and chunked.json()["output"] == values
        assert http.get(f"{url}/status").json()["bodies"]["held_bytes"] == 0
    assert proc.poll() is None


# ----------------------------------------------------------------------- SO_REUSEPORT


def frontend_ids_seen(url: str, headers: dict[str, str], tries: int) -> set[str]:
    """The frontends answering /status on ``tries`` fresh connections to ``url``."""
    seen = set()
    for _ in range(tries):
        with httpx.Client(timeout=10, headers=headers) as fresh:
            seen.add(fresh.get(f"{url}/status").json()["frontend"])
    return seen


def test_two_frontends_share_a_port_and_it_outlives_one_of_them(
    redis_url: str, spawner: Spawner, secrets: ClusterSecrets, tmp_path: Path
) -> None:
    mgmt = start_management(redis_url, spawner, secrets)
    port = free_port()
    first, url, rpc0 = start_query(redis_url, spawner, secrets, "--reuse-port",
                                   name="qf-0", port=port)  # fmt: skip
    _, same_url, rpc1 = start_query(redis_url, spawner, secrets, "--reuse-port",
                                    name="qf-1", port=port)  # fmt: skip
    assert same_url == url
    with httpx.Client(timeout=30, headers=secrets.admin_headers) as http:
        deploy(http, mgmt, spawner, secrets, tmp_path, "count", [rpc0, rpc1])
        register(http, mgmt, "lengths", "count", 10_000_000)
        # Both listen on the one port: fresh connections reach each of them.
        seen: set[str] = set()

        def both_seen() -> bool:
            seen.update(frontend_ids_seen(url, secrets.admin_headers, 10))
            return seen == {"qf-0", "qf-1"}

        eventually(both_seen, lambda: f"both frontends answer on port {port}: {seen}", 120)

        def both_answer() -> bool:
            for _ in range(10):
                with httpx.Client(timeout=30) as fresh:
                    reply = fresh.post(f"{url}/lengths/predict", json={"input": [1.0, 2.0]})
                    if reply.status_code != 200 or reply.json()["output"] != 2:
                        return False
            return True

        eventually(both_answer, "the replica answers through both frontends", STARTUP_S)

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        # New connections now reach the survivor only, and it answers them all.
        assert frontend_ids_seen(url, secrets.admin_headers, 10) == {"qf-1"}
        for i in range(20):
            with httpx.Client(timeout=30) as fresh:
                reply = fresh.post(f"{url}/lengths/predict", json={"input": [1.0] * (i + 1)})
            assert (reply.status_code, reply.json()["output"]) == (200, i + 1)


def test_stopping_one_of_two_frontends_under_load_loses_no_request(
    redis_url: str, spawner: Spawner, secrets: ClusterSecrets, tmp_path: Path
) -> None:
    """A rolling restart's step: SIGTERM one of two frontends sharing a port while eight
    keep-alive clients query it back to back. Every request gets its answer: those on
    the stopped frontend's connections before it closes them, the rest from the other."""
    mgmt = start_management(redis_url, spawner, secrets)
    port = free_port()
    first, url, rpc0 = start_query(redis_url, spawner, secrets, "--reuse-port",
                                   name="qf-0", port=port)  # fmt: skip
    _, _, rpc1 = start_query(redis_url, spawner, secrets, "--reuse-port",
                             name="qf-1", port=port)  # fmt: skip
    with httpx.Client(timeout=30, headers=secrets.admin_headers) as http:
        deploy(http, mgmt, spawner, secrets, tmp_path, "count", [rpc0, rpc1])
        register(http, mgmt, "lengths", "count", 10_000_000)
        ready: set[str] = set()

        def replica_on_both() -> bool:
            for _ in range(10):
                with httpx.Client(timeout=10, headers=secrets.admin_headers) as fresh:
                    status = fresh.get(f"{url}/status").json()
                if status["models"].get("count:1", {}).get("replicas"):
                    ready.add(status["frontend"])
            return ready == {"qf-0", "qf-1"}

        eventually(replica_on_both, lambda: f"the replica connected to both: {ready}", 120)
        apps_before = http.get(f"{mgmt}/admin/apps").json()

    outcomes: list[Counter[str]] = [Counter() for _ in range(8)]
    stop = threading.Event()

    def client(seen: Counter[str]) -> None:
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                try:
                    reply = c.post(f"{url}/lengths/predict", json={"input": [1.0, 2.0]})
                except httpx.HTTPError as exc:
                    seen[type(exc).__name__] += 1
                    continue
                ok = reply.status_code == 200 and reply.json()["output"] == 2
                seen["answered" if ok else f"{reply.status_code} {reply.text[:100]}"] += 1

    threads = [threading.Thread(target=client, args=(seen,)) for seen in outcomes]
    for t in threads:
        t.start()
    try:
        eventually(lambda: all(seen["answered"] >= 50 for seen in outcomes), "load running", 120)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0
        after = [seen["answered"] for seen in outcomes]
        eventually(
            lambda: all(
                seen["answered"] >= n + 50 for seen, n in zip(outcomes, after, strict=True)
            ),
            "every client answered by the frontend left",
            120,
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    total: Counter[str] = Counter()
    for seen in outcomes:
        total.update(seen)
    assert set(total) == {"answered"}, dict(total)
    with httpx.Client(timeout=30, headers=secrets.admin_headers) as http:
        assert http.get(f"{mgmt}/admin/apps").json() == apps_before


def test_a_frontend_without_reuse_port_cannot_take_a_shared_port(
    redis_url: str, spawner: Spawner, secrets: ClusterSecrets
) -> None:
    """Sharing is asked for, never stumbled into: a frontend started without the flag
    on a port others share fails to start and says why."""
    port = free_port()
    start_query(redis_url, spawner, secrets, "--reuse-port", name="qf-0", port=port)
    proc = spawner("qf-plain", "-m", "query_frontend", "--redis-url", redis_url,
                   "--host", "127.0.0.1", "--port", str(port), "--rpc-port", str(free_port()),
                   "--secrets-dir", str(secrets.frontend_dir))  # fmt: skip
    assert proc.wait(timeout=120) != 0
    log = (spawner.logs / "qf-plain.log").read_text(errors="replace")
    assert "address already in use" in log.lower()


# ---------------------------------------------------------------------- graceful drain


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response with a Content-Length, read whole from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    while len(body) < length:
        body += sock.recv(65536)
    return data


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_sigterm_answers_every_accepted_query_then_exits_0(
    redis_url: str, spawner: Spawner, secrets: ClusterSecrets, tmp_path: Path
) -> None:
    mgmt = start_management(redis_url, spawner, secrets)
    proc, url, rpc = start_query(redis_url, spawner, secrets, "--drain-timeout", "120")
    port = int(url.rsplit(":", 1)[1])
    queries = 4
    with httpx.Client(timeout=60, headers=secrets.admin_headers) as http:
        # One query per batch, a second each: the queries wait in batching for seconds.
        deploy(http, mgmt, spawner, secrets, tmp_path, "slow-sum", [rpc], batch_size=1)
        register(http, mgmt, "adder", "slow-sum", 120_000_000)
        wait_answered(http, url, "adder")

        replies: dict[int, httpx.Response | Exception] = {}

        def ask(i: int) -> None:
            try:
                with httpx.Client(timeout=120) as client:
                    replies[i] = client.post(f"{url}/adder/predict", json={"input": [i, 100.0]})
            except httpx.HTTPError as exc:
                replies[i] = exc

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(queries)]
        for t in threads:
            t.start()

        def all_accepted() -> bool:
            model = http.get(f"{url}/status").json()["models"]["slow-sum:1"]
            return bool(model["queued"] + model["inflight_batches"] == queries)

        eventually(all_accepted, "every query accepted and waiting", 60)
        # A keep-alive connection, idle when the drain begins.
        idle = socket.create_connection(("127.0.0.1", port), timeout=30)
        idle.sendall(HEALTHZ)
        assert read_response(idle).startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGTERM)

        # New connections are refused from now on ...
        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            except ConnectionRefusedError:
                return True
            return False

        eventually(refused, "new connections refused", 60)
        # ... while a request on a connection already open is still answered, told that
        # the frontend drains, and the connection then closed.
        idle.sendall(HEALTHZ)
        with idle:
            answer = read_until_closed(idle)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"connection: close" in answer.lower() and b'"error":"draining"' in answer
        for t in threads:
            t.join(timeout=180)
    # ... every accepted query got its real answer, not an error nor the default ...
    for i in range(queries):
        reply = replies[i]
        assert isinstance(reply, httpx.Response), f"query {i}: {reply!r}"
        assert reply.status_code == 200, reply.text
        assert (reply.json()["output"], reply.json()["default"]) == (i + 100.0, False)
        assert reply.headers.get("connection") == "close"
    # ... and the frontend exits cleanly.
    assert proc.wait(timeout=120) == 0
    log = (tmp_path / "query-frontend.log").read_text(errors="replace")
    assert "draining" in log


def test_a_draining_frontend_refuses_new_connections_before_it_says_it_drains(
    redis_url: str, spawner: Spawner, secrets: ClusterSecrets
) -> None:
    """A client told ``Connection: close`` by a draining frontend connects again at once;
    were the frontend still listening, that connection could be queued on its listener
    and reset when it closes (a request lost, with other frontends on the port). So the
    first answer saying "draining" comes after the listener is closed."""
    proc, url, _ = start_query(redis_url, spawner, secrets)
    port = int(url.rsplit(":", 1)[1])
    conn = socket.create_connection(("127.0.0.1", port), timeout=30)
    conn.sendall(HEALTHZ)
    assert read_response(conn).startswith(b"HTTP/1.1 200")
    proc.send_signal(signal.SIGTERM)
    with conn:
        while True:  # the same keep-alive connection, until it is told that we drain
            conn.sendall(HEALTHZ)
            answer = read_response(conn)
            if not answer.startswith(b"HTTP/1.1 200"):
                break
    assert answer.startswith(b"HTTP/1.1 503") and b'"error":"draining"' in answer, answer
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert proc.wait(timeout=120) == 0
