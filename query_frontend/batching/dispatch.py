"""Queues of queries per model version, and their dispatch as batches to replicas.

Event-driven: a batch is sent when a query arrives and a replica has room, or when a
replica answers and queries are waiting. There is no polling loop. Both wait for the end
of the event loop's turn (``call_soon``): every request read in one wake-up of the loop
then rides in the same batch, where sending at once would give the first a batch of its
own and leave the rest a whole round trip behind it (measured: batches of 21 instead of
32 at 64 clients, and more work per query for the replica and the frontend alike); a
lone query pays one turn of the loop.

A replica holds at most ``max_inflight`` batches; the least loaded replica in rotation is
chosen. When a replica goes away, or is taken out of rotation (silent, or stuck on a
batch: see ``rpc.liveness``), the queries it held go back to the front of the queue for
another replica, or get the default when their deadline passes. A replica out of
rotation that answers a batch retried elsewhere still answers the queries that are
waiting; each query is answered once, by whichever answer comes first.

When a replica is to blame for a failed batch (``failures``: it crashed or disconnected
holding it, ran past the model's batch timeout, or failed in the container itself), each
of its queries is retried once, on another replica, while its deadline allows; then it
gets the default (or the error). A batch that timed out gets its replica told to
restart (RESTART), as does a replica ejected as an outlier. The inputs of a batch that
hung or crashed its replica are suspects (``quarantine``): each goes alone in a batch,
and an input that did it twice is refused (``QuarantinedError``) for a while.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import orjson

from management_frontend.state.keys import arm_name
from model_container import protocol
from model_container.protocol import (
    CAP_RESTART,
    Error,
    ErrorKind,
    Hello,
    InputType,
    Predict,
    Restart,
    Result,
)
from query_frontend.batching import failures
from query_frontend.batching.controllers import (
    MODES,
    BatchMode,
    BatchSizeController,
    make_controller,
)
from query_frontend.batching.deadlines import DeadlineWatch, LagTracker
from query_frontend.batching.quarantine import Quarantine, QuarantinedError
from query_frontend.batching.replicas import Replica, ReplicaHistory
from query_frontend.caching.cache import cache_key
from query_frontend.queries import Expired, Failure, ModelKey, Outcome, Query

logger = logging.getLogger(__name__)

# Objective assumed for a model version no app links to yet.
DEFAULT_SLO_S = 0.1
# Replica ids remembered (``ReplicaHistory``), across every model version.
MAX_HISTORY = 1000

SendFn = Callable[[bytes, list[protocol.Frame]], None]


class BatchObserver(Protocol):
    """Told about every batch (the metrics implement it)."""

    def batch_sent(self, key: ModelKey, size: int, waits: list[float]) -> None: ...

    def batch_done(self, key: ModelKey, seconds: float, model_seconds: float) -> None: ...


class _NoObserver:
    def batch_sent(self, key: ModelKey, size: int, waits: list[float]) -> None:
        pass

    def batch_done(self, key: ModelKey, seconds: float, model_seconds: float) -> None:
        pass


class OverloadedError(Exception):
    """The queue of a model version is full: the client should retry later."""


class TooManyInputsError(Exception):
    """One request holds more inputs than the queue can ever hold: retrying cannot help."""


class ModelQueue:
    """Pending queries of one model version and the replicas that serve it.

    A registered batch size > 0 is a fixed batch size (Clipper's meaning); -1 lets each
    replica's controller adapt the size to the latency objective, up to the default cap.
    """

    def __init__(self, key: ModelKey, input_type: InputType, max_batch: int, max_queue: int):
        self.key = key
        self.input_type = input_type
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.pending: deque[Query] = deque()
        self.replicas: dict[bytes, Replica] = {}
        self.max_inflight = 1
        self.mode: BatchMode = "aimd"
        self.slo_s = DEFAULT_SLO_S
        self.wait_s = 0.0  # delayed batching: how long a free replica may wait to fill a batch
        self.wait_timer: asyncio.TimerHandle | None = None
        self.held_since = 0.0  # when delayed batching began holding a short batch (0: not)
        self.pump_due = False  # a ``Dispatcher._pump`` is scheduled for this turn's end
        self.timeout_s = failures.batch_timeout(0, DEFAULT_SLO_S, failures.DEFAULT_TIMEOUT_FLOOR_S)

    def new_controller(self, initial: int | None = None) -> BatchSizeController:
        if initial is None:
            # A new replica starts where its siblings are rather than from one query.
            initial = max((r.batcher.size() for r in self.replicas.values()), default=1)
        return make_controller(
            self.mode,
            self.slo_s,
            self.max_batch,
            budget_fraction=1 / (1 + self.max_inflight),
            initial=max(1, min(initial, self.max_batch)),
        )

    def retune(self) -> None:
        """New settings (cap, mode, objective): each replica keeps its current size."""
        for replica in self.replicas.values():
            replica.batcher = self.new_controller(replica.batcher.size())

    @property
    def label(self) -> str:
        return f"model '{self.key[0]}' version '{self.key[1]}'"

    def explain_expiry(self) -> str:
        if not self.replicas:
            return f"no replica of {self.label} is connected"
        return f"{self.label} did not answer within the latency objective"


class Dispatcher:
    """Owns every ModelQueue, every connected Replica and every batch in flight."""

    def __init__(
        self,
        default_max_batch: int,
        max_queue: int,
        max_inflight: int = 1,
        *,
        timeout_floor_s: float = failures.DEFAULT_TIMEOUT_FLOOR_S,
        quarantine: Quarantine | None = None,
    ):
        self._default_max_batch = default_max_batch
        self.timeout_floor_s = timeout_floor_s
        self.quarantine = Quarantine() if quarantine is None else quarantine
        # Counted per model version, by kind: "retry" (a batch's queries sent again),
        # "timeout", "restart:timeout", "restart:ejected", "quarantine_refusal".
        self.events: Counter[tuple[ModelKey, str]] = Counter()
        self.history: OrderedDict[tuple[ModelKey, str], ReplicaHistory] = OrderedDict()
        # When the liveness rules are next applied (``rpc.liveness``), and how to have
        # them applied sooner: a batch sent may time out before then.
        self.check_by = math.inf
        self.check_sooner: Callable[[], None] = lambda: None
        self._max_queue = max_queue
        self._max_inflight = max_inflight
        self.queues: dict[ModelKey, ModelQueue] = {}
        self.by_identity: dict[bytes, Replica] = {}
        self._batch_ids = itertools.count(1)
        self._batches: dict[int, tuple[Replica, list[Query]]] = {}
        self.timer_lag = LagTracker()  # how late deadline timers fire: the loop's lag
        # Every query's deadline, on one timer: ``expire`` for those still waiting at it.
        self.deadlines: DeadlineWatch[ModelQueue] = DeadlineWatch(self.expire)
        self._send: SendFn | None = None
        self.on_replica_added: Callable[[Replica], None] = lambda r: None
        self.on_replica_removed: Callable[[Replica], None] = lambda r: None
        self.observer: BatchObserver = _NoObserver()

    def bind(self, send: SendFn) -> None:
        self._send = send

    # ------------------------------------------------------------------ configuration

    def queue(self, key: ModelKey, input_type: InputType, batch_size: int = -1) -> ModelQueue:
        q = self.queues.get(key)
        if q is None:
            q = ModelQueue(key, input_type, self._cap(batch_size), self._max_queue)
            q.max_inflight = self._max_inflight
            q.mode = _mode(batch_size, "")
            q.timeout_s = failures.batch_timeout(0, q.slo_s, self.timeout_floor_s)
            self.queues[key] = q
        return q

    def configure(
        self,
        key: ModelKey,
        input_type: InputType,
        batch_size: int,
        slo_s: float | None,
        mode: str = "",
        wait_s: float = 0.0,
        timeout_s: float = 0.0,
    ) -> None:
        """Apply a model version's registered settings and its apps' tightest objective;
        ``timeout_s`` is its batch timeout, 0 to derive it from the objective."""
        q = self.queue(key, input_type, batch_size)
        q.input_type = input_type
        q.wait_s = wait_s
        q.timeout_s = failures.batch_timeout(
            timeout_s, slo_s or DEFAULT_SLO_S, self.timeout_floor_s
        )
        settings = (self._cap(batch_size), _mode(batch_size, mode), slo_s or DEFAULT_SLO_S)
        if settings != (q.max_batch, q.mode, q.slo_s):
            q.max_batch, q.mode, q.slo_s = settings
            q.retune()

    def _cap(self, batch_size: int) -> int:
        return batch_size if batch_size > 0 else self._default_max_batch

    # ----------------------------------------------------------------------- queries

    def submit(self, q: ModelQueue, queries: Sequence[Query]) -> None:
        if len(queries) > q.max_queue:
            raise TooManyInputsError(
                f"the request holds {len(queries)} inputs but {q.label} queues at most "
                f"{q.max_queue}: split it into smaller requests"
            )
        if len(q.pending) + len(queries) > q.max_queue:
            # Queries answered at their deadline stay queued until a batch is taken; when
            # no replica takes batches they must not fill the queue for good.
            q.pending = deque(query for query in q.pending if not query.future.done())
        if len(q.pending) + len(queries) > q.max_queue:
            raise OverloadedError(f"{q.label} has {len(q.pending)} queries waiting")
        now = asyncio.get_running_loop().time()
        if self.quarantine.watches(q.key):
            self._screen(q, queries, now)
        for query in queries:
            query.submitted = now
        q.pending.extend(queries)
        self._pump_soon(q)

    def _screen(self, q: ModelQueue, queries: Sequence[Query], now: float) -> None:
        """Refuse a quarantined input (nothing is queued then); isolate suspects."""
        for query in queries:
            query.digest = cache_key(q.key, query.item)
            quarantined, suspect = self.quarantine.check(q.key, query.digest, now)
            if quarantined:
                self.events[q.key, "quarantine_refusal"] += 1
                raise QuarantinedError(self.quarantine.refusal(q.key, query.digest))
            query.isolated = query.isolated or suspect

    def expire(self, query: Query, q: ModelQueue) -> None:
        """At a query's deadline, if it is still waiting (``deadlines``)."""
        now = asyncio.get_running_loop().time()
        self.timer_lag.observe(now - query.deadline, now)
        query.resolve(Expired(q.explain_expiry()))

    def _pump_soon(self, q: ModelQueue) -> None:
        """``_pump`` at the end of this turn of the loop, once however often it is asked."""
        if not q.pump_due:
            q.pump_due = True
            asyncio.get_running_loop().call_soon(self._pump_due, q)

    def _pump_due(self, q: ModelQueue) -> None:
        q.pump_due = False
        self._pump(q)

    def _pump(self, q: ModelQueue) -> None:
        while q.pending and q.replicas:
            # The least loaded replica in rotation with room (the first of equals); under
            # load, every query that arrives asks this of busy replicas: a plain loop.
            replica, least = None, q.max_inflight
            for r in q.replicas.values():
                if not r.unavailable and len(r.inflight) < least:
                    replica, least = r, len(r.inflight)
            if replica is None:
                return
            limit = replica.batcher.size()
            if q.wait_s > 0 and len(q.pending) < limit and self._wait_to_fill(q):
                return
            batch = self._take_batch(q, limit, replica)
            if not batch and q.pending:
                # What waits must avoid this replica (it failed there): another may take it.
                batch, replica = self._take_for_another(q, replica)
            if not batch:
                return
            self._send_batch(q, replica, batch)

    def _take_for_another(self, q: ModelQueue, skipped: Replica) -> tuple[list[Query], Replica]:
        for replica in sorted(q.replicas.values(), key=lambda r: r.outstanding):
            if replica is skipped or not replica.available:
                continue
            if replica.outstanding >= q.max_inflight:
                break
            batch = self._take_batch(q, replica.batcher.size(), replica)
            if batch:
                return batch, replica
        return [], skipped

    def _wait_to_fill(self, q: ModelQueue) -> bool:
        """Delayed batching: hold a short batch until its oldest query has waited wait_s."""
        loop = asyncio.get_running_loop()
        oldest = q.pending[0]
        ready_at = min(oldest.submitted + q.wait_s, oldest.deadline)
        if loop.time() >= ready_at:
            return False
        if q.wait_timer is None:
            q.wait_timer = loop.call_at(ready_at, self._wait_over, q)
        if not q.held_since:
            q.held_since = loop.time()
        return True

    def _wait_over(self, q: ModelQueue) -> None:
        q.wait_timer = None
        self._pump(q)

    def _take_batch(self, q: ModelQueue, limit: int, replica: Replica) -> list[Query]:
        """Up to ``limit`` queries for ``replica``, oldest first: a suspect goes alone,
        and a query that failed on this replica is left for another."""
        now = asyncio.get_running_loop().time()
        batch: list[Query] = []
        passed: list[Query] = []
        pending = q.pending
        while pending and len(batch) < limit:
            query = pending[0]
            if query.future.done():
                pending.popleft()
                continue  # answered already (its deadline passed while it waited)
            if query.deadline <= now:
                pending.popleft()
                query.resolve(Expired(f"{q.label} could not start it before the deadline"))
                continue
            if query.isolated and batch:
                break
            pending.popleft()
            if query.avoid and query.avoid == replica.identity:
                passed.append(query)
                continue
            batch.append(query)
            if query.isolated:
                break
        pending.extendleft(reversed(passed))
        return batch

    def _send_batch(self, q: ModelQueue, replica: Replica, batch: list[Query]) -> None:
        assert self._send is not None, "Dispatcher.bind() was not called"
        batch_id = next(self._batch_ids)
        lengths, data = _pack([query.item for query in batch], q.input_type)
        now = asyncio.get_running_loop().time()
        # Delayed batching held this batch since then: its queries' "batch wait".
        held = now - q.held_since if q.held_since else 0.0
        q.held_since = 0.0
        request_ids: list[str] = []
        traceparents: list[str] = []
        for query in batch:
            query.batch_id = batch_id
            query.sent = now
            query.held = held
            if query.rid:
                request_ids.append(query.rid)
            if query.traceparent:
                traceparents.append(query.traceparent)
        if len(request_ids) != len(batch):
            request_ids = []
        if len(traceparents) != len(batch):
            traceparents = []
        msg = Predict(
            batch_id,
            q.input_type,
            lengths,
            data,
            math.ceil(q.timeout_s * 1000),
            tuple(request_ids),
            tuple(traceparents),
        )
        replica.inflight[batch_id] = batch
        replica.sent_at[batch_id] = now
        if now + q.timeout_s < self.check_by:
            self.check_by = now + q.timeout_s
            self.check_sooner()
        self._batches[batch_id] = (replica, batch)
        self._send(replica.identity, protocol.encode(msg))
        self.observer.batch_sent(q.key, len(batch), [now - query.submitted for query in batch])

    # ---------------------------------------------------------------------- replicas

    def add_replica(self, identity: bytes, hello: Hello, now: float) -> Replica:
        for old in list(self.by_identity.values()):
            if old.replica_id == hello.replica_id:
                # Its process restarted (or reconnected) before we saw it go.
                self.remove_replica(old.identity, "replaced by a new connection", crashed=True)
        q = self.queue((hello.model_name, hello.model_version), hello.input_type)
        self._remember(q.key, hello)
        replica = Replica.from_hello(identity, hello, now, q.new_controller())
        q.replicas[identity] = replica
        self.by_identity[identity] = replica
        logger.info("replica %s of %s connected", replica.replica_id, q.label)
        self.on_replica_added(replica)
        self._pump(q)
        return replica

    def _remember(self, key: ModelKey, hello: Hello) -> None:
        """Count a restart when a replica id comes back with another process."""
        history = self.history.get((key, hello.replica_id))
        if history is None:
            self.history[key, hello.replica_id] = ReplicaHistory(hello.pid, hello.started_ms)
            while len(self.history) > MAX_HISTORY:
                self.history.popitem(last=False)
            return
        self.history.move_to_end((key, hello.replica_id))
        # In a container every process is pid 1: its start time tells them apart.
        other_pid = bool(hello.pid) and hello.pid != history.pid
        other_start = bool(hello.started_ms) and hello.started_ms != history.started_ms
        if other_pid or other_start:
            history.restarts += 1
            history.pid, history.started_ms = hello.pid, hello.started_ms

    def _history(self, replica: Replica) -> ReplicaHistory:
        history = self.history.get((replica.key, replica.replica_id))
        if history is None:
            history = self.history[replica.key, replica.replica_id] = ReplicaHistory(replica.pid)
        return history

    def remove_replica(self, identity: bytes, reason: str, *, crashed: bool = False) -> None:
        """Forget a replica; ``crashed``: it went away without a word (its connection
        closed, silence, a new process under its id), so the batches it held are
        incidents for their inputs (``quarantine``)."""
        replica = self.by_identity.pop(identity, None)
        if replica is None:
            return
        q = self.queues[replica.key]
        q.replicas.pop(identity, None)
        if replica.restarting:
            reason = f"{reason}, after being told to restart ({replica.restarting})"
        replica.removed = reason
        self._history(replica).last_removal = reason
        logger.warning("replica %s of %s removed: %s", replica.replica_id, q.label, reason)
        failed = f"{_label(replica)} {reason}"
        if crashed and not replica.restarting:
            now = asyncio.get_running_loop().time()
            for batch in (*replica.inflight.values(), *replica.abandoned.values()):
                self._incident(q, batch, failed, now)
        self._retry_elsewhere(q, replica, failed)
        # Retried when it left rotation, but for those retried once already: they had
        # only this replica left, and now have nothing.
        for batch_id, batch in replica.abandoned.items():
            for query in _owned(batch_id, batch):
                query.resolve(Expired(f"{failed}; it was retried once"))
        replica.abandoned.clear()
        replica.sent_at.clear()
        self.on_replica_removed(replica)
        if not q.replicas:
            self._release_impatient(q)
        self._pump(q)

    def _release_impatient(self, q: ModelQueue) -> None:
        """The last replica left: queries that need not wait for another (an ensemble's,
        which answers with the models it has) get their answer now, not at the deadline."""
        if not any(query.impatient for query in q.pending):
            return
        reason = q.explain_expiry()
        kept: deque[Query] = deque()
        for query in q.pending:
            if query.impatient:
                query.resolve(Expired(reason))
            elif not query.future.done():
                kept.append(query)
        q.pending = kept

    def suspend_replica(self, identity: bytes, reason: str, now: float) -> None:
        """Take a replica out of rotation and retry what it holds; it stays registered."""
        replica = self.by_identity.get(identity)
        if replica is None or not replica.available:
            return
        q = self.queues[replica.key]
        replica.unavailable = reason
        replica.unavailable_since = now
        logger.warning("replica %s of %s out of rotation: %s", replica.replica_id, q.label, reason)
        self._bench(q, replica)
        self._pump(q)

    def _bench(self, q: ModelQueue, replica: Replica) -> None:
        replica.abandoned.update(replica.inflight)
        self._retry_elsewhere(q, replica, "")

    def heard_from(self, replica: Replica, now: float) -> None:
        """Any message arrived from the replica: it is alive."""
        replica.last_seen = now
        if not replica.available and self._restore(replica):
            self._pump(self.queues[replica.key])

    def _restore(self, replica: Replica) -> bool:
        """Back into rotation once it has spoken since it left and owes no answer."""
        if replica.restarting or replica.abandoned or replica.last_seen < replica.unavailable_since:
            return False
        logger.info(
            "replica %s of %s back in rotation (was: %s)",
            replica.replica_id,
            self.queues[replica.key].label,
            replica.unavailable,
        )
        replica.unavailable = ""
        return True

    def _retry_elsewhere(self, q: ModelQueue, replica: Replica, failed: str) -> None:
        """Requeue what the replica holds, oldest first, ahead of newer queries.

        ``failed`` says how the replica failed them (it went away), and each is then
        retried once only; "" when it only left rotation (it may still answer them)."""
        retry: list[Query] = []
        for batch_id, batch in sorted(replica.inflight.items()):
            self._batches.pop(batch_id, None)
            if failed:
                retry.extend(self._retries(q, batch, Expired(f"{failed}; it was retried once")))
            else:
                retry.extend(self._hedges(batch_id, batch))
        replica.inflight.clear()
        if retry and failed:
            self.events[q.key, "retry"] += 1
        q.pending.extendleft(reversed(retry))

    @staticmethod
    def _hedges(batch_id: int, batch: list[Query]) -> list[Query]:
        """The queries of a batch whose replica left rotation to send elsewhere too: each
        counts as its retry. One retried already stays with the replica (it may still
        answer), else an input that silences every replica it reaches would go round
        them all, taking each down, until its deadline."""
        now = asyncio.get_running_loop().time()
        hedges: list[Query] = []
        for query in _owned(batch_id, batch):
            if query.retries == 0 and query.deadline > now:
                query.retries += 1
                query.batch_id = 0
                hedges.append(query)
        return hedges

    def _retries(self, q: ModelQueue, batch: list[Query], otherwise: Outcome) -> list[Query]:
        """The queries of a failed batch to send again, each once while its deadline
        allows; the others get ``otherwise`` now. An input quarantined by this failure
        (``_incident``, first) is not sent to another replica to take it down too: its
        query gets the refusal as its default's explanation."""
        now = asyncio.get_running_loop().time()
        watched = self.quarantine.watches(q.key)
        retry: list[Query] = []
        for query in batch:
            if query.future.done():
                continue
            if watched and query.digest and self.quarantine.check(q.key, query.digest, now)[0]:
                query.resolve(Expired(self.quarantine.refusal(q.key, query.digest)))
                continue
            if query.retries == 0 and query.deadline > now:
                query.retries += 1
                query.batch_id = 0
                retry.append(query)
            else:
                query.resolve(otherwise)
        return retry

    def _incident(self, q: ModelQueue, batch: list[Query], reason: str, now: float) -> None:
        """The batch hung or crashed its replica: its inputs become suspects, to be sent
        alone from now on, and one that did it twice (alone) is quarantined."""
        alone = len(batch) == 1
        for query in batch:
            if not query.digest:
                query.digest = cache_key(q.key, query.item)
            query.isolated = True
            if self.quarantine.incident(q.key, query.digest, alone, reason, now):
                logger.warning(
                    "quarantined an input of %s for %.0f s: %s",
                    q.label,
                    self.quarantine.quarantine_s,
                    reason,
                )

    # ------------------------------------------------------------ failing replicas

    def batch_timed_out(self, identity: bytes, batch_id: int, now: float) -> None:
        """A batch ran past its model version's timeout: answer its queries (a retry
        elsewhere, or the default), and have its replica restarted."""
        replica = self.by_identity.get(identity)
        if replica is None or replica.restarting:
            return
        q = self.queues[replica.key]
        batch = replica.inflight.pop(batch_id, None)
        if batch is None:
            batch = replica.abandoned.pop(batch_id, [])
        self._batches.pop(batch_id, None)
        replica.sent_at.pop(batch_id, None)
        reason = f"{_label(replica)} did not finish a batch within its {q.timeout_s:g} s timeout"
        self.events[q.key, "timeout"] += 1
        self._history(replica).timeouts += 1
        self._incident(q, batch, f"batch timeout ({q.timeout_s:g} s)", now)
        retry = self._retries(
            q, _owned(batch_id, batch), Expired(f"{reason}; the replica is being restarted")
        )
        if retry:
            self.events[q.key, "retry"] += 1
            q.pending.extendleft(reversed(retry))
        self._restart(q, replica, f"batch timeout: {reason}", "timeout", now)
        self._pump(q)

    def _restart(self, q: ModelQueue, replica: Replica, reason: str, kind: str, now: float) -> None:
        """Out of rotation for good, what it holds retried elsewhere, and told to restart
        (its process exits and its manager starts it afresh)."""
        replica.restarting = reason
        replica.unavailable = reason
        replica.unavailable_since = now
        self._bench(q, replica)
        self.events[q.key, f"restart:{kind}"] += 1
        if CAP_RESTART in replica.caps:
            logger.warning(
                "telling replica %s of %s to restart: %s", replica.replica_id, q.label, reason
            )
            assert self._send is not None
            self._send(replica.identity, protocol.encode(Restart(reason)))
        else:
            logger.error(
                "replica %s of %s must be restarted (%s) but does not understand RESTART: "
                "it stays out of rotation until its manager replaces it",
                replica.replica_id,
                q.label,
                reason,
            )

    @staticmethod
    def _another(q: ModelQueue, replica: Replica) -> bool:
        """Whether another replica of the version is in rotation to retry on."""
        return any(r.available and r is not replica for r in q.replicas.values())

    def _replica_failed(self, q: ModelQueue, replica: Replica, why: str, now: float) -> None:
        """Count a replica-reason failure, and eject the replica if it is an outlier."""
        failures.failed(replica, now)
        sibling = failures.should_eject(replica, q.replicas.values())
        if sibling is not None and replica.available:
            self._history(replica).ejections += 1
            reason = (
                f"ejected: its last {replica.failures} batches failed ({why}) while "
                f"replica {sibling.replica_id} answered"
            )
            self._restart(q, replica, reason, "ejected", now)

    def on_result(self, identity: bytes, msg: Result) -> None:
        found = self._finish(identity, msg.batch_id)
        if found is None:
            return
        replica, batch = found
        now = asyncio.get_running_loop().time()
        failures.succeeded(replica, now)
        if self.quarantine.watches(replica.key):
            for query in batch:
                if query.digest:
                    self.quarantine.cleared(query.digest)
        service = replica.observe_batch(msg.batch_id, len(batch), now)
        if service is not None:
            self.observer.batch_done(replica.key, service, msg.model_micros / 1e6)
        # The next batch goes before the answers of this one are written (they are
        # scheduled after it), with what this turn of the loop reads as well.
        self._pump_soon(self.queues[replica.key])
        outputs = protocol.split_items(msg.lengths, msg.data)
        problem = _check_outputs(outputs, len(batch))
        if problem:
            failure = Failure(f"{_label(replica)} {problem}")
            for query in _owned(msg.batch_id, batch):
                query.resolve(failure)
        else:
            model_s = msg.model_micros / 1e6
            for query, out in zip(batch, outputs, strict=True):
                query.model_s = model_s
                query.resolve(bytes(out))
        if not replica.available:
            self._restore(replica)

    def on_error(self, identity: bytes, msg: Error) -> None:
        found = self._finish(identity, msg.batch_id)
        if found is None:
            return
        replica, batch = found
        q = self.queues[replica.key]
        replica.sent_at.pop(msg.batch_id, None)
        failure = _failure(_label(replica), msg)
        if failures.is_replica_failure(msg):
            self._replica_failed(q, replica, failure.message, asyncio.get_running_loop().time())
        batch = _owned(msg.batch_id, batch)
        if failures.is_replica_failure(msg) and self._another(q, replica):
            retry = self._retries(q, batch, failure)  # (the others get the failure)
            for query in retry:
                query.avoid = replica.identity
            if retry:
                self.events[q.key, "retry"] += 1
                q.pending.extendleft(reversed(retry))
        else:
            for query in batch:
                query.resolve(failure)
        if not replica.available:
            self._restore(replica)
        self._pump(q)

    def _finish(self, identity: bytes, batch_id: int) -> tuple[Replica, list[Query]] | None:
        entry = self._batches.pop(batch_id, None)
        if entry is None:
            # Retried elsewhere when its replica left rotation: its queries that are
            # still waiting take this answer; the others ignore it.
            replica = self.by_identity.get(identity)
            batch = None if replica is None else replica.abandoned.pop(batch_id, None)
            if replica is None or batch is None:
                return None  # a late answer from a replica removed since
            return replica, batch
        replica, batch = entry
        if replica.identity != identity:
            logger.warning("batch %d answered by the wrong replica; ignored", batch_id)
            self._batches[batch_id] = entry
            return None
        replica.inflight.pop(batch_id, None)
        return replica, batch

    def status(self) -> dict[str, Any]:
        return {
            arm_name(*k): {
                "queued": len(q.pending),
                "max_batch_size": q.max_batch,
                "batch_mode": q.mode,
                "batch_wait_micros": round(q.wait_s * 1e6),
                "batch_sizes": {r.replica_id: r.batcher.size() for r in q.replicas.values()},
                "replicas": sorted(r.replica_id for r in q.replicas.values()),
                "unavailable": {
                    r.replica_id: r.unavailable for r in q.replicas.values() if not r.available
                },
                "inflight_batches": sum(r.outstanding for r in q.replicas.values()),
                "batch_timeout_s": q.timeout_s,
                "replica_history": {
                    replica_id: history.status()
                    for (key, replica_id), history in sorted(self.history.items())
                    if key == k
                },
            }
            for k, q in sorted(self.queues.items())
        }

    def quarantine_status(self) -> dict[str, Any]:
        """The quarantined inputs (``/status``): digest prefix, model, why, until when."""
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:  # read off the loop (a test's scrape): show every entry
            now = -math.inf
        entries = self.quarantine.quarantined(now)
        return {
            "count": len(entries),
            "quarantine_s": self.quarantine.quarantine_s,
            "suspects_tracked": self.quarantine.tracked,
            "inputs": entries,
        }


def _mode(batch_size: int, mode: str) -> BatchMode:
    """The registered mode; unset, Clipper's meaning: a batch size > 0 is a fixed size."""
    if mode in MODES:
        return cast(BatchMode, mode)
    return "fixed" if batch_size > 0 else "aimd"


def _check_outputs(outputs: list[memoryview], expected: int) -> str:
    """What is wrong with a RESULT's outputs ("" if nothing): they go to clients verbatim."""
    if len(outputs) != expected:
        return f"returned {len(outputs)} outputs for {expected} inputs"
    for i, out in enumerate(outputs):
        try:
            orjson.loads(out)
        except orjson.JSONDecodeError:
            return f"returned output {i} that is not a JSON document"
    return ""


def _failure(label: str, msg: Error) -> Failure:
    """What the clients of any app may see of ``msg`` (an exception by its type only),
    and in ``detail`` the whole of it."""
    if msg.kind is ErrorKind.MODEL_RAISED:
        name = _exception_name(msg)
        return Failure(f"{label} raised {name}", f"{label} raised {msg.message}")
    told = f"{label} failed ({msg.kind}): {msg.message}"
    if msg.exc_type:  # the container itself failed on the batch: its text stays hidden
        return Failure(f"{label} failed ({msg.kind}): {_exception_name(msg)}", told)
    return Failure(told)


def _exception_name(msg: Error) -> str:
    """The exception's type as the replica reported it: its ``exc``, else the start of
    ``"<ExceptionType>: <message>"`` (a replica older than ``exc``), if a dotted name."""
    head, colon, _ = msg.message.partition(":")
    for name in (msg.exc_type, head if colon else ""):
        if 0 < len(name) <= 200 and all(part.isidentifier() for part in name.split(".")):
            return name
    return "an exception"


def _owned(batch_id: int, batch: list[Query]) -> list[Query]:
    """The queries of a batch still waiting on it: not answered, not sent again since."""
    return [query for query in batch if query.batch_id == batch_id and not query.future.done()]


def _label(replica: Replica) -> str:
    return f"model '{replica.key[0]}' version '{replica.key[1]}' (replica {replica.replica_id})"


def _pack(items: list[Any], input_type: InputType) -> tuple[bytes, bytes | memoryview]:
    dtype = input_type.dtype
    if dtype is None:
        return protocol.pack_items(items)
    lengths, data = protocol.pack_arrays(items, dtype)
    return lengths, data.data.cast("B")  # the array buffer, sent without a copy
