"""Drive one HTTP endpoint with wrk and parse what benchmarks/post.lua reports.

wrk is closed-loop: each of its ``concurrency`` connections sends the next request when
the previous answer arrives, so latencies are those of a saturated server at c=16/64
(no coordinated-omission correction, as in wrk 4).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).with_name("post.lua")
# The API key post.lua sends, handed over in the environment.
API_KEY_ENV = "SCHOONER_BENCH_API_KEY"
INSTALL_HINT = (
    "wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk`"
)


class WrkError(RuntimeError):
    """wrk failed, or did not print the line post.lua writes in done()."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms) and answer counts."""

    concurrency: int
    threads: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    non2xx: int
    defaults: int
    socket_errors: int

    @property
    def default_ratio(self) -> float:
        return self.defaults / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["default_ratio"] = self.default_ratio
        return doc


def find_wrk() -> str | None:
    return shutil.which("wrk")


def bench_json(
    argv: list[str], what: str, *, cpu: int | None, api_key: str | None, timeout_s: float
) -> dict[str, Any]:
    """Run a load generator (``what``: its name) pinned to ``cpu`` with taskset when
    there is one, with the app's API key in ``API_KEY_ENV`` (never on its command line);
    the JSON of its ``BENCH_JSON`` line, or ``WrkError`` saying what it printed."""
    if cpu is not None:
        taskset = shutil.which("taskset")
        if taskset:
            argv = [taskset, "-c", str(cpu), *argv]
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    if api_key is not None:
        env[API_KEY_ENV] = api_key
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, check=False, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(
            f"{what} did not finish within {exc.timeout:.0f} s: {' '.join(argv)}"
        ) from exc
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise WrkError(
            f"{what} exited with {done.returncode} and no result line\n"
            f"command: {' '.join(argv)}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    doc: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
    return doc


def run_wrk(
    wrk: str,
    url: str,
    *,
    concurrency: int,
    duration: float,
    mode: str,
    threads: int = 1,
    cpu: int | None = None,
    nfeatures: int = 10,
    timeout_s: float = 5.0,
    api_key: str | None = None,
) -> WrkResult:
    """Run wrk against ``url`` for ``duration`` seconds; ``cpu`` pins it with taskset.

    ``api_key`` goes to ``post.lua`` in wrk's environment (``SCHOONER_BENCH_API_KEY``),
    not on its command line, where ``ps`` would show it."""
    threads = max(1, min(threads, concurrency))
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
        "-s",
        str(LUA_SCRIPT),
        url,
        "--",
        mode,
        str(nfeatures),
    ]
    doc = bench_json(argv, "wrk", cpu=cpu, api_key=api_key, timeout_s=duration + timeout_s + 30)
    lat = doc["latency_us"]
    seconds = doc["duration_us"] / 1e6
    errors = doc["errors"]
    return WrkResult(
        concurrency=concurrency,
        threads=threads,
        duration_s=seconds,
        requests=doc["requests"],
        rps=doc["requests"] / seconds if seconds else 0.0,
        p50_ms=lat["p50"] / 1e3,
        p90_ms=lat["p90"] / 1e3,
        p99_ms=lat["p99"] / 1e3,
        p999_ms=lat["p99.9"] / 1e3,
        mean_ms=lat["mean"] / 1e3,
        max_ms=lat["max"] / 1e3,
        non2xx=doc["non2xx"],
        defaults=doc["defaults"],
        socket_errors=errors["connect"] + errors["read"] + errors["write"] + errors["timeout"],
    )
