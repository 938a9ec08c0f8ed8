"""The query frontend's own HTTP/1.1 protocol (``query_frontend.http.protocol``), seen
from the wire by clients careful and careless, and by attackers.

One real ``python -m management_frontend``, one real ``python -m query_frontend``
(``--max-body-bytes 4096``, short header and body deadlines) and one real ``python -m
model_container`` replica serving app "echo" (JSON in, the same JSON out) for the whole
module. Most clients are raw sockets: httpx cannot pipeline, half-close, send a broken
request line or stop mid-body. Every response read is checked to be well-formed HTTP/1.x
(status line, header lines, one ``content-length`` matching the body). Waits poll or read
with a deadline; nothing asserts how long anything took.

Connections that never finish their headers or bodies being closed (slowloris) are
``test_hostile_clients.test_connections_that_never_finish_their_request_are_closed``;
here only the 408 such a connection is told, and the idle keep-alive close.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import redis
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
READ_S = 30.0  # the longest a raw client waits for a response
CLOSE_S = 30.0  # ... or for the server to close (keep-alive is 5 s, deadlines 2 s and 5 s)
MAX_BODY = 4096
HEAD_LIMIT = 64 * 1024
APP = "echo"

Spawn = Callable[..., subprocess.Popen[bytes]]


# ------------------------------------------------------------------ the cluster


@dataclass(frozen=True)
class Frontend:
    url: str
    port: int
    admin: dict[str, str]

    def held_bytes(self) -> int:
        with httpx.Client(timeout=10, headers=self.admin) as http:
            return int(http.get(f"{self.url}/status").json()["bodies"]["held_bytes"])

    def answers(self) -> None:
        """A fresh client is still answered, rightly."""
        with httpx.Client(timeout=30) as http:
            assert http.get(f"{self.url}/healthz").status_code == 200
            reply = http.post(f"{self.url}/{APP}/predict", json={"input": 4242})
            assert reply.status_code == 200, reply.text
            assert reply.json()["output"] == 4242 and reply.json()["default"] is False


def echo_model() -> Callable[[Any], Any]:
    """Made here so that cloudpickle ships it by value."""

    def echo(xs: Any) -> Any:
        return list(xs)

    return echo


def _up(url: str, what: str) -> None:
    with httpx.Client(timeout=10) as http:
        eventually(lambda: http.get(f"{url}/healthz").status_code == 200, what,
                   STARTUP_S, STARTING)  # fmt: skip


@pytest.fixture(scope="module")
def frontend(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Frontend]:
    client = redis.Redis.from_url(redis_server, socket_timeout=5)
    try:
        client.flushall()
    finally:
        client.close()
    logs = tmp_path_factory.mktemp("http-protocol")
    secrets: ClusterSecrets = make_cluster_secrets(logs)
    spawn = Spawner(logs)
    try:
        mgmt_port, http_port, rpc_port = free_port(), free_port(), free_port()
        spawn("management", "-m", "management_frontend", "--redis-url", redis_server,
              "--host", "127.0.0.1", "--port", str(mgmt_port),
              "--secrets-dir", str(secrets.frontend_dir))  # fmt: skip
        mgmt = f"http://127.0.0.1:{mgmt_port}"
        _up(mgmt, "management up")
        spawn("query-frontend", "-m", "query_frontend", "--redis-url", redis_server,
              "--host", "127.0.0.1", "--port", str(http_port), "--rpc-host", "127.0.0.1",
              "--rpc-port", str(rpc_port), "--max-body-bytes", str(MAX_BODY),
              "--header-timeout", "2", "--body-timeout", "5",
              "--secrets-dir", str(secrets.frontend_dir))  # fmt: skip
        url = f"http://127.0.0.1:{http_port}"
        _up(url, "query frontend up")
        with httpx.Client(timeout=10, headers=secrets.admin_headers) as http:
            app = {"name": APP, "input_type": "json", "default_output": "late",
                   "slo_micros": 10_000_000}  # fmt: skip
            assert http.post(f"{mgmt}/admin/apps", json=app).status_code == 201
            version = {"name": "echo-model", "version": "1", "input_type": "json"}
            assert http.post(f"{mgmt}/admin/models", json=version).status_code == 201
            bundle = logs / "echo-bundle"
            write_closure_bundle(bundle, echo_model(), InputType.JSON, ["numpy"])
            spawn("echo-model", "-m", "model_container", "--bundle", str(bundle),
                  "--bundle-sha256", bundle_digest(bundle), "--frontend",
                  f"tcp://127.0.0.1:{rpc_port}", "--name", "echo-model", "--version", "1",
                  "--replica-id", "echo-model-0",
                  "--secrets-dir", str(secrets.replica_dir))  # fmt: skip
            link = http.post(f"{mgmt}/admin/apps/{APP}/links", json={"model_name": "echo-model"})
            assert link.status_code == 200, link.text

            def answered() -> bool:
                reply = http.post(f"{url}/{APP}/predict", json={"input": 1})
                return reply.status_code == 200 and reply.json()["default"] is False

            eventually(answered, "the replica answers", STARTUP_S, STARTING)
        yield Frontend(url, http_port, secrets.admin_headers)
    finally:
        spawn.stop()


@pytest.fixture
def fe(frontend: Frontend) -> Iterator[Frontend]:
    """The module's frontend; after each test, it still answers and holds no body bytes."""
    yield frontend
    frontend.answers()
    eventually(lambda: frontend.held_bytes() == 0, "every body byte given back", 30)


