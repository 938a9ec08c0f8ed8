"""Prometheus metrics of the query frontend, served at ``/metrics``.

Per app: requests by status code, request latency, answers by kind (prediction,
default, error) from which the default ratio follows. Per model version: batch size,
queue wait vs batch service time vs the model's own compute time, and, read at
scrape time, queue depth, connected replicas, each replica's batch-size target and the
prediction cache's counters; and the RPC peers refused at connection
(``RefusedPeersCollector``). Names follow Prometheus conventions: ``schooner_`` prefix,
base units (seconds), ``_total`` on counters.

Each frontend owns its registry, so tests and several apps in one process never clash.
The hot path only adds to plain ints (see ``_Histogram``); the metric families are
built when Prometheus scrapes, and the telemetry's ticks (``query_frontend.telemetry``)
read the same counters. A default answer is also remembered with its reason
(``RecentDefaults``), for the dashboard.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from query_frontend.batching.dispatch import Dispatcher
from query_frontend.caching.cache import PredictionCache
from query_frontend.queries import Expired, Failure, ModelKey, Outcome
from query_frontend.selection.ask import Answer

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _Histogram:
    """Bucket counts kept as plain ints: an observation is one bisect and two adds.

    prometheus_client's own Histogram takes a lock and checks its labels on every
    observation, which cost the predict path more than the rest of its bookkeeping; the
    frontend is one event loop, so nothing here needs a lock.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # bucket "le" bound >= value
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


@dataclass(frozen=True, slots=True)
class DefaultAnswer:
    """One query answered with its app's default: when (unix s), which, and why."""

    t: float
    query_id: int | None
    reason: str
    request_id: str | None = None


class RecentDefaults:
    """The last ``per_app`` default answers of each app, for the telemetry's tick
    (``query_frontend.telemetry``), which takes them every few seconds."""

    def __init__(self, per_app: int = 20, clock: Callable[[], float] = time.time) -> None:
        self.per_app = per_app
        self._clock = clock
        self._apps: dict[str, deque[DefaultAnswer]] = {}

    def note(
        self,
        app: str,
        outcomes: Sequence[Outcome],
        ids: Sequence[int],
        request_id: str | None,
    ) -> None:
        """Remember the defaults among ``outcomes`` (``ids``: their query ids, if known)."""
        ring = self._apps.get(app)
        if ring is None:
            ring = self._apps[app] = deque(maxlen=self.per_app)
        now = self._clock()
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, Expired):
                qid = ids[i] if i < len(ids) else None
                ring.append(DefaultAnswer(now, qid, outcome.reason, request_id))

    def take(self) -> dict[str, list[DefaultAnswer]]:
        """Every app's defaults noted since the last call, oldest first; forgets them."""
        taken = {app: list(ring) for app, ring in self._apps.items() if ring}
        self._apps.clear()
        return taken


class _StageStats:
    """One stage of a pipeline app: its time per request, the defaults it caused (an
    input leaving the pipeline there with the app's default) and its errors."""

    __slots__ = ("defaults", "errors", "latency")

    def __init__(self) -> None:
        self.latency = _Histogram(_LATENCY_BUCKETS)
        self.defaults = 0
        self.errors = 0


class _AppStats:
    __slots__ = (
        "by_model",
        "codes",
        "defaults",
        "errors",
        "latency",
        "partials",
        "predictions",
        "stages",
    )

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.by_model: dict[str, int] = {}  # apps with several arms: answers per version
        self.partials = 0
        self.latency = _Histogram(_LATENCY_BUCKETS)
        self.predictions = 0
        self.defaults = 0
        self.errors = 0
        self.stages: dict[int, _StageStats] = {}  # a pipeline's, by number (from 1)


class _ModelStats:
    __slots__ = ("batch_seconds", "batch_size", "model_seconds", "queue_wait")

    def __init__(self) -> None:
        self.batch_size = _Histogram(_BATCH_BUCKETS)
        self.queue_wait = _Histogram(_LATENCY_BUCKETS)
        self.batch_seconds = _Histogram(_LATENCY_BUCKETS)
        self.model_seconds = _Histogram(_LATENCY_BUCKETS)


