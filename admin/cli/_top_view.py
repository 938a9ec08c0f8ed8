"""What ``schooner top`` draws: one frame, from the management API's overview (and an
app's activity, with ``--app``), as rich tables.

Pure functions of the answers (no I/O, no clock but the answer's own ``now``), so that a
frame is tested from a dict of the contract's shape. Every cell is a ``Text`` (a name
with ``[brackets]`` stays as it is, never read as markup), and a value that is missing,
null or not a number prints as ``-``, never as a literal ``None``. A rate is a
percentage, a latency milliseconds, a throughput per second; a trend is a sparkline of
unicode blocks, one per slice of the window.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

DASH: Final = "-"
BLOCKS: Final = "▁▂▃▄▅▆▇█"
SPARK_WIDTH: Final = 24
MAX_DEFAULTS_SHOWN: Final = 10


@dataclass(frozen=True)
class Frame:
    """What one refresh shows: the answers, where they came from, and the last error
    (shown as a "reconnecting" banner over the last answers, if any)."""

    overview: Mapping[str, Any] | None
    activity: Mapping[str, Any] | None = None
    where: str = ""
    error: str | None = None


# C0 and C1 control characters and DEL: rich passes ESC (and CSI) through to the
# terminal, so a string of an answer could retitle, clear or rewrite the operator's
# screen. Shown as "?" instead.
_CONTROLS: Final = {c: "?" for c in (*range(0x20), *range(0x7F, 0xA0))}


def _printable(value: Any) -> Any:
    """``value`` with every string (keys too) freed of control characters."""
    if isinstance(value, str):
        return value.translate(_CONTROLS)
    if isinstance(value, Mapping):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


# --------------------------------------------------------------------------- cells


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def fixed(value: object, digits: int = 1) -> str:
    number = _number(value)
    return DASH if number is None else f"{number:.{digits}f}"


def whole(value: object) -> str:
    number = _number(value)
    return DASH if number is None else str(round(number))


def percent(value: object) -> str:
    number = _number(value)
    return DASH if number is None else f"{number * 100:.1f}%"


def size(value: object) -> str:
    """Bytes in the largest unit that keeps the number at least 1."""
    number = _number(value)
    if number is None:
        return DASH
    units, power = ("B", "KiB", "MiB", "GiB"), 0
    while abs(number) >= 1024 and power < len(units) - 1:
        number, power = number / 1024, power + 1
    return f"{number:.0f} B" if power == 0 else f"{number:.1f} {units[power]}"


def duration(value: object) -> str:
    """Seconds as 42s, 3m05s or 2h07m."""
    number = _number(value)
    if number is None:
        return DASH
    seconds = max(0, round(number))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def clock(value: object) -> str:
    number = _number(value)
    return DASH if number is None else time.strftime("%H:%M:%S", time.localtime(number))


def text(value: object) -> str:
    if value is None or value == "":
        return DASH
    return str(value)


def sparkline(values: object, width: int = SPARK_WIDTH) -> str:
    """The series as at most ``width`` blocks, each the mean of its slice, scaled to the
    largest; a slice with no value is a space. ``-`` when there is no value at all."""
    points = [_number(v) for v in values] if isinstance(values, Sequence) else []
    if len(points) > width:
        n = len(points)
        points = [_mean(points[i * n // width : (i + 1) * n // width]) for i in range(width)]
    known = [p for p in points if p is not None]
    if not known:
        return DASH
    top = max(known)
    line = ""
    for p in points:
        if p is None:
            line += " "
        else:
            line += BLOCKS[0] if top <= 0 else BLOCKS[round(max(p, 0) / top * (len(BLOCKS) - 1))]
    return line


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


# --------------------------------------------------------------------------- pipelines


def stages_of(app: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """An app's stages in order (its ``pipeline``); an answer without one (an older
    cluster) is one stage: its links under its policy."""
    stages = [_dict(s) for s in _list(app.get("pipeline"))]
    if stages:
        return stages
    return [
        {
            "arms": _list(app.get("linked_models")),
            "policy": app.get("policy"),
            "policy_params": _dict(app.get("policy_params")),
        }
    ]


def pipeline_models(app: Mapping[str, Any]) -> str:
    """The apps table's models: ``a,b`` for one stage, ``feat -> clf-a|clf-b`` for a
    pipeline (stages in order, a stage's arms joined by ``|``)."""
    stages = stages_of(app)
    if len(stages) == 1:
        return ",".join(str(m) for m in _list(stages[0].get("arms")))
    return " -> ".join("|".join(str(a) for a in _list(s.get("arms"))) or DASH for s in stages)


def pipeline_policies(app: Mapping[str, Any]) -> str:
    """The apps table's policy: ``exp3``, or every stage's for a pipeline (``single->exp4``)."""
    return "->".join(text(s.get("policy")) for s in stages_of(app))


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'), default=str)}"
        for k, v in params.items()
    )


