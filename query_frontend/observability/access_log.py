"""The access log: one JSON line per predict/update request, on the ``schooner.access``
logger (the query frontend's stderr, which a local cluster keeps in logs/query.log).

    {"time": "2026-12-04T17:45:01.123456Z", "request_id": "4f9c2ab1d07e-2a",
     "method": "POST", "path": "/sums/predict", "app": "sums", "status": 200,
     "models": ["summer:1"], "default": false, "default_reason": null, "queries": 1,
     "cached": 0, "queue_ms": 0.041, "batch_wait_ms": 0.0, "model_ms": 0.012,
     "total_ms": 0.612, "client": "127.0.0.1:53422"}

Never the body, never a header's value (API keys): only what is above. A client's
``X-Request-Id`` that was not sane (``requests``) was replaced: the line says
``"request_id_replaced": true``.

Sampling (``--access-log-sample RATE``, ``SCHOONER_ACCESS_LOG_SAMPLE``, 0..1, default 1:
every request, which is what a new user looks for): a request is logged with
probability RATE, **except errors (status >= 400) and answers holding a default, which
are always logged** — they are what one searches the log for, and are rarely numerous.
RATE 0 logs only those.

A cap (``--access-log-max-per-s N``, ``SCHOONER_ACCESS_LOG_MAX_PER_S``, default 1000; 0:
none) bounds the lines written in any one second, errors and defaults included: a flood
of requests (or of bad ones, from an attacker) cannot fill the disk or take the frontend's
CPU for its log. A user's traffic below the cap is logged line for line; above it, the
next line written says how many were left out: ``"suppressed": n``. The frontend's
metrics count every request regardless.

The event loop never writes: the handler hands the request's values (a tuple) to a
queue, and the ``access-log`` thread builds the JSON lines and emits them, so a slow
disk or a full pipe delays the log, never an answer. The thread wakes at most every
``FLUSH_INTERVAL_S`` and emits what has queued up since as **one record of one or more
lines** (joined by newlines, at most ``MAX_LINES_PER_RECORD``): under load that is one
wake-up, one LogRecord, one format and one write for many requests, where waking and
emitting per request cost several times the CPU (the thread shares the interpreter's
lock with the event loop). With the frontend's own handler (bare ``%(message)s``) the
output is the same JSON lines, up to ``FLUSH_INTERVAL_S`` late. Lines waiting when the
frontend stops are written before it exits (``close``).
"""

from __future__ import annotations

import logging
import queue
import random
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from management_frontend.state.keys import arm_name
from query_frontend.observability.timing import Split
from query_frontend.queries import Expired, RequestTrace

__all__ = [
    "ACCESS_LOGGER",
    "DEFAULT_MAX_PER_S",
    "FLUSH_INTERVAL_S",
    "MAX_LINES_PER_RECORD",
    "AccessLog",
    "configure_access_logger",
    "models_of",
    "peer_of",
]

ACCESS_LOGGER = "schooner.access"
#: Lines emitted as one log record at most.
MAX_LINES_PER_RECORD = 256
#: How long the writer lets lines gather after the first before it writes them.
FLUSH_INTERVAL_S = 0.05

#: Lines a second at most, unless configured otherwise (0: no cap).
DEFAULT_MAX_PER_S = 1000

# What the loop hands the writer: (unix time, trace, method, path, status, split, client,
# lines left out by the cap just before this one).
_Entry = tuple[float, RequestTrace, str, str, int, Split, str | None, int]


def configure_access_logger(stream: Any = None) -> None:
    """Entry points: the access log's lines bare (no level or logger name: JSON lines),
    on stderr, not also through the root logger's handlers."""
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)


