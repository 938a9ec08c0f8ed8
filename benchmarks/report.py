"""Tables, the issue's target ratios, the plot and the py-spy summary of a benchmark run."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.wrk import WrkResult

Row = dict[str, Any]


def progress_line(name: str, r: WrkResult) -> str:
    return (
        f"{name:<22} c={r.concurrency:<3} {r.rps:>9,.0f} req/s  p50 {r.p50_ms:7.3f} ms  "
        f"p99 {r.p99_ms:8.3f} ms  non-2xx {r.non2xx}  defaults {r.defaults}"
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    return "\n".join(
        [
            line(header),
            "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(line(r) for r in rows),
        ]
    )


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def results_table(rows: list[Row]) -> str:
    header = [
        "contender",
        "c",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "requests",
        "non-2xx",
        "default %",
        "sock err",
        "CPU µs/req",  # every server process, net of idle
        "frontend µs/req",
    ]
    cells = [
        [
            r["contender"],
            str(r["concurrency"]),
            f"{r['rps']:,.0f}",
            f"{r['p50_ms']:.3f}",
            f"{r['p90_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['p999_ms']:.3f}",
            f"{r['requests']:,}",
            str(r["non2xx"]),
            f"{100 * r['default_ratio']:.2f}",
            str(r["socket_errors"]),
            _us(r.get("server_cpu_us")),
            _us(r.get("frontend_cpu_us")),
        ]
        for r in rows
    ]
    return _table(header, cells)


# What a row of several rounds keeps from the first round instead of a median.
_KEPT = ("contender", "description", "concurrency", "threads")


def median_rows(rows: list[Row]) -> list[Row]:
    """One row per (contender, concurrency): the median of each measured figure over the
    rounds of ``rows`` (req/s, p50, p99, ... each its own median), with ``rounds`` the
    number of rounds it came from; in the order contenders first appear. Figures that are
    integers in the rounds (requests, non-2xx, ...) stay integers."""
    groups: dict[tuple[str, int], list[Row]] = {}
    for r in rows:
        groups.setdefault((r["contender"], r["concurrency"]), []).append(r)
    out = []
    for same in groups.values():
        merged: Row = {k: same[0][k] for k in _KEPT if k in same[0]}
        for key, value in same[0].items():
            if key in merged or key == "round" or isinstance(value, bool):
                continue
            if not isinstance(value, int | float):
                continue
            values = [r[key] for r in same if isinstance(r.get(key), int | float)]
            median = statistics.median(values)
            merged[key] = round(median) if isinstance(value, int) else median
        merged["rounds"] = len(same)
        out.append(merged)
    return out


def _find(rows: list[Row], contender: str, concurrency: int) -> Row | None:
    return next(
        (r for r in rows if r["contender"] == contender and r["concurrency"] == concurrency), None
    )


def ratios(rows: list[Row], tight_slo_ms: float = 20.0, c: int = 64) -> list[Row]:
    """The targets of issues 3, 12-15 and 17, each with what this run measured (``rows``:
    one per contender and concurrency, the medians of the rounds if there were several)."""
    out: list[Row] = []

    def rps_ratio(what: str, num: str, den: str, target: float | None) -> None:
        """Throughput ratio at c, higher is better; ``target`` None: reported without a goal."""
        a, b = _find(rows, num, c), _find(rows, den, c)
        measured = a["rps"] / b["rps"] if a and b and b["rps"] else None
        detail = f"{a['rps']:,.0f} / {b['rps']:,.0f} req/s" if a and b else "not measured"
        out.append(
            {
                "target": what,
                "goal": "-" if target is None else f">= {target:g}x",
                "measured": measured,
                "display": f"{measured:.2f}x" if measured is not None else "n/a",
                "detail": detail,
                "pass": None if measured is None or target is None else measured >= target,
            }
        )

    def latency_ratio(
        what: str,
        num: str,
        den: str,
        target: float | None,
        concurrency: int = 1,
        key: str = "p50_ms",
    ) -> None:
        """Ratio of a latency (``key``: p50 or p99) at ``concurrency``, lower is better;
        ``target`` None: reported without a goal."""
        a, b = _find(rows, num, concurrency), _find(rows, den, concurrency)
        measured = a[key] / b[key] if a and b and b[key] else None
        detail = f"{a[key]:.3f} / {b[key]:.3f} ms" if a and b else "not measured"
        out.append(
            {
                "target": what,
                "goal": "-" if target is None else f"<= {target:g}x",
                "measured": measured,
                "display": f"{measured:.2f}x" if measured is not None else "n/a",
                "detail": detail,
                "pass": None if measured is None or target is None else measured <= target,
            }
        )

    def p50_ratio(
        what: str, num: str, den: str, target: float | None, concurrency: int = 1
    ) -> None:
        latency_ratio(what, num, den, target, concurrency, "p50_ms")

    def p99_ratio(
        what: str, num: str, den: str, target: float | None, concurrency: int = 1
    ) -> None:
        latency_ratio(what, num, den, target, concurrency, "p99_ms")

    # Issue 14: the floor, a minimal pipeline of the same architecture, in the same run.
    rps_ratio(
        f"Schooner sklearn vs minimal pipeline (c={c})", "schooner-sklearn", "minimal-sklearn", 1.0
    )
    p50_ratio(
        "Schooner sklearn c=1 p50 vs minimal pipeline", "schooner-sklearn", "minimal-sklearn", 1.0
    )
    p50_ratio(
        "Schooner sklearn c=1 p50 vs minimal (stretch)", "schooner-sklearn", "minimal-sklearn", 0.8
    )
    rps_ratio(f"Schooner no-op vs minimal no-op (c={c})", "schooner-noop", "minimal-noop", None)
    # The RPC transports (no goal): the local default (the direct unix socket) against
    # ZeroMQ over TCP, as Docker and Kubernetes run, and ZeroMQ over ipc:// against TCP.
    p50_ratio(
        "Schooner sklearn, TCP RPC, c=1 p50 vs minimal", "schooner-tcp", "minimal-sklearn", None
    )
    rps_ratio(
        f"RPC on the unix socket vs TCP, sklearn (c={c})", "schooner-sklearn", "schooner-tcp", None
    )
    rps_ratio(f"RPC over ipc:// vs TCP, sklearn (c={c})", "schooner-ipc", "schooner-tcp", None)
    rps_ratio(f"Schooner no-op vs raw ASGI (c={c})", "schooner-noop", "raw-asgi", 0.5)
    rps_ratio(f"cache-hit path vs raw ASGI (c={c})", "schooner-cache", "raw-asgi", 0.8)
    rps_ratio(
        f"Schooner sklearn vs Starlette+sklearn (c={c})", "schooner-sklearn", "starlette-sklearn", 3
    )
    rps_ratio(
        f"Schooner sklearn vs Ray Serve direct ingress (c={c})",
        "schooner-sklearn",
        "ray-serve-direct",
        3,
    )
    rps_ratio(
        f"Schooner sklearn vs Ray Serve @serve.batch (c={c})", "schooner-sklearn", "ray-serve", 3
    )
    # Issue 15: the Open Inference Protocol's JSON tensors against the native body (no goal).
    rps_ratio(
        f"Open Inference Protocol vs native predict, sklearn (c={c})",
        "schooner-v2-sklearn",
        "schooner-sklearn",
        None,
    )
    # Issue 16: what the access log costs, at its default sampling, against none at all.
    rps_ratio(
        f"access log on vs off, sklearn (c={c})",
        "schooner-sklearn",
        "schooner-sklearn-no-access-log",
        None,
    )
    p50_ratio(
        "access log on vs off, sklearn p50 (c=1)",
        "schooner-sklearn",
        "schooner-sklearn-no-access-log",
        None,
        concurrency=1,
    )
    rps_ratio(
        f"access log of every request (no cap) vs off, sklearn (c={c})",
        "schooner-sklearn-access-log-uncapped",
        "schooner-sklearn-no-access-log",
        None,
    )
    # Issue 13: N = 2 query frontends against N = 1 on this machine (no goal).
    rps_ratio(f"2 query frontends vs 1, sklearn (c={c})", "schooner-2qf", "schooner-sklearn", None)
    rps_ratio(
        f"adaptive batching vs batch size 1 (c={c})", "schooner-sklearn", "schooner-sklearn-b1", 5
    )
    rps_ratio(
        f"app with an API key vs open app (c={c})",
        "schooner-sklearn-keyed",
        "schooner-sklearn",
        0.95,
    )
    # Issue 12: authenticated, encrypted RPC costs under 15 % of the sklearn throughput.
    rps_ratio(
        f"sklearn with CURVE vs RPC without (c={c})",
        "schooner-tcp",
        "schooner-sklearn-plain-rpc",
        0.85,
    )

    # Issue 17: a two-stage pipeline (featuriser -> sklearn) in one app, against the same
    # two models as two apps chained by the client (the same Python client drives both).
    rps_ratio(
        f"pipeline vs client-chained apps, throughput (c={c})",
        "schooner-pipeline",
        "schooner-chained",
        1.0,
    )
    for concurrency in (1, c):
        p50_ratio(
            f"pipeline vs client-chained apps, p50 (c={concurrency})",
            "schooner-pipeline",
            "schooner-chained",
            1.0 if concurrency == 1 else None,
            concurrency=concurrency,
        )
        p99_ratio(
            f"pipeline vs client-chained apps, p99 (c={concurrency})",
            "schooner-pipeline",
            "schooner-chained",
            None,
            concurrency=concurrency,
        )
    rps_ratio(
        f"pipeline vs minimal two-stage pipeline (c={c})",
        "schooner-pipeline",
        "minimal-pipeline",
        None,
    )
    p50_ratio(
        "pipeline c=1 p50 vs minimal two-stage pipeline",
        "schooner-pipeline",
        "minimal-pipeline",
        None,
    )

    slo = _find(rows, "schooner-slo20", c)
    p99 = slo["p99_ms"] if slo else None
    out.append(
        {
            "target": f"SLO {tight_slo_ms:g} ms at c={c}: p99",
            "goal": f"<= {tight_slo_ms:g} ms",
            "measured": p99,
            "display": f"{p99:.3f} ms" if p99 is not None else "n/a",
            "detail": f"{slo['rps']:,.0f} req/s" if slo else "not measured",
            "pass": None if p99 is None else p99 <= tight_slo_ms,
        }
    )
    ratio = slo["default_ratio"] if slo else None
    out.append(
        {
            "target": f"SLO {tight_slo_ms:g} ms at c={c}: default answers",
            "goal": "< 1%",
            "measured": ratio,
            "display": f"{100 * ratio:.2f}%" if ratio is not None else "n/a",
            "detail": f"{slo['defaults']:,} of {slo['requests']:,}" if slo else "not measured",
            "pass": None if ratio is None else ratio < 0.01,
        }
    )
    return out


def ratios_table(ratio_rows: list[Row]) -> str:
    def verdict(r: Row) -> str:
        if r["goal"] == "-":
            return "-"
        return "n/a" if r["pass"] is None else ("PASS" if r["pass"] else "MISS")

    cells = [[r["target"], r["goal"], r["display"], verdict(r), r["detail"]] for r in ratio_rows]
    return _table(["target (issues 3, 12, 13, 14)", "goal", "measured", "verdict", "detail"], cells)


def plot(rows: list[Row], path: Path) -> str:
    """Throughput vs p99 per contender; returns a line saying what was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (`pip install matplotlib`)"
    fig, ax = plt.subplots(figsize=(9, 6))
    for name in dict.fromkeys(r["contender"] for r in rows):
        mine = sorted((r for r in rows if r["contender"] == name), key=lambda r: r["concurrency"])
        xs = [r["rps"] for r in mine]
        ys = [r["p99_ms"] for r in mine]
        ax.plot(xs, ys, marker="o", label=name)
        for r in mine:
            ax.annotate(
                f"c={r['concurrency']}",
                (r["rps"], r["p99_ms"]),
                fontsize=7,
                textcoords="offset points",
                xytext=(4, 4),
            )
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("p99 latency (ms, log)")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Schooner benchmark: throughput vs p99 (wrk, 127.0.0.1)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"wrote {path}"


_LOCATION = re.compile(r" \(([^)]*)\)$")


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``."""
    m = _LOCATION.search(frame)
    if not m:
        return frame
    where = m.group(1).rsplit(":", 1)[0]
    parts = Path(where).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 else where
    return f"{frame[: m.start()]} ({short})"


def _stacks(raw: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append(([_short(f) for f in stack.split(";")], int(count)))
    return out


def profile_summary(raw: Path, top: int = 15) -> str:
    """Top functions by self time and by inclusive time in a py-spy ``--format raw`` file."""
    stacks = _stacks(raw)
    total = sum(n for _, n in stacks) or 1
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, n in stacks:
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    lines = [f"    {total} samples; self time:"]
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("    inclusive time:")
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)
