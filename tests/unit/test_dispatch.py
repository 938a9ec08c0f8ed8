"""Dispatch of queued queries to replicas: caps, least-loaded choice, retry, exactly-once."""

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polling import turn

from model_container import protocol
from model_container.protocol import Error, ErrorKind, Hello, InputType, Result
from query_frontend.batching.dispatch import (
    Dispatcher,
    ModelQueue,
    OverloadedError,
    TooManyInputsError,
)
from query_frontend.queries import Expired, Failure, Query

KEY = ("m", "1")


class Wire:
    """Collects what the dispatcher sends, decoded, per replica identity."""

    def __init__(self):
        self.sent: list[tuple[bytes, protocol.Predict]] = []

    def __call__(self, identity, frames):
        msg = protocol.decode([bytes(f) for f in frames])
        assert isinstance(msg, protocol.Predict)
        self.sent.append((identity, msg))


def hello(replica_id: str) -> Hello:
    return Hello("m", "1", InputType.DOUBLES, replica_id)


def make_queries(loop, n, deadline=1e12):
    return [Query(i, np.array([float(i)]), deadline, loop.create_future()) for i in range(n)]


def answer(d: Dispatcher, identity: bytes, predict: protocol.Predict):
    values = protocol.unpack_inputs(predict.input_type, predict.lengths, predict.data)
    lengths, data = protocol.pack_outputs([float(row[0]) * 10 for row in values])
    d.on_result(identity, Result(predict.batch_id, lengths, data))


def setup(cap: int, max_queue: int = 100) -> tuple[Dispatcher, ModelQueue, Wire]:
    wire = Wire()
    d = Dispatcher(default_max_batch=cap, max_queue=max_queue)
    d.bind(wire)
    d.configure(KEY, InputType.DOUBLES, cap, None)  # a fixed batch size: greedy up to cap
    return d, d.queue(KEY, InputType.DOUBLES), wire


async def test_batches_respect_the_cap_and_answers_reach_the_right_queries():
    loop = asyncio.get_running_loop()
    d, q, wire = setup(cap=4)
    d.add_replica(b"a", hello("r0"), loop.time())
    queries = make_queries(loop, 10)
    d.submit(q, queries)
    await turn()
    # One batch in flight per replica: the first batch goes at the end of the loop's
    # turn, greedy up to the cap; each answer lets the next go at the end of its turn.
    while wire.sent:
        identity, predict = wire.sent.pop(0)
        assert predict.size <= 4
        answer(d, identity, predict)
        await turn()
    assert [await query.future for query in queries] == [b"%.1f" % (i * 10) for i in range(10)]


async def test_queries_submitted_in_one_turn_of_the_loop_go_out_in_one_batch():
    """Sending waits for the end of the loop's turn: what arrives in one turn, one
    request at a time, rides in one batch, and so does what arrives while a replica's
    answer is read."""
    loop = asyncio.get_running_loop()
    d, q, wire = setup(cap=4)
    d.add_replica(b"a", hello("r0"), loop.time())
    queries = make_queries(loop, 5)
    for query in queries[:3]:
        d.submit(q, [query])
    assert wire.sent == []  # nothing before the turn ends
    await turn()
    [(identity, predict)] = wire.sent
    assert identity == b"a" and predict.size == 3
    wire.sent.clear()
    # The replica answers, and two more queries arrive in the same turn.
    answer(d, identity, predict)
    for query in queries[3:]:
        d.submit(q, [query])
    assert wire.sent == []
    await turn()
    [(identity, predict)] = wire.sent
    assert identity == b"a" and predict.size == 2
    answer(d, identity, predict)
    assert [await query.future for query in queries] == [b"%.1f" % (i * 10) for i in range(5)]


async def test_when_the_last_replica_goes_an_ensembles_queries_give_up_at_once():
    loop = asyncio.get_running_loop()
    d, q, wire = setup(cap=2)
    d.add_replica(b"a", hello("r0"), loop.time())
    patient = make_queries(loop, 2)
    impatient = make_queries(loop, 2)
    for query in impatient:
        query.impatient = True
    d.submit(q, patient + impatient)
    await turn()  # the first batch is in flight on r0
    d.remove_replica(b"a", "connection closed")
    await asyncio.sleep(0)
    for query in impatient:
        assert query.future.done()
        assert query.future.result() == Expired("no replica of model 'm' version '1' is connected")
    # A one-model app's queries keep waiting for a replica until their deadline.
    assert not any(query.future.done() for query in patient)
    assert list(q.pending) == patient
    d.add_replica(b"b", hello("r1"), loop.time())
    assert [p.size for _, p in wire.sent] == [2, 2]