class AccessLog:
    """Takes finished requests on the loop (``wants``, then ``log``) and writes their
    lines on a thread of its own (see the module). ``start`` before, ``close`` after."""

    def __init__(
        self,
        sample: float = 1.0,
        logger: logging.Logger | None = None,
        max_per_s: int = DEFAULT_MAX_PER_S,
        clock: Any = time.monotonic,
    ) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"the access log's sample rate must be within 0..1, got {sample}")
        if max_per_s < 0:
            raise ValueError(f"the access log's cap must be >= 0 lines/s, got {max_per_s}")
        self.sample = sample
        self.max_per_s = max_per_s
        self._clock = clock
        self._second = -1  # the second (of ``clock``) the lines are counted in
        self._lines = 0  # lines wanted in that second
        self._suppressed = 0  # lines the cap left out since the last one written
        self.logger = logger if logger is not None else logging.getLogger(ACCESS_LOGGER)
        self._random = random.random
        self._queue: queue.SimpleQueue[_Entry | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def wants(self, status: int, trace: RequestTrace) -> bool:
        """Whether this request gets a line (the sample, errors and defaults, the cap)."""
        if (
            self.sample < 1.0
            and status < 400
            and self._random() >= self.sample
            and _default_reason(trace) is None
        ):
            return False  # sampled out
        if self.max_per_s:
            second = int(self._clock())
            if second != self._second:
                self._second, self._lines = second, 0
            if self._lines >= self.max_per_s:
                self._suppressed += 1
                return False
            self._lines += 1
        return True

    def log(
        self,
        trace: RequestTrace,
        method: str,
        path: str,
        status: int,
        timing: Split,
        client: str | None,
    ) -> None:
        """Queue the line of a finished request: costs the loop a tuple and a put."""
        suppressed, self._suppressed = self._suppressed, 0
        self._queue.put((time.time(), trace, method, path, status, timing, client, suppressed))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._write, name="access-log", daemon=True)
            self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what waits, then stop the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout_s)

    def _write(self) -> None:
        waiting = self._queue
        info = self.logger.info
        clock = _Clock()
        stopping = False
        caught_up = True  # the last write emptied the queue: let the next lines gather
        while not stopping:
            batch = [waiting.get()]  # waits for the first; takes what else has queued up
            if caught_up and batch[0] is not None:
                time.sleep(FLUSH_INTERVAL_S)
            while len(batch) < MAX_LINES_PER_RECORD and not waiting.empty():
                batch.append(waiting.get_nowait())
            caught_up = waiting.empty()
            lines: list[str] = []
            for entry in batch:
                if entry is None:  # close(): write the rest, then stop
                    stopping = True
                    continue
                try:
                    lines.append(line(*entry, clock=clock))
                except Exception:  # a bad line is not worth the log
                    logging.getLogger(__name__).exception("could not make an access-log line")
            if lines:
                info("\n".join(lines))


def line(
    at: float,
    trace: RequestTrace,
    method: str,
    path: str,
    status: int,
    timing: Split,
    client: str | None,
    suppressed: int = 0,
    clock: _Clock | None = None,
) -> str:
    """The JSON line of one request."""
    reason = _default_reason(trace)
    record: dict[str, Any] = {
        "time": (clock or _Clock()).iso(at),
        "request_id": trace.id,
        "method": method,
        "path": path,
        "app": trace.app,
        "status": status,
        "models": models_of(trace),
        "default": reason is not None,
        "default_reason": reason,
        "queries": _inputs(trace),
        "cached": trace.cached,
        "queue_ms": round(timing.queue * 1000, 3),
        "batch_wait_ms": round(timing.batch * 1000, 3),
        "model_ms": round(timing.model * 1000, 3),
        "total_ms": round(timing.total * 1000, 3),
        "client": client,
    }
    if trace.replaced:
        record["request_id_replaced"] = True
    if suppressed:
        record["suppressed"] = suppressed
    return orjson.dumps(record).decode()


class _Clock:
    """ISO 8601 UTC times, the date and time of day formatted once per second."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def iso(self, at: float) -> str:
        second = int(at)
        if second != self._second:
            self._second = second
            self._text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return "%s.%06dZ" % (self._text, int((at - second) * 1e6))  # noqa: UP031


def _inputs(trace: RequestTrace) -> int:
    if trace.outcomes is not None:
        return len(trace.outcomes)
    if trace.answers is not None:
        return len(trace.answers)
    return len(trace.queries) + trace.cached


def _default_reason(trace: RequestTrace) -> str | None:
    """Why some query of the request got the app's default (the first), or None."""
    if trace.outcomes is not None:
        for outcome in trace.outcomes:
            if isinstance(outcome, Expired):
                return outcome.reason
    elif trace.answers is not None:
        for answer in trace.answers:
            if isinstance(answer.outcome, Expired):
                return answer.outcome.reason
    return None


def models_of(trace: RequestTrace) -> list[str]:
    """The ``model:version`` of each model that answered a query of the request."""
    if trace.models is not None:
        return trace.models
    if trace.answers is not None:
        seen: dict[str, None] = {}
        for answer in trace.answers:
            seen.update(dict.fromkeys(answer.models))
        return list(seen)
    route = trace.route
    if route is None or route.model_key is None or not trace.outcomes:
        return []
    if any(isinstance(o, bytes) for o in trace.outcomes):
        return [arm_name(*route.model_key)]
    return []


def peer_of(receive: Any) -> str | None:
    """The client's ``host:port`` from a handler's ``receive``: the hot path's
    ``Exchange.receive`` (its connection's transport), or an ASGI server's, whose
    object keeps the scope (read only for a line that is written)."""
    owner = getattr(receive, "__self__", None)
    peer = getattr(getattr(owner, "connection", None), "peer", None)
    if callable(peer):  # http.protocol's connection: it keeps the address
        found: str | None = peer()
        return found
    address: Any = None
    scope = getattr(owner, "scope", None)
    if isinstance(scope, dict):
        address = scope.get("client")
    if isinstance(address, tuple | list) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return None
