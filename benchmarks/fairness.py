"""Isolation between tenants: does one app's large bodies push another app past its SLO?

    python -m benchmarks.fairness [--duration 15] [--big-clients 0,1,2] [--burst 16]

Starts one local Schooner cluster with two apps of input type ``doubles``: ``big``
(a model answering one number per input, SLO 10 s) and ``small`` (the same model, SLO
100 ms). For each count of big-body clients it runs, for ``--duration`` seconds, that
many client processes posting legal bodies just under the 10 MiB limit
(``{"input": [~500,000 doubles]}``) to ``big`` back to back, and one client process
posting small queries to ``small`` back to back; it prints ``small``'s p50/p99 and the
share of its answers over 100 ms (or default), what the big-body clients got, and the
query frontend's peak RSS. ``--burst N`` then sends N big bodies at once and prints
their statuses and the frontend's peak RSS meanwhile.

The clients are separate processes so that the load generator's own GIL does not show
up as the server's latency. Numbers from a shared 2-core machine are noisy: compare runs
taken side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import random
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from benchmarks.contenders import Settings, _local_cluster
from benchmarks.procs import wait_http_ok

SMALL_SLO_MS = 100.0
BIG_LIMIT = 10 * 1024 * 1024


def big_body(shape: str = "vector") -> bytes:
    """A legal body just under the default 10 MiB limit: one input of ~560,000 doubles
    ("vector"), or an ``input_batch`` of 5,000 inputs of ~110 doubles ("batch")."""
    rng = random.Random(7)
    rows, width = (1, 800_000) if shape == "vector" else (5_000, 160)
    values = [[round(rng.random(), 15) for _ in range(width)] for _ in range(rows)]
    while True:
        doc = {"input": values[0]} if shape == "vector" else {"input_batch": values}
        body = orjson.dumps(doc)
        if len(body) <= BIG_LIMIT:
            return body
        values = [row[: len(row) * 99 // 100] for row in values]


def _big_client(url: str, body: bytes, duration: float, out: Any) -> None:
    stop_at = time.monotonic() + duration
    seen: Counter[str] = Counter()
    with httpx.Client(timeout=60, headers={"content-type": "application/json"}) as http:
        while time.monotonic() < stop_at:
            try:
                reply = http.post(url, content=body)
                seen[str(reply.status_code)] += 1
                if reply.status_code == 503:  # refused at once: back off as told
                    time.sleep(float(reply.headers.get("retry-after", "1")) / 10)
            except httpx.HTTPError as exc:
                seen[type(exc).__name__] += 1
    out.put(dict(seen))


def _small_client(url: str, duration: float, out: Any) -> None:
    stop_at = time.monotonic() + duration
    rng = random.Random(11)
    latencies: list[float] = []
    defaults = errors = 0
    with httpx.Client(timeout=30) as http:
        while time.monotonic() < stop_at:
            body = orjson.dumps({"input": [rng.random() for _ in range(8)]})
            start = time.perf_counter()
            try:
                reply = http.post(url, content=body, headers={"content-type": "application/json"})
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append((time.perf_counter() - start) * 1000)
            if reply.status_code != 200:
                errors += 1
            elif reply.json()["default"]:
                defaults += 1
    out.put({"latencies": latencies, "defaults": defaults, "errors": errors})


class PeakRss:
    """Samples, in a thread, the RSS of a process (``peak``) and of its children (the
    body-parsing workers: ``children_peak``), in MiB."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0.0
        self.children_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                rss = self.proc.memory_info().rss
                children = 0
                for child in self.proc.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        children += child.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss / 2**20)
            self.children_peak = max(self.children_peak, children / 2**20)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run_scenario(
    base: str, big_clients: int, body: bytes, duration: float, query_pid: int
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_big_client, args=(f"{base}/big/predict", body, duration, out))
        for _ in range(big_clients)
    ]
    procs.append(ctx.Process(target=_small_client, args=(f"{base}/small/predict", duration, out)))
    with PeakRss(query_pid) as rss:
        for p in procs:
            p.start()
        results = [out.get(timeout=duration + 120) for _ in procs]
        for p in procs:
            p.join()
    small = next(r for r in results if "latencies" in r)
    big: Counter[str] = Counter()
    for r in results:
        if "latencies" not in r:
            big.update(r)
    lat = small["latencies"]
    over = sum(1 for v in lat if v > SMALL_SLO_MS) + small["defaults"]
    return {
        "big_clients": big_clients,
        "small_requests": len(lat),
        "p50_ms": statistics.median(lat) if lat else float("nan"),
        "p99_ms": quantile(lat, 0.99),
        "over_slo_pct": 100.0 * over / max(1, len(lat)),
        "small_errors": small["errors"],
        "big_answers": dict(big),
        "peak_rss_mib": rss.peak,
        "workers_peak_rss_mib": rss.children_peak,
    }


