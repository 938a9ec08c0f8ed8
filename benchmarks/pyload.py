"""A closed-loop HTTP/1.1 load generator for what wrk cannot drive: a chain of calls, each
answer's ``output`` posted as the next call's ``input``, timed as one request.

    python -m benchmarks.pyload URL [URL ...] --concurrency 64 --duration 3 [--mode text]

``concurrency`` clients, each with one keep-alive connection per host, each sending its
next request when the previous one (the whole chain) is answered; no coordinated-omission
correction, as wrk. One URL is a plain closed loop, like wrk with ``post.lua``; several
URLs are a client-side chain (``/feat/predict`` then ``/clf/predict``). The same
generator drives both sides of a comparison, so one call against two costs the client
what it really costs it.

The inputs (``--mode text``): deterministic synthetic sentences
(``benchmarks.baselines.text_model.corpus``), ``{"input": "<sentence>"}``, cycled.

Prints one line, ``BENCH_JSON {...}``, with the fields of ``benchmarks.wrk.WrkResult``
(``requests`` counts chains; ``http_requests`` every call) that ``run_pyload`` parses.
A chain whose call answers non-2xx, or the app's default (``"default":true``), stops
there and counts as such. Written on raw asyncio protocols (uvloop when installed): a
request is a ``bytes`` write, an answer a Content-Length read, so that the client costs
the server's machine as little CPU as it can in Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

from benchmarks.wrk import API_KEY_ENV, WrkResult, bench_json

TEXT_POOL = 4096
TEXT_SEED = 7
ERROR_PAUSE = 0.02


class HttpError(ConnectionError):
    """The connection closed, or an answer this client cannot read (no Content-Length)."""


@dataclass
class Tally:
    """What the clients saw: a latency (ns) per finished chain, and the counts."""

    latencies_ns: list[int] = field(default_factory=list)
    http_requests: int = 0
    non2xx: int = 0
    defaults: int = 0
    errors: int = 0
    timeouts: int = 0


def percentile(ordered: Sequence[int], p: float) -> int:
    """The nearest-rank ``p``-th percentile of ``ordered`` (sorted ascending); 0 if empty."""
    if not ordered:
        return 0
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(tally: Tally, concurrency: int, duration_s: float) -> dict[str, Any]:
    """The BENCH_JSON document of a run: ``WrkResult``'s fields plus ``http_requests``."""
    ordered = sorted(tally.latencies_ns)
    n = len(ordered)

    def ms(ns: float) -> float:
        return ns / 1e6

    return {
        "concurrency": concurrency,
        "threads": 1,
        "duration_s": duration_s,
        "requests": n,
        "rps": n / duration_s if duration_s > 0 else 0.0,
        "p50_ms": ms(percentile(ordered, 50)),
        "p90_ms": ms(percentile(ordered, 90)),
        "p99_ms": ms(percentile(ordered, 99)),
        "p999_ms": ms(percentile(ordered, 99.9)),
        "mean_ms": ms(sum(ordered) / n) if n else 0.0,
        "max_ms": ms(ordered[-1]) if n else 0.0,
        "non2xx": tally.non2xx,
        "defaults": tally.defaults,
        "socket_errors": tally.errors + tally.timeouts,
        "http_requests": tally.http_requests,
    }


def content_length(head: bytes) -> int:
    """The Content-Length of an answer's header block (status line included)."""
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            return int(value.strip())
    raise HttpError(f"an answer without Content-Length: {head[:200]!r}")


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._transport: asyncio.Transport | None = None
        self._lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, but are one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._waiter is None:
            return
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        waiter = self._waiter
        try:
            head = bytes(self._buf[:end])
            total = end + 4 + content_length(head)
            if len(self._buf) < total:
                return
            status = int(head[9:12])
        except (HttpError, ValueError) as exc:
            self._waiter = None
            waiter.set_exception(HttpError(str(exc)))
            return
        body = bytes(self._buf[end + 4 : total])
        del self._buf[:total]
        self._waiter = None
        waiter.set_result((status, body))

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = exc or HttpError("the server closed the connection")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(HttpError(str(self._lost)))
        self._waiter = None

    def request(self, raw: bytes) -> asyncio.Future[tuple[int, bytes]]:
        if self._lost is not None or self._transport is None:
            raise HttpError(f"connection closed: {self._lost}")
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(raw)
        return waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass(frozen=True)
