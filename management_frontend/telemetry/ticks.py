"""The ticks of ``{p}:telemetry`` as they are, before any bucketing: whether one has the
shape readers expect (``readable``), each frontend's newest (``latest_by_frontend``,
``live``, ``frontends``), the replicas they report merged with the other sources
(``replicas``), and the default answers they list (``recent_defaults``). Pure, like
``aggregate``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from management_frontend.state.keys import TELEMETRY_TICK_S, parse_arm
from management_frontend.state.pipelines import MAX_STAGES

# A frontend whose newest tick is older than this many ticks has stopped ticking.
STALE_TICKS = 3
# Recent defaults an activity answer lists at most.
MAX_RECENT_DEFAULTS = 50
# No counter, timestamp or byte count of a real tick comes near this (2**53, where
# doubles stop being exact); a bigger number is not read, so that the sums of a window's
# ticks stay finite (round(inf) would make the overview a 500).
MAX_MAGNITUDE = float(2**53)

Tick = Mapping[str, Any]


def _number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= MAX_MAGNITUDE
    )


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
        if not _stages_readable(a.get("stages", {}), len(bounds)):
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


def stage_number(key: object) -> int | None:
    """A key of an app's ``stages`` in a tick as the stage's number (1 to
    ``MAX_STAGES``); None if it is not one."""
    if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 2):
        return None
    number = int(key)
    return number if 1 <= number <= MAX_STAGES else None


def _stages_readable(stages: object, bounds: int) -> bool:
    """A pipeline app's ``stages`` (absent from older ticks and one-stage apps): by stage
    number, each a latency histogram over the app's bounds, defaults and errors."""
    if not isinstance(stages, dict):
        return False
    for key, s in stages.items():
        if stage_number(key) is None or not isinstance(s, dict):
            return False
        if not _counts(s, ("defaults", "errors")):
            return False
        counts = s.get("latency_buckets", [])
        if not _numbers(counts) or (counts and len(counts) != bounds + 1):
            return False
    return True


def latest_by_frontend(ticks: Iterable[Tick]) -> dict[str, Tick]:
    """Each frontend's newest tick."""
    out: dict[str, Tick] = {}
    for tick in ticks:
        fid = str(tick.get("frontend", ""))
        if fid not in out or float(tick["t"]) >= float(out[fid]["t"]):
            out[fid] = tick
    return out


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
