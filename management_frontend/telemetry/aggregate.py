"""Query frontends' ticks merged into the series of ``/admin/overview`` and ``/activity``.

Pure: the ticks (``{p}:telemetry``, one JSON document per frontend every
``TELEMETRY_TICK_S``; shape in ``docs/redis-schema.md``, checked by ``ticks.readable``)
come in as dicts, the answers go out as dicts; Redis is ``reader.py``'s. What needs no
buckets -- each frontend's newest tick, its replicas, the defaults listed -- is
``ticks.py``'s.

The window is cut into buckets of ``interval_s``. A tick's counts are deltas over the
``dt`` seconds before its time ``t``, and are spread over the buckets that span covers
in proportion to the overlap, so frontends ticking out of phase with the buckets do not
make a steady load look jagged. Counts are summed across frontends; a latency
histogram is merged bucket by bucket and its quantiles interpolated within a bucket as
Prometheus's ``histogram_quantile`` does. Values (queue depth) are averaged over time
and summed across frontends. A bucket no tick covers is ``null`` in every series; one
covered but without traffic has a rate of 0 and ``null`` latencies and ratios.

The window ends where every frontend still ticking has reported (the oldest of their
newest ticks), so the last point is not a half-counted bucket.

A pipeline app's stages (``stages`` in its ticks) are merged the same way, one stage
number at a time, for that app's activity only (``merge_stages``): the overview does
not pay for them.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from management_frontend.state.keys import TELEMETRY_TICK_S, parse_arm
from management_frontend.telemetry.ticks import (
    STALE_TICKS,
    Tick,
    latest_by_frontend,
    stage_number,
)

# "now" is the last ~NOW_S seconds of the window.
NOW_S = 10.0
# Points per series at most: longer windows get wider buckets.
MAX_POINTS = 600


def interval_for(window_s: float, tick_s: float = TELEMETRY_TICK_S) -> float:
    """The bucket width: one tick, or a whole number of ticks when the window would
    have more than ``MAX_POINTS`` points."""
    return tick_s * max(1, math.ceil(window_s / tick_s / MAX_POINTS))


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """The ``q`` quantile of a histogram (``counts[i]``: observations <= ``bounds[i]``
    and above the bound before; the last count is +Inf's), interpolated linearly within
    its bucket; the highest finite bound when it falls in +Inf's; None if empty."""
    total = sum(counts)
    if total <= 0 or not bounds:
        return None
    rank = q * total
    seen = 0.0
    for i, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = bounds[i - 1] if i > 0 else 0.0
            upper = bounds[i]
            return float(lower + (upper - lower) * max(0.0, rank - seen) / count)
        seen += count
    return float(bounds[-1])


@dataclass
class _Hist:
    """A histogram merged from ticks; counts of other bounds go to the bucket whose
    bound is the first at or above theirs."""

    bounds: list[float]
    counts: list[float]

    def add(self, bounds: Sequence[float], counts: Sequence[float], share: float) -> None:
        if list(bounds) == self.bounds:
            for i, count in enumerate(counts):
                if count:
                    self.counts[i] += count * share
            return
        for i, count in enumerate(counts):
            if count:
                upper = bounds[i] if i < len(bounds) else math.inf
                self.counts[bisect_left(self.bounds, upper)] += count * share

    def plus(self, other: _Hist) -> None:
        self.add(other.bounds, other.counts, 1.0)


@dataclass
class _Buckets:
    """Per bucket sums of named counters, and merged histograms."""

    n: int
    sums: dict[str, list[float]] = field(default_factory=dict)
    hists: dict[int, _Hist] = field(default_factory=dict)

    def add(self, name: str, i: int, value: float) -> None:
        row = self.sums.get(name)
        if row is None:
            row = self.sums[name] = [0.0] * self.n
        row[i] += value

    def get(self, name: str, i: int) -> float:
        row = self.sums.get(name)
        return row[i] if row is not None else 0.0

    def total(self, name: str, indices: Iterable[int]) -> float:
        row = self.sums.get(name)
        return sum(row[i] for i in indices) if row is not None else 0.0

    def add_hist(
        self, i: int, bounds: Sequence[float], counts: Sequence[float], share: float
    ) -> None:
        hist = self.hists.get(i)
        if hist is None:
            if not bounds:
                return
            hist = self.hists[i] = _Hist(list(bounds), [0.0] * (len(bounds) + 1))
        hist.add(bounds, counts, share)

    def merged(self, indices: Iterable[int]) -> _Hist | None:
        out: _Hist | None = None
        for i in indices:
            hist = self.hists.get(i)
            if hist is None:
                continue
            if out is None:
                out = _Hist(list(hist.bounds), list(hist.counts))
            else:
                out.plus(hist)
        return out


@dataclass(frozen=True)
class Window:
    """``n`` buckets of ``interval_s`` ending at ``end``."""

    end: float
    window_s: float
    interval_s: float

    @property
    def n(self) -> int:
        return max(1, round(self.window_s / self.interval_s))

    @property
    def start(self) -> float:
        return self.end - self.n * self.interval_s

    def times(self) -> list[float]:
        """Each bucket's end (unix s)."""
        return [round(self.start + (i + 1) * self.interval_s, 3) for i in range(self.n)]

    def recent(self) -> range:
        """The buckets of "now": the last ``NOW_S`` seconds."""
        k = max(1, round(NOW_S / self.interval_s))
        return range(max(0, self.n - k), self.n)

    def spread(self, t: float, dt: float) -> list[tuple[int, float]]:
        """The buckets the span ``(t - dt, t]`` overlaps, each with its share of it."""
        if dt <= 0:
            i = self.bucket_of(t)
            return [] if i is None else [(i, 1.0)]
        lo, hi = t - dt, t
        first = max(0, math.floor((lo - self.start) / self.interval_s))
        last = min(self.n - 1, math.floor((hi - self.start) / self.interval_s))
        out = []
        for i in range(first, last + 1):
            b0 = self.start + i * self.interval_s
            overlap = min(hi, b0 + self.interval_s) - max(lo, b0)
            if overlap > 0:
                out.append((i, overlap / dt))
        return out

    def bucket_of(self, t: float) -> int | None:
        """The bucket holding time ``t``: bucket i spans ``(start + i * interval,
        start + (i + 1) * interval]``, so a tick at ``end`` is in the last one."""
        i = math.ceil((t - self.start) / self.interval_s) - 1
        return i if 0 <= i < self.n else None


def window_for(
    ticks: Sequence[Tick], now: float, window_s: float, tick_s: float = TELEMETRY_TICK_S
) -> Window:
    """The window ending where every frontend still ticking has reported (else ``now``)."""
    interval = interval_for(window_s, tick_s)
    live = [
        float(t["t"])
        for t in latest_by_frontend(ticks).values()
        if now - float(t["t"]) <= STALE_TICKS * tick_s
    ]
    end = min(live) if live else now
    return Window(min(end, now), window_s, interval)


def _q(q: float, hist: _Hist | None) -> float | None:
    """The ``q`` quantile of ``hist`` in milliseconds; None without observations."""
    return None if hist is None else _ms(quantile(q, hist.bounds, hist.counts))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class Merged:
    """Ticks summed into buckets: per app, per model name, the cache, and coverage."""

    window: Window
    coverage: list[float]
    apps: dict[str, _Buckets]
    models: dict[str, _Buckets]
    cache: _Buckets
    # The figures of an app or model no tick mentions are the same for all of them: made
    # once per window (an overview of a thousand quiet apps would otherwise build them a
    # thousand times, holding the event loop for a second).
    quiet: dict[str, dict[str, Any]] = field(default_factory=dict)
    # One app's stages by number (``merge_stages``).
    stages: dict[int, _Buckets] = field(default_factory=dict)


def _covered(
    ticks: Iterable[Tick], merged: Merged
) -> Iterator[tuple[Tick, float, list[tuple[int, float]]]]:
    """Each tick in the window with its ``dt`` and the buckets it spans, after counting
    the seconds it covers into ``merged.coverage``."""
    window = merged.window
    for tick in ticks:
        t, dt = float(tick["t"]), float(tick.get("dt") or 0.0)
        spans = window.spread(t, dt)
        if not spans:
            continue
        for i, share in spans:
            merged.coverage[i] += share * (dt or window.interval_s)
        yield tick, dt, spans


def merge(ticks: Iterable[Tick], window: Window) -> Merged:
    n = window.n
    merged = Merged(window, [0.0] * n, {}, {}, _Buckets(n))
    for tick, dt, spans in _covered(ticks, merged):
        for app, a in (tick.get("apps") or {}).items():
            buckets = merged.apps.setdefault(app, _Buckets(n))
            for i, share in spans:
                for name in ("requests", "errors", "defaults", "queries"):
                    if a.get(name):
                        buckets.add(name, i, float(a[name]) * share)
                if any(a.get("latency_buckets") or ()):
                    buckets.add_hist(i, a.get("bounds") or (), a["latency_buckets"], share)
        for key, m in (tick.get("models") or {}).items():
            buckets = merged.models.setdefault(parse_arm(key)[0], _Buckets(n))
            for i, share in spans:
                buckets.add("batches", i, float(m.get("batches") or 0) * share)
                buckets.add("queries", i, float(m.get("queries") or 0) * share)
                # A value over time: its mean over the bucket (summed across frontends).
                seconds = share * (dt or window.interval_s)
                depth = float(m.get("queue_depth") or 0)
                buckets.add("queue_depth", i, depth * seconds / window.interval_s)
        c = tick.get("cache") or {}
        for i, share in spans:
            merged.cache.add("hits", i, float(c.get("hits") or 0) * share)
            merged.cache.add("misses", i, float(c.get("misses") or 0) * share)
    return merged


def merge_stages(ticks: Iterable[Tick], window: Window, app: str) -> Merged:
    """The stages of pipeline app ``app`` in the ticks, each summed into buckets as an
    app is: the time it took per request (a histogram over the app's bounds), the
    requests that reached it, the defaults and errors it caused. Ticks without stages
    (older frontends, one-stage apps) count for the coverage only."""
    n = window.n
    merged = Merged(window, [0.0] * n, {}, {}, _Buckets(n))
    for tick, _dt, spans in _covered(ticks, merged):
        a = (tick.get("apps") or {}).get(app) or {}
        bounds = a.get("bounds") or ()
        for key, s in (a.get("stages") or {}).items():
            number = stage_number(key)
            if number is None:
                continue
            buckets = merged.stages.setdefault(number, _Buckets(n))
            counts = s.get("latency_buckets") or ()
            requests = float(sum(counts))
            for i, share in spans:
                for name in ("defaults", "errors"):
                    if s.get(name):
                        buckets.add(name, i, float(s[name]) * share)
                if requests:
                    buckets.add("requests", i, requests * share)
                    buckets.add_hist(i, bounds, counts, share)
    return merged


def stage_figures(merged: Merged, count: int) -> list[dict[str, Any]]:
    """``[{"stage": n, "now": {...}, "series": {...}}]`` of stages 1 to ``count`` of
    ``merge_stages``'s app (a stage no tick mentions has no traffic)."""
    return [
        {"stage": n, **_figures(merged, merged.stages.get(n), "stage", _stage_figures)}
        for n in range(1, count + 1)
    ]


_STAGE_SERIES = ("rps", "p50_ms", "p99_ms", "defaults_per_s", "errors_per_s")


def _stage_figures(merged: Merged, b: _Buckets) -> dict[str, Any]:
    w = merged.window
    series: dict[str, list[Any]] = {"t": w.times(), **{name: [] for name in _STAGE_SERIES}}
    for i in range(w.n):
        if merged.coverage[i] <= 0:
            for name in _STAGE_SERIES:
                series[name].append(None)
            continue
        hist = b.hists.get(i)
        series["rps"].append(_r(b.get("requests", i) / w.interval_s))
        series["p50_ms"].append(_q(0.5, hist))
        series["p99_ms"].append(_q(0.99, hist))
        series["defaults_per_s"].append(_r(b.get("defaults", i) / w.interval_s))
        series["errors_per_s"].append(_r(b.get("errors", i) / w.interval_s))
    recent = w.recent()
    seconds = len(recent) * w.interval_s
    hist = b.merged(recent)
    now = {
        "rps": _r(b.total("requests", recent) / seconds) or 0.0,
        "p50_ms": _q(0.5, hist),
        "p99_ms": _q(0.99, hist),
        "defaults_per_s": _r(b.total("defaults", recent) / seconds) or 0.0,
        "errors_per_s": _r(b.total("errors", recent) / seconds) or 0.0,
    }
    return {"now": now, "series": series}


def app_figures(merged: Merged, app: str) -> dict[str, Any]:
    """``{"now": {...}, "series": {...}}`` of one app."""
    return _figures(merged, merged.apps.get(app), "app", _app_figures)


def _app_figures(merged: Merged, b: _Buckets) -> dict[str, Any]:
    w = merged.window
    series: dict[str, list[Any]] = {
        "t": w.times(),
        "rps": [],
        "p50_ms": [],
        "p99_ms": [],
        "default_rate": [],
    }
    for i in range(w.n):
        if merged.coverage[i] <= 0:
            for name in ("rps", "p50_ms", "p99_ms", "default_rate"):
                series[name].append(None)
            continue
        hist = b.hists.get(i)
        series["rps"].append(_r(b.get("requests", i) / w.interval_s))
        series["p50_ms"].append(_q(0.5, hist))
        series["p99_ms"].append(_q(0.99, hist))
        series["default_rate"].append(_r(_ratio(b.get("defaults", i), b.get("queries", i))))
    recent = w.recent()
    hist = b.merged(recent)
    requests = b.total("requests", recent)
    now = {
        "rps": _r(requests / (len(recent) * w.interval_s)) or 0.0,
        "p50_ms": _q(0.5, hist),
        "p99_ms": _q(0.99, hist),
        "default_rate": _r(_ratio(b.total("defaults", recent), b.total("queries", recent))),
        "error_rate": _r(_ratio(b.total("errors", recent), requests)),
    }
    return {"now": now, "series": series}


def model_figures(merged: Merged, model: str) -> dict[str, Any]:
    """``{"now": {...}, "series": {...}}`` of one model (its versions summed)."""
    return _figures(merged, merged.models.get(model), "model", _model_figures)


def _figures(
    merged: Merged,
    b: _Buckets | None,
    kind: str,
    build: Callable[[Merged, _Buckets], dict[str, Any]],
) -> dict[str, Any]:
    """``build``'s figures of ``b``; of no traffic (``b`` None), built once per ``kind``
    and shared by every quiet app or model of the window."""
    if b is not None:
        return build(merged, b)
    if kind not in merged.quiet:
        merged.quiet[kind] = build(merged, _Buckets(merged.window.n))
    return merged.quiet[kind]


def _model_figures(merged: Merged, b: _Buckets) -> dict[str, Any]:
    w = merged.window
    series: dict[str, list[Any]] = {"t": w.times(), "batch_size": [], "queue_depth": [], "qps": []}
    for i in range(w.n):
        if merged.coverage[i] <= 0:
            for name in ("batch_size", "queue_depth", "qps"):
                series[name].append(None)
            continue
        series["batch_size"].append(_r(_ratio(b.get("queries", i), b.get("batches", i)), 2))
        series["queue_depth"].append(_r(b.get("queue_depth", i), 2))
        series["qps"].append(_r(b.get("queries", i) / w.interval_s))
    recent = w.recent()
    queries = b.total("queries", recent)
    last = next((i for i in reversed(recent) if merged.coverage[i] > 0), None)
    now = {
        "batch_size": _r(_ratio(queries, b.total("batches", recent)), 2),
        "queue_depth": round(b.get("queue_depth", last)) if last is not None else 0,
        "qps": _r(queries / (len(recent) * w.interval_s)) or 0.0,
    }
    return {"now": now, "series": series}


def cache_figures(merged: Merged, latest: Mapping[str, Tick]) -> dict[str, Any]:
    w = merged.window
    c = merged.cache
    hit_rate: list[float | None] = []
    for i in range(w.n):
        hits, misses = c.get("hits", i), c.get("misses", i)
        hit_rate.append(None if merged.coverage[i] <= 0 else _r(_ratio(hits, hits + misses)))
    recent = w.recent()
    hits, misses = c.total("hits", recent), c.total("misses", recent)
    size = sum(int((t.get("cache") or {}).get("bytes") or 0) for t in latest.values())
    return {
        "now": {"hit_rate": _r(_ratio(hits, hits + misses)), "bytes": size},
        "series": {"t": w.times(), "hit_rate": hit_rate},
    }


def weight_series(ticks: Iterable[Tick], window: Window, app: str) -> dict[str, Any]:
    """The app's arm weights over the window: per bucket, the mean of what the ticks in
    it said (the frontends share the learned state, so they agree but for timing)."""
    sums: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {}
    for tick in ticks:
        w = ((tick.get("apps") or {}).get(app) or {}).get("weights")
        i = window.bucket_of(float(tick["t"]))
        if not w or i is None:
            continue
        for arm, value in w.items():
            sums.setdefault(arm, [0.0] * window.n)[i] += float(value)
            counts.setdefault(arm, [0] * window.n)[i] += 1
    arms = {
        arm: [_r(s / c) if c else None for s, c in zip(sums[arm], counts[arm], strict=True)]
        for arm in sorted(sums)
    }
    return {"t": window.times(), "arms": arms}
