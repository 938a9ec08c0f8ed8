"""Query frontends' ticks merged into the series of ``/admin/overview`` and ``/activity``.

Pure: the ticks (``{p}:telemetry``, one JSON document per frontend every
``TELEMETRY_TICK_S``; shape in ``docs/redis-schema.md``) come in as dicts, the answers
go out as dicts; Redis is ``reader.py``'s.

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
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from management_frontend.state.keys import TELEMETRY_TICK_S, parse_arm

# "now" is the last ~NOW_S seconds of the window.
NOW_S = 10.0
# A frontend whose newest tick is older than this many ticks has stopped ticking.
STALE_TICKS = 3
# Points per series at most: longer windows get wider buckets.
MAX_POINTS = 600
# Recent defaults an activity answer lists at most.
MAX_RECENT_DEFAULTS = 50

Tick = Mapping[str, Any]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value: object) -> bool:
    return isinstance(value, list) and all(_number(v) for v in value)


def _counts(entry: Mapping[str, Any], names: Iterable[str]) -> bool:
    return all(_number(entry.get(name, 0)) for name in names)


def readable(tick: object) -> bool:
    """Whether ``tick`` has the shape this module reads (``docs/redis-schema.md``); one
    that does not (written by hand, or by another program) is left out, not a 500.
    Fields it does not know are fine."""
    if not isinstance(tick, dict) or not isinstance(tick.get("frontend"), str):
        return False
    if not all(_number(tick.get(k, 0)) for k in ("t", "dt", "started")) or "t" not in tick:
        return False
    apps, models, cache = tick.get("apps", {}), tick.get("models", {}), tick.get("cache", {})
    if not (isinstance(apps, dict) and isinstance(models, dict) and isinstance(cache, dict)):
        return False
    if not _counts(cache, ("hits", "misses", "bytes")):
        return False
    for a in apps.values():
        if not isinstance(a, dict) or not _counts(a, ("requests", "errors", "defaults", "queries")):
            return False
        bounds, counts = a.get("bounds", []), a.get("latency_buckets", [])
        if not (_numbers(bounds) and _numbers(counts)):
            return False
        if counts and len(counts) != len(bounds) + 1:
            return False
        weights, defaults = a.get("weights"), a.get("recent_defaults", [])
        if weights is not None and not (
            isinstance(weights, dict) and all(_number(w) for w in weights.values())
        ):
            return False
        if not isinstance(defaults, list) or not all(
            isinstance(d, dict) and _number(d.get("t", 0)) for d in defaults
        ):
            return False
    for m in models.values():
        if not isinstance(m, dict) or not _counts(m, ("batches", "queries", "queue_depth")):
            return False
        replicas = m.get("replicas", [])
        if not isinstance(replicas, list) or not all(
            isinstance(r, dict) and "id" in r and _number(r.get("restarts", 0)) for r in replicas
        ):
            return False
    return True


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


def latest_by_frontend(ticks: Iterable[Tick]) -> dict[str, Tick]:
    """Each frontend's newest tick."""
    out: dict[str, Tick] = {}
    for tick in ticks:
        fid = str(tick.get("frontend", ""))
        if fid not in out or float(tick["t"]) >= float(out[fid]["t"]):
            out[fid] = tick
    return out


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


def merge(ticks: Iterable[Tick], window: Window) -> Merged:
    n = window.n
    merged = Merged(window, [0.0] * n, {}, {}, _Buckets(n))
    for tick in ticks:
        t, dt = float(tick["t"]), float(tick.get("dt") or 0.0)
        spans = window.spread(t, dt)
        if not spans:
            continue
        for i, share in spans:
            merged.coverage[i] += share * (dt or window.interval_s)
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


def app_figures(merged: Merged, app: str) -> dict[str, Any]:
    """``{"now": {...}, "series": {...}}`` of one app."""
    w = merged.window
    b = merged.apps.get(app) or _Buckets(w.n)
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
    w = merged.window
    b = merged.models.get(model) or _Buckets(w.n)
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


