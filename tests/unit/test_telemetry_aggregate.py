"""Query frontends' telemetry ticks merged into the dashboard's series
(``management_frontend.telemetry.aggregate``): sums across frontends, latency quantiles
from merged histograms, ticks spread over the buckets they span, gaps; and what is read
from the ticks as they are (``telemetry.ticks``, here ``raw``): replicas, defaults,
their shape."""

from __future__ import annotations

from typing import Any

import pytest

from management_frontend.telemetry import aggregate as agg
from management_frontend.telemetry import ticks as raw

BOUNDS = [0.001, 0.01, 0.1, 1.0]


def tick(
    frontend: str,
    t: float,
    dt: float = 2.0,
    *,
    apps: dict[str, Any] | None = None,
    models: dict[str, Any] | None = None,
    cache: dict[str, int] | None = None,
) -> dict[str, Any]:
    return {
        "frontend": frontend,
        "t": t,
        "dt": dt,
        "started": 0.0,
        "apps": apps or {},
        "models": models or {},
        "cache": cache or {"hits": 0, "misses": 0, "bytes": 0},
    }


def app(requests: int, latency: list[int], defaults: int = 0, errors: int = 0) -> dict[str, Any]:
    return {
        "requests": requests,
        "errors": errors,
        "defaults": defaults,
        "queries": requests,
        "latency_buckets": latency,
        "bounds": BOUNDS,
        "weights": None,
        "recent_defaults": [],
    }


def test_a_quantile_is_interpolated_within_its_bucket_as_prometheus_does() -> None:
    # 10 observations in (0.01, 0.1]: the median is half way through that bucket.
    assert agg.quantile(0.5, BOUNDS, [0, 0, 10, 0, 0]) == pytest.approx(0.055)
    # 90 fast, 10 in (0.1, 1]: p99 is 90% of the way through the slow bucket.
    assert agg.quantile(0.99, BOUNDS, [0, 90, 0, 10, 0]) == pytest.approx(0.1 + 0.9 * 0.9)
    # The first bucket starts at 0.
    assert agg.quantile(0.5, BOUNDS, [4, 0, 0, 0, 0]) == pytest.approx(0.0005)


def test_a_quantile_in_the_infinite_bucket_is_the_highest_bound_and_none_is_null() -> None:
    assert agg.quantile(0.99, BOUNDS, [0, 0, 0, 0, 3]) == 1.0
    assert agg.quantile(0.5, BOUNDS, [0, 0, 0, 0, 0]) is None


def test_frontends_are_summed_and_their_histograms_merged_before_the_quantile() -> None:
    now = 1000.0
    ticks = [
        tick("a", now, apps={"app": app(10, [0, 10, 0, 0, 0])}),
        tick("b", now, apps={"app": app(30, [0, 0, 0, 30, 0], defaults=3)}),
    ]
    window = agg.window_for(ticks, now, 60)
    figures = agg.app_figures(agg.merge(ticks, window), "app")
    assert figures["series"]["rps"][-1] == pytest.approx(40 / 2.0)
    # 40 requests: 10 in (0.001, 0.01], 30 in (0.1, 1]; the median is the 20th -> the
    # slow bucket, a third of the way in. Taking each frontend's median would not say so.
    assert figures["series"]["p50_ms"][-1] == pytest.approx((0.1 + 0.9 * 10 / 30) * 1000)
    assert figures["series"]["default_rate"][-1] == pytest.approx(3 / 40)
    assert figures["now"]["default_rate"] == pytest.approx(3 / 40)
    assert figures["now"]["rps"] == pytest.approx(40 / 10.0)  # over the last 10 s


