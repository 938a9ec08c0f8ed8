"""Predictions and feedback from Python, without hand-written HTTP.

    from admin import QueryClient

    with QueryClient("127.0.0.1:1337", api_key=key) as client:
        p = client.predict("pipeline", [0.1, 0.2])      # Prediction(output=1, default=False, ...)
        ps = client.predict_batch("pipeline", rows)     # one request, one Prediction per row
        client.update("pipeline", [0.1, 0.2], label=1)  # feedback for the selection policy

``AsyncQueryClient`` is the same with ``await`` (``async with``). A client holds one
pool of keep-alive connections (an ``httpx.Client``; an ``httpx.AsyncClient``): make one
and reuse it, from any number of threads (tasks, for the async one), and close it when
done. Which failures are retried, and how long the client waits, is said in
``QueryClient``'s docstring; every failure is a ``SchoonerError`` (``admin.exceptions``).
The API key goes only into the ``Authorization`` header: no repr, log line or error
shows it.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar
from urllib.parse import quote

import httpx

from admin._closing import Closing
from admin._http import tls_context
from admin._names import check_name
from admin._query_call import Call, Endpoint, not_an_answer
from admin._query_retry import DEFAULT_MAX_WAIT, RetryPolicy
from admin._query_wire import (
    NotAnAnswerError,
    Prediction,
    UpdateResult,
    batch_body,
    loads,
    predict_body,
    prediction,
    predictions,
    update_body,
    update_result,
)
from admin.container_managers.base import TLS_CA_ENV
from admin.exceptions import InvalidRequestError

if TYPE_CHECKING:
    from admin._connection import Connection

__all__ = ["AsyncQueryClient", "Prediction", "QueryClient", "UpdateResult"]

DEFAULT_QUERY_TIMEOUT: Final = 10.0
_HEADERS: Final = {"Content-Type": "application/json", "Accept": "application/json"}

T = TypeVar("T")
Verify = bool | str | os.PathLike[str] | ssl.SSLContext
# What the clients sleep with between attempts (replaced in tests, to record the waits).
_sleep: Callable[[float], None] = time.sleep
_async_sleep = asyncio.sleep


def _base_url(address: object) -> str:
    """``http://host:port`` of ``host:port``; an http(s) URL as given (a path is kept,
    for a frontend behind a proxy's prefix)."""
    if not isinstance(address, str) or not address.strip():
        raise InvalidRequestError(
            f"address must be 'host:port' or an http(s) URL of the query frontend, got "
            f"{address!r} (conn.get_query_addr() says where it is)"
        )
    text = address.strip()
    try:
        url = httpx.URL(text if "://" in text else f"http://{text}")
    except httpx.InvalidURL as exc:
        raise InvalidRequestError(f"{address!r} is not 'host:port' or a URL ({exc})") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequestError(
            f"{address!r} is not 'host:port' or an http:// or https:// URL of the query frontend"
        )
    return str(url).rstrip("/")


def _verify(verify: object) -> ssl.SSLContext | bool:
    """How HTTPS is verified: ``True`` against ``$SCHOONER_TLS_CA`` or else the system's
    trust store, a path against the CA certificate(s) in that PEM file, or a context as
    given. Never off."""
    if verify is True:
        return tls_context(os.environ.get(TLS_CA_ENV))
    if isinstance(verify, ssl.SSLContext):
        return verify
    if isinstance(verify, str | os.PathLike) and str(verify):
        return tls_context(os.fspath(verify))
    raise InvalidRequestError(
        f"verify must be True, the path of a CA certificate (PEM) or an ssl.SSLContext, got "
        f"{verify!r}: certificate checks are never turned off; for a self-signed "
        "certificate pass verify='that-cert.pem'"
    )


def _timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise InvalidRequestError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


class _Settings:
    """What both clients share: the address, the key, the retry policy, and each
    request's body and ``Call``."""

    def __init__(
        self,
        address: str,
        api_key: str | None,
        timeout: float,
        max_retries: int,
        backoff: float,
        max_wait: float,
    ) -> None:
        self.base_url = _base_url(address)
        self.timeout = _timeout(timeout)
        self.policy = RetryPolicy(max_retries=max_retries, backoff=backoff, max_wait=max_wait)
        self.headers = dict(_HEADERS)
        if api_key is not None:
            if not isinstance(api_key, str) or not api_key.strip():
                raise InvalidRequestError(
                    "api_key must be a non-empty string: a key made by conn.create_api_key(app)"
                )
            value = f"Bearer {api_key.strip()}"
            if not value.isascii() or not value.isprintable():
                raise InvalidRequestError(
                    "api_key is not a valid header value: check it for stray characters"
                )
            self.headers["Authorization"] = value
        self.key_sent = api_key is not None

    def call(self, app: str, verb: str, *, idempotent: bool) -> tuple[str, Call]:
        name = check_name(app, "application name")
        endpoint = Endpoint(self.base_url, name, verb, self.key_sent, self.timeout)
        return f"/{quote(name, safe='')}/{verb}", Call(endpoint, self.policy, idempotent=idempotent)

    def __repr__(self) -> str:
        key = ", api_key=***" if self.key_sent else ""
        return f"<{type(self).__name__} {self.base_url}{key}>"