async def test_least_loaded_replica_gets_the_next_batch():
    loop = asyncio.get_running_loop()
    d, q, wire = setup(cap=2)
    d.add_replica(b"a", hello("r0"), loop.time())
    d.add_replica(b"b", hello("r1"), loop.time())
    d.submit(q, make_queries(loop, 4))
    await turn()
    assert sorted(identity for identity, _ in wire.sent) == [b"a", b"b"]


async def test_a_removed_replica_hands_its_queries_to_another():
    loop = asyncio.get_running_loop()
    d, q, wire = setup(cap=8)
    d.add_replica(b"a", hello("r0"), loop.time())
    queries = make_queries(loop, 3)
    d.submit(q, queries)
    await turn()
    assert [identity for identity, _ in wire.sent] == [b"a"]
    wire.sent.clear()
    d.add_replica(b"b", hello("r1"), loop.time())
    d.remove_replica(b"a", "test")
    identity, predict = wire.sent.pop()
    assert identity == b"b" and predict.size == 3
    answer(d, identity, predict)
    assert [await query.future for query in queries] == [b"0.0", b"10.0", b"20.0"]


async def test_a_model_error_fails_the_batch_and_the_replica_serves_the_next():
    loop = asyncio.get_running_loop()
    d, q, wire = setup(cap=1)
    d.add_replica(b"a", hello("r0"), loop.time())
    first, second = make_queries(loop, 2)
    d.submit(q, [first, second])
    await turn()
    identity, predict = wire.sent.pop()
    d.on_error(identity, Error(predict.batch_id, ErrorKind.MODEL_RAISED, "ValueError: boom"))
    outcome = await first.future
    assert isinstance(outcome, Failure)
    # Any client may read the model and the exception's type; only an app that exposes
    # model errors shows its message.
    assert "model 'm' version '1'" in outcome.message and "raised ValueError" in outcome.message
    assert "boom" not in outcome.message and "boom" not in outcome.told(expose=False)
    assert outcome.told(expose=True).endswith("raised ValueError: boom")
    identity, predict = wire.sent.pop()
    answer(d, identity, predict)
    assert await second.future == b"10.0"


SECRET = "[Errno 2] No such file or directory: '/srv/secret/db-password.txt'"


@pytest.mark.parametrize(
    ("error", "public"),
    [
        # Row 9 of issue 12: the path in the exception reached the client.
        (Error(0, ErrorKind.MODEL_RAISED, f"FileNotFoundError: {SECRET}", "FileNotFoundError"),
         "raised FileNotFoundError"),
        # A container older than "exc": the type from the start of msg, if a dotted name.
        (Error(0, ErrorKind.MODEL_RAISED, f"mylib.errors.Oops: {SECRET}"),
         "raised mylib.errors.Oops"),
        (Error(0, ErrorKind.MODEL_RAISED, f"/srv/secret: {SECRET}"), "raised an exception"),
        (Error(0, ErrorKind.MODEL_RAISED, SECRET.replace(":", "")), "raised an exception"),
        (Error(0, ErrorKind.MODEL_RAISED, f"Oops: {SECRET}", "not a name: /srv/secret"),
         "raised Oops"),
        # The container failed on the model's outputs with an exception: its type only.
        (Error(0, ErrorKind.BAD_OUTPUT, f"KeyError: {SECRET}", "KeyError"),
         "failed (bad_output): KeyError"),
    ],
)  # fmt: skip
async def test_clients_are_told_the_model_and_the_exception_type_not_its_text(error, public):
    loop = asyncio.get_running_loop()
    d, q, wire = setup(cap=1)
    d.add_replica(b"a", hello("r0"), loop.time())
    (query,) = make_queries(loop, 1)
    d.submit(q, [query])
    await turn()
    identity, predict = wire.sent.pop()
    d.on_error(identity, Error(predict.batch_id, error.kind, error.message, error.exc_type))
    failure = await query.future
    assert isinstance(failure, Failure)
    told = failure.told(expose=False)
    assert told == f"model 'm' version '1' (replica r0) {public}"
    assert "/srv/secret" not in told
    assert error.message in failure.told(expose=True)


