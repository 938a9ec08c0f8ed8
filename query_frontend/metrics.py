"""Prometheus metrics of the query frontend, served at ``/metrics``.

Per app: requests by status code, request latency, answers by kind (prediction,
default, error) from which the default ratio follows. Per model version: batch size,
queue wait vs batch service time vs the model's own compute time, and, read at
scrape time, queue depth, connected replicas, each replica's batch-size target and the
prediction cache's counters. Names follow Prometheus conventions: ``schooner_`` prefix,
base units (seconds), ``_total`` on counters.

Each frontend owns its registry, so tests and several apps in one process never clash.
Label children are bound once per app or model version: the hot path does no label
lookups.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from query_frontend.cache import PredictionCache
from query_frontend.dispatch import Dispatcher
from query_frontend.queries import Expired, Failure, Outcome
from query_frontend.replicas import ModelKey

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True, slots=True)
class _AppChildren:
    latency: Histogram
    predictions: Counter
    defaults: Counter
    errors: Counter


@dataclass(frozen=True, slots=True)
class _ModelChildren:
    batch_size: Histogram
    queue_wait: Histogram
    batch_seconds: Histogram
    model_seconds: Histogram


class Metrics:
    def __init__(self, dispatcher: Dispatcher, cache: PredictionCache) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._requests = Counter(
            "schooner_requests", "Prediction requests by app and HTTP status", ["app", "code"],
            registry=r,
        )  # fmt: skip
        self._latency = Histogram(
            "schooner_request_duration_seconds", "Prediction request latency", ["app"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._answers = Counter(
            "schooner_answers", "Queries answered, by kind: prediction, default or error",
            ["app", "kind"], registry=r,
        )  # fmt: skip
        model_labels = ["model", "version"]
        self._batch_size = Histogram(
            "schooner_batch_size", "Queries per batch sent to a replica", model_labels,
            buckets=_BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self._queue_wait = Histogram(
            "schooner_queue_wait_seconds", "Time a query waited in the frontend's queue",
            model_labels, buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._batch_seconds = Histogram(
            "schooner_batch_duration_seconds",
            "Service time of a batch as the frontend sees it (send to answer)",
            model_labels, buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._model_seconds = Histogram(
            "schooner_model_duration_seconds",
            "Time the model function took on a batch, as the container reports it",
            model_labels, buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        r.register(_StateCollector(dispatcher, cache))
        self._apps: dict[str, _AppChildren] = {}
        self._models: dict[ModelKey, _ModelChildren] = {}
        self._codes: dict[tuple[str, int], Counter] = {}

    # ------------------------------------------------------------------- requests

    def request(self, app: str, code: int, seconds: float, outcomes: list[Outcome]) -> None:
        """Count one finished predict request of a registered app."""
        self._code(app, code).inc()
        children = self._app(app)
        children.latency.observe(seconds)
        for outcome in outcomes:
            if isinstance(outcome, bytes):
                children.predictions.inc()
            elif isinstance(outcome, Expired):
                children.defaults.inc()
            elif isinstance(outcome, Failure):
                children.errors.inc()

    def rejected(self, code: int) -> None:
        """Count a request refused before its app was known (the label stays bounded)."""
        self._code("", code).inc()

    def _code(self, app: str, code: int) -> Counter:
        child = self._codes.get((app, code))
        if child is None:
            child = self._codes[(app, code)] = self._requests.labels(app, str(code))
        return child

    def _app(self, app: str) -> _AppChildren:
        children = self._apps.get(app)
        if children is None:
            children = self._apps[app] = _AppChildren(
                self._latency.labels(app),
                self._answers.labels(app, "prediction"),
                self._answers.labels(app, "default"),
                self._answers.labels(app, "error"),
            )
        return children

    # -------------------------------------------------------------------- batches

    def batch_sent(self, key: ModelKey, size: int, waits: list[float]) -> None:
        children = self._model(key)
        children.batch_size.observe(size)
        for wait in waits:
            children.queue_wait.observe(wait)

    def batch_done(self, key: ModelKey, seconds: float, model_seconds: float) -> None:
        children = self._model(key)
        children.batch_seconds.observe(seconds)
        children.model_seconds.observe(model_seconds)

    def _model(self, key: ModelKey) -> _ModelChildren:
        children = self._models.get(key)
        if children is None:
            labels = (key[0], key[1])
            children = self._models[key] = _ModelChildren(
                self._batch_size.labels(*labels),
                self._queue_wait.labels(*labels),
                self._batch_seconds.labels(*labels),
                self._model_seconds.labels(*labels),
            )
        return children


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
        target = GaugeMetricFamily(
            "schooner_batch_size_target",
            "Batch size each replica's controller chooses next",
            labels=[*labels, "replica"],
        )
        for (name, version), q in sorted(self._dispatcher.queues.items()):
            depth.add_metric([name, version], len(q.pending))
            replicas.add_metric([name, version], len(q.replicas))
            for replica in q.replicas.values():
                target.add_metric([name, version, replica.replica_id], replica.batcher.size())
        yield depth
        yield replicas
        yield target
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
