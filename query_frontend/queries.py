"""The query frontend's shared vocabulary: a query in flight, the outcomes it can end
with, and the names every part of the frontend uses for an input and a model version.

Batching, caching, routing, selection and the HTTP handlers all speak of these; keeping
them here, importing nothing of the frontend, is what lets those packages depend on one
another in one direction only (see the package map in ``query_frontend/__init__.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import numpy as np

# One input as a batch carries it: a 1-d numpy array of the app's dtype for numeric
# input types, else the bytes that travel on the wire (``http.inputs`` makes them).
Item = np.ndarray[Any, Any] | bytes

ModelKey = tuple[str, str]  # (model name, version)


@dataclass(frozen=True, slots=True)
class Failure:
    """The model failed on the batch holding the query (it raised, or bad output).

    ``message`` may go to any client: which model failed and how, naming an exception
    by its type only. ``detail``, when there is more, adds what the exception said: for
    the clients of an app that sets ``expose_model_errors``.
    """

    message: str
    detail: str = ""

    def told(self, expose: bool) -> str:
        """What a client is told: ``detail`` if the app exposes model errors."""
        return self.detail if expose and self.detail else self.message


@dataclass(frozen=True, slots=True)
class Expired:
    """No answer by the deadline: the app's default output is returned, with the reason."""

    reason: str


# A successful outcome is the output's JSON text, exactly as the container encoded it.
Outcome = bytes | Failure | Expired


@dataclass(slots=True, eq=False)
class Query:
    query_id: int
    item: Item
    deadline: float  # in loop.time() seconds
    future: asyncio.Future[Outcome]
    submitted: float = 0.0  # loop.time() when it joined its model's queue
    # Give up as soon as no replica of the model is connected, not at the deadline: set
    # for the queries of an ensemble, which can answer without this model.
    impatient: bool = False
    # Sent once more after a replica failed it (crash, timeout, container-level error):
    # a query is retried at most once (``batching.dispatch``).
    retries: int = 0
    # A suspect of a batch that hung or crashed its replica: it goes in a batch of one.
    isolated: bool = False
    # The routing identity of the replica it must not go back to ("" for none).
    avoid: bytes = b""
    # Its input's cache key (model version + digest), once computed ("" until then).
    digest: bytes = b""
    # The batch it was last sent in (0 while it waits in a queue): a batch left with a
    # replica that went out of rotation answers only the queries not sent again since.
    batch_id: int = 0
    # Its request's id and, while tracing, the W3C traceparent of its request's span:
    # they go to the replica with it (PREDICT "rid", "tp"). Copied from the request's
    # RequestTrace, not a reference to it: the trace holds its queries, and a cycle
    # would leave every request to the cyclic garbage collector.
    rid: str = ""
    traceparent: str = ""
    # Where its time went (``observability.timing``), in loop seconds: when its last
    # batch was sent, how much of its wait delayed batching held it to fill a batch,
    # and the model's time on the batch that answered it (the replica's RESULT).
    sent: float = 0.0
    held: float = 0.0
    model_s: float = 0.0

    def resolve(self, outcome: Outcome) -> None:
        """Answer the query once; later answers (a retry, a late result) are ignored."""
        if not self.future.done():
            self.future.set_result(outcome)


class RequestTrace:
    """One predict/update request (``observability.requests`` makes it): its id, its
    queries (once queued) and how many inputs the cache answered; what the access log
    says of its answer (who answered, defaults), set by its handler; ``span`` is its
    tracing span while tracing is on (``observability.tracing``)."""

    __slots__ = (
        "answered_at",
        "answers",
        "app",
        "cached",
        "id",
        "id_bytes",
        "models",
        "outcomes",
        "queries",
        "replaced",
        "route",
        "span",
        "started",
        "traceparent",
    )

    def __init__(self, request_id: bytes, replaced: bool = False) -> None:
        self.id_bytes = request_id
        # When the request arrived, by the fine clock: the event loop's (uvloop's) moves
        # in milliseconds, too coarse for a total of half a millisecond.
        self.started = perf_counter()
        self.id = request_id.decode("ascii")
        self.replaced = replaced  # the client sent an id that was not sane
        self.queries: list[Query] = []
        self.cached = 0
        self.app = ""
        # For the access log: the route that answered (after a version pin), and either
        # the outcomes of a one-model route, or the answers of a route with several
        # arms, or (update) the models that answered.
        self.route: Any = None  # routing.table.Route
        self.outcomes: list[Outcome] | None = None
        self.answers: list[Any] | None = None  # selection.ask.Answer
        self.models: list[str] | None = None
        self.span: Any = None
        self.traceparent = ""  # of ``span``, for the replica (only while tracing)
        self.answered_at = 0.0  # loop time the answers were all in (only while tracing)