def run_burst(base: str, count: int, body: bytes, query_pid: int) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    retry_after: set[str] = set()
    lock = threading.Lock()

    def one() -> None:
        with httpx.Client(timeout=120) as http:
            try:
                reply = http.post(
                    f"{base}/big/predict",
                    content=body,
                    headers={"content-type": "application/json"},
                )
                key = str(reply.status_code)
                if reply.status_code == 503:
                    with lock:
                        retry_after.add(reply.headers.get("retry-after", "none"))
            except httpx.HTTPError as exc:
                key = type(exc).__name__
        with lock:
            statuses[key] += 1

    with PeakRss(query_pid) as rss:
        threads = [threading.Thread(target=one) for _ in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return {"burst": count, "statuses": dict(statuses), "retry_after": sorted(retry_after),
            "peak_rss_mib": rss.peak, "workers_peak_rss_mib": rss.children_peak}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fairness")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--big-clients", default="0,1,2")
    parser.add_argument("--burst", type=int, default=16, help="0: no burst")
    parser.add_argument("--shape", choices=("vector", "batch"), default="vector")
    args = parser.parse_args(argv)
    from admin.deployers.python import deploy_python_closure  # the admin client: only here

    settings = Settings(out_dir=Path("benchmarks/results/fairness"), concurrencies=(1,))
    with _local_cluster("fairness", settings) as (manager, conn):
        conn.start()

        def one_number(xs: Any) -> list[float]:
            return [float(len(x)) for x in xs]

        deploy_python_closure(conn, "counter", "1", "doubles", one_number)
        conn.register_application("big", "doubles", -1.0, 10_000_000)
        conn.register_application("small", "doubles", -1.0, round(SMALL_SLO_MS * 1000))
        for app in ("big", "small"):
            conn.link_model_to_app(app, "counter")
        base = f"http://{conn.get_query_addr()}"
        for app in ("big", "small"):
            wait_http_ok(f"{base}/{app}/predict", b'{"input":[1.0]}', 120, None)
        query_pid = next(int(p["pid"]) for p in manager.processes() if p["role"] == "query")
        body = big_body(args.shape)
        rows = []
        for n in (int(c) for c in args.big_clients.split(",")):
            row = run_scenario(base, n, body, args.duration, query_pid)
            print(row, flush=True)
            rows.append(row)
        print()
        print(f"{'big clients':>11} | {'small reqs':>10} | {'p50 ms':>7} | {'p99 ms':>7} | "
              f"{'>SLO %':>6} | {'peak RSS MiB':>12} | {'workers MiB':>11} | "
              "big-body answers")  # fmt: skip
        for r in rows:
            print(f"{r['big_clients']:>11} | {r['small_requests']:>10} | {r['p50_ms']:>7.1f} | "
                  f"{r['p99_ms']:>7.1f} | {r['over_slo_pct']:>6.1f} | {r['peak_rss_mib']:>12.0f} | "
                  f"{r['workers_peak_rss_mib']:>11.0f} | "
                  f"{r['big_answers']}")  # fmt: skip
        if args.burst:
            burst = run_burst(base, args.burst, body, query_pid)
            print(f"\nburst of {burst['burst']} big bodies at once: {burst['statuses']}, "
                  f"Retry-After {burst['retry_after']}, query frontend peak RSS "
                  f"{burst['peak_rss_mib']:.0f} MiB (its parsing workers: "
                  f"{burst['workers_peak_rss_mib']:.0f} MiB)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