def _arm(arm: str, current: Mapping[str, Any]) -> str:
    """``m@3`` (the version ``m`` answers with now, its current one), ``m:3`` (pinned),
    or ``m`` when the current version is not known."""
    if ":" in arm:
        return arm
    version = current.get(arm)
    return arm if version is None else f"{arm}@{version}"


def stages_line(stages: Sequence[Mapping[str, Any]], models: Sequence[Any] = ()) -> Text:
    """One line for ``--app``: every stage, numbered from 1, its arms with the version
    each answers with now, its policy and params:
    ``stages: 1 feat@1 (single) -> 2 clf-a@3|clf-b:2 (exp4 eta=0.2)``."""
    current = {text(_dict(m).get("name")): _dict(m).get("current_version") for m in models}
    parts = []
    for n, stage in enumerate(stages, start=1):
        arms = "|".join(_arm(str(a), current) for a in _list(stage.get("arms"))) or DASH
        params = _params(_dict(stage.get("policy_params")))
        policy = text(stage.get("policy")) + (f" {params}" if params else "")
        parts.append(f"{n} {arms} ({policy})")
    return Text.assemble(("stages: ", "bold"), " -> ".join(parts))


def stages_table(
    stages: Sequence[Mapping[str, Any]], live: Sequence[Any], spark: int = SPARK_WIDTH
) -> Table:
    """A pipeline's stages live (the activity's ``stages``), a row each: requests that
    reached the stage per second, its p50/p99 time, the defaults and errors it caused
    per second, and its p99's trend."""
    columns = ("stage", "req/s", "p50 ms", "p99 ms", "defaults/s", "errors/s", "trend")
    table = _table("stages (live)", *columns, "models", spark=spark)
    for entry in map(_dict, live):
        number = _number(entry.get("stage"))
        index = None if number is None else round(number) - 1
        arms = stages[index].get("arms") if index is not None and 0 <= index < len(stages) else ()
        now, series = _dict(entry.get("now")), _dict(entry.get("series"))
        defaults = Text(fixed(now.get("defaults_per_s"), 2))
        if (_number(now.get("defaults_per_s")) or 0) > 0:
            defaults.stylize("yellow")
        errors = Text(fixed(now.get("errors_per_s"), 2))
        if (_number(now.get("errors_per_s")) or 0) > 0:
            errors.stylize("red")
        table.add_row(
            *_cells(
                Text(whole(number), style="bold"),
                fixed(now.get("rps")),
                fixed(now.get("p50_ms")),
                fixed(now.get("p99_ms")),
                defaults,
                errors,
                _trend(series.get("p99_ms"), spark),
                text("|".join(str(a) for a in _list(arms))),
            )
        )
    return table


# Columns of words, which wrap on a narrow terminal; numbers never wrap nor shrink.
_WORDS: Final = ("health", "request id", "reason", "frontend", "policy", "models")


def _table(title: str, *columns: str, spark: int = SPARK_WIDTH) -> Table:
    """A table of ``columns``; without its "trend" column when ``spark`` is 0."""
    table = Table(
        title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, expand=False
    )
    for i, column in enumerate(columns):
        if column == "trend" and not spark:
            continue
        words = i > 0 and column in _WORDS
        left = i == 0 or words or column == "trend"
        table.add_column(column, justify="left" if left else "right", no_wrap=not words)
    return table


def _trend(values: object, spark: int) -> Text | None:
    """The trend cell: ``None`` (no cell) when the table has no trend column."""
    return Text(sparkline(values, spark), style="cyan") if spark else None


def _cells(*values: str | Text | None) -> list[Text]:
    """A row's cells; a ``None`` is a cell of a column the table left out."""
    return [v if isinstance(v, Text) else Text(v) for v in values if v is not None]


# --------------------------------------------------------------------------- tables