def test_a_tick_out_of_phase_is_spread_over_the_buckets_it_spans() -> None:
    now = 1000.0
    # Another frontend fixes the window's end at 1000; this one ticked at 999 for the
    # 2 s before: half its requests fall in (996, 998], half in (998, 1000].
    ticks = [
        tick("a", now, apps={"app": app(0, [0] * 5)}),
        tick("b", 999.0, apps={"app": app(8, [0, 8, 0, 0, 0])}),
    ]
    window = agg.window_for(ticks, now, 60)
    assert window.end == 999.0  # the oldest of the live frontends' newest ticks
    window = agg.Window(1000.0, 60, 2.0)
    rps = agg.app_figures(agg.merge(ticks, window), "app")["series"]["rps"]
    assert rps[-2:] == [pytest.approx(2.0), pytest.approx(2.0)]


def test_buckets_without_ticks_are_null_and_quiet_ones_have_no_latency() -> None:
    now = 1000.0
    ticks = [tick("a", now, apps={"other": app(5, [5, 0, 0, 0, 0])})]
    window = agg.window_for(ticks, now, 20)
    figures = agg.app_figures(agg.merge(ticks, window), "app")  # served nothing
    series = figures["series"]
    assert len(series["t"]) == window.n == 10
    assert series["rps"][:-1] == [None] * 9  # no frontend said anything then
    assert series["rps"][-1] == 0.0
    assert series["p50_ms"][-1] is None and series["default_rate"][-1] is None
    assert figures["now"] == {
        "rps": 0.0,
        "p50_ms": None,
        "p99_ms": None,
        "default_rate": None,
        "error_rate": None,
    }


def test_a_frontend_that_stopped_ticking_does_not_hold_the_window_back() -> None:
    now = 1000.0
    ticks = [tick("gone", 900.0), tick("live", 999.5)]
    assert agg.window_for(ticks, now, 60).end == 999.5
    assert agg.window_for([tick("gone", 900.0)], now, 60).end == now
    assert [t["frontend"] for t in raw.live(raw.latest_by_frontend(ticks), now)] == ["live"]


def test_long_windows_get_wider_buckets() -> None:
    assert agg.interval_for(300) == 2.0
    assert agg.interval_for(1200) == 2.0
    assert agg.interval_for(3600) == 6.0
    assert agg.Window(0, 3600, 6.0).n == 600


def test_models_show_mean_batch_size_throughput_and_queue_depth() -> None:
    now = 1000.0

    def model(batches: int, queries: int, depth: int) -> dict[str, Any]:
        return {"batches": batches, "queries": queries, "queue_depth": depth, "replicas": []}

    ticks = [
        tick("a", now, models={"m:1": model(2, 16, 3), "m:2": model(1, 4, 0)}),
        tick("b", now, models={"m:1": model(1, 4, 1)}),
    ]
    window = agg.window_for(ticks, now, 60)
    figures = agg.model_figures(agg.merge(ticks, window), "m")
    assert figures["series"]["batch_size"][-1] == pytest.approx(24 / 4)
    assert figures["series"]["qps"][-1] == pytest.approx(24 / 2)
    assert figures["series"]["queue_depth"][-1] == pytest.approx(4)
    assert figures["now"]["queue_depth"] == 4
    assert figures["now"]["batch_size"] == pytest.approx(6)


def test_cache_hit_rate_and_bytes() -> None:
    now = 1000.0
    ticks = [
        tick("a", now - 2, cache={"hits": 1, "misses": 1, "bytes": 100}),
        tick("a", now, cache={"hits": 3, "misses": 1, "bytes": 200}),
        tick("b", now, cache={"hits": 0, "misses": 2, "bytes": 50}),
    ]
    window = agg.window_for(ticks, now, 60)
    merged = agg.merge(ticks, window)
    cache = agg.cache_figures(merged, raw.latest_by_frontend(ticks))
    assert cache["series"]["hit_rate"][-1] == pytest.approx(3 / 6)
    assert cache["now"] == {"hit_rate": pytest.approx(4 / 8), "bytes": 250}


