"""What ``Connection.get_overview()`` and ``Connection.get_app_activity()`` return: the
shapes of ``GET /admin/overview`` and ``GET /admin/apps/{app}/activity``
(``docs/admin-api.md``), as ``TypedDict``s.

They are plain dicts of JSON values (print them, ``json.dumps`` them); the types are for
the reader and for mypy. The numbers are the query frontends' own, summed across
frontends: each frontend writes a tick of its counters every ``interval_s`` seconds, and
the management frontend reads the ticks of the last ``window_s`` seconds. A rate or a
latency of a period with no traffic is ``None`` (nothing to measure), not 0.

``now`` values are over the last ~10 s. Each ``series`` holds one point per
``interval_s`` seconds: ``t`` (unix seconds) and, index for index, the values.
"""

from __future__ import annotations

from typing import Any, TypedDict

OVERVIEW_WINDOW_S = 300  # the management frontend's default
MIN_WINDOW_S, MAX_WINDOW_S = 10, 3600  # what it accepts


class FrontendInfo(TypedDict):
    """A query frontend that wrote a tick within the window."""

    id: str
    last_seen_s: float  # seconds since its last tick
    uptime_s: float


class AppNow(TypedDict):
    rps: float  # requests per second
    p50_ms: float | None
    p99_ms: float | None
    default_rate: float | None  # fraction of queries answered with the default output
    error_rate: float | None  # fraction of requests answered with an error


class AppSeries(TypedDict):
    t: list[float]
    rps: list[float | None]
    p50_ms: list[float | None]
    p99_ms: list[float | None]
    default_rate: list[float | None]


class PipelineStage(TypedDict):
    """One stage of an app's pipeline; stage 1 is the app's links under its policy."""

    arms: list[str]  # "m" (follows the current version) or "m:3" (pinned), sorted
    policy: str  # single, split, exp3 or exp4
    policy_params: dict[str, Any]
    policy_epoch: str


class AppOverview(TypedDict):
    name: str
    input_type: str
    slo_micros: int
    policy: str  # stage 1's: single, split, exp3 or exp4
    linked_models: list[str]  # stage 1's arms: "m" (follows the current version) or "m:3"
    pipeline: list[PipelineStage]  # every stage in order (one for an app of one stage)
    now: AppNow
    series: AppSeries


class ReplicaInfo(TypedDict):
    id: str
    version: str
    connected: bool
    in_rotation: bool  # queries are sent to it
    state: str  # "ok", "silent", "stuck", ...
    restarts: int


class ModelNow(TypedDict):
    batch_size: float | None  # mean queries per batch
    queue_depth: int
    qps: float  # queries per second


class ModelSeries(TypedDict):
    t: list[float]
    batch_size: list[float | None]
    queue_depth: list[float | None]
    qps: list[float | None]


class ModelOverview(TypedDict):
    name: str
    current_version: str | None
    versions: list[str]
    replicas_desired: dict[str, int]  # per version: the replica count recorded
    replicas: list[ReplicaInfo]
    now: ModelNow
    series: ModelSeries


class CacheNow(TypedDict):
    hit_rate: float | None
    bytes: int


class CacheSeries(TypedDict):
    t: list[float]
    hit_rate: list[float | None]


class CacheOverview(TypedDict):
    now: CacheNow
    series: CacheSeries


class Overview(TypedDict):
    """``GET /admin/overview``: every app and model (from the cluster's records, so they
    show with no traffic), the query frontends, and the prediction cache."""

    now: float  # the management frontend's clock, unix seconds
    interval_s: float
    window_s: int
    frontends: list[FrontendInfo]
    apps: list[AppOverview]
    models: list[ModelOverview]
    cache: CacheOverview


class WeightSeries(TypedDict):
    t: list[float]
    arms: dict[str, list[float | None]]  # "model:version" -> weight or probability


class DefaultAnswer(TypedDict):
    t: float
    query_id: int | None
    request_id: str | None
    reason: str  # why the default output answered
    frontend: str


class AppActivity(TypedDict):
    """``GET /admin/apps/{app}/activity``: the policy, its weights (split: configured;
    exp3/exp4: learned; single: no arms) over time, and the default answers, newest
    first (at most 50). Policy, params, links and weights are stage 1's; ``pipeline``
    lists every stage."""

    app: str
    policy: str
    policy_params: dict[str, Any]
    linked_models: list[str]
    pipeline: list[PipelineStage]
    interval_s: float
    window_s: int
    weights: WeightSeries
    recent_defaults: list[DefaultAnswer]