def apps_table(apps: Sequence[Any], spark: int = SPARK_WIDTH) -> Table:
    columns = ("app", "req/s", "trend", "p50 ms", "p99 ms", "defaults", "errors", "SLO ms")
    table = _table("apps", *columns, "policy", "models", spark=spark)
    for app in map(_dict, apps):
        now, series = _dict(app.get("now")), _dict(app.get("series"))
        slo_ms = _number(app.get("slo_micros"))
        slo = None if slo_ms is None else slo_ms / 1000
        p99 = Text(fixed(now.get("p99_ms")))
        p99_ms = _number(now.get("p99_ms"))
        if slo is not None and p99_ms is not None and p99_ms > slo:
            p99.stylize("bold red")
        defaults = Text(percent(now.get("default_rate")))
        if (_number(now.get("default_rate")) or 0) > 0:
            defaults.stylize("yellow")
        errors = Text(percent(now.get("error_rate")))
        if (_number(now.get("error_rate")) or 0) > 0:
            errors.stylize("red")
        table.add_row(
            *_cells(
                Text(text(app.get("name")), style="bold"),
                fixed(now.get("rps")),
                _trend(series.get("rps"), spark),
                fixed(now.get("p50_ms")),
                p99,
                defaults,
                errors,
                DASH if slo is None else f"{slo:g}",
                text(pipeline_policies(app)),
                text(pipeline_models(app)),
            )
        )
    return table


def replica_counts(model: Mapping[str, Any]) -> str:
    """Replicas connected / in rotation / desired (the counts recorded, all versions)."""
    replicas = [_dict(r) for r in _list(model.get("replicas"))]
    connected = sum(1 for r in replicas if r.get("connected") is True)
    rotating = sum(1 for r in replicas if r.get("in_rotation") is True)
    wanted = [_number(n) for n in _dict(model.get("replicas_desired")).values()]
    desired = sum(round(n) for n in wanted if n is not None)
    return f"{connected}/{rotating}/{desired}"


def health(model: Mapping[str, Any]) -> Text:
    """The replicas' states: ``ok``, or how many are in each state."""
    states = Counter(text(_dict(r).get("state")) for r in _list(model.get("replicas")))
    if not states:
        return Text(DASH)
    if set(states) == {"ok"}:
        return Text("ok", style="green")
    return Text(", ".join(f"{n} {s}" for s, n in sorted(states.items())), style="yellow")


def models_table(models: Sequence[Any], spark: int = SPARK_WIDTH) -> Table:
    columns = ("model", "current", "versions", "replicas", "health", "restarts", "batch")
    title = "models (replicas: connected/in rotation/desired)"
    table = _table(title, *columns, "queue", "qps", "trend", spark=spark)
    for model in map(_dict, models):
        now, series = _dict(model.get("now")), _dict(model.get("series"))
        restarts = [_number(_dict(r).get("restarts")) for r in _list(model.get("replicas"))]
        versions = ",".join(str(v) for v in _list(model.get("versions")))
        table.add_row(
            *_cells(
                Text(text(model.get("name")), style="bold"),
                text(model.get("current_version")),
                text(versions),
                replica_counts(model),
                health(model),
                str(sum(round(n) for n in restarts if n is not None)),
                fixed(now.get("batch_size")),
                whole(now.get("queue_depth")),
                fixed(now.get("qps")),
                _trend(series.get("qps"), spark),
            )
        )
    return table


def cache_table(cache: Mapping[str, Any], spark: int = SPARK_WIDTH) -> Table:
    table = _table("prediction cache", "hit rate", "bytes", "trend", spark=spark)
    now, series = _dict(cache.get("now")), _dict(cache.get("series"))
    table.add_row(
        *_cells(
            percent(now.get("hit_rate")),
            size(now.get("bytes")),
            _trend(series.get("hit_rate"), spark),
        )
    )
    return table


def frontends_table(frontends: Sequence[Any]) -> Table:
    table = _table("query frontends", "frontend", "last seen", "uptime")
    for frontend in map(_dict, frontends):
        seen = _number(frontend.get("last_seen_s"))
        table.add_row(
            *_cells(
                text(frontend.get("id")),
                DASH if seen is None else f"{seen:.1f}s ago",
                duration(frontend.get("uptime_s")),
            )
        )
    return table


