"""Schooner's chaos benchmark: each fault of issue 13 under a bounded load, one table.

    python -m benchmarks.chaos [--duration 30] [--fault-at 10] [--only replica,query,...]
                               [--concurrency 8] [--slo-ms 100] [--out chaos.json]

For each scenario (``--list`` names them) it starts a fresh local cluster (its own data
dir and free ports; ``benchmarks.chaos_cluster``), drives it with async clients
(``benchmarks.chaos_load``), applies the fault at ``--fault-at`` seconds
(``benchmarks.chaos_faults``), stops the load at ``--duration`` and prints one row per
measured load:

- requests and how they were answered: real answers, the app's default, connection
  errors, 5xx, 4xx (with their codes), client timeouts (5 s);
- normal after: seconds from the fault until the first moment from which every answer
  is a real one, for at least ``--hold`` seconds and to the end of the run ("never"
  when the run ended first; 0 when nothing went wrong);
- latency after the fault (p50/p99) and the share of answers slower than the SLO;
- restarts seen: processes of the faulted role running at the fault and at the end, the
  pids new since the fault (the manager's process table, sampled every 0.5 s) and, when
  the cluster has a supervisor, its restart and failure counts from ``/status``;
- state: the cluster's apps, models, links and policy state (of apps without feedback)
  read through the admin API before the fault and after the run: the same, changed, or
  unknown when the admin API does not answer.

It observes and does not assume: a scenario that needs what the code does not offer
(several query frontends, a rolling restart) is skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.chaos_cluster import Cluster, Features, local_cluster
from benchmarks.chaos_faults import SCENARIOS, Scenario, build_streams
from benchmarks.chaos_load import Run, Stream, summarize


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chaos", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--fault-at", type=float, default=10.0, help="seconds into the load")
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--concurrency", type=int, default=8, help="prediction clients")
    parser.add_argument("--slo-ms", type=float, default=100.0, help="SLO of the apps")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds of good answers")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--logs", type=Path, help="copy each cluster's logs under here")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}: choose from {list(SCENARIOS)}")
    if not 0 < args.fault_at < args.duration:
        parser.error("--fault-at must be > 0 and < --duration")
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    return args


def _restarts(
    role: str, before: list[int], after: list[int], seen: dict[int, float], fault_time: float
) -> str:
    """Processes of ``role`` running at the fault and at the end, and the pids that were
    not there at the fault, seen since (sampled every 0.5 s), with when the first came."""
    new = sorted(t for pid, t in seen.items() if pid not in before and t >= fault_time)
    text = f"{role}: {len(before)} up → {len(after)} up, {len(new)} new pid{'s' * (len(new) != 1)}"
    return text + (f" (first {new[0] - fault_time:.1f} s after)" if new else "")


def _state(before: dict[str, Any] | str, after: dict[str, Any] | str) -> str:
    if isinstance(before, str):
        return f"unknown: before, {before}"
    if isinstance(after, str):
        return f"unknown: after, {after}"
    changed = [key for key in before if before[key] != after.get(key)]
    return "same" if not changed else f"changed: {', '.join(changed)}"


async def _drive(
    scenario: Scenario, cluster: Cluster, args: argparse.Namespace
) -> tuple[Run, list[Stream], float, dict[str, Any], tuple[list[int], dict[int, float]]]:
    run = Run()
    streams = build_streams(scenario, cluster, args.concurrency, args.fault_at)
    at_fault: list[int] = []
    seen: dict[int, float] = {}

    async def fault() -> dict[str, Any]:
        at_fault.extend(cluster.pids(scenario.role))
        return await asyncio.to_thread(scenario.fault, cluster)

    async def watch() -> None:
        while not run.stop.is_set():
            for pid in await asyncio.to_thread(cluster.pids, scenario.role):
                seen.setdefault(pid, run.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.stop.wait(), 0.5)

    watcher = asyncio.create_task(watch())
    try:
        fault_time, info = await run.drive(streams, args.duration, args.fault_at, fault)
    finally:
        run.stop.set()
        await watcher
    return run, streams, fault_time, info, (at_fault, seen)


def run_scenario(
    scenario: Scenario, features: Features, args: argparse.Namespace
) -> list[dict[str, Any]]:
    frontends = scenario.query_frontends if features.query_frontends else 1
    with local_cluster(
        scenario.name,
        slo_ms=args.slo_ms,
        query_frontends=frontends,
        features=features,
        bulk=scenario.bulk_clients > 0,
        log_dir=args.logs,
    ) as cluster:
        state_before = cluster.snapshot()
        processes_before = cluster.processes()
        run, streams, fault_time, info, (at_fault, seen) = asyncio.run(
            _drive(scenario, cluster, args)
        )
        end = run.now()
        after = cluster.pids(scenario.role)
        processes_after = cluster.processes()
        supervision = cluster.supervision()
        state_after = cluster.snapshot()
        state = _state(state_before, state_after)
    restarts = _restarts(scenario.role, at_fault, after, seen, fault_time)
    supervised = [p for p in supervision.values() if p.get("role") == scenario.role]
    if supervised:
        count = sum(int(p.get("restarts", 0) or 0) for p in supervised)
        failed = sum(1 for p in supervised if p.get("state") == "failed")
        restarts += f"; supervisor: {count} restart{'s' * (count != 1)}, {failed} failed"
    rows = []
    by_name = {s.name: s for s in streams}
    for stream in scenario.measured:
        answers = [a for a in run.answers if a.stream == stream]
        slo = args.slo_ms / 1000 if by_name[stream].slo_bound else None
        hold = args.hold if by_name[stream].recovers else None
        rows.append(
            {
                "scenario": scenario.name,
                "fault": scenario.title,
                "load": stream,
                "query_frontends": frontends,
                "fault_at_s": round(fault_time, 2),
                "duration_s": round(end, 2),
                "fault_info": info,
                **summarize(answers, fault_time, end, slo, hold),
                "restarts": restarts,
                "state": state,
                "processes_before": _pids(processes_before),
                "processes_after": _pids(processes_after),
                "supervision_after": supervision,
                # What "state" compared, so that a "changed" can be looked into.
                "state_before": state_before,
                "state_after": state_after,
            }
        )
    return rows


def _pids(processes: list[dict[str, Any]]) -> dict[str, Any]:
    return {str(p["name"]): p["pid"] if p["running"] else None for p in processes}


def _fmt_recovered(row: dict[str, Any]) -> str:
    value = row["recovered_after_s"]
    if not row["recovery_judged"]:
        return "-"
    return "never (in the run)" if value is None else f"{value:.1f} s"


def _fmt_ms(row: dict[str, Any], when: str) -> str:
    p50, p99 = row[f"p50_{when}_ms"], row[f"p99_{when}_ms"]
    return "-" if p50 is None else f"{p50:g} / {p99:g}"


def _fmt_4xx(row: dict[str, Any]) -> str:
    codes = sorted(c for c in row["statuses"] if c.startswith("4"))
    return f"{row['4xx']} ({', '.join(codes)})" if codes else str(row["4xx"])


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| fault | load | requests | real | defaults | conn err | 5xx | 4xx | timeouts "
        "| normal after | p50 / p99 ms: before → after | > SLO after | restarts seen | state |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        over = r["over_slo_after_pct"]
        lines.append(
            f"| {r['fault']} | {r['load']} | {r['requests']} | {r['ok']} | {r['default']} "
            f"| {r['conn']} | {r['5xx']} | {_fmt_4xx(r)} | {r['timeout']} "
            f"| {_fmt_recovered(r)} "
            f"| {_fmt_ms(r, 'before')} → {_fmt_ms(r, 'after')} "
            f"| {'-' if over is None else f'{over:g} %'} "
            f"| {r['restarts']} | {r['state']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in SCENARIOS.values():
            print(f"{s.name:14} {s.title}")
        return 0
    features = Features.detect()
    notes = [f"features found: {features}"]
    print(
        f"{len(args.scenarios)} scenario(s), {args.duration:g} s of load each, fault at "
        f"{args.fault_at:g} s; {args.concurrency} prediction clients; {notes[0]}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    failed = False
    started = time.monotonic()
    for name in args.scenarios:
        scenario = SCENARIOS[name]
        missing = scenario.needs(features)
        if missing:
            notes.append(f"{name} skipped: {missing}")
            print(f"== {name}: skipped ({missing})", flush=True)
            continue
        if scenario.query_frontends > 1 and not features.query_frontends:
            notes.append(f"{name}: run with 1 query frontend (several are not supported)")
        print(f"== {name}: {scenario.title}", flush=True)
        try:
            got = run_scenario(scenario, features, args)
        except KeyboardInterrupt:
            print("interrupted: the scenario's cluster has been stopped", file=sys.stderr)
            break
        except Exception as exc:
            failed = True
            notes.append(f"{name} failed: {type(exc).__name__}: {exc}")
            print(f"   failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        rows.extend(got)
        for r in got:
            print(
                f"   {r['load']}: {r['requests']} requests, {r['ok']} real, "
                f"{r['default']} defaults, {r['conn']} conn, {r['5xx']} 5xx, {r['4xx']} 4xx, "
                f"{r['timeout']} timeouts; normal after "
                f"{_fmt_recovered(r)}; {r['fault_info']}",
                flush=True,
            )
    print()
    print(table(rows))
    for note in notes:
        print(f"note: {note}")
    if args.out:
        doc = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_seconds": round(time.monotonic() - started, 1),
            "settings": {
                "duration_s": args.duration,
                "fault_at_s": args.fault_at,
                "concurrency": args.concurrency,
                "slo_ms": args.slo_ms,
                "hold_s": args.hold,
            },
            "rows": rows,
            "notes": notes,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