def test_replicas_are_merged_across_frontends_records_and_the_supervisor() -> None:
    def replica(
        rid: str, in_rotation: bool = True, state: str = "ok", restarts: int = 0
    ) -> dict[str, Any]:
        return {
            "id": rid,
            "connected": True,
            "in_rotation": in_rotation,
            "state": state,
            "restarts": restarts,
        }

    models = {"m:1": {"replicas": [replica("r0"), replica("r1", restarts=1)]}}
    benched = {"m:1": {"replicas": [replica("r0", False, "stuck"), replica("r1")]}}
    records = [{"replica_id": "r2", "model_name": "m", "model_version": "2"}]
    supervised = {
        "replica-m-1-0": {
            "role": "replica",
            "state": "running",
            "restarts": 4,
            "labels": {"model": "m", "version": "1", "replica_id": "r0"},
        },
        "replica-m-1-3": {
            "role": "replica",
            "state": "failed",
            "restarts": 5,
            "labels": {"model": "m", "version": "1", "replica_id": "r3"},
        },
        "query-0": {"role": "query", "state": "running", "restarts": 9, "labels": {}},
    }
    found = raw.replicas(
        [tick("a", 0, models=models), tick("b", 0, models=benched)], records, supervised
    )
    assert list(found) == ["m"]
    by_id = {r["id"]: r for r in found["m"]}
    assert by_id["r0"] == {
        "id": "r0",
        "version": "1",
        "connected": True,
        "in_rotation": False,  # out of one frontend's rotation
        "state": "stuck",
        "restarts": 4,  # the supervisor counted more than the frontends saw
    }
    assert by_id["r1"]["restarts"] == 1 and by_id["r1"]["in_rotation"]
    assert by_id["r2"]["version"] == "2" and by_id["r2"]["connected"]
    assert by_id["r3"] == {
        "id": "r3",
        "version": "1",
        "connected": False,
        "in_rotation": False,
        "state": "failed",
        "restarts": 5,
    }


def test_weights_are_averaged_per_bucket_and_defaults_listed_newest_first() -> None:
    now = 1000.0

    def learning(w: dict[str, float], defaults: list[dict[str, Any]]) -> dict[str, Any]:
        entry = app(0, [])
        entry.update(weights=w, recent_defaults=defaults)
        return entry

    def default(t: float, qid: int) -> dict[str, Any]:
        return {"t": t, "query_id": qid, "request_id": None, "reason": "slow"}

    ticks = [
        tick("a", now - 2, apps={"x": learning({"m:1": 0.5, "n:1": 0.5}, [default(997, 1)])}),
        tick("a", now, apps={"x": learning({"m:1": 0.7, "n:1": 0.3}, [default(999, 2)])}),
        tick("b", now, apps={"x": learning({"m:1": 0.9, "n:1": 0.1}, [default(998, 3)])}),
    ]
    window = agg.window_for(ticks, now, 10)
    series = agg.weight_series(ticks, window, "x")
    assert series["arms"]["m:1"][-2:] == [pytest.approx(0.5), pytest.approx(0.8)]
    assert series["arms"]["n:1"][0] is None
    listed = raw.recent_defaults(ticks, "x")
    assert [d["query_id"] for d in listed] == [2, 3, 1]
    assert listed[0] == {
        "t": 999,
        "query_id": 2,
        "request_id": None,
        "reason": "slow",
        "frontend": "a",
    }
    many = [tick("a", now, apps={"x": learning({}, [default(i, i) for i in range(80)])})]
    assert len(raw.recent_defaults(many, "x")) == raw.MAX_RECENT_DEFAULTS


