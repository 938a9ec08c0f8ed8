"""One call of the query client, attempt by attempt: whether an answer or a failure is
retried, and the Schooner exception it becomes when it is not. No I/O: the sync and the
async client each run the same ``Call`` in a loop of a few lines.

What is retried (with the waits of ``_query_retry``):

* A request that never reached the server (the connection was refused, or not set up
  in time): always.
* A 503 (the frontend refused the request: queue or body budget full, no model answered
  in time): always for predict. For update, when the answer says nothing was stored
  (``overloaded``, ``no_answer``), or when the feedback carries a ``feedback_id`` (the
  frontend counts an id once); a 503 ``unavailable`` to an update without one (Redis
  did not confirm storing it) is not retried: it may count already.
* A connection that broke after the request went out, before an answer (reset, closed):
  predict only (a prediction may be asked twice), or an update with a ``feedback_id``.

Never retried: any other 4xx or 5xx, a timeout waiting for the answer (the frontend
answers within the app's latency objective: one that does not is stuck or overloaded,
and more requests would not help), an untrusted certificate.
"""

from __future__ import annotations

import logging
import ssl
import time
from dataclasses import dataclass
from typing import Final

import httpx

from admin._query_retry import RetryPolicy, retry_after_seconds
from admin._query_wire import NotAnAnswerError, loads
from admin.exceptions import (
    APIKeyError,
    ConflictError,
    InvalidRequestError,
    ManagementAPIError,
    NotFoundError,
    PredictionError,
    RequestTimeoutError,
    ServiceUnavailableError,
    TLSVerificationError,
)

logger = logging.getLogger(__name__)

_STATUS_ERRORS: Final[dict[int, type[ManagementAPIError]]] = {
    400: InvalidRequestError,
    401: APIKeyError,
    403: APIKeyError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequestError,
    503: ServiceUnavailableError,
}
#: Error codes that say the query itself failed (500 ``model_error``: the model raised
#: or returned the wrong number of outputs; 422 ``input_quarantined``: the input hung or
#: crashed replicas before; 502 ``pipeline_output_rejected``: a pipeline stage answered
#: it with what the next stage cannot take). Another 500 (a proxy's, say) stays a
#: ``ManagementAPIError``.
_QUERY_FAILED: Final = frozenset({"model_error", "input_quarantined", "pipeline_output_rejected"})
#: 503 codes of ``/{app}/update`` that say the feedback was not stored.
_NOT_STORED: Final = frozenset({"overloaded", "no_answer"})
#: The connection broke after the request may have been sent.
_BROKEN = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.CloseError)
_MAX_ERROR_TEXT: Final = 500
#: What an update whose answer was lost should do next, by (verb, has a feedback_id).
_UNKNOWN_FATE: Final = {
    ("update", False): "; not sent again, as the feedback may have been stored: pass "
    "feedback_id= to make a retried update count once",
    ("update", True): "; send it again with the same feedback_id: it counts once",
}


@dataclass(frozen=True)
class Endpoint:
    """Where a call goes, and what the messages say about it."""

    base_url: str
    app: str
    verb: str  # "predict" or "update"
    key_sent: bool
    timeout: float

    @property
    def label(self) -> str:
        return f"POST /{self.app}/{self.verb}"

    @property
    def where(self) -> str:
        return f"the query frontend at {self.base_url}"


def _error_body(response: httpx.Response) -> tuple[str, str]:
    """The ``{"error": code, "message": text}`` of an error answer; anything else (a
    proxy's page) quoted, shortened."""
    code, message = "", ""
    try:
        doc = loads(response.content)
    except NotAnAnswerError:
        doc = None
    if isinstance(doc, dict):
        raw_code = doc.get("error", "")
        code = raw_code if isinstance(raw_code, str) else ""
        message = str(doc.get("message") or (raw_code if not code else "") or "")
    if not message:
        message = response.text.strip()[:_MAX_ERROR_TEXT] or response.reason_phrase
    return code, message