class Call:
    """One URL of the chain: where to connect and the request line and headers to send."""

    host: str
    port: int
    head: bytes  # up to the Content-Length value

    @classmethod
    def of(cls, url: str, api_key: str | None = None) -> Call:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http:// URLs are driven, not {url!r}")
        port = parts.port or 80
        path = parts.path or "/"
        auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}:{port}\r\n{auth}"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode("ascii")
        return cls(parts.hostname, port, head)

    def raw(self, body: bytes) -> bytes:
        return b"%s%d\r\n\r\n%s" % (self.head, len(body), body)


def text_bodies(n: int = TEXT_POOL, seed: int = TEXT_SEED) -> list[bytes]:
    from benchmarks.baselines.text_model import corpus

    return [orjson.dumps({"input": text}) for text, _ in corpus(n, seed)]


def next_body(answer: bytes) -> bytes:
    """The next call's body from an answer: its ``output`` as the ``input``."""
    return orjson.dumps({"input": orjson.loads(answer)["output"]})


async def _client(
    index: int,
    concurrency: int,
    calls: Sequence[Call],
    bodies: Sequence[bytes],
    stop_at: float,
    tally: Tally,
) -> None:
    loop = asyncio.get_running_loop()
    conns: dict[tuple[str, int], Connection] = {}

    async def connection(call: Call) -> Connection:
        key = (call.host, call.port)
        conn = conns.get(key)
        if conn is None:
            _, conn = await loop.create_connection(Connection, call.host, call.port)
            conns[key] = conn
        return conn

    i = index
    last = len(calls) - 1
    try:
        while time.perf_counter() < stop_at:
            body = bodies[i % len(bodies)]
            i += concurrency
            start = time.perf_counter_ns()
            try:
                for k, call in enumerate(calls):
                    conn = await connection(call)
                    status, answer = await conn.request(call.raw(body))
                    tally.http_requests += 1
                    if not 200 <= status < 300:
                        tally.non2xx += 1
                        break
                    if b'"default":true' in answer:
                        tally.defaults += 1
                        break
                    if k < last:
                        body = next_body(answer)
            except (OSError, HttpError, ValueError, KeyError, TypeError):
                tally.errors += 1
                for conn in conns.values():
                    conn.close()
                conns.clear()
                await asyncio.sleep(ERROR_PAUSE)
                continue
            tally.latencies_ns.append(time.perf_counter_ns() - start)
    finally:
        for conn in conns.values():
            conn.close()


async def drive(
    calls: Sequence[Call],
    bodies: Sequence[bytes],
    concurrency: int,
    duration: float,
    timeout_s: float = 5.0,
) -> dict[str, Any]:
    """Run ``concurrency`` closed-loop clients for ``duration`` seconds; the summary.

    No request is sent after ``duration``; one still unanswered ``timeout_s`` later is
    cancelled and counted as a socket error (a timeout), as wrk counts them."""
    tally = Tally()
    start = time.perf_counter()
    stop_at = start + duration
    tasks = [
        asyncio.ensure_future(_client(i, concurrency, calls, bodies, stop_at, tally))
        for i in range(concurrency)
    ]
    _, pending = await asyncio.wait(tasks, timeout=duration + timeout_s)
    for task in pending:
        task.cancel()
        tally.timeouts += 1
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            tally.errors += 1
    return summarize(tally, concurrency, time.perf_counter() - start)


def _run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_pyload(
    urls: Sequence[str],
    *,
    concurrency: int,
    duration: float,
    mode: str = "text",
    cpu: int | None = None,
    timeout_s: float = 5.0,
    api_key: str | None = None,
) -> WrkResult:
    """Run this generator in its own process (pinned to ``cpu`` with taskset, as wrk),
    against the chain ``urls``; its result as a ``WrkResult`` (requests = chains)."""
    argv = [sys.executable, "-m", "benchmarks.pyload", *urls]
    argv += ["--concurrency", str(concurrency), "--duration", f"{duration:g}"]
    argv += ["--mode", mode, "--timeout", f"{timeout_s:g}"]
    timeout = duration + timeout_s + 60
    doc = bench_json(argv, "pyload", cpu=cpu, api_key=api_key, timeout_s=timeout)
    doc.pop("http_requests", None)
    return WrkResult(**doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pyload", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("urls", nargs="+", help="the chain: each answer's output feeds the next")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--mode", choices=("text",), default="text")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0:
        parser.error("--concurrency must be >= 1 and --duration > 0")
    api_key = os.environ.get(API_KEY_ENV) or None
    calls = [Call.of(url, api_key) for url in args.urls]
    summary = _run(drive(calls, text_bodies(), args.concurrency, args.duration, args.timeout))
    print("BENCH_JSON " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