class Metrics:
    """The frontend's counters, updated by the hot path and read when Prometheus scrapes."""

    def __init__(self, dispatcher: Dispatcher, cache: PredictionCache) -> None:
        self.registry = CollectorRegistry()
        self._apps: dict[str, _AppStats] = {}
        self._models: dict[ModelKey, _ModelStats] = {}
        self.recent_defaults = RecentDefaults()
        self.registry.register(_CountersCollector(self))
        self.registry.register(_StateCollector(dispatcher, cache))

    # ------------------------------------------------------------------- requests

    def request(
        self,
        app: str,
        code: int,
        seconds: float,
        outcomes: list[Outcome],
        ids: Sequence[int] = (),
        request_id: str | None = None,
    ) -> None:
        """Count one finished predict request of a registered app; its defaults (query
        ``ids`` in the order of ``outcomes``) are also remembered in ``recent_defaults``."""
        stats = self._app(app)
        stats.codes[code] = stats.codes.get(code, 0) + 1
        stats.latency.observe(seconds)
        defaulted = False
        for outcome in outcomes:
            if isinstance(outcome, bytes):
                stats.predictions += 1
            elif isinstance(outcome, Expired):
                stats.defaults += 1
                defaulted = True
            elif isinstance(outcome, Failure):
                stats.errors += 1
        if defaulted:  # rare: the usual request pays a local variable's test
            self.recent_defaults.note(app, outcomes, ids, request_id)

    def answered_by(self, app: str, answers: Iterable[Answer]) -> None:
        """Count who answered the queries of an app with several arms (split, exp3, exp4)."""
        stats = self._app(app)
        by_model = stats.by_model
        for ans in answers:
            for label in ans.models:
                by_model[label] = by_model.get(label, 0) + 1
            if ans.missing and ans.models:
                stats.partials += 1

    def stage(self, app: str, number: int, seconds: float, defaults: int, errors: int) -> None:
        """Count what stage ``number`` (from 1) of a pipeline app did for one request."""
        stages = self._app(app).stages
        stats = stages.get(number)
        if stats is None:
            stats = stages[number] = _StageStats()
        stats.latency.observe(seconds)
        stats.defaults += defaults
        stats.errors += errors

    def rejected(self, code: int) -> None:
        """Count a request refused before its app was known (the label stays bounded)."""
        stats = self._app("")
        stats.codes[code] = stats.codes.get(code, 0) + 1

    # -------------------------------------------------------------------- batches

    def batch_sent(self, key: ModelKey, size: int, waits: list[float]) -> None:
        stats = self._model(key)
        stats.batch_size.observe(size)
        observe = stats.queue_wait.observe
        for wait in waits:
            observe(wait)

    def batch_done(self, key: ModelKey, seconds: float, model_seconds: float) -> None:
        stats = self._model(key)
        stats.batch_seconds.observe(seconds)
        stats.model_seconds.observe(model_seconds)

    @property
    def apps(self) -> Mapping[str, _AppStats]:
        """Each app's counters so far ("" holds requests refused before an app was known)."""
        return self._apps

    @property
    def models(self) -> Mapping[ModelKey, _ModelStats]:
        """Each model version's batch histograms so far."""
        return self._models

    def _app(self, app: str) -> _AppStats:
        stats = self._apps.get(app)
        if stats is None:
            stats = self._apps[app] = _AppStats()
        return stats

    def _model(self, key: ModelKey) -> _ModelStats:
        stats = self._models.get(key)
        if stats is None:
            stats = self._models[key] = _ModelStats()
        return stats


