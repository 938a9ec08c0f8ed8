"""The benchmark's report: medians over interleaved rounds and issue 14's target ratios
(``benchmarks.report``), the figures the run prints and writes to results.json."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.report import median_rows, ratios, ratios_table, results_table
from benchmarks.run import cpu_cost
from benchmarks.wrk import WrkResult


def _row(contender: str, c: int, rps: float, p50: float, p99: float, round_: int) -> dict[str, Any]:
    return {
        "contender": contender,
        "description": f"{contender} under test",
        "concurrency": c,
        "threads": 1,
        "duration_s": 4.0,
        "requests": int(rps * 4),
        "rps": rps,
        "p50_ms": p50,
        "p90_ms": p50 * 2,
        "p99_ms": p99,
        "p999_ms": p99 * 2,
        "mean_ms": p50,
        "max_ms": p99 * 3,
        "non2xx": 0,
        "defaults": round_,
        "socket_errors": 0,
        "default_ratio": 0.0,
        "round": round_,
    }


def test_each_figure_is_its_own_median_over_the_rounds() -> None:
    rounds = [
        _row("minimal-sklearn", 64, 6000.0, 9.0, 30.0, 1),
        _row("minimal-sklearn", 64, 4000.0, 11.0, 20.0, 2),
        _row("minimal-sklearn", 64, 5000.0, 10.0, 90.0, 3),
    ]
    [merged] = median_rows(rounds)
    assert merged["rps"] == 5000.0
    assert merged["p50_ms"] == 10.0
    assert merged["p99_ms"] == 30.0  # not the p99 of the median-throughput round (90)
    assert merged["requests"] == 20000 and isinstance(merged["requests"], int)
    assert merged["defaults"] == 2 and isinstance(merged["defaults"], int)
    assert merged["rounds"] == 3
    assert "round" not in merged
    assert merged["description"] == "minimal-sklearn under test"


def test_an_even_number_of_rounds_takes_the_middle_two() -> None:
    rounds = [_row("raw-asgi", 1, rps, 0.2, 1.0, i) for i, rps in enumerate([1000.0, 3000.0], 1)]
    [merged] = median_rows(rounds)
    assert merged["rps"] == 2000.0
    assert merged["rounds"] == 2


def test_rounds_are_grouped_per_contender_and_concurrency_in_first_seen_order() -> None:
    rounds = [
        _row("minimal-sklearn", 1, 900.0, 1.0, 2.0, 1),
        _row("minimal-sklearn", 64, 6000.0, 9.0, 30.0, 1),
        _row("schooner-sklearn", 1, 500.0, 2.0, 4.0, 1),
        _row("minimal-sklearn", 1, 1100.0, 0.8, 2.0, 2),
        _row("minimal-sklearn", 64, 7000.0, 8.0, 20.0, 2),
        _row("schooner-sklearn", 1, 700.0, 1.0, 3.0, 2),
    ]
    merged = median_rows(rounds)
    assert [(r["contender"], r["concurrency"]) for r in merged] == [
        ("minimal-sklearn", 1),
        ("minimal-sklearn", 64),
        ("schooner-sklearn", 1),
    ]
    assert merged[0]["p50_ms"] == 0.9
    assert merged[2]["rps"] == 600.0
    assert "minimal-sklearn" in results_table(merged)


def _by_target(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["target"]: r for r in rows}


def test_issue_14_ratios_compare_schooner_with_the_minimal_pipeline() -> None:
    rows = [
        _row("minimal-sklearn", 1, 1000.0, 1.0, 2.0, 1),
        _row("minimal-sklearn", 64, 6000.0, 9.0, 30.0, 1),
        _row("schooner-sklearn", 1, 1100.0, 0.9, 2.0, 1),
        _row("schooner-sklearn", 64, 6600.0, 8.0, 25.0, 1),
        _row("schooner-noop", 64, 6000.0, 8.0, 25.0, 1),
        _row("raw-asgi", 64, 15000.0, 4.0, 8.0, 1),
        _row("schooner-cache", 64, 11000.0, 5.0, 9.0, 1),
    ]
    got = _by_target(ratios(rows))
    c64 = got["Schooner sklearn vs minimal pipeline (c=64)"]
    assert c64["measured"] == 1.1 and c64["pass"] is True and c64["goal"] == ">= 1x"
    c1 = got["Schooner sklearn c=1 p50 vs minimal pipeline"]
    assert c1["measured"] == 0.9 and c1["pass"] is True and c1["goal"] == "<= 1x"
    stretch = got["Schooner sklearn c=1 p50 vs minimal (stretch)"]
    assert stretch["pass"] is False and stretch["goal"] == "<= 0.8x"
    assert got["Schooner no-op vs raw ASGI (c=64)"]["pass"] is False  # 0.4x < 0.5x
    cache = got["cache-hit path vs raw ASGI (c=64)"]
    assert cache["goal"] == ">= 0.8x" and cache["pass"] is False  # 0.73x
    assert got["Schooner sklearn vs Ray Serve direct ingress (c=64)"]["goal"] == ">= 3x"
    # The old absolute latency target gave way to the ratio to the floor.
    assert not any("median latency" in target for target in got)
    assert "MISS" in ratios_table(list(got.values()))


def test_a_contender_left_out_of_the_run_is_not_measured_not_failed() -> None:
    got = _by_target(ratios([_row("schooner-sklearn", 1, 1000.0, 1.0, 2.0, 1)]))
    c1 = got["Schooner sklearn c=1 p50 vs minimal pipeline"]
    assert c1["measured"] is None and c1["pass"] is None and c1["detail"] == "not measured"
    assert got["2 query frontends vs 1, sklearn (c=64)"]["goal"] == "-"


def _result(requests: int, seconds: float) -> WrkResult:
    return WrkResult(1, 1, seconds, requests, requests / seconds, *([1.0] * 6), 0, 0, 0)


def test_cpu_per_request_is_net_of_idle_and_counts_the_frontend_apart() -> None:
    used = {10: 0.5, 11: 0.25}  # CPU seconds over a 2 s run of 1000 requests
    idle = {10: 0.05, 11: 0.0, 12: 0.5}  # 12 exited before the run: not counted
    cost = cpu_cost(used, idle, _result(1000, 2.0), frontend=10)
    assert cost["frontend_cpu_us"] == pytest.approx(400.0)  # (0.5 - 0.05 * 2) / 1000
    assert cost["server_cpu_us"] == pytest.approx(650.0)
    assert cost["frontend_idle_cpu_pct"] == pytest.approx(5.0)
    assert cost["server_idle_cpu_pct"] == pytest.approx(5.0)
    assert "frontend_cpu_us" not in cpu_cost(used, idle, _result(1000, 2.0), frontend=None)
    assert cpu_cost(used, idle, _result(0, 2.0), frontend=10) == {}
    # Busier when idle than under load (a timer burst): never a negative cost.
    assert cpu_cost({10: 0.0}, {10: 1.0}, _result(10, 1.0), frontend=10)["server_cpu_us"] == 0