def _read(call: Call, response: httpx.Response, parse: Callable[[Any], T]) -> T:
    try:
        return parse(loads(response.content))
    except NotAnAnswerError as exc:
        raise not_an_answer(call, response, exc) from None


def _closed(client: object) -> InvalidRequestError:
    return InvalidRequestError(f"{client!r} is closed: make a new client")


class QueryClient(_Settings, Closing):
    """Calls ``/{app}/predict`` and ``/{app}/update`` of one query frontend.

    ``address``: ``"host:port"`` (plain HTTP) or an ``http://`` / ``https://`` URL, as
    ``conn.get_query_addr()`` gives it; ``QueryClient.for_connection(conn)`` builds one
    from a connection, its scheme and CA included. ``api_key``: a key of the apps called
    (``conn.create_api_key(app)``), sent as ``Authorization: Bearer``, needed once an app
    has keys. ``timeout``: seconds for each attempt (connecting, sending, the answer).
    ``verify``: how an https address is verified -- ``True`` (``$SCHOONER_TLS_CA``, else
    the system's trust store), the path of a CA certificate (PEM), or an
    ``ssl.SSLContext``; never off. ``transport``: httpx's transport (a proxy, a test);
    a transport given brings its own TLS settings, and ``verify`` is not used.

    Retries: at most ``max_retries`` after the first attempt, waiting ``backoff * 2**n``
    seconds with jitter between them, or what the answer's ``Retry-After`` asks
    (seconds or an HTTP date) plus jitter, each wait at most ``max_wait``.

    * ``predict`` and ``predict_batch`` are retried after a 503 (overloaded), a refused
      connection, or a connection that broke before the answer: asking twice is
      harmless.
    * ``update`` changes what the app's policy has learned, so it is sent again only
      when it certainly was not stored: the connection was never made, or a 503 saying
      nothing was stored (``overloaded``, ``no_answer``). With a ``feedback_id`` the
      frontend counts the feedback once whatever happens, so it is retried as predict
      is; without one, a 503 ``unavailable`` (Redis did not confirm storing it) and a
      connection that broke mid-request raise ``ServiceUnavailableError`` at once.
    * Never retried: other 4xx and 5xx answers, a timeout waiting for the answer, an
      untrusted certificate.

    Errors: ``NotFoundError`` (unknown app), ``InvalidRequestError`` (an input the app
    refuses, 400/413, with the frontend's message), ``APIKeyError`` (401/403),
    ``PredictionError`` (the model raised: 500; a quarantined input: 422),
    ``ConflictError`` (an update the app cannot learn from: 409),
    ``ServiceUnavailableError`` (503 after the retries, or unreachable),
    ``RequestTimeoutError``, ``TLSVerificationError``; each carries ``status_code`` and
    the frontend's ``code``.
    """

    def __init__(
        self,
        address: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_QUERY_TIMEOUT,
        max_retries: int = 3,
        backoff: float = 0.1,
        max_wait: float = DEFAULT_MAX_WAIT,
        verify: Verify = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(address, api_key, timeout, max_retries, backoff, max_wait)
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=self.headers,
            timeout=httpx.Timeout(self.timeout),
            verify=_verify(verify),
            transport=transport,
        )

    @classmethod
    def for_connection(
        cls, conn: Connection, *, api_key: str | None = None, **options: Any
    ) -> QueryClient:
        """A client of ``conn``'s query frontend, with the scheme and the CA the
        connection's container manager uses (``options``: as the constructor's)."""
        address, verify = _connection_address(conn)
        return cls(address, api_key=api_key, **{"verify": verify, **options})

    def close(self) -> None:
        """Close the pooled connections (idempotent)."""
        self._client.close()

    @property
    def is_closed(self) -> bool:
        return self._client.is_closed

    def predict(
        self,
        app: str,
        x: Any,
        *,
        version: str | int | None = None,
        uid: str | int | None = None,
    ) -> Prediction:
        """The prediction of ``app`` for the input ``x``: a list of numbers for
        ints/floats/doubles (a numpy array will do), a str, bytes, or any JSON value for
        ``json``. ``version`` pins a version of the app's model; ``uid`` is the user the
        app's policy keeps state for (sticky splits, per-user learning)."""
        path, call = self.call(app, "predict", idempotent=True)
        response = self._send(call, path, predict_body(x, version, uid))
        return _read(call, response, prediction)

    def predict_batch(
        self,
        app: str,
        xs: Any,
        *,
        version: str | int | None = None,
        uid: str | int | None = None,
    ) -> list[Prediction]:
        """The predictions for the inputs ``xs`` (a list, or a 2-d numpy array's rows),
        in their order, asked in one request (``"input_batch"``)."""
        body, count = batch_body(xs, version, uid)
        path, call = self.call(app, "predict", idempotent=True)
        response = self._send(call, path, body)
        return _read(call, response, lambda doc: predictions(doc, count))

    def update(
        self,
        app: str,
        x: Any,
        label: Any,
        *,
        uid: str | int | None = None,
        feedback_id: str | None = None,
    ) -> UpdateResult:
        """Feedback for ``app``'s selection policy: the right answer for ``x`` was
        ``label``. Returns once it is stored. ``feedback_id`` (an order id, a uuid) makes
        it count at most once, however often it is sent, and lets the client retry it
        after any connection failure (see the class's docstring)."""
        body = update_body(x, label, uid, feedback_id)
        path, call = self.call(app, "update", idempotent=feedback_id is not None)
        response = self._send(call, path, body)
        return _read(call, response, update_result)

    def _send(self, call: Call, path: str, body: bytes) -> httpx.Response:
        if self._client.is_closed:
            raise _closed(self)
        while True:
            try:
                response = self._client.post(path, content=body)
            except httpx.HTTPError as exc:
                _sleep(call.failed(exc))
                continue
            wait = call.answered(response)
            if wait is None:
                return response
            _sleep(wait)