async def test_an_error_with_no_exception_behind_it_is_told_whole():
    """The container's own sentences (wrong number of outputs, undecodable batch) help
    the caller and hold nothing of the model's."""
    loop = asyncio.get_running_loop()
    d, q, wire = setup(cap=1)
    d.add_replica(b"a", hello("r0"), loop.time())
    (query,) = make_queries(loop, 1)
    d.submit(q, [query])
    await turn()
    identity, predict = wire.sent.pop()
    msg = "model returned 3 outputs for a batch of 1"
    d.on_error(identity, Error(predict.batch_id, ErrorKind.BAD_OUTPUT, msg))
    failure = await query.future
    assert failure.told(expose=False) == failure.told(expose=True)
    assert failure.told(expose=False).endswith(f"failed (bad_output): {msg}")


async def test_queries_past_their_deadline_are_never_sent():
    loop = asyncio.get_running_loop()
    d, q, wire = setup(cap=8)
    late = make_queries(loop, 2, deadline=loop.time() - 1)
    d.submit(q, late)
    d.add_replica(b"a", hello("r0"), loop.time())
    await turn()
    assert wire.sent == []
    outcomes = [await query.future for query in late]
    assert all(isinstance(o, Expired) for o in outcomes)


events = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.integers(1, 5)),
        st.tuples(st.just("answer"), st.integers(0, 3)),
        st.tuples(st.just("fail"), st.integers(0, 3)),
        st.tuples(st.just("add"), st.integers(0, 3)),
        st.tuples(st.just("remove"), st.integers(0, 3)),
        st.tuples(st.just("expire"), st.integers(0, 50)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(events, st.integers(1, 6))
def test_every_query_is_answered_exactly_once_and_batches_never_exceed_the_cap(evs, cap):
    async def scenario():
        loop = asyncio.get_running_loop()
        d, q, wire = setup(cap, max_queue=10_000)
        every: list[Query] = []
        for kind, arg in evs:
            if kind == "submit":
                new = [
                    Query(n, np.array([float(n)]), 1e12, loop.create_future())
                    for n in range(len(every), len(every) + arg)
                ]
                every.extend(new)
                d.submit(q, new)
            elif kind in ("answer", "fail") and wire.sent:
                identity, predict = wire.sent.pop(arg % len(wire.sent))
                assert predict.size <= cap
                if kind == "answer":
                    answer(d, identity, predict)
                else:
                    d.on_error(identity, Error(predict.batch_id, ErrorKind.MODEL_RAISED, "x"))
            elif kind == "add":
                d.add_replica(b"r%d" % arg, hello(f"r{arg}"), loop.time())
            elif kind == "remove":
                d.remove_replica(b"r%d" % arg, "test")
            elif kind == "expire" and every:
                d.expire(every[arg % len(every)], q)
            await turn()  # each event in a turn of its own
        # Drain: a replica answers everything still queued or in flight, then any
        # query that no replica can take reaches its deadline.
        d.add_replica(b"last", hello("last"), loop.time())
        while wire.sent:
            identity, predict = wire.sent.pop(0)
            assert predict.size <= cap
            if identity in d.by_identity:
                answer(d, identity, predict)
            await turn()
        for query in every:
            if not query.future.done():
                d.expire(query, q)
        for query in every:
            outcome = query.future.result()
            # A prediction is always this query's own: never another query's output.
            if isinstance(outcome, bytes):
                assert outcome == b"%.1f" % (query.query_id * 10)
            else:
                assert isinstance(outcome, Failure | Expired)
        assert not d._batches or all(r in d.by_identity.values() for r, _ in d._batches.values())

    asyncio.run(scenario())


async def test_a_full_queue_refuses_new_queries_and_keeps_the_old_ones():
    loop = asyncio.get_running_loop()
    d, q, _ = setup(cap=4, max_queue=3)
    waiting = make_queries(loop, 3)
    d.submit(q, waiting)
    with pytest.raises(OverloadedError, match="3 queries waiting"):
        d.submit(q, make_queries(loop, 1))
    assert list(q.pending) == waiting


async def test_queries_answered_at_their_deadline_do_not_fill_the_queue():
    loop = asyncio.get_running_loop()
    d, q, _ = setup(cap=4, max_queue=3)
    for _ in range(5):  # no replica: every query gets the default at its deadline
        batch = make_queries(loop, 3)
        d.submit(q, batch)
        for query in batch:
            d.expire(query, q)
    assert len(q.pending) == 3


async def test_a_request_larger_than_the_queue_is_refused_for_good():
    loop = asyncio.get_running_loop()
    d, q, _ = setup(cap=4, max_queue=3)
    with pytest.raises(TooManyInputsError, match="split it"):
        d.submit(q, make_queries(loop, 4))


async def test_outputs_that_are_not_json_fail_the_batch_instead_of_reaching_clients():
    loop = asyncio.get_running_loop()
    d, q, wire = setup(cap=4)
    d.add_replica(b"a", hello("r0"), loop.time())
    queries = make_queries(loop, 2)
    d.submit(q, queries)
    await turn()
    identity, predict = wire.sent.pop()
    lengths, data = protocol.pack_items([b"1", b"{oops"])
    d.on_result(identity, Result(predict.batch_id, lengths, data))
    outcome = await queries[0].future
    assert (
        isinstance(outcome, Failure) and "output 1 that is not a JSON document" in outcome.message
    )


async def test_adaptive_batches_grow_while_the_replica_answers_within_budget():
    loop = asyncio.get_running_loop()
    wire = Wire()
    d = Dispatcher(default_max_batch=16, max_queue=1000)
    d.bind(wire)
    d.configure(KEY, InputType.DOUBLES, -1, 0.1)  # adaptive (AIMD), SLO 100 ms
    q = d.queue(KEY, InputType.DOUBLES)
    d.add_replica(b"a", hello("r0"), loop.time())
    d.submit(q, make_queries(loop, 200))
    await turn()
    sizes = []
    while wire.sent:
        identity, predict = wire.sent.pop(0)
        sizes.append(predict.size)
        answer(d, identity, predict)  # answered at once: far within the budget
        await turn()
    assert sizes[0] == 1
    full = sizes[:-1]  # the last batch takes what is left
    assert full == sorted(full) and max(full) == 16
    assert d.status()["m:1"]["batch_mode"] == "aimd"


async def test_two_batches_in_flight_per_replica_when_configured():
    loop = asyncio.get_running_loop()
    wire = Wire()
    d = Dispatcher(default_max_batch=2, max_queue=100, max_inflight=2)
    d.bind(wire)
    d.configure(KEY, InputType.DOUBLES, 2, None)
    q = d.queue(KEY, InputType.DOUBLES)
    d.add_replica(b"a", hello("r0"), loop.time())
    d.submit(q, make_queries(loop, 6))
    await turn()
    assert [(identity, p.size) for identity, p in wire.sent] == [(b"a", 2), (b"a", 2)]
    assert len(q.pending) == 2


async def test_delayed_batching_holds_a_short_batch_until_the_wait_is_over():
    loop = asyncio.get_running_loop()
    d, q, wire = setup(cap=4)
    d.configure(KEY, InputType.DOUBLES, 4, None, mode="fixed", wait_s=0.02)
    d.add_replica(b"a", hello("r0"), loop.time())
    d.submit(q, make_queries(loop, 2))
    await turn()
    assert wire.sent == []  # a batch of 2 when 4 fit: wait for more
    sent = asyncio.Event()

    def send(identity, frames):
        wire(identity, frames)
        sent.set()

    d.bind(send)
    d.submit(q, make_queries(loop, 1))
    await turn()
    assert wire.sent == []
    await asyncio.wait_for(sent.wait(), timeout=5)
    assert [p.size for _, p in wire.sent] == [3]  # sent when the oldest had waited 20 ms
    identity, predict = wire.sent.pop()
    answer(d, identity, predict)
    d.submit(q, make_queries(loop, 4))
    await turn()
    assert [p.size for _, p in wire.sent] == [4]  # a full batch: no wait beyond the turn


async def test_a_registered_mode_overrides_the_clipper_meaning_of_batch_size():
    loop = asyncio.get_running_loop()
    d, _, _ = setup(cap=8)
    d.configure(KEY, InputType.DOUBLES, 8, 0.05, mode="latency_model")
    d.add_replica(b"a", hello("r0"), loop.time())
    assert d.status()["m:1"]["batch_mode"] == "latency_model"
    d.configure(KEY, InputType.DOUBLES, 8, 0.05)
    assert d.status()["m:1"]["batch_mode"] == "fixed"
