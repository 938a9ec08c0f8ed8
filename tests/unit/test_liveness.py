"""Liveness rules over a real Dispatcher: silent and stuck replicas leave rotation, their
queries are retried elsewhere, they come back when they speak or answer, and every query
is answered exactly once. Time is passed in, so nothing here sleeps."""

import asyncio

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from polling import turn

from model_container import protocol
from model_container.protocol import Error, ErrorKind, Hello, InputType, Result
from query_frontend.batching.dispatch import Dispatcher, ModelQueue
from query_frontend.queries import Expired, Failure, Query
from query_frontend.rpc.liveness import DEAD_INTERVALS, Liveness, stuck_at

KEY = ("m", "1")
HB = 0.25  # heartbeat interval, seconds


class Wire:
    def __init__(self):
        self.sent: list[tuple[bytes, protocol.Predict]] = []

    def __call__(self, identity, frames):
        msg = protocol.decode([bytes(f) for f in frames])
        assert isinstance(msg, protocol.Predict)
        self.sent.append((identity, msg))

    def take(self, identity: bytes) -> protocol.Predict:
        for i, (who, predict) in enumerate(self.sent):
            if who == identity:
                del self.sent[i]
                return predict
        raise AssertionError(f"nothing was sent to {identity!r}")


def setup(cap: int = 4) -> tuple[Dispatcher, ModelQueue, Wire, Liveness]:
    wire = Wire()
    d = Dispatcher(default_max_batch=cap, max_queue=10_000)
    d.bind(wire)
    d.configure(KEY, InputType.DOUBLES, cap, None)
    return d, d.queue(KEY, InputType.DOUBLES), wire, Liveness(d, HB)


def hello(replica_id: str) -> Hello:
    return Hello("m", "1", InputType.DOUBLES, replica_id)


def queries(loop, ids, deadline=1e12):
    return [Query(i, np.array([float(i)]), deadline, loop.create_future()) for i in ids]


def answer(d: Dispatcher, identity: bytes, predict: protocol.Predict, scale: float = 10):
    values = protocol.unpack_inputs(predict.input_type, predict.lengths, predict.data)
    lengths, data = protocol.pack_outputs([float(row[0]) * scale for row in values])
    d.on_result(identity, Result(predict.batch_id, lengths, data))


async def test_a_silent_replica_leaves_rotation_within_one_interval_and_its_queries_move():
    loop = asyncio.get_running_loop()
    d, q, wire, live = setup()
    t0 = asyncio.get_running_loop().time()
    a = d.add_replica(b"a", hello("a"), t0)
    b = d.add_replica(b"b", hello("b"), t0)
    held = queries(loop, range(3))
    d.submit(q, held)
    await turn()
    victim, _ = wire.sent.pop()
    other = b if victim == b"a" else a
    d.heard_from(other, t0 + HB)  # the other one keeps talking

    assert live.check(t0 + HB) == t0 + HB  # silent for exactly one interval: not yet
    assert d.by_identity[victim].available
    live.check(t0 + HB + 0.001)
    assert d.by_identity[victim].unavailable.startswith("silent for 0.251 s")
    # Its batch went to the other replica, which answers it.
    answer(d, other.identity, wire.take(other.identity))
    assert [await query.future for query in held] == [b"0.0", b"10.0", b"20.0"]
    # New work skips it.
    later = queries(loop, [7])
    d.submit(q, later)
    await turn()
    assert [who for who, _ in wire.sent] == [other.identity]
    assert d.status()["m:1"]["unavailable"] == {victim.decode(): d.by_identity[victim].unavailable}