def activity_view(
    activity: Mapping[str, Any],
    spark: int = SPARK_WIDTH,
    overview: Mapping[str, Any] | None = None,
) -> RenderableType:
    """One app's policy, its stages (the versions they answer with from ``overview``'s
    models) and, for a pipeline, each stage's live numbers, its weights per linked
    model, and its recent default answers. Policy, links and weights are stage 1's."""
    params = _params(_dict(activity.get("policy_params")))
    links = ", ".join(str(m) for m in _list(activity.get("linked_models")))
    title = Text.assemble(
        ("app ", "bold"),
        (text(activity.get("app")), "bold"),
        f": policy {text(activity.get('policy'))}",
        f" ({params})" if params else "",
        f", linked to {links or DASH}",
    )
    overview = _dict(overview)
    name = activity.get("app")
    listed = next((a for a in map(_dict, _list(overview.get("apps"))) if a.get("name") == name), {})
    stages = stages_of(activity if "pipeline" in activity else {**activity, **listed})
    weights_title = "weights" if len(stages) == 1 else "weights (stage 1)"
    weights = _table(weights_title, "model", "now", "trend", spark=spark)
    for arm, series in sorted(_dict(_dict(activity.get("weights")).get("arms")).items()):
        points = _list(series)
        last = next((p for p in reversed(points) if _number(p) is not None), None)
        weights.add_row(*_cells(str(arm), fixed(last, 3), _trend(points, spark)))
    defaults = _list(activity.get("recent_defaults"))
    shown = defaults[:MAX_DEFAULTS_SHOWN]
    more = len(defaults) - len(shown)
    title_d = "recent defaults" + (f" (newest {len(shown)} of {len(defaults)})" if more else "")
    table = _table(title_d, "time", "query", "request id", "reason", "frontend")
    for default in map(_dict, shown):
        table.add_row(
            *_cells(
                clock(default.get("t")),
                whole(default.get("query_id")),
                text(default.get("request_id")),
                text(default.get("reason")),
                text(default.get("frontend")),
            )
        )
    live = _list(activity.get("stages"))
    per_stage: list[RenderableType] = [stages_table(stages, live, spark), Text("")] if live else []
    return Group(
        title,
        stages_line(stages, _list(overview.get("models"))),
        Text(""),
        *per_stage,
        weights if weights.row_count else Text(f"{weights_title}: none in the window"),
        Text(""),
        table if shown else Text("recent defaults: none in the window"),
    )


# --------------------------------------------------------------------------- the frame


def header(frame: Frame) -> Text:
    overview = _dict(frame.overview)
    line = Text("schooner top", style="bold")
    if frame.where:
        line.append(f" · {frame.where}")
    if frame.overview is not None:
        window = whole(overview.get("window_s"))
        line.append(f" · window {window}s · at {clock(overview.get('now'))}")
    return line


def spark_width(width: int | None) -> int:
    """How wide a trend is on a console ``width`` columns wide (0: no trend column, so
    that the numbers fit 80 columns)."""
    if width is None or width >= 150:
        return SPARK_WIDTH
    return SPARK_WIDTH // 2 if width >= 110 else 0


def render(frame: Frame, width: int | None = None) -> RenderableType:
    """The whole frame, for a console ``width`` columns wide: header, the banner of an
    error, the tables."""
    spark = spark_width(width)
    frame = Frame(
        _printable(frame.overview),
        _printable(frame.activity),
        _printable(frame.where),
        _printable(frame.error),
    )
    parts: list[RenderableType] = [header(frame)]
    if frame.error is not None:
        parts.append(Text(f"reconnecting: {frame.error}", style="bold black on yellow"))
    if frame.overview is None:
        return Group(*parts)
    overview = _dict(frame.overview)
    apps, models = _list(overview.get("apps")), _list(overview.get("models"))
    parts.append(apps_table(apps, spark) if apps else Text("apps: none registered"))
    parts.append(models_table(models, spark) if models else Text("models: none deployed"))
    parts.append(cache_table(_dict(overview.get("cache")), spark))
    frontends = _list(overview.get("frontends"))
    if frontends:
        parts.append(frontends_table(frontends))
    else:
        parts.append(Text("query frontends: none reported in the window", style="yellow"))
    if frame.activity is not None:
        parts.append(activity_view(frame.activity, spark, overview))
    spaced = [parts[0]]
    for part in parts[1:]:
        spaced += [part] if isinstance(part, Text) else [Text(""), part]
    return Group(*spaced)