class _CountersCollector(Collector):
    """The hot path's plain counters as Prometheus metric families."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "schooner_requests",
            "Prediction requests by app and HTTP status",
            labels=["app", "code"],
        )
        latency = HistogramMetricFamily(
            "schooner_request_duration_seconds", "Prediction request latency", labels=["app"]
        )
        answers = CounterMetricFamily(
            "schooner_answers",
            "Queries answered, by kind: prediction, default or error",
            labels=["app", "kind"],
        )
        by_model = CounterMetricFamily(
            "schooner_model_answers",
            "Queries of an app with several models answered by each model version "
            "(an ensemble's answer counts for every model in it)",
            labels=["app", "model"],
        )
        partials = CounterMetricFamily(
            "schooner_partial_answers",
            "Ensemble answers combined without some of the models (stragglers, models down)",
            labels=["app"],
        )
        stage_seconds = HistogramMetricFamily(
            "schooner_pipeline_stage_seconds",
            "Time one stage of a pipeline app took for a request (all its inputs)",
            labels=["app", "stage"],
        )
        stage_defaults = CounterMetricFamily(
            "schooner_pipeline_stage_defaults",
            "Queries of a pipeline app answered with the default because of this stage "
            "(late, or no model to answer)",
            labels=["app", "stage"],
        )
        stage_errors = CounterMetricFamily(
            "schooner_pipeline_stage_errors",
            "Queries of a pipeline app that failed at this stage (its model failed, or "
            "its output was not an input the next stage takes)",
            labels=["app", "stage"],
        )
        for app, stats in sorted(self._metrics._apps.items()):
            for number, stage in sorted(stats.stages.items()):
                labels = [app, str(number)]
                stage_seconds.add_metric(labels, stage.latency.buckets(), stage.latency.sum)
                stage_defaults.add_metric(labels, stage.defaults)
                stage_errors.add_metric(labels, stage.errors)
            for label, count in sorted(stats.by_model.items()):
                by_model.add_metric([app, label], count)
            if stats.partials:
                partials.add_metric([app], stats.partials)
            for code, count in sorted(stats.codes.items()):
                requests.add_metric([app, str(code)], count)
            if not app:
                continue  # requests refused before an app was known: counted, not timed
            latency.add_metric([app], stats.latency.buckets(), stats.latency.sum)
            answers.add_metric([app, "prediction"], stats.predictions)
            answers.add_metric([app, "default"], stats.defaults)
            answers.add_metric([app, "error"], stats.errors)
        yield requests
        yield latency
        yield answers
        yield by_model
        yield partials
        yield stage_seconds
        yield stage_defaults
        yield stage_errors

        labels = ["model", "version"]
        families = {
            "batch_size": HistogramMetricFamily(
                "schooner_batch_size", "Queries per batch sent to a replica", labels=labels
            ),
            "queue_wait": HistogramMetricFamily(
                "schooner_queue_wait_seconds",
                "Time a query waited in the frontend's queue",
                labels=labels,
            ),
            "batch_seconds": HistogramMetricFamily(
                "schooner_batch_duration_seconds",
                "Service time of a batch as the frontend sees it (send to answer)",
                labels=labels,
            ),
            "model_seconds": HistogramMetricFamily(
                "schooner_model_duration_seconds",
                "Time the model function took on a batch, as the container reports it",
                labels=labels,
            ),
        }
        for (name, version), model_stats in sorted(self._metrics._models.items()):
            for attr, family in families.items():
                hist: _Histogram = getattr(model_stats, attr)
                family.add_metric([name, version], hist.buckets(), hist.sum)
        yield from families.values()


class _StateCollector(Collector):
    """Values read from the dispatcher and the cache when Prometheus scrapes."""

    def __init__(self, dispatcher: Dispatcher, cache: PredictionCache) -> None:
        self._dispatcher = dispatcher
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        labels = ["model", "version"]
        depth = GaugeMetricFamily("schooner_queue_depth", "Queries waiting", labels=labels)
        replicas = GaugeMetricFamily(
            "schooner_replicas_connected", "Replicas connected", labels=labels
        )
        in_rotation = GaugeMetricFamily(
            "schooner_replicas_in_rotation",
            "Connected replicas that get work (not benched as silent or stuck)",
            labels=labels,
        )
        target = GaugeMetricFamily(
            "schooner_batch_size_target",
            "Batch size each replica's controller chooses next",
            labels=[*labels, "replica"],
        )
        for (name, version), q in sorted(self._dispatcher.queues.items()):
            depth.add_metric([name, version], len(q.pending))
            replicas.add_metric([name, version], len(q.replicas))
            in_rotation.add_metric(
                [name, version], sum(1 for r in q.replicas.values() if r.available)
            )
            for replica in q.replicas.values():
                target.add_metric([name, version, replica.replica_id], replica.batcher.size())
        yield depth
        yield replicas
        yield in_rotation
        yield target
        yield from self._failures()
        stats = self._cache.stats()
        for field, help_text in (
            ("hits", "Queries answered from the prediction cache"),
            ("misses", "Queries the prediction cache did not hold"),
            ("coalesced", "Queries merged into an identical query in flight"),
            ("evictions", "Entries evicted to make room"),
        ):
            yield CounterMetricFamily(f"schooner_cache_{field}", help_text, getattr(stats, field))
        yield GaugeMetricFamily(
            "schooner_cache_bytes", "Bytes the prediction cache holds", stats.bytes_used
        )

    def _failures(self) -> Iterator[Metric]:
        """Stuck and failing replicas, retries and poison inputs (``batching.failures``)."""
        labels = ["model", "version"]
        dispatcher = self._dispatcher
        counters = {
            "retry": CounterMetricFamily(
                "schooner_batch_retries",
                "Failed batches (replica crashed, timed out, or failed in the container) "
                "whose queries were sent again to another replica",
                labels=labels,
            ),
            "timeout": CounterMetricFamily(
                "schooner_batch_timeouts",
                "Batches that ran past their model version's batch timeout",
                labels=labels,
            ),
            "quarantine_refusal": CounterMetricFamily(
                "schooner_quarantine_refusals",
                "Queries refused (422) because their input is quarantined",
                labels=labels,
            ),
        }
        restarts = CounterMetricFamily(
            "schooner_replica_restarts_requested",
            "Replicas told to restart, by reason: timeout (a batch hung) or ejected "
            "(failing while a sibling succeeded)",
            labels=[*labels, "reason"],
        )
        for ((name, version), kind), count in sorted(dispatcher.events.items()):
            if kind.startswith("restart:"):
                restarts.add_metric([name, version, kind.partition(":")[2]], count)
            elif kind in counters:
                counters[kind].add_metric([name, version], count)
        seen = CounterMetricFamily(
            "schooner_replica_restarts_seen",
            "Replicas that registered again with another process id",
            labels=[*labels, "replica"],
        )
        for ((name, version), replica_id), history in sorted(dispatcher.history.items()):
            seen.add_metric([name, version, replica_id], history.restarts)
        quarantined = GaugeMetricFamily(
            "schooner_quarantined_inputs", "Inputs refused now as quarantined", labels=labels
        )
        per_model: dict[tuple[str, str], int] = {}
        for entry in dispatcher.quarantine_status()["inputs"]:
            model = (str(entry["model"]), str(entry["version"]))
            per_model[model] = per_model.get(model, 0) + 1
        for (name, version), n in sorted(per_model.items()):
            quarantined.add_metric([name, version], n)
        yield from counters.values()
        yield restarts
        yield seen
        yield quarantined


class RefusedPeersCollector(Collector):
    """RPC peers refused at connection, by transport and reason, read when Prometheus
    scrapes: ``counts`` maps a transport (``"unix"``) to a function returning that
    transport's refusals by reason (a fixed set of reasons, so the labels stay bounded).
    """

    def __init__(self, counts: Mapping[str, Callable[[], Mapping[str, int]]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "schooner_rpc_refused_peers",
            "RPC connections refused before a message was read, by transport and reason "
            "(unix: a peer of another uid, or one whose uid could not be read)",
            labels=["transport", "reason"],
        )
        for transport, counts in sorted(self._counts.items()):
            for reason, count in sorted(counts().items()):
                refused.add_metric([transport, reason], count)
        yield refused
