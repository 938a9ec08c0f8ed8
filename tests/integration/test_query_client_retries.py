"""What the query clients do when the frontend refuses, breaks off or cannot be reached,
against real HTTP servers run here (``http.server`` in a thread, answering from a
script), a port nobody listens on, and an HTTPS server whose CA the client may not know.

The clients' sleep is replaced by one that records the wait and returns at once: the
tests count attempts and read the waits the client chose; nothing measures time.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import ports
import pytest
import trustme

from admin import (
    APIKeyError,
    AsyncQueryClient,
    InvalidRequestError,
    ManagementAPIError,
    NotFoundError,
    PredictionError,
    QueryClient,
    ServiceUnavailableError,
    TLSVerificationError,
)
from admin import query_client as query_client_module

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ANSWER = {"query_id": 1, "output": 7, "default": False, "models": ["m:1"]}
UPDATED = {"query_id": 2, "models": ["m:1"], "losses": {"m:1": 0.0}}
DROP = "drop"  # read the request, close the connection without an answer


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: ANSWER)
    headers: dict[str, str] = field(default_factory=dict)


def refusal(code: str, retry_after: str | None = "1") -> Reply:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return Reply(503, {"error": code, "message": f"{code}; retry shortly"}, headers)


@dataclass
class Received:
    path: str
    authorization: str | None
    body: dict[str, Any]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that dropped the TLS handshake, say: what the tests expect


class ScriptedServer:
    """An HTTP/1.1 server on 127.0.0.1 answering each request with the next step of its
    script (a ``Reply`` or ``DROP``), then with ``otherwise``; it records every request."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.script: list[Reply | str] = []
        self.otherwise: Reply | str = Reply()
        self.received: list[Received] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.received.append(
                        Received(self.path, self.headers.get("Authorization"), body)
                    )
                    step = server.script.pop(0) if server.script else server.otherwise
                if step == DROP:
                    self.close_connection = True
                    return
                assert isinstance(step, Reply)
                payload = json.dumps(step.body).encode()
                self.send_response(step.status)
                for name, value in step.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        if context is not None:
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def attempts(self) -> int:
        with self.lock:
            return len(self.received)

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as s:
        yield s


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the clients chose between attempts (they do not really wait)."""
    chosen: list[float] = []

    async def async_sleep(seconds: float) -> None:
        chosen.append(seconds)

    monkeypatch.setattr(query_client_module, "_sleep", chosen.append)
    monkeypatch.setattr(query_client_module, "_async_sleep", async_sleep)
    return chosen


def test_a_503_is_retried_after_the_wait_its_retry_after_asks(
    server: ScriptedServer, waits: list[float]
) -> None:
    in_three_seconds = email.utils.formatdate(time.time() + 3, usegmt=True)
    server.script = [refusal("overloaded", "2"), refusal("overloaded", in_three_seconds)]
    with QueryClient(server.address, backoff=0.1) as client:
        assert client.predict("app", [1.0]).output == 7
    assert server.attempts == 3
    assert len(waits) == 2
    assert 2.0 <= waits[0] <= 2.0 + 0.1  # the seconds asked, plus at most one step of jitter
    assert 1.0 < waits[1] <= 3.0 + 0.2  # an HTTP date three seconds ahead (1 s resolution)


def test_a_retry_after_longer_than_max_wait_is_cut_to_it(
    server: ScriptedServer, waits: list[float]
) -> None:
    server.script = [refusal("overloaded", "3600")]
    with QueryClient(server.address, max_wait=5.0) as client:
        client.predict("app", [1.0])
    assert waits == [5.0]


def test_without_retry_after_the_waits_grow_exponentially_with_jitter(
    server: ScriptedServer, waits: list[float]
) -> None:
    server.otherwise = refusal("overloaded", retry_after=None)
    with (
        QueryClient(server.address, max_retries=4, backoff=0.5) as client,
        pytest.raises(ServiceUnavailableError) as exc,
    ):
        client.predict("app", [1.0])
    assert server.attempts == 5
    assert exc.value.status_code == 503 and exc.value.code == "overloaded"
    assert "after 5 attempts" in str(exc.value)
    for n, wait in enumerate(waits):
        step = 0.5 * 2**n
        assert step / 2 <= wait <= step, (n, waits)


def test_max_retries_zero_sends_once(server: ScriptedServer, waits: list[float]) -> None:
    server.otherwise = refusal("overloaded")
    with (
        QueryClient(server.address, max_retries=0) as client,
        pytest.raises(ServiceUnavailableError),
    ):
        client.predict("app", [1.0])
    assert (server.attempts, waits) == (1, [])


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "invalid_input", InvalidRequestError),
        (401, "unauthorized", APIKeyError),
        (404, "not_found", NotFoundError),
        (422, "input_quarantined", PredictionError),
        (429, "too_many", ManagementAPIError),
        (500, "model_error", PredictionError),
        (500, "internal", ManagementAPIError),
        (502, "", ManagementAPIError),
    ],
)
def test_other_errors_are_not_retried(
    server: ScriptedServer,
    waits: list[float],
    status: int,
    code: str,
    error: type[ManagementAPIError],
) -> None:
    server.otherwise = Reply(status, {"error": code, "message": "as the server said"})
    with QueryClient(server.address) as client, pytest.raises(error) as exc:
        client.predict("app", [1.0])
    assert type(exc.value) is error
    assert (server.attempts, waits) == (1, [])
    assert exc.value.status_code == status and "as the server said" in str(exc.value)


def test_a_port_that_refuses_connections_is_tried_max_retries_more_times(
    waits: list[float],
) -> None:
    sent: list[httpx.Request] = []

    class Counting(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return super().handle_request(request)

    address = f"127.0.0.1:{ports.free_port()}"  # nothing listens there
    with (
        QueryClient(address, max_retries=2, transport=Counting()) as client,
        pytest.raises(ServiceUnavailableError) as exc,
    ):
        client.update("app", [1.0], 1)  # never reached the server: safe to send again
    assert len(sent) == 3 and len(waits) == 2
    assert exc.value.code == "unreachable" and exc.value.status_code is None
    assert "cannot reach the query frontend at http://" in str(exc.value)


def test_a_connection_broken_before_the_answer_is_retried_for_predict(
    server: ScriptedServer, waits: list[float]
) -> None:
    server.script = [DROP, Reply(body={"batch_predictions": [ANSWER]})]
    with QueryClient(server.address) as client:
        assert [p.output for p in client.predict_batch("app", [[1.0]], version=2)] == [7]
    assert server.attempts == 2 and len(waits) == 1
    assert server.received[0].body == {"input_batch": [[1.0]], "version": "2"}


def test_an_update_that_may_have_been_stored_is_not_sent_again(
    server: ScriptedServer, waits: list[float]
) -> None:
    server.otherwise = Reply(body=UPDATED)
    with QueryClient(server.address) as client:
        # Refusals that say nothing was stored are sent again.
        server.script = [refusal("overloaded"), refusal("no_answer")]
        assert client.update("app", [1.0], 1).losses == {"m:1": 0.0}
        assert server.attempts == 3

        # Redis did not confirm storing it: it may count already.
        server.received.clear()
        server.script = [refusal("unavailable")]
        with pytest.raises(ServiceUnavailableError, match="feedback_id=") as unconfirmed:
            client.update("app", [1.0], 1)
        assert unconfirmed.value.code == "unavailable"
        assert server.attempts == 1

        # The connection broke after the request went out.
        server.received.clear()
        server.script = [DROP]
        with pytest.raises(ServiceUnavailableError, match="feedback_id=") as broken:
            client.update("app", [1.0], 1)
        assert broken.value.code == "disconnected"
        assert server.attempts == 1

        # With a feedback_id the frontend counts it once: both are sent again, same id.
        server.received.clear()
        server.script = [refusal("unavailable"), DROP]
        result = client.update("app", [1.0], 1, feedback_id="order-17", uid="alice")
        assert result.models == ("m:1",)
        assert server.attempts == 3
        assert {r.body["feedback_id"] for r in server.received} == {"order-17"}
        assert server.received[0].body == {
            "input": [1.0],
            "label": 1,
            "uid": "alice",
            "feedback_id": "order-17",
        }


def test_the_api_key_goes_in_the_authorization_header_and_nowhere_else(
    server: ScriptedServer, waits: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    key = "sk-app-0123456789abcdefghijklmnopqrstuvwxyz"
    caplog.set_level("DEBUG")
    server.script = [refusal("overloaded"), DROP]
    server.otherwise = Reply(401, {"error": "unauthorized", "message": "not a key of 'app'"})
    with QueryClient(server.address, api_key=key) as client, pytest.raises(APIKeyError) as exc:
        client.predict("app", [1.0])
    assert [r.authorization for r in server.received] == [f"Bearer {key}"] * 3
    assert "sent an API key (not shown)" in str(exc.value)
    assert key not in str(exc.value) and key not in repr(client)
    assert "retry 1 of 3" in caplog.text  # the retries are logged ...
    assert key not in caplog.text  # ... without the key


def test_an_answer_that_is_not_a_prediction_says_so(server: ScriptedServer) -> None:
    server.otherwise = Reply(200, {"hello": "world"})
    with (
        QueryClient(server.address) as client,
        pytest.raises(ManagementAPIError, match="not an answer to predict"),
    ):
        client.predict("app", [1.0])


def test_bad_arguments_are_refused_before_anything_is_sent(server: ScriptedServer) -> None:
    with pytest.raises(InvalidRequestError, match="never turned off"):
        QueryClient(server.address, verify=False)
    with pytest.raises(InvalidRequestError, match="max_retries"):
        QueryClient(server.address, max_retries=-1)
    with pytest.raises(InvalidRequestError, match="timeout"):
        QueryClient(server.address, timeout=0)
    with pytest.raises(InvalidRequestError, match="http"):
        QueryClient("ftp://127.0.0.1:1")
    with QueryClient(f"http://{server.address}/") as client:
        with pytest.raises(InvalidRequestError, match="not JSON"):
            client.predict("app", {1, 2})
        with pytest.raises(InvalidRequestError, match="feedback_id"):
            client.update("app", [1.0], 1, feedback_id="")
    with pytest.raises(InvalidRequestError, match="closed"):
        client.predict("app", [1.0])
    assert server.attempts == 0


def test_bytes_and_numpy_values_travel_as_json(server: ScriptedServer) -> None:
    import numpy as np

    server.otherwise = Reply(body={**ANSWER, **UPDATED})
    with QueryClient(server.address) as client:
        client.predict("app", b"\x00\x01")
        client.predict("app", np.arange(6.0).reshape(2, 3)[:, 1])  # not contiguous
        client.update("app", np.float32(0.5), np.int64(3))
    assert [r.body for r in server.received] == [
        {"input": "AAE="},
        {"input": [1.0, 4.0]},
        {"input": 0.5, "label": 3},
    ]
    assert [r.path for r in server.received] == ["/app/predict"] * 2 + ["/app/update"]


async def test_the_async_client_retries_the_same_way(
    server: ScriptedServer, waits: list[float]
) -> None:
    server.script = [refusal("overloaded", "2"), DROP]
    async with AsyncQueryClient(server.address) as client:
        assert (await client.predict("app", [1.0])).output == 7
        assert server.attempts == 3 and len(waits) == 2 and 2.0 <= waits[0] <= 2.1

        server.received.clear()
        server.script = [DROP]
        with pytest.raises(ServiceUnavailableError, match="feedback_id="):
            await client.update("app", [1.0], 1)
        assert server.attempts == 1

        server.otherwise = Reply(404, {"error": "not_found", "message": "no app"})
        with pytest.raises(NotFoundError):
            await client.predict_batch("app", [[1.0]])
    async with AsyncQueryClient(f"127.0.0.1:{ports.free_port()}", max_retries=1) as gone:
        with pytest.raises(ServiceUnavailableError, match="cannot reach"):
            await gone.predict("app", [1.0])


class Certs:
    def __init__(self, root: Path) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1")
        self.ca_file = root / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context


def test_https_is_verified_against_the_ca_given_and_an_unknown_one_is_not_retried(
    tmp_path: Path, waits: list[float]
) -> None:
    certs = Certs(tmp_path)
    with ScriptedServer(certs.server_context()) as server:
        url = f"https://{server.address}"
        with QueryClient(url, verify=certs.ca_file) as client:
            assert client.predict("app", [1.0]).output == 7
        context = ssl.create_default_context()
        certs.ca.configure_trust(context)
        with QueryClient(url, verify=context) as client:
            assert client.predict("app", [1.0]).output == 7
        with QueryClient(url) as client, pytest.raises(TLSVerificationError) as exc:
            client.predict("app", [1.0])  # the system's trust store does not know the CA
        assert exc.value.code == "tls" and "verify=" in str(exc.value)
        assert waits == [] and server.attempts == 2