# ------------------------------------------------------------------ a raw HTTP client


STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) ([^\r\n]*)")
HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n]*?)[ \t]*")


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n == name]
        assert len(values) <= 1, f"{name} sent {len(values)} times: {self.headers}"
        return values[0] if values else None

    def json(self) -> Any:
        assert self.header("content-type") == "application/json", self.headers
        return orjson.loads(self.body)

    @property
    def closes(self) -> bool:
        return (self.header("connection") or "").lower() == "close"


class Conn:
    """One raw TCP connection to the frontend; ``response()`` reads and checks one."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_S)
        self.buf = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> None:
        try:
            chunk = self.sock.recv(1 << 18)
        except TimeoutError:
            pytest.fail(f"no response within {READ_S} s; read so far: {self.buf[:300]!r}")
        except ConnectionResetError:
            pytest.fail(f"connection reset before a whole response; read: {self.buf[:300]!r}")
        if not chunk:
            pytest.fail(f"connection closed before a whole response; read: {self.buf[:300]!r}")
        self.buf += chunk

    def response(self, *, head: bool = False) -> Response:
        """The next response, checked to be well-formed (``head``: to a HEAD request)."""
        while b"\r\n\r\n" not in self.buf:
            self._more()
        raw, _, self.buf = self.buf.partition(b"\r\n\r\n")
        first, *lines = raw.split(b"\r\n")
        status_line = STATUS_LINE.fullmatch(first)
        assert status_line, f"not an HTTP/1.x status line: {first!r}"
        status = int(status_line[1])
        headers: list[tuple[str, str]] = []
        for line in lines:
            header = HEADER_LINE.fullmatch(line)
            assert header, f"malformed header line {line!r} in {raw!r}"
            headers.append((header[1].decode().lower(), header[2].decode("latin-1")))
        names = [n for n, _ in headers]
        assert "transfer-encoding" not in names, raw
        lengths = [v for n, v in headers if n == "content-length"]
        if status < 200 or status in (204, 304):
            assert not lengths, raw
            return Response(status, status_line[2].decode(), headers, b"")
        assert len(lengths) == 1 and lengths[0].isdigit(), f"one content-length in {raw!r}"
        if head:
            return Response(status, status_line[2].decode(), headers, b"")
        length = int(lengths[0])
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return Response(status, status_line[2].decode(), headers, body)

    def closed(self) -> None:
        """The server closes the connection (EOF, or a reset) within ``CLOSE_S``, having
        sent nothing more than what was read."""
        self.sock.settimeout(CLOSE_S)
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                pytest.fail(f"connection still open after {CLOSE_S} s")
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            self.buf += chunk
        assert self.buf == b"", f"bytes after the last response: {self.buf[:300]!r}"


def predict(
    value: Any, *, path: bytes = b"/echo/predict", version: bytes = b"1.1", extra: bytes = b""
) -> bytes:
    """A raw ``POST`` of ``{"input": value}``; ``extra``: header lines, each ending CRLF."""
    body = orjson.dumps({"input": value})
    return b"POST %b HTTP/%b\r\nHost: x\r\nContent-Type: application/json\r\n" \
        b"Content-Length: %d\r\n%b\r\n%b" % (path, version, len(body), extra, body)  # fmt: skip


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def assert_echoed(response: Response, value: Any) -> None:
    assert response.status == 200, (response.status, response.body[:300])
    answer = response.json()
    assert (answer["output"], answer["default"]) == (value, False), answer


# ------------------------------------------------------------------ 1. pipelining


def test_pipelined_requests_are_all_answered_in_order(fe: Frontend) -> None:
    values = [1000 + i for i in range(8)]
    with Conn(fe.port) as conn:
        conn.send(b"".join(predict(v) for v in values))
        for value in values:
            response = conn.response()
            assert_echoed(response, value)
            assert not response.closes
        # Mixed with requests the ASGI app answers, and one it refuses.
        conn.send(predict(1) + HEALTHZ + predict(2) + b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
                  + predict(3))  # fmt: skip
        assert_echoed(conn.response(), 1)
        assert conn.response().json() == {"status": "ok"}
        assert_echoed(conn.response(), 2)
        assert conn.response().status == 401
        assert_echoed(conn.response(), 3)


def test_pipelined_requests_then_half_close_are_all_answered_then_closed(fe: Frontend) -> None:
    """A client that sends its requests and shuts its side (``printf ... | nc``)."""
    values = [2000 + i for i in range(4)]
    with Conn(fe.port) as conn:
        conn.send(b"".join(predict(v) for v in values))
        conn.sock.shutdown(socket.SHUT_WR)
        for value in values:
            assert_echoed(conn.response(), value)
        conn.closed()


def test_hundreds_of_pipelined_cache_hits_are_all_answered(fe: Frontend) -> None:
    """400 requests of one cached input in one write (under 64 KiB in all): each is
    answered at once, as the one before it is."""
    with Conn(fe.port) as conn:
        conn.send(predict(5))
        assert_echoed(conn.response(), 5)  # now in the cache
        data = predict(5) * 400
        assert len(data) < HEAD_LIMIT
        conn.send(data)
        for _ in range(400):
            assert_echoed(conn.response(), 5)


def test_pipelined_requests_past_64_kib_in_all_are_all_answered(fe: Frontend) -> None:
    """1500 small requests (~500 KiB) written at once: the server reads them in several
    reads, which end anywhere, in the middle of a request's headers too."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: %b\r\n\r\n" % (b"p" * 300)
    data = request * 1500
    with Conn(fe.port) as conn:
        sender = threading.Thread(target=conn.send, args=(data,), daemon=True)
        sender.start()
        try:
            for _ in range(1500):
                assert conn.response().json() == {"status": "ok"}
        finally:
            with contextlib.suppress(OSError):  # reset already
                conn.sock.shutdown(socket.SHUT_RDWR)
            sender.join(timeout=READ_S)


