"""Running inputs through one model version: the prediction cache, then the dispatcher.

``Evaluator`` is what the request handlers and the selection policies are given to reach
the models: the cache and the dispatcher, and nothing else of the frontend (not the
routing table, the metrics or the learned state), so that selection depends on batching
and not on the HTTP layer's ``FrontendState``.
"""

from __future__ import annotations

import asyncio

from management_frontend.state.records import App
from query_frontend.batching.dispatch import Dispatcher
from query_frontend.caching.cache import Flight, PredictionCache, cache_key
from query_frontend.queries import Expired, Item, ModelKey, Outcome, Query, RequestTrace


class Evaluator:
    """Answers inputs with one model version: from the cache, else through its queue."""

    __slots__ = ("cache", "dispatcher")

    def __init__(self, cache: PredictionCache, dispatcher: Dispatcher) -> None:
        self.cache = cache
        self.dispatcher = dispatcher

    def has_replicas(self, key: ModelKey) -> bool:
        """Whether a replica of the model version is connected now."""
        q = self.dispatcher.queues.get(key)
        return q is not None and bool(q.replicas)

    async def evaluate(
        self,
        key: ModelKey,
        app: App,
        items: list[Item],
        ids: list[int],
        deadline: float,
    ) -> list[Outcome]:
        """One outcome per item, each by ``deadline``.

        Raises ``OverloadedError`` or ``TooManyInputsError`` (from the dispatcher) when the
        model's queue cannot take the items, ``QuarantinedError`` when one of them is
        quarantined; none of them is then left waiting.
        """
        waits = self.submit(key, app, items, ids, deadline)
        return [w if isinstance(w, bytes) else await w for w in waits]

    def submit(
        self,
        key: ModelKey,
        app: App,
        items: list[Item],
        ids: list[int],
        deadline: float,
        *,
        impatient: bool = False,
        trace: RequestTrace | None = None,
    ) -> list[bytes | asyncio.Future[Outcome]]:
        """Start ``evaluate``'s work and return, per item, its answer (a cache hit) or the
        future that gets it by ``deadline``; several models' work starts without a task
        each. ``impatient`` queries give up as soon as the model has no replica
        (``Query``). ``trace``, the request's, gets its queries and counts its cache hits."""
        cache = self.cache
        use_cache = cache.enabled and app.cache_enabled
        if not use_cache and len(items) == 1:  # one input, no cache: straight to its queue
            return [self._submit_one(key, app, items[0], ids[0], deadline, impatient, trace)]
        founds: list[bytes | asyncio.Future[Outcome] | Flight | None]
        if use_cache and len(items) == 1:  # the common request, answered from the cache
            found = cache.lookup(cache_key(key, items[0]), deadline)
            if isinstance(found, bytes):
                if trace is not None:
                    trace.cached += 1
                return [found]
            founds = [found]
        elif use_cache:
            founds = [cache.lookup(cache_key(key, item), deadline) for item in items]
        else:
            founds = [None] * len(items)

        loop = asyncio.get_running_loop()
        dispatcher = self.dispatcher
        watch = dispatcher.deadlines
        q = dispatcher.queue(key, app.input_type)
        waits: list[bytes | asyncio.Future[Outcome]] = []
        queries: list[Query] = []
        for qid, item, hit in zip(ids, items, founds, strict=True):
            if isinstance(hit, _ANSWERED):
                waits.append(hit)  # a hit, or joined an identical query already in flight
                if trace is not None:
                    trace.cached += 1
                continue
            query = Query(qid, item, deadline, loop.create_future(), impatient=impatient)
            if trace is not None:
                query.rid = trace.id
                query.traceparent = trace.traceparent
            watch.add(query, q, loop)
            if hit is not None:
                cache.attach(hit, query.future)  # this query leads: its outcome ends the flight
            queries.append(query)
            waits.append(query.future)
        if queries:
            if trace is not None:
                trace.queries.extend(queries)
            try:
                dispatcher.submit(q, queries)
            except Exception as exc:
                for query in queries:
                    query.resolve(Expired(str(exc)))  # answers any query that joined these
                raise
        return waits

    def _submit_one(
        self,
        key: ModelKey,
        app: App,
        item: Item,
        qid: int,
        deadline: float,
        impatient: bool,
        trace: RequestTrace | None,
    ) -> asyncio.Future[Outcome]:
        """``submit`` of one input past the cache: what most requests are."""
        loop = asyncio.get_running_loop()
        dispatcher = self.dispatcher
        q = dispatcher.queue(key, app.input_type)
        query = Query(qid, item, deadline, loop.create_future(), impatient=impatient)
        if trace is not None:
            query.rid = trace.id
            query.traceparent = trace.traceparent
            trace.queries.append(query)
        dispatcher.deadlines.add(query, q, loop)
        try:
            dispatcher.submit(q, (query,))
        except Exception as exc:
            query.resolve(Expired(str(exc)))
            raise
        return query.future


# What the cache hands back that needs no query: an answer, or a flight's future to join.
_ANSWERED = (bytes, asyncio.Future)