def test_a_tick_of_another_shape_is_not_read() -> None:
    good = tick("a", 1.0, apps={"x": app(1, [1, 0, 0, 0, 0])})
    assert raw.readable(good)
    assert raw.readable({**good, "future_field": [1, 2]})
    bad_apps: list[Any] = [
        [],
        {"x": []},
        {"x": {**app(1, [1, 0, 0, 0, 0]), "requests": "1"}},
        {"x": {**app(1, [1, 0, 0]), "bounds": BOUNDS}},  # counts do not fit the bounds
        {"x": {**app(1, [1, 0, 0, 0, 0]), "weights": {"m": "half"}}},
        {"x": {**app(1, [1, 0, 0, 0, 0]), "recent_defaults": ["late"]}},
    ]
    for apps in bad_apps:
        assert not raw.readable({**good, "apps": apps}), apps
    assert not raw.readable({**good, "t": "soon"})
    assert not raw.readable({**good, "t": float("nan")})
    assert not raw.readable({k: v for k, v in good.items() if k != "t"})
    assert not raw.readable({**good, "frontend": 3})
    assert not raw.readable({**good, "models": {"m:1": {"replicas": [{"restarts": 1}]}}})
    assert not raw.readable({**good, "cache": {"hits": None}})
    assert not raw.readable([good])


def test_a_tick_with_numbers_no_counter_reaches_is_not_read_so_sums_stay_finite() -> None:
    # Two ticks with finite but enormous counts used to sum to infinity, and
    # round(inf) made GET /admin/overview a 500 for as long as they stayed in the window.
    models = {"m:1": {"batches": 1e308, "queries": 1e308, "queue_depth": 1e308, "replicas": []}}
    stored = [tick("a", 1000.0, models=models), tick("b", 1000.0, models=models)]
    assert not any(raw.readable(t) for t in stored)
    assert not raw.readable(tick("a", 1e300))
    assert not raw.readable(tick("a", 1000.0, cache={"hits": 1e300, "misses": 0, "bytes": 0}))
    kept = [t for t in stored if raw.readable(t)]
    agg.model_figures(agg.merge(kept, agg.window_for(kept, 1000.0, 60)), "m")
    # What a real counter holds is still read.
    assert raw.readable(tick("a", 1000.0, cache={"hits": 2**40, "misses": 0, "bytes": 2**45}))


def test_quiet_apps_and_models_cost_the_same_as_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # An overview of 1000 registered apps without traffic built 1000 identical series
    # (and FastAPI then encoded them one value at a time): over a second of event loop
    # per request on a real cluster, while the dashboard asks every 2 s.
    stored = [tick("a", 1000.0, apps={"busy": app(4, [1, 1, 1, 1, 0])})]
    merged = agg.merge(stored, agg.window_for(stored, 1000.0, 3600))
    quiet = agg.app_figures(merged, "quiet-0")
    assert quiet["now"]["rps"] == 0.0 and quiet["series"]["p99_ms"][-1] is None
    assert agg.model_figures(merged, "quiet-0")["now"]["queue_depth"] == 0
    rounded = []
    real_r = agg._r
    monkeypatch.setattr(agg, "_r", lambda *a: rounded.append(a) or real_r(*a))
    for i in range(1, 1000):
        assert agg.app_figures(merged, f"quiet-{i}") == quiet
        agg.model_figures(merged, f"quiet-{i}")
    assert rounded == []
    assert agg.app_figures(merged, "busy")["now"]["rps"] > 0


def stage(latency: list[int], defaults: int = 0, errors: int = 0) -> dict[str, Any]:
    return {"latency_buckets": latency, "defaults": defaults, "errors": errors}