def frontends(latest: Mapping[str, Tick], now: float) -> list[dict[str, Any]]:
    return [
        {
            "id": fid,
            "last_seen_s": round(max(0.0, now - float(t["t"])), 3),
            "uptime_s": round(max(0.0, float(t["t"]) - float(t.get("started") or t["t"])), 3),
        }
        for fid, t in sorted(latest.items())
    ]


def live(latest: Mapping[str, Tick], now: float, tick_s: float = TELEMETRY_TICK_S) -> list[Tick]:
    """The newest ticks of the frontends still ticking."""
    return [t for t in latest.values() if now - float(t["t"]) <= STALE_TICKS * tick_s]


def replicas(
    ticks: Iterable[Tick],
    records: Iterable[Mapping[str, Any]] = (),
    supervised: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Each model's replicas: what the frontends still ticking report (their newest
    ticks, merged by replica id: in rotation only if in every frontend's rotation),
    the replicas recorded in ``{p}:replicas``, and the replica processes the local
    supervisor runs (``{p}:supervision``: restarts, and one not connected yet or any
    more, with its state)."""
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for tick in ticks:
        for key, m in (tick.get("models") or {}).items():
            model, version = parse_arm(key)
            for r in m.get("replicas") or ():
                entry = found.get((model, version or "", str(r["id"])))
                if entry is None:
                    found[(model, version or "", str(r["id"]))] = {
                        "id": str(r["id"]),
                        "version": version,
                        "connected": bool(r.get("connected", True)),
                        "in_rotation": bool(r.get("in_rotation", True)),
                        "state": str(r.get("state") or "ok"),
                        "restarts": int(r.get("restarts") or 0),
                    }
                    continue
                entry["connected"] = entry["connected"] or bool(r.get("connected", True))
                entry["in_rotation"] = entry["in_rotation"] and bool(r.get("in_rotation", True))
                if entry["state"] == "ok":
                    entry["state"] = str(r.get("state") or "ok")
                entry["restarts"] = max(entry["restarts"], int(r.get("restarts") or 0))
    for rec in records:
        key = (
            str(rec.get("model_name")),
            str(rec.get("model_version")),
            str(rec.get("replica_id")),
        )
        if key not in found:
            found[key] = {
                "id": key[2],
                "version": key[1],
                "connected": True,
                "in_rotation": True,
                "state": "ok",
                "restarts": 0,
            }
    for process in (supervised or {}).values():
        if process.get("role") != "replica":
            continue
        labels = process.get("labels") or {}
        key = (str(labels.get("model")), str(labels.get("version")), str(labels.get("replica_id")))
        restarts = int(process.get("restarts") or 0)
        entry = found.get(key)
        if entry is not None:
            entry["restarts"] = max(entry["restarts"], restarts)
            continue
        state = str(process.get("state") or "")
        found[key] = {
            "id": key[2],
            "version": key[1],
            "connected": False,
            "in_rotation": False,
            "state": "starting" if state == "running" else state or "unknown",
            "restarts": restarts,
        }
    out: dict[str, list[dict[str, Any]]] = {}
    for (model, _version, _id), entry in sorted(found.items()):
        out.setdefault(model, []).append(entry)
    return out


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


def recent_defaults(ticks: Iterable[Tick], app: str) -> list[dict[str, Any]]:
    """The app's default answers in the ticks, newest first, at most ``MAX_RECENT_DEFAULTS``."""
    found = []
    for tick in ticks:
        for d in ((tick.get("apps") or {}).get(app) or {}).get("recent_defaults") or ():
            found.append(
                {
                    "t": d.get("t"),
                    "query_id": d.get("query_id"),
                    "request_id": d.get("request_id"),
                    "reason": d.get("reason"),
                    "frontend": tick.get("frontend"),
                }
            )
    found.sort(key=lambda d: float(d["t"] or 0.0), reverse=True)
    return found[:MAX_RECENT_DEFAULTS]
