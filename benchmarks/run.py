"""Schooner's benchmark: every contender on 127.0.0.1, driven by wrk, in one run.

    python -m benchmarks.run [--duration 10] [--concurrency 1,16,64] [--rounds 1]
                             [--only minimal,schooner] [--out benchmarks/results]

Starts each contender in turn (see ``benchmarks.contenders``), drives every endpoint with
wrk and ``benchmarks/post.lua`` at each concurrency for a fixed duration (after a short
warm-up; the pipeline contenders of issue 17 with ``benchmarks.pyload`` instead, which can
chain two calls, same concurrency, duration and placement), then prints a results table
and the targets of issues 3, 12-15 and 17 as ratios measured in this run, and writes
``results.json`` and ``throughput_vs_p99.png`` to the out dir.

Rounds (``--rounds N``): the selected groups run N times, interleaved (A, B, C, A, B, C,
...), so that a drift of the machine's speed spreads over every contender instead of
landing on one. Each group's servers are started at the start of its turn and stopped at
its end, every round: only the measured group's processes are alive while wrk runs.
Within a group, the targets are driven in the listed order in odd rounds and in reverse
in even ones (they share the group's servers: whichever runs second finds them warm). The
tables and ratios are the medians over the rounds (each figure its own median);
``results.json`` keeps every round's raw rows under ``rounds``.

CPU placement (``--pin``): on a 2-core machine the load generator competes with the server.
``none`` (the default) lets the kernel schedule wrk (one thread, so at most one core) and
the servers over both cores, as the issue's measured facts were taken; multi-process
contenders (Schooner's frontend + model replica, Ray's proxy + replica) can then use the
second core when wrk leaves it idle. ``split`` pins wrk to the last CPU and every
server process of the contender to the others: each contender gets exactly one core,
which is fair to the single-process baselines and hard on Schooner and Ray.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import report
from benchmarks.contenders import DEFAULT_RAY_PYTHON, GROUPS, PYLOAD_GROUPS, Settings, Target
from benchmarks.procs import cpu_seconds, pin
from benchmarks.pyload import run_pyload
from benchmarks.wrk import INSTALL_HINT, WrkError, WrkResult, find_wrk, run_wrk

PROFILE_TARGET = "schooner-sklearn"
# How long each target's processes are watched idle, to take their idle CPU out of the
# CPU per request.
IDLE_SAMPLE_S = 1.0


@dataclass(frozen=True)
class Placement:
    server_cpus: set[int] | None
    wrk_cpu: int | None

    def describe(self) -> str:
        if self.server_cpus is None:
            return "no pinning: servers and wrk share all CPUs"
        return f"servers pinned to CPU {sorted(self.server_cpus)}, wrk to CPU {self.wrk_cpu}"


def placement(mode: str) -> Placement:
    cpus = sorted(os.sched_getaffinity(0))
    if mode == "none" or len(cpus) < 2 or not shutil.which("taskset"):
        return Placement(None, None)
    return Placement(set(cpus[:-1]), cpus[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every selected group this many times, interleaved; report the medians",
    )
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each run")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated, e.g. 1,16,64")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated contender groups (default: all of {', '.join(GROUPS)})",
    )
    parser.add_argument(
        "--targets",
        default="",
        help="comma-separated target names to drive within the groups, e.g. "
        "minimal-sklearn,schooner-sklearn (default: every target of each group)",
    )
    parser.add_argument("--pin", choices=("none", "split"), default="none")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--slo-ms", type=float, default=100.0, help="SLO of Schooner's apps")
    parser.add_argument("--ray-python", type=Path, default=DEFAULT_RAY_PYTHON)
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="after a measured run, profile the query frontend of --py-spy-targets "
        "during an extra run at --py-spy-at (first round only; needs py-spy)",
    )
    parser.add_argument(
        "--py-spy-targets",
        default=PROFILE_TARGET,
        help="comma-separated targets to profile, e.g. minimal-sklearn,schooner-sklearn "
        "(their query frontend, or the minimal pipeline's HTTP process)",
    )
    parser.add_argument(
        "--py-spy-at",
        type=int,
        help="the concurrency to profile at (default: the highest of --concurrency)",
    )
    parser.add_argument(
        "--py-spy-format",
        choices=("raw", "flamegraph", "speedscope"),
        default="raw",
        help="raw: collapsed stacks, summarised on the terminal; flamegraph: an SVG",
    )
    args = parser.parse_args(argv)
    args.concurrencies = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    args.groups = [g.strip() for g in args.only.split(",") if g.strip()]
    args.target_names = {t.strip() for t in args.targets.split(",") if t.strip()}
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown contender group(s) {unknown}: choose from {list(GROUPS)}")
    if args.duration < 1 or not args.concurrencies or min(args.concurrencies) < 1:
        parser.error("--duration must be >= 1 s and every concurrency >= 1")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    args.profile_targets = {t.strip() for t in args.py_spy_targets.split(",") if t.strip()}
    if args.py_spy_at is None:
        args.py_spy_at = max(args.concurrencies)
    return args


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def drive(
    wrk: str | None, target: Target, args: argparse.Namespace, where: Placement, round_: int = 1
) -> list[dict[str, Any]]:
    if where.server_cpus is not None:
        pin(target.pids(), where.server_cpus)
    idle = idle_cpu(target.pids(), IDLE_SAMPLE_S)
    rows = []
    for c in target.concurrencies:
        common: dict[str, Any] = {
            "concurrency": c,
            "mode": target.mode,
            "threads": args.wrk_threads,
            "cpu": where.wrk_cpu,
            "api_key": target.api_key,
        }
        if args.warmup > 0:
            with contextlib.suppress(WrkError):
                load(wrk, target, duration=args.warmup, **common)
        pids = target.pids()
        before = cpu_seconds(pids)
        result = load(wrk, target, duration=args.duration, **common)
        used = {pid: t - before[pid] for pid, t in cpu_seconds(pids).items() if pid in before}
        cpu = cpu_cost(used, idle, result, target.profile_pid)
        rows.append({**row(target, result), **cpu, "round": round_})
        print("  " + report.progress_line(target.name, result), flush=True)
        profiled = target.name in args.profile_targets and c == args.py_spy_at
        if args.py_spy and round_ == 1 and profiled:
            profile(wrk, target, c, args, where)
    return rows


def load(
    wrk: str | None,
    target: Target,
    *,
    duration: float,
    concurrency: int,
    mode: str,
    threads: int,
    cpu: int | None,
    api_key: str | None,
) -> WrkResult:
    """One run of ``target``'s load generator: wrk, or ``benchmarks.pyload`` for the
    targets that chain calls (and those compared with them)."""
    if target.driver == "pyload":
        return run_pyload(
            target.urls,
            concurrency=concurrency,
            duration=duration,
            mode=mode,
            cpu=cpu,
            api_key=api_key,
        )
    if wrk is None:
        raise WrkError(INSTALL_HINT)
    return run_wrk(
        wrk,
        target.url,
        duration=duration,
        concurrency=concurrency,
        mode=mode,
        threads=threads,
        cpu=cpu,
        api_key=api_key,
    )


def in_turn(targets: list[Target], round_: int) -> list[Target]:
    """A group's targets in the order to drive them in ``round_``: as listed in odd
    rounds, reversed in even ones. Targets of one group share their servers (the
    pipeline and the chained apps share their models and batch-size controllers), so
    whichever runs second finds them warmed by the first: with several rounds, each
    runs first as often."""
    return list(targets) if round_ % 2 else list(reversed(targets))


def idle_cpu(pids: list[int], seconds: float) -> dict[int, float]:
    """Each process's CPU use while nobody sends it a request, in CPU seconds per second
    (heartbeats, timers, the routing feed)."""
    before = cpu_seconds(pids)
    time.sleep(seconds)
    after = cpu_seconds(pids)
    return {pid: (after[pid] - before[pid]) / seconds for pid in after if pid in before}


def cpu_cost(
    used: dict[int, float], idle: dict[int, float], result: WrkResult, frontend: int | None
) -> dict[str, float]:
    """CPU microseconds per request over a wrk run, net of what the processes use when
    idle (``idle``, CPU s/s, over the run's duration): of every server process of the
    target (``server_cpu_us``) and of its query frontend (``frontend_cpu_us``). Other work
    on the machine moves these less than req/s and latency. The idle rates themselves
    are kept too (``*_idle_cpu_pct``)."""
    if result.requests <= 0:
        return {}

    def net(pids: list[int]) -> float:
        spent = sum(used[p] - idle.get(p, 0.0) * result.duration_s for p in pids)
        return 1e6 * max(0.0, spent) / result.requests

    out = {
        "server_cpu_us": net(list(used)),
        "server_idle_cpu_pct": 100 * sum(idle.get(p, 0.0) for p in used),
    }
    if frontend is not None and frontend in used:
        out["frontend_cpu_us"] = net([frontend])
        out["frontend_idle_cpu_pct"] = 100 * idle.get(frontend, 0.0)
    return out


def row(target: Target, result: WrkResult) -> dict[str, Any]:
    return {"contender": target.name, "description": target.description, **result.to_json()}


def profile(
    wrk: str | None, target: Target, concurrency: int, args: argparse.Namespace, where: Placement
) -> None:
    """Sample the query frontend with py-spy during an extra (unrecorded) wrk run."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if target.profile_pid is None or not Path(py_spy).exists():
        print("  py-spy: not installed (`pip install py-spy`) or no pid; no profile")
        return
    suffix = {"raw": "txt", "flamegraph": "svg", "speedscope": "json"}[args.py_spy_format]
    raw = args.out / f"py-spy-{target.name}-c{concurrency}.{suffix}"
    seconds = max(1, round(args.duration))
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "-d",
            str(seconds),
            "-r",
            "250",
            "--pid",
            str(target.profile_pid),
            "--format",
            args.py_spy_format,
            "-o",
            str(raw),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        load(
            wrk,
            target,
            concurrency=concurrency,
            duration=args.duration,
            mode=target.mode,
            threads=args.wrk_threads,
            cpu=where.wrk_cpu,
            api_key=target.api_key,
        )
        spy.wait(timeout=args.duration + 30)
    finally:
        if spy.poll() is None:
            spy.terminate()
            spy.wait(timeout=10)
    if not raw.exists():
        print(f"  py-spy wrote nothing: {spy.stderr.read().decode()[-500:] if spy.stderr else ''}")
        return
    print(f"  py-spy profile of the query frontend ({target.name}, c={concurrency}): {raw}")
    if args.py_spy_format == "raw":
        print(report.profile_summary(raw))


def machine() -> dict[str, Any]:
    wrk_version = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["wrk", "-v"], check=False, capture_output=True, text=True, timeout=5)
        wrk_version = (out.stdout + out.stderr).splitlines()[0]
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk_version,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = find_wrk()
    if wrk is None and not set(args.groups) <= PYLOAD_GROUPS:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    where = placement(args.pin)
    settings = Settings(
        out_dir=args.out,
        concurrencies=args.concurrencies,
        slo_ms=args.slo_ms,
        ray_python=args.ray_python,
    )
    settings.notes.append(f"CPU placement: {where.describe()}")
    settings.notes.append(
        "wrk is closed-loop (each connection waits for its answer), so c=16/64 measure a "
        "saturated server; latencies have no coordinated-omission correction"
    )
    if PYLOAD_GROUPS & set(args.groups):
        settings.notes.append(
            "the pipeline contenders are driven by benchmarks.pyload (closed loop like wrk, "
            "one process, uvloop); for schooner-chained a request is the client's whole "
            "chain (two HTTP calls), timed from the first send to the last answer"
        )
    if args.rounds > 1:
        settings.notes.append(
            f"{args.rounds} rounds, groups interleaved; each group's servers started and "
            "stopped once per round, its targets driven in reverse order in even rounds; "
            "figures are medians over the rounds (each its own), every round's rows are "
            "in results.json under 'rounds'"
        )
    print(
        f"{len(args.groups)} contender group(s) x {args.rounds} round(s), "
        f"{args.duration:g} s per run; {where.describe()}"
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    started = time.monotonic()
    interrupted = False
    try:
        for round_ in range(1, args.rounds + 1):
            for name in args.groups:
                if name in failed:
                    continue
                print(f"== {name} (round {round_}/{args.rounds})", flush=True)
                try:
                    with GROUPS[name](settings) as targets:
                        for target in in_turn(targets, round_):
                            if args.target_names and target.name not in args.target_names:
                                continue
                            rows.extend(drive(wrk, target, args, where, round_))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:
                    failed.append(name)
                    settings.notes.append(
                        f"{name} failed in round {round_}: {type(exc).__name__}: {exc}"
                    )
                    traceback.print_exc()
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: every process started has been stopped", file=sys.stderr)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    medians = report.median_rows(rows)
    ratios = report.ratios(medians, tight_slo_ms=settings.tight_slo_ms)
    print()
    if args.rounds > 1:
        print(f"medians over {args.rounds} rounds:")
    print(report.results_table(medians))
    print()
    print(report.ratios_table(ratios))
    for note in settings.notes:
        print(f"note: {note}")
    doc = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": round(time.monotonic() - started, 1),
        "machine": machine(),
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "servers": "started and stopped once per group and round",
            "concurrencies": list(args.concurrencies),
            "wrk_threads": args.wrk_threads,
            "pin": args.pin,
            "slo_ms": args.slo_ms,
            "tight_slo_ms": settings.tight_slo_ms,
        },
        "results": medians,
        "rounds": rows,
        "ratios": ratios,
        "notes": settings.notes,
    }
    json_path = args.out / "results.json"
    json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {json_path}")
    plot = report.plot(medians, args.out / "throughput_vs_p99.png")
    print(plot)
    if interrupted:
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