async def test_a_silent_replica_comes_back_when_it_speaks_and_answers_what_it_owed():
    loop = asyncio.get_running_loop()
    d, q, wire, live = setup()
    t0 = asyncio.get_running_loop().time()
    a = d.add_replica(b"a", hello("a"), t0)
    held = queries(loop, range(2))
    d.submit(q, held)
    await turn()
    owed = wire.take(b"a")
    live.check(t0 + 2 * HB)
    assert not a.available and held[0] in q.pending  # requeued, nobody to take it
    d.heard_from(a, t0 + 2.1 * HB)  # it speaks, but still owes the batch
    assert not a.available
    answer(d, b"a", owed)  # the late answer is used by the queries still waiting
    assert [await query.future for query in held] == [b"0.0", b"10.0"]
    assert a.available and a.abandoned == {}
    nxt = queries(loop, [5])
    d.submit(q, nxt)
    await turn()
    answer(d, b"a", wire.take(b"a"))
    assert await nxt[0].future == b"50.0"
    assert not q.pending or all(query.future.done() for query in q.pending)


async def test_a_replica_silent_for_three_intervals_is_removed():
    d, _, _, live = setup()
    t0 = asyncio.get_running_loop().time()
    a = d.add_replica(b"a", hello("a"), t0)
    removed = []
    d.on_replica_removed = removed.append
    assert live.check(t0 + 2 * HB) == t0 + DEAD_INTERVALS * HB
    assert b"a" in d.by_identity and not a.available
    live.check(t0 + DEAD_INTERVALS * HB + 0.01)
    assert removed == [a] and a.removed.startswith("silent for 0.76")


async def test_a_replica_stuck_on_a_batch_past_its_deadline_leaves_rotation_and_returns():
    loop = asyncio.get_running_loop()
    d, q, wire, live = setup(cap=2)
    q.max_inflight = 2
    t0 = asyncio.get_running_loop().time()
    a = d.add_replica(b"a", hello("a"), t0)
    stuck = queries(loop, [0, 1], deadline=t0 + 0.1)
    queued = queries(loop, [2], deadline=t0 + 10)
    d.submit(q, stuck)
    await turn()
    d.submit(q, queued)  # a second batch, behind the first on the same replica
    await turn()
    first, second = wire.take(b"a"), wire.take(b"a")
    assert stuck_at(a, HB) == (first.batch_id, t0 + 0.1 + HB)
    for query in stuck:  # their deadline passes: they get the default
        d.expire(query, q)
    now = t0 + 0.1 + HB
    d.heard_from(a, now)  # its heartbeats keep coming
    assert live.check(now) == now
    assert a.available
    d.heard_from(a, now + 0.01)
    live.check(now + 0.01)
    assert a.unavailable.startswith(f"stuck: batch {first.batch_id} unanswered 0.26")
    # The other batch it held is waiting for another replica; one arrives and takes it.
    b = d.add_replica(b"b", hello("b"), now)
    answer(d, b"b", wire.take(b"b"))
    assert await queued[0].future == b"20.0"
    # The stuck replica answers at last: late answers change nothing, and it is back.
    answer(d, b"a", first, scale=-1)
    assert not a.available  # still owes the second batch
    answer(d, b"a", second, scale=-1)
    assert a.available and b.available
    assert [type(query.future.result()) for query in stuck] == [Expired, Expired]
    assert await queued[0].future == b"20.0"


async def test_a_removed_replica_that_was_out_of_rotation_owes_nothing():
    loop = asyncio.get_running_loop()
    d, q, wire, live = setup()
    t0 = asyncio.get_running_loop().time()
    d.add_replica(b"a", hello("a"), t0)
    held = queries(loop, [1])
    d.submit(q, held)
    await turn()
    owed = wire.take(b"a")
    live.check(t0 + 1.5 * HB)
    d.remove_replica(b"a", "disconnected")
    answer(d, b"a", owed)  # a late answer from a replica removed since: ignored
    assert not held[0].future.done() and held[0] in q.pending


events = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(1, 4)),
        st.tuples(st.just("answer"), st.integers(0, 7)),
        st.tuples(st.just("fail"), st.integers(0, 7)),
        st.tuples(st.just("add"), st.integers(0, 2)),
        st.tuples(st.just("remove"), st.integers(0, 2)),
        st.tuples(st.just("silence"), st.integers(0, 2)),
        st.tuples(st.just("speak"), st.integers(0, 2)),
        st.tuples(st.just("tick"), st.integers(1, 4)),
        st.tuples(st.just("tick"), st.integers(1, 4)),
        st.tuples(st.just("expire"), st.integers(0, 40)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(1, 4), st.integers(1, 2))
