"""Prometheus metrics of one model replica, and the small HTTP server that exposes them.

What the replica itself sees, as opposed to the query frontend's view of it: batches
and inputs answered, errors by kind, batch sizes, the model function's own compute time
and the time the replica spent on a batch end to end, how many query frontends it is
registered with, and the usual ``process_*`` / ``python_*`` metrics. Names follow Prometheus
conventions: ``schooner_model_`` prefix, base units (seconds), ``_total`` on counters.
``docs/metrics.md`` lists them all, beside the query frontend's.

Cost: the serving loop records a batch after its answer has left (a handful of counter
and histogram updates per batch, never per input), so recording never delays an answer;
scrapes run on the server's own threads. Each ``ContainerMetrics`` owns its registry, so
several replicas in one process (tests) never clash.

A scrape needs the cluster's admin token (``Authorization: Bearer``), checked against the
replica's ``admin-token.sha256`` (``bearer.AdminTokenCheck``, re-read when it changes):
anything else is a 401 that says where the token comes from.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    make_wsgi_app,
)

from model_container.bearer import WWW_AUTHENTICATE, AdminTokenCheck
from model_container.credentials import CredentialError
from model_container.protocol import Error, ErrorKind, InputType, Result

logger = logging.getLogger(__name__)

# Sub-millisecond models (a linear model on a small batch) up to slow ones (a large
# network on CPU): 100 us .. 10 s.
DURATION_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# As the query frontend's schooner_batch_size, so that the two views line up.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# How often the HTTP server's loop checks for shutdown: bounds how long ``close`` takes.
_POLL_INTERVAL_S = 0.05


class ContainerMetrics:
    """The metrics of one replica, in a registry of its own (``self.registry``)."""

    def __init__(
        self,
        model_name: str,
        model_version: str,
        input_type: InputType | str,
        replica_id: str,
        *,
        process_metrics: bool = True,
    ) -> None:
        self.registry = r = CollectorRegistry()
        info = Info("schooner_model", "The model version this replica serves", registry=r)
        info.info(
            {
                "model": model_name,
                "version": model_version,
                "input_type": str(input_type),
                "replica": replica_id,
            }
        )
        self._batches = Counter(
            "schooner_model_batches", "Batches answered, with a RESULT or an ERROR", registry=r
        )
        self._predictions = Counter(
            "schooner_model_predictions", "Inputs answered with an output", registry=r
        )
        errors = Counter(
            "schooner_model_errors", "Batches answered with an ERROR, by kind", ["kind"],
            registry=r,
        )  # fmt: skip
        # Bound once, and present at 0 from the start so that rate() works at once.
        self._errors = {kind: errors.labels(kind.value) for kind in ErrorKind}
        self._batch_size = Histogram(
            "schooner_model_batch_size", "Inputs per batch received",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self._predict_seconds = Histogram(
            "schooner_model_predict_duration_seconds",
            "Time the model function took on a batch it answered (the RESULT's model time)",
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self._batch_seconds = Histogram(
            "schooner_model_batch_duration_seconds",
            "Time the replica spent on a batch: decode, model, checks and encode",
            buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self._connected = Gauge(
            "schooner_model_frontend_connected",
            "Query frontends the replica is registered with (WELCOME received); "
            "0 or 1 with a single --frontend",
            registry=r,
        )
        self._frontends = Gauge(
            "schooner_model_frontends",
            "Query frontends the replica serves or is registering with (each address of "
            "--frontend, after DNS discovery)",
            registry=r,
        )
        self._queued = Gauge(
            "schooner_model_queued_batches",
            "Batches received and not yet answered, the running one included",
            registry=r,
        )
        self._reconnects = Counter(
            "schooner_model_reconnects",
            "Times the replica lost its frontend and started registering again",
            registry=r,
        )
        self._dropped = Counter(
            "schooner_model_dropped_batches",
            "Batches dropped unanswered because their connection was lost",
            registry=r,
        )
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    # ------------------------------------------------------------------ recording

    def batch_done(self, size: int, seconds: float, outcome: Result | Error) -> None:
        """A batch the model worker answered, ``seconds`` after it started on it."""
        self._batches.inc()
        self._batch_size.observe(size)
        self._batch_seconds.observe(seconds)
        if isinstance(outcome, Result):
            self._predictions.inc(size)
            self._predict_seconds.observe(outcome.model_micros / 1e6)
        else:
            self._errors[outcome.kind].inc()

    def batch_refused(self, kind: ErrorKind) -> None:
        """A batch answered with an ERROR before it reached the model (not registered
        yet, undecodable)."""
        self._batches.inc()
        self._errors[kind].inc()

    def dropped(self, batches: int) -> None:
        """Batches dropped unanswered because their frontend went away."""
        if batches:
            self._dropped.inc(batches)

    def reconnected(self, dropped_batches: int) -> None:
        self._reconnects.inc()
        if dropped_batches:
            self._dropped.inc(dropped_batches)

    def track_queue(self, depth: Callable[[], float]) -> None:
        """Read the queue depth from ``depth`` at scrape time (no per-batch cost)."""
        self._queued.set_function(depth)

    def track_frontends(self, registered: Callable[[], float], known: Callable[[], float]) -> None:
        """Read at scrape time how many frontends the replica is registered with
        (``registered``), of how many it serves (``known``)."""
        self._connected.set_function(registered)
        self._frontends.set_function(known)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format, as ``/metrics`` serves it."""
        return generate_latest(self.registry)


# -------------------------------------------------------------------------- serving


class MetricsServerError(Exception):
    """The metrics endpoint could not be opened (the port is taken, the host unknown)."""


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Scrapes every few seconds would flood the replica's log."""


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds up the replica's exit


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def admin_only(app: WSGIApp, check: AdminTokenCheck) -> WSGIApp:
    """``app``, answering 401 unless the request carries the admin token."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        authorization = environ.get("HTTP_AUTHORIZATION")
        if check.allows(authorization):
            return app(environ, start_response)
        body = json.dumps(
            {"error": "unauthorized", "message": check.failure(authorization)}
        ).encode()
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", WWW_AUTHENTICATE),
            ],
        )
        return [body]

    return guarded


def _admin_token(secrets_dir: str | os.PathLike[str] | None) -> AdminTokenCheck:
    check = AdminTokenCheck(secrets_dir)
    if secrets_dir is None:
        logger.warning("no --secrets-dir: /metrics refuses every scrape (it needs the admin token)")
        return check
    try:
        check.load()
    except CredentialError as exc:
        raise MetricsServerError(
            f"cannot check scrapes of /metrics against the admin token: {exc}"
        ) from None
    return check


class MetricsServer:
    """``GET /metrics`` for ``registry`` on ``host:port``, served by a daemon thread, to
    requests carrying the admin token (checked against ``secrets_dir``'s
    ``admin-token.sha256``; without a ``secrets_dir`` every scrape is refused).

    Port 0 picks a free port; ``port`` then holds the chosen one.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        secrets_dir: str | os.PathLike[str] | None,
    ) -> None:
        server_class = _ThreadingServer6 if ":" in host else _ThreadingServer
        app = admin_only(make_wsgi_app(registry), _admin_token(secrets_dir))
        try:
            self._httpd = make_server(host, port, app, server_class, handler_class=_SilentHandler)
        except OSError as exc:
            raise MetricsServerError(
                f"cannot serve metrics on {_netloc(host, port)}: {exc.strerror or exc}; pass "
                "another --metrics-port ($SCHOONER_METRICS_PORT), or 0 to turn metrics off"
            ) from exc
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{_netloc(self.host, self.port)}/metrics"

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