class AsyncQueryClient(_Settings):
    """``QueryClient`` for asyncio: the same arguments, retries and errors, with
    ``await client.predict(...)``; ``async with AsyncQueryClient(...) as client:``
    closes it on the way out (or ``await client.aclose()``)."""

    def __init__(
        self,
        address: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_QUERY_TIMEOUT,
        max_retries: int = 3,
        backoff: float = 0.1,
        max_wait: float = DEFAULT_MAX_WAIT,
        verify: Verify = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(address, api_key, timeout, max_retries, backoff, max_wait)
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            timeout=httpx.Timeout(self.timeout),
            verify=_verify(verify),
            transport=transport,
        )

    @classmethod
    def for_connection(
        cls, conn: Connection, *, api_key: str | None = None, **options: Any
    ) -> AsyncQueryClient:
        """As ``QueryClient.for_connection``."""
        address, verify = _connection_address(conn)
        return cls(address, api_key=api_key, **{"verify": verify, **options})

    async def aclose(self) -> None:
        """Close the pooled connections (idempotent)."""
        await self._client.aclose()

    close = aclose

    @property
    def is_closed(self) -> bool:
        return self._client.is_closed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def predict(
        self,
        app: str,
        x: Any,
        *,
        version: str | int | None = None,
        uid: str | int | None = None,
    ) -> Prediction:
        """As ``QueryClient.predict``."""
        path, call = self.call(app, "predict", idempotent=True)
        response = await self._send(call, path, predict_body(x, version, uid))
        return _read(call, response, prediction)

    async def predict_batch(
        self,
        app: str,
        xs: Any,
        *,
        version: str | int | None = None,
        uid: str | int | None = None,
    ) -> list[Prediction]:
        """As ``QueryClient.predict_batch``."""
        body, count = batch_body(xs, version, uid)
        path, call = self.call(app, "predict", idempotent=True)
        response = await self._send(call, path, body)
        return _read(call, response, lambda doc: predictions(doc, count))

    async def update(
        self,
        app: str,
        x: Any,
        label: Any,
        *,
        uid: str | int | None = None,
        feedback_id: str | None = None,
    ) -> UpdateResult:
        """As ``QueryClient.update`` (what is retried is said there)."""
        body = update_body(x, label, uid, feedback_id)
        path, call = self.call(app, "update", idempotent=feedback_id is not None)
        response = await self._send(call, path, body)
        return _read(call, response, update_result)

    async def _send(self, call: Call, path: str, body: bytes) -> httpx.Response:
        if self._client.is_closed:
            raise _closed(self)
        while True:
            try:
                response = await self._client.post(path, content=body)
            except httpx.HTTPError as exc:
                await _async_sleep(call.failed(exc))
                continue
            wait = call.answered(response)
            if wait is None:
                return response
            await _async_sleep(wait)


def _connection_address(conn: Connection) -> tuple[str, ssl.SSLContext | bool]:
    """The query frontend's URL of a connected ``conn`` and how to verify it."""
    addr = conn.get_query_addr()  # NotConnectedError before start()/connect()
    return f"{conn.cm.scheme}://{addr}", conn.cm.tls_verify()