# ------------------------------------------------------------------ 2. chunked bodies


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = b"", 0
    for size in sizes:
        out += b"%x\r\n%b\r\n" % (size, body[at : at + size])
        at += size
    assert at == len(body)
    return out + b"0\r\n\r\n"


CHUNKED_HEAD = (b"POST /echo/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip


def test_a_chunked_body_is_answered_like_a_plain_one(fe: Frontend) -> None:
    value = {"words": ["chunked", "body"], "n": 31}
    body = orjson.dumps({"input": value})
    with Conn(fe.port) as conn:
        conn.send(predict(value))
        plain = conn.response()
        assert_echoed(plain, value)
        # In one write, then chunk by chunk in writes of their own (with an extension).
        conn.send(CHUNKED_HEAD + chunked(body, [5, 1, len(body) - 6]))
        assert_echoed(conn.response(), value)
        conn.send(CHUNKED_HEAD)
        conn.send(b"3;ext=1\r\n" + body[:3] + b"\r\n")
        conn.send(b"%x\r\n%b\r\n" % (len(body) - 3, body[3:]))
        conn.send(b"0\r\n\r\n")
        assert_echoed(conn.response(), value)
        # The connection is still good after them.
        conn.send(predict(77))
        assert_echoed(conn.response(), 77)


# ------------------------------------------------------------------ 3. Expect: 100-continue


def test_expect_100_continue_gets_100_before_the_body_then_the_answer(fe: Frontend) -> None:
    body = orjson.dumps({"input": 55})
    with Conn(fe.port) as conn:
        conn.send(b"POST /echo/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))  # fmt: skip
        interim = conn.response()
        assert (interim.status, interim.reason) == (100, "Continue")
        conn.send(body)
        assert_echoed(conn.response(), 55)
        conn.send(predict(56))  # and the connection goes on
        assert_echoed(conn.response(), 56)
    # A body over the limit is refused without asking for it.
    with Conn(fe.port) as conn:
        conn.send(b"POST /echo/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n")  # fmt: skip
        refused = conn.response()
        assert refused.status == 413, (refused.status, refused.body)
        assert f"limit of {MAX_BODY} bytes" in refused.json()["message"]


def test_expect_100_continue_is_ignored_for_http_1_0(fe: Frontend) -> None:
    """RFC 9110 10.1.1: a server MUST NOT send 100 Continue to an HTTP/1.0 client."""
    body = orjson.dumps({"input": 57})
    with Conn(fe.port) as conn:
        conn.send(b"POST /echo/predict HTTP/1.0\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))  # fmt: skip
        time.sleep(0.5)  # an HTTP/1.0 client sends its body without waiting for anything
        conn.send(body)
        first = conn.response()
        assert first.status != 100, "100 Continue sent to an HTTP/1.0 client"
        assert_echoed(first, 57)
        conn.closed()


# ------------------------------------------------------------------ 4. keep-alive and close


@pytest.mark.parametrize(
    ("request_bytes", "echoed"),
    [
        pytest.param(predict(10, version=b"1.0"), 10, id="predict-http-1.0"),
        pytest.param(b"GET /healthz HTTP/1.0\r\n\r\n", None, id="healthz-http-1.0"),
        pytest.param(predict(11, extra=b"Connection: close\r\n"), 11, id="predict-close"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            None,
            id="healthz-close",
        ),
    ],
)
def test_http_1_0_and_connection_close_are_answered_then_closed(
    fe: Frontend, request_bytes: bytes, echoed: int | None
) -> None:
    with Conn(fe.port) as conn:
        conn.send(request_bytes)
        answer = conn.response()
        if echoed is None:
            assert answer.json() == {"status": "ok"}
        else:
            assert_echoed(answer, echoed)
        assert answer.closes
        conn.closed()


def test_keep_alive_connection_stays_open_for_more_requests(fe: Frontend) -> None:
    with Conn(fe.port) as conn:
        for value in (12, 13, 14):
            conn.send(predict(value))
            answer = conn.response()
            assert_echoed(answer, value)
            assert not answer.closes
        conn.send(HEALTHZ)
        assert conn.response().status == 200
        # HTTP/1.0 asking for keep-alive is kept too.
    with Conn(fe.port) as conn:
        conn.send(predict(15, version=b"1.0", extra=b"Connection: keep-alive\r\n"))
        answer = conn.response()
        assert_echoed(answer, 15)
        assert not answer.closes
        conn.send(predict(16, version=b"1.0", extra=b"Connection: keep-alive\r\n"))
        assert_echoed(conn.response(), 16)


# ------------------------------------------------------------------ 5. malformed and huge heads


MALFORMED = [
    pytest.param(b"GARBAGE\r\n\r\n", id="no-method"),
    pytest.param(b"GET /healthz HTTP/1.1 extra\r\nHost: x\r\n\r\n", id="extra-after-version"),
    pytest.param(b"GET /heal thz HTTP/1.1\r\nHost: x\r\n\r\n", id="space-in-target"),
    pytest.param(b"GET /healthz HTTP/7.3\r\nHost: x\r\n\r\n", id="bad-version"),
    pytest.param(b"GET /healthz HTTP/1.1\r\nBad Name: x\r\n\r\n", id="space-in-header-name"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), id="tls-hello"),
    pytest.param(
        b"POST /echo/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HEALTHZ,
        id="smuggling-cl-and-te",
    ),
    pytest.param(
        b"POST /echo/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n"
        b'Content-Length: 0\r\n\r\n{"input": 1}\r\n' + HEALTHZ,
        id="smuggling-two-lengths",
    ),
]


@pytest.mark.parametrize("request_bytes", MALFORMED)
def test_a_malformed_request_gets_400_and_the_connection_closes(
    fe: Frontend, request_bytes: bytes
) -> None:
    with Conn(fe.port) as conn:
        conn.send(request_bytes)
        answer = conn.response()
        assert answer.status == 400, (answer.status, answer.body)
        assert answer.closes
        conn.closed()  # and nothing after the 400 was read as a request


def test_a_malformed_request_after_a_good_one_comes_after_its_answer(fe: Frontend) -> None:
    """Pipelined: the good request's answer first (a client pairs responses with requests
    in order), then the 400, then the close."""
    with Conn(fe.port) as conn:
        conn.send(predict(21) + b"GARBAGE\r\n\r\n")
        assert_echoed(conn.response(), 21)
        refused = conn.response()
        assert refused.status == 400 and refused.closes
        conn.closed()


def big_head(size: int, end: bool = True) -> bytes:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size
    return head + b"\r\n\r\n" if end else head


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([big_head(HEAD_LIMIT + 4096, end=False)], id="unfinished"),
        pytest.param([big_head(100 * 1024)], id="one-header-in-one-write"),
        pytest.param(
            [
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                + b"".join(b"X-H%d: v\r\n" % i for i in range(8000))
                + b"\r\n"
            ],
            id="many-headers-in-one-write",
        ),
        pytest.param(
            [big_head(40 * 1024, end=False), b"b" * 40 * 1024 + b"\r\n\r\n"], id="in-two-writes"
        ),
    ],
)
def test_headers_over_64_kib_get_431_and_the_connection_closes(
    fe: Frontend, parts: list[bytes]
) -> None:
    assert sum(map(len, parts)) > HEAD_LIMIT
    with Conn(fe.port) as conn:
        for part in parts:
            try:
                conn.send(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # refused already: the response must still be readable
            time.sleep(0.2)
        answer = conn.response()
        assert answer.status == 431, (answer.status, answer.body[:200])
        assert answer.closes
        conn.closed()


def test_a_head_just_under_64_kib_is_answered(fe: Frontend) -> None:
    with Conn(fe.port) as conn:
        conn.send(big_head(HEAD_LIMIT - 1024))
        assert conn.response().json() == {"status": "ok"}


# ------------------------------------------------------------------ 6. bodies over the limit


def over_limit_head(length: int) -> bytes:
    return (b"POST /echo/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % length)  # fmt: skip


def assert_too_large(answer: Response) -> None:
    assert answer.status == 413, (answer.status, answer.body[:300])
    assert answer.json()["error"] == "too_large"
    assert f"over the limit of {MAX_BODY} bytes" in answer.json()["message"]


def test_a_body_over_the_limit_gets_413_while_the_client_still_sends_it(fe: Frontend) -> None:
    """The client keeps writing a 16 MiB body (from a thread) and reads meanwhile: it
    receives the whole 413, not a reset."""
    size = 16 * 1024 * 1024
    with Conn(fe.port) as conn:
        sent: list[BaseException | None] = []

        def send_all() -> None:
            try:
                conn.send(over_limit_head(size) + b"[" * size)
                sent.append(None)
            except OSError as exc:
                sent.append(exc)

        sender = threading.Thread(target=send_all, daemon=True)
        sender.start()
        assert_too_large(conn.response())
        if not conn.buf and sender.is_alive():
            conn.sock.shutdown(socket.SHUT_RDWR)  # done: stop the sender
        sender.join(timeout=READ_S)
        assert not sender.is_alive()


@pytest.mark.parametrize("size", [MAX_BODY + 1, 100 * 1024, 300 * 1024, 4 * 1024 * 1024])
def test_a_client_that_sends_the_whole_body_then_reads_gets_413(fe: Frontend, size: int) -> None:
    """As httpx, curl and most clients do: write the whole request, then read. The body is
    read (and dropped) or the connection closed after the 413 is read, never a reset
    before it; a connection kept open takes the next request."""
    with httpx.Client(timeout=READ_S) as http:
        reply = http.post(f"{fe.url}/{APP}/predict", content=b"[" * size,
                          headers={"content-type": "application/json"})  # fmt: skip
        assert reply.status_code == 413 and f"limit of {MAX_BODY} bytes" in reply.text
    for _ in range(10):  # how much of the body the server's first read holds varies
        with Conn(fe.port) as conn:
            conn.send(over_limit_head(size) + b"[" * size)
            still_usable_after_413(conn, 31)


def test_a_chunked_body_over_the_limit_gets_413(fe: Frontend) -> None:
    body = b"[" * (3 * MAX_BODY)
    with Conn(fe.port) as conn:
        conn.send(CHUNKED_HEAD + chunked(body, [1024] * (len(body) // 1024)))
        still_usable_after_413(conn, 32)


def still_usable_after_413(conn: Conn, n: int) -> None:
    """The next answer on ``conn`` is a 413; then the connection either closes (saying
    so) or answers the next request, ``n``, correctly."""
    answer = conn.response()
    assert_too_large(answer)
    if answer.closes:
        conn.closed()
    else:
        conn.send(predict(n))
        assert_echoed(conn.response(), n)


# ------------------------------------------------------------------ 7. idle and slow clients


def test_an_idle_keep_alive_connection_is_closed(fe: Frontend) -> None:
    """uvicorn's keep-alive timeout is 5 s: the connection closes, saying nothing."""
    with Conn(fe.port) as conn:
        conn.send(predict(41))
        assert_echoed(conn.response(), 41)
        conn.closed()


def test_a_client_that_never_finishes_its_headers_gets_408(fe: Frontend) -> None:
    """That the connections are closed, by the hundred, is test_hostile_clients'; here,
    that they are told why (--header-timeout 2)."""
    with Conn(fe.port) as conn:
        conn.send(b"POST /echo/predict HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        answer = conn.response()
        assert answer.status == 408 and answer.closes
        conn.closed()
    with Conn(fe.port) as conn:  # the same on a connection that was answered before
        conn.send(HEALTHZ)
        assert conn.response().status == 200
        conn.send(b"GET /heal")
        answer = conn.response()
        assert answer.status == 408 and answer.closes
        conn.closed()


# ------------------------------------------------------------------ 8. the other endpoints


def test_health_status_and_refused_paths(fe: Frontend) -> None:
    token = fe.admin["Authorization"].encode()
    with Conn(fe.port) as conn:
        conn.send(HEALTHZ)
        health = conn.response()
        assert health.json() == {"status": "ok"}
        # HEAD: the same head, no body (the next response parses right after it).
        conn.send(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = conn.response(head=True)
        assert head.status == 200
        assert head.header("content-length") == str(len(health.body))
        conn.send(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        anonymous = conn.response()
        assert anonymous.status == 401 and anonymous.header("www-authenticate")
        assert anonymous.json()["error"] == "unauthorized"
        conn.send(b"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n")
        assert conn.response().status == 401
        conn.send(b"GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: %b\r\n\r\n" % token)
        status = conn.response()
        assert status.status == 200 and status.json()["bodies"]["limit_bytes"] > 0
        assert APP in status.json()["apps"]
        conn.send(b"GET /echo/predict HTTP/1.1\r\nHost: x\r\n\r\n")
        wrong_method = conn.response()
        assert wrong_method.status == 405 and wrong_method.header("allow") == "POST"
        assert wrong_method.json()["error"] == "method_not_allowed"
        conn.send(b"HEAD /echo/predict HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response(head=True).status == 405
        conn.send(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.response().status == 404
        conn.send(predict(1, path=b"/nowhere"))
        assert conn.response().status == 404
        conn.send(predict(1, path=b"/no-such-app/predict"))
        missing = conn.response()
        assert missing.status == 404 and missing.json()["error"] == "not_found"
        conn.send(HEALTHZ)  # all on one connection, still in step
        assert conn.response().json() == {"status": "ok"}


@pytest.mark.parametrize(
    "path",
    [b"/echo/predict?trace=1", b"/ech%6F/predict", b"/%65cho/predict?x=%20y&z", b"/echo/predict?"],
)
def test_escapes_and_query_strings_are_answered(fe: Frontend, path: bytes) -> None:
    with Conn(fe.port) as conn:
        conn.send(predict(61, path=path))
        assert_echoed(conn.response(), 61)
        conn.send(predict(62, path=path))
        assert_echoed(conn.response(), 62)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            predict(71, extra=b"Connection: Upgrade\r\nUpgrade: websocket\r\n"), id="post-upgrade"
        ),
        pytest.param(predict(71, extra=b"Upgrade: websocket\r\n"), id="post-upgrade-header-only"),
        pytest.param(
            b"POST /echo/predict HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nContent-Length: 0\r\n\r\n",
            id="post-upgrade-no-body",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            id="websocket",
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
            id="h2c",
        ),
    ],
)
def test_an_upgrade_request_is_answered_in_http_1_1_or_refused(
    fe: Frontend, request_bytes: bytes
) -> None:
    with Conn(fe.port) as conn:
        conn.send(request_bytes)
        answer = conn.response()
        assert answer.status in (200, 400), (answer.status, answer.body[:200])
        if answer.status == 200 and b"/echo/" in request_bytes:
            assert_echoed(answer, 71)
        if answer.closes:
            conn.closed()
        else:  # not an upgrade: the connection goes on
            conn.send(predict(72))
            assert_echoed(conn.response(), 72)


# ------------------------------------------------------------------ 9. clients that leave


def rst_close(sock: socket.socket) -> None:
    """Close with a reset rather than a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_clients_that_leave_mid_body_or_right_after_asking_do_no_harm(
    fe: Frontend, reset: bool
) -> None:
    # Mid-body: the declared body is held while it arrives, and given back when it stops.
    conn = Conn(fe.port)
    conn.send(over_limit_head(3000) + b'{"input": [1, 2, ')
    eventually(lambda: fe.held_bytes() >= 3000, "the half-sent body holds its bytes", 30)
    if reset:
        rst_close(conn.sock)
    else:
        conn.sock.close()
    eventually(lambda: fe.held_bytes() == 0, "the half-sent body's bytes given back", 30)
    # Mid-body, chunked.
    conn = Conn(fe.port)
    conn.send(CHUNKED_HEAD + b"a\r\n" + b'{"input": ' + b"\r\n")
    rst_close(conn.sock) if reset else conn.sock.close()
    # Right after asking: alone, pipelined, and pipelined with a body cut short.
    for i in range(20):
        conn = Conn(fe.port)
        conn.send(predict(500 + i))
        rst_close(conn.sock) if reset else conn.sock.close()
        conn = Conn(fe.port)
        conn.send(b"".join(predict(600 + i * 10 + j) for j in range(5)))
        rst_close(conn.sock) if reset else conn.sock.close()
        conn = Conn(fe.port)
        conn.send(predict(700 + i) + over_limit_head(2000) + b'{"inp')
        rst_close(conn.sock) if reset else conn.sock.close()
    fe.answers()
    eventually(lambda: fe.held_bytes() == 0, "every body byte given back", 30)
    # A client that half-closes right after its request is still answered.
    with Conn(fe.port) as conn:
        conn.send(predict(800))
        conn.sock.shutdown(socket.SHUT_WR)
        assert_echoed(conn.response(), 800)
        conn.closed()
    # And the values asked by the clients that left come back right (cached or not).
    with Conn(fe.port) as conn:
        conn.send(b"".join(predict(500 + i) for i in range(20)))
        for i in range(20):
            assert_echoed(conn.response(), 500 + i)