def pipeline(requests: int, stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    entry = app(requests, [0, 0, requests, 0, 0])
    entry["stages"] = stages
    return entry


def test_a_pipelines_stages_are_merged_like_the_apps_latency() -> None:
    now = 1000.0
    ticks = [
        # Two frontends: stage 1 is slow on both, stage 2 fast but for one late request
        # that got the default; the merged histogram decides the quantile, not each's.
        tick("a", now, apps={"chain": pipeline(10, {
            "1": stage([0, 0, 0, 10, 0]),
            "2": stage([0, 10, 0, 0, 0]),
        })}),
        tick("b", now, apps={"chain": pipeline(30, {
            "1": stage([0, 0, 0, 30, 0]),
            "2": stage([0, 29, 0, 1, 0], defaults=1, errors=2),
        })}),
    ]  # fmt: skip
    window = agg.window_for(ticks, now, 60)
    first, second, third = agg.stage_figures(agg.merge_stages(ticks, window, "chain"), 3)
    assert (first["stage"], second["stage"], third["stage"]) == (1, 2, 3)
    s1, s2 = first["series"], second["series"]
    assert s1["t"] == window.times() and len(s1["p99_ms"]) == window.n
    assert s1["rps"][-1] == pytest.approx(40 / 2.0)
    assert s1["p99_ms"][-1] == pytest.approx((0.1 + 0.9 * 0.99) * 1000)
    assert s2["p50_ms"][-1] < 10 and s2["p99_ms"][-1] > 100  # the one late request
    assert s1["p99_ms"][-1] > s2["p50_ms"][-1]
    assert s2["defaults_per_s"][-1] == pytest.approx(1 / 2.0)
    assert s2["errors_per_s"][-1] == pytest.approx(2 / 2.0)
    assert s1["defaults_per_s"][-1] == 0 and s1["errors_per_s"][-1] == 0
    assert second["now"]["defaults_per_s"] == pytest.approx(1 / 10.0)  # the last 10 s
    assert second["now"]["errors_per_s"] == pytest.approx(2 / 10.0)
    assert first["now"]["rps"] == pytest.approx(40 / 10.0)
    assert first["now"]["p99_ms"] == pytest.approx(s1["p99_ms"][-1])
    # A stage no tick mentions (set since, say): no traffic, and no latency.
    assert third["now"] == {
        "rps": 0.0,
        "p50_ms": None,
        "p99_ms": None,
        "defaults_per_s": 0.0,
        "errors_per_s": 0.0,
    }
    assert third["series"]["rps"][:-1] == [None] * (window.n - 1)  # no frontend ticked then


def test_old_ticks_without_stages_still_merge_and_count_as_covered() -> None:
    now = 1000.0
    ticks = [
        tick("a", now - 2, apps={"chain": app(5, [0, 5, 0, 0, 0])}),  # before stages
        tick("a", now, apps={"chain": pipeline(4, {"2": stage([0, 0, 4, 0, 0])})}),
    ]
    assert all(raw.readable(t) for t in ticks)
    window = agg.window_for(ticks, now, 20)
    merged = agg.merge_stages(ticks, window, "chain")
    first, second = agg.stage_figures(merged, 2)
    # The old tick's bucket was covered: 0 requests reached the stages, not "unknown".
    assert second["series"]["rps"][-2:] == [0.0, pytest.approx(2.0)]
    assert first["series"]["rps"][-2:] == [0.0, 0.0]
    assert first["series"]["p99_ms"][-1] is None
    # The overview merges the same ticks as before: the app's own figures.
    figures = agg.app_figures(agg.merge(ticks, window), "chain")
    assert figures["series"]["rps"][-2:] == [pytest.approx(2.5), pytest.approx(2.0)]


def test_a_tick_with_unreadable_stages_is_not_read() -> None:
    good = tick("a", 1.0, apps={"x": pipeline(1, {"1": stage([1, 0, 0, 0, 0])})})
    assert raw.readable(good)
    bad_stages: list[Any] = [
        [],
        {"0": stage([1, 0, 0, 0, 0])},  # stages are numbered from 1
        {"9": stage([1, 0, 0, 0, 0])},  # more than a pipeline may have
        {"one": stage([1, 0, 0, 0, 0])},
        {"1": []},
        {"1": stage([1, 0, 0])},  # counts do not fit the app's bounds
        {"1": {**stage([1, 0, 0, 0, 0]), "defaults": "1"}},
        {"1": {**stage([1, 0, 0, 0, 0]), "errors": 1e300}},
    ]
    for stages in bad_stages:
        apps = {"x": {**pipeline(1, {}), "stages": stages}}
        assert not raw.readable({**good, "apps": apps}), stages
