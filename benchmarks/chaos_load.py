"""The chaos benchmark's load: closed-loop async clients, every answer recorded and classed.

A ``Stream`` is a named kind of call (predictions to an app, ``/update`` feedback, admin
calls) driven by ``concurrency`` clients, each with its own connection, each sending its
next call when the previous one is answered. Every answer becomes an ``Answer``: when it
was sent and answered (seconds since the run started) and what it was:

    ok        a real answer (a prediction that is not the app's default; any 2xx for
              calls that are not predictions)
    default   HTTP 200 with ``"default": true``: the app's default output
    conn      no HTTP answer: connection refused, reset or closed
    timeout   no answer within the client's timeout
    4xx, 5xx  an HTTP error (``status`` says which)

After an error a client waits ``ERROR_PAUSE`` before its next call, as a client with a
retry loop would, so that a refused port does not become a busy loop that starves the
cluster it measures of CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

ERROR_PAUSE = 0.02
CLIENT_TIMEOUT = 5.0
GOOD = "ok"
KINDS = ("ok", "default", "conn", "timeout", "4xx", "5xx")

# One call: given the client and its index, send one request; the answer's status and body.
Call = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


@dataclass(frozen=True, slots=True)
class Answer:
    stream: str
    start: float
    end: float
    kind: str
    status: int = 0

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass
class Stream:
    """``concurrency`` clients calling ``call`` in a loop from ``start_at`` (seconds into
    the run) until the run ends; ``prediction``: 200 answers are classed by ``default``;
    ``pause``: seconds a client waits after each answer (0: closed loop); ``slo_bound``:
    its answers are held to the app's SLO; ``recovers``: whether "normal again" means
    anything for it (not for a load that is itself the fault)."""

    name: str
    concurrency: int
    call: Call
    prediction: bool = True
    start_at: float = 0.0
    pause: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    slo_bound: bool = True
    recovers: bool = True


def classify(response: httpx.Response, prediction: bool) -> str:
    status = response.status_code
    if 200 <= status < 300:
        if not prediction:
            return "ok"
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return "5xx"  # a 200 that is not JSON is no answer
        if isinstance(doc, dict) and doc.get("default"):
            return "default"
        return "ok"
    if 400 <= status < 500:
        return "4xx"
    return "5xx"


class Run:
    """The answers of one run; times are seconds since ``t0`` (``time.monotonic``)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.answers: list[Answer] = []
        self.stop = asyncio.Event()

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def _client(self, stream: Stream, index: int) -> None:
        if stream.start_at > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), stream.start_at - self.now())
        timeout = httpx.Timeout(CLIENT_TIMEOUT, connect=CLIENT_TIMEOUT)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=stream.headers) as c:
            while not self.stop.is_set():
                start = self.now()
                status = 0
                try:
                    response = await stream.call(c, index)
                    status = response.status_code
                    kind = classify(response, stream.prediction)
                except httpx.TimeoutException:
                    kind = "timeout"
                except (httpx.TransportError, OSError):
                    kind = "conn"
                self.answers.append(Answer(stream.name, start, self.now(), kind, status))
                pause = stream.pause
                if kind not in (GOOD, "default"):
                    pause = max(ERROR_PAUSE, pause)
                if pause > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), pause)

    async def drive(
        self,
        streams: list[Stream],
        duration: float,
        fault_at: float,
        fault: Callable[[], Awaitable[dict[str, Any]]],
    ) -> tuple[float, dict[str, Any]]:
        """Run ``streams`` for ``duration`` seconds, calling ``fault`` at ``fault_at``;
        returns when the fault happened and what it reported."""
        tasks = [
            asyncio.create_task(self._client(s, i)) for s in streams for i in range(s.concurrency)
        ]
        try:
            await asyncio.sleep(max(0.0, fault_at - self.now()))
            fault_time = self.now()
            info = await fault()
            await asyncio.sleep(max(0.0, duration - self.now()))
        finally:
            self.stop.set()
            # Calls in flight get the client timeout to finish, then are cancelled.
            _, pending = await asyncio.wait(tasks, timeout=CLIENT_TIMEOUT + 1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return fault_time, info


# ---------------------------------------------------------------------------- summaries


def _quantile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000, 1)


def recovery(answers: list[Answer], fault_time: float, end: float, hold: float) -> float | None:
    """Seconds from the fault until the first moment from which every answer is good to
    the end of the run, that stretch lasting at least ``hold`` seconds; 0.0 when no answer
    after the fault went wrong; ``None`` when the run ended before such a stretch."""
    after = sorted((a for a in answers if a.end >= fault_time), key=lambda a: a.end)
    bad = [a for a in after if a.kind != GOOD]
    if not bad:
        return 0.0 if after else None
    last_bad = bad[-1].end
    good_after = [a for a in after if a.end > last_bad and a.kind == GOOD]
    if not good_after or end - good_after[0].end < hold:
        return None
    # A call sent before the last bad answer started says nothing about the time after it.
    return max(0.0, max(good_after[0].start, bad[-1].start) - fault_time)


def summarize(
    answers: list[Answer], fault_time: float, end: float, slo: float | None, hold: float | None
) -> dict[str, Any]:
    """Counts by kind (and by HTTP status for errors), latencies before and after the
    fault, the share of answers after the fault slower than ``slo``, and recovery
    (``hold``: seconds of good answers it needs); each left out (None) when not given."""
    counts = {kind: sum(1 for a in answers if a.kind == kind) for kind in KINDS}
    statuses: dict[str, int] = {}
    for a in answers:
        if a.kind in ("4xx", "5xx"):
            statuses[str(a.status)] = statuses.get(str(a.status), 0) + 1
    before = [a.latency for a in answers if a.end < fault_time]
    after = [a.latency for a in answers if a.start >= fault_time]
    over = None if slo is None or not after else sum(1 for x in after if x > slo)
    return {
        "requests": len(answers),
        **counts,
        "statuses": statuses,
        "p50_before_ms": _quantile_ms(before, 0.5),
        "p99_before_ms": _quantile_ms(before, 0.99),
        "p50_after_ms": _quantile_ms(after, 0.5),
        "p99_after_ms": _quantile_ms(after, 0.99),
        "over_slo_after_pct": None if over is None else round(100.0 * over / len(after), 1),
        "recovered_after_s": None if hold is None else recovery(answers, fault_time, end, hold),
        "recovery_judged": hold is not None,
    }