def _untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Call:
    """The attempts of one request. After each attempt, ``answered`` or ``failed`` says
    how long to wait before the next one, ``None`` when the answer is the caller's to
    read, or raises the exception to give the caller."""

    def __init__(self, endpoint: Endpoint, policy: RetryPolicy, *, idempotent: bool) -> None:
        self.endpoint = endpoint
        self.policy = policy
        self.idempotent = idempotent  # sending it twice cannot count twice
        self.attempts = 0

    @property
    def _can_retry(self) -> bool:
        return self.attempts <= self.policy.max_retries

    def after(self) -> str:
        """How many attempts were made, for a message (nothing after the first)."""
        return f" (after {self.attempts} attempts)" if self.attempts > 1 else ""

    def answered(self, response: httpx.Response) -> float | None:
        self.attempts += 1
        status = response.status_code
        if status < 300:
            return None
        code, message = _error_body(response)
        if status == 503 and self._can_retry and self.may_resend_refused(code):
            retry_after = retry_after_seconds(response.headers.get("retry-after"), time.time())
            return self._retrying(f"503 {code}".strip(), retry_after)
        raise _status_error(self, status, code, message)

    def may_resend_refused(self, code: str) -> bool:
        """Whether a 503 with this error code may be sent again."""
        return self.idempotent or code in _NOT_STORED

    def failed(self, exc: httpx.HTTPError) -> float:
        self.attempts += 1
        ep = self.endpoint
        if (untrusted := _untrusted(exc)) is not None:
            raise TLSVerificationError(
                f"{ep.label}: {ep.where} serves HTTPS with a certificate this client does "
                f"not trust ({untrusted.verify_message or untrusted.reason}); pass verify= "
                "the CA certificate (PEM file) that signed it, or set SCHOONER_TLS_CA. The "
                "certificate must also name the address dialled",
                code="tls",
            ) from exc
        why = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            if self._can_retry:
                return self._retrying(f"cannot connect: {why}", None)
            raise ServiceUnavailableError(
                f"{ep.label}: cannot reach {ep.where} ({why}){self.after()}: is Schooner "
                "running, and is this its query address (conn.get_query_addr())?",
                code="unreachable",
            ) from exc
        if isinstance(exc, httpx.TimeoutException):
            raise RequestTimeoutError(
                f"{ep.label}: {ep.where} did not answer within {ep.timeout:g} s: it may be "
                "overloaded or stuck (`schooner status`, get_logs()); not retried"
                + _UNKNOWN_FATE.get((ep.verb, self.idempotent), "")
            ) from exc
        if isinstance(exc, _BROKEN):
            if self.idempotent and self._can_retry:
                return self._retrying(f"connection lost: {why}", None)
            raise ServiceUnavailableError(
                f"{ep.label}: the connection to {ep.where} broke before an answer "
                f"({why}){self.after()}" + _UNKNOWN_FATE.get((ep.verb, self.idempotent), ""),
                code="disconnected",
            ) from exc
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            raise InvalidRequestError(f"{ep.label}: not a URL this client can call ({why})")
        raise ManagementAPIError(f"{ep.label} to {ep.where} failed: {why}") from exc

    def _retrying(self, reason: str, retry_after: float | None) -> float:
        wait = self.policy.wait(self.attempts, retry_after)
        logger.info(
            "%s to %s: %s; retry %d of %d in %.2f s",
            self.endpoint.label,
            self.endpoint.base_url,
            reason,
            self.attempts,
            self.policy.max_retries,
            wait,
        )
        return wait


def _status_error(call: Call, status: int, code: str, message: str) -> ManagementAPIError:
    ep = call.endpoint
    cls = (
        PredictionError if code in _QUERY_FAILED else _STATUS_ERRORS.get(status, ManagementAPIError)
    )
    if cls is ManagementAPIError:
        message += " (unexpected answer: the query frontend's log may say more)"
    elif cls is APIKeyError:
        message += (
            ". This client sent an API key (not shown): check that it is a current key "
            f"of app '{ep.app}'"
            if ep.key_sent
            else ". This client sent no API key: pass QueryClient(..., api_key=KEY)"
        )
    elif status == 503:
        message += call.after()
        if not call.may_resend_refused(code):
            message += _UNKNOWN_FATE[("update", False)]
    label = f"{status} {code}" if code else str(status)
    return cls(f"{ep.label} failed ({label}): {message}", status_code=status, code=code)


def not_an_answer(
    call: Call, response: httpx.Response, exc: NotAnAnswerError
) -> ManagementAPIError:
    """The error for a 2xx answer whose body is not what was asked for."""
    ep = call.endpoint
    return ManagementAPIError(
        f"{ep.label}: {ep.where} answered {response.status_code} with a body that is not "
        f"an answer to {ep.verb} ({exc}); is something else listening on that port?",
        status_code=response.status_code,
    )