def test_every_query_is_answered_exactly_once_whatever_the_replicas_do(evs, cap, inflight):
    """Replicas go silent, come back, answer late (abandoned batches) or fail; queries
    expire. Every query ends with exactly one outcome, and a prediction is its own."""

    async def scenario():
        loop = asyncio.get_running_loop()
        d, q, wire, live = setup(cap)
        q.max_inflight = inflight
        now = loop.time()
        silent: set[bytes] = set()
        held: list[tuple[bytes, protocol.Predict]] = []  # what silent replicas sit on
        every: list[Query] = []
        resolutions: dict[int, int] = {}
        d.add_replica(b"r0", hello("r0"), now)
        d.add_replica(b"r1", hello("r1"), now)

        def count(query: Query):
            def done(_: asyncio.Future) -> None:
                resolutions[query.query_id] = resolutions.get(query.query_id, 0) + 1

            query.future.add_done_callback(done)

        for kind, arg in evs:
            ident = b"r%d" % arg
            if kind == "submit":
                new = queries(loop, range(len(every), len(every) + arg), deadline=now + 0.3)
                for query in new:
                    count(query)
                every.extend(new)
                d.submit(q, new)
            elif kind in ("answer", "fail") and wire.sent:
                identity, predict = wire.sent.pop(arg % len(wire.sent))
                assert predict.size <= cap
                if identity in silent:
                    held.append((identity, predict))  # it answers once it speaks again
                    continue
                if identity in d.by_identity:
                    d.heard_from(d.by_identity[identity], now)
                if kind == "answer":
                    answer(d, identity, predict)
                else:
                    d.on_error(identity, Error(predict.batch_id, ErrorKind.MODEL_RAISED, "x"))
            elif kind == "add":
                silent.discard(ident)
                d.add_replica(ident, hello(ident.decode()), now)
            elif kind == "remove":
                d.remove_replica(ident, "test")
            elif kind == "silence":
                silent.add(ident)
            elif kind == "speak":
                silent.discard(ident)
                wire.sent.extend(m for m in held if m[0] == ident)
                held[:] = [m for m in held if m[0] != ident]
                if ident in d.by_identity:
                    d.heard_from(d.by_identity[ident], now)
            elif kind == "tick":
                now += arg * HB / 2
                for identity, replica in list(d.by_identity.items()):
                    if identity not in silent:
                        d.heard_from(replica, now)
                live.check(now)
            elif kind == "expire" and every:
                d.expire(every[arg % len(every)], q)
            await turn()  # each event in a turn of its own
            for replica in d.by_identity.values():
                assert replica.available or replica.unavailable
                assert not (replica.inflight.keys() & replica.abandoned.keys())
        # Drain: everyone speaks and answers everything, then the rest reach their deadline.
        silent.clear()
        wire.sent.extend(held)
        for replica in list(d.by_identity.values()):
            d.heard_from(replica, now)
        d.add_replica(b"last", hello("last"), now)
        while wire.sent:
            identity, predict = wire.sent.pop(0)
            if identity in d.by_identity:
                d.heard_from(d.by_identity[identity], now)
                answer(d, identity, predict)
            await turn()
        for query in every:
            if not query.future.done():
                d.expire(query, q)
        await turn()  # the done callbacks run
        for query in every:
            outcome = query.future.result()
            if isinstance(outcome, bytes):
                assert outcome == b"%.1f" % (query.query_id * 10)
            else:
                assert isinstance(outcome, Failure | Expired)
            assert resolutions[query.query_id] == 1
        for replica in d.by_identity.values():
            # Back in rotation, unless a batch ran past the timeout: then it was told to
            # restart, and only its next process registers again.
            assert replica.available or replica.restarting, replica.unavailable

    asyncio.run(scenario())
