"""The rules for replicas that hang or fail, and for poison inputs, as pure logic.

The dispatcher runs with a fake wire that records what it sends (PREDICT, RESTART);
time is the event loop's, passed explicitly to the liveness checks. The integration
tests (``tests/integration/test_failing_replicas.py``) run the same rules against real
processes.
"""

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polling import turn

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
from query_frontend.batching.dispatch import Dispatcher, ModelQueue
from query_frontend.batching.quarantine import QUARANTINE_AFTER, Quarantine, QuarantinedError
from query_frontend.caching.cache import cache_key
from query_frontend.queries import Expired, Failure, Query
from query_frontend.rpc.liveness import Liveness

KEY = ("m", "1")
HB = 30.0  # heartbeats never matter here


class Wire:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Predict]] = []
        self.restarts: list[tuple[bytes, str]] = []

    def __call__(self, identity, frames):
        msg = protocol.decode([bytes(f) for f in frames])
        if isinstance(msg, Restart):
            self.restarts.append((identity, msg.reason))
        else:
            assert isinstance(msg, Predict)
            self.sent.append((identity, msg))

    def take(self, identity: bytes) -> Predict:
        for i, (who, predict) in enumerate(self.sent):
            if who == identity:
                del self.sent[i]
                return predict
        raise AssertionError(f"nothing was sent to {identity!r}")


def hello(replica_id: str, pid: int = 1, started_ms: int = 0) -> Hello:
    return Hello(
        "m", "1", InputType.DOUBLES, replica_id, pid=pid, caps=(CAP_RESTART,), started_ms=started_ms
    )


def setup(timeout_s: float = 1.0) -> tuple[Dispatcher, ModelQueue, Wire, Liveness]:
    wire = Wire()
    d = Dispatcher(default_max_batch=8, max_queue=1000)
    d.bind(wire)
    d.configure(KEY, InputType.DOUBLES, 8, 30.0, timeout_s=timeout_s)
    return d, d.queue(KEY, InputType.DOUBLES), wire, Liveness(d, HB)


def queries(loop, xs, deadline=1e12) -> list[Query]:
    return [Query(i, np.array([x]), deadline, loop.create_future()) for i, x in enumerate(xs)]


def answer(d: Dispatcher, identity: bytes, predict: Predict) -> None:
    values = protocol.unpack_inputs(predict.input_type, predict.lengths, predict.data)
    lengths, data = protocol.pack_outputs([float(row[0]) * 10 for row in values])
    d.on_result(identity, Result(predict.batch_id, lengths, data))


def hang(d: Dispatcher, identity: bytes, seconds: float = 2.0) -> None:
    """As if the replica had been working on what it holds for ``seconds`` already."""
    replica = d.by_identity[identity]
    for batch_id in replica.sent_at:
        replica.sent_at[batch_id] -= seconds
    replica.last_done -= seconds


def overdue(qs: list[Query]) -> None:
    """As if the queries' deadline had passed (they have no timer here)."""
    for query in qs:
        query.deadline = asyncio.get_running_loop().time() - 1


def inputs(predict: Predict) -> list[float]:
    values = protocol.unpack_inputs(predict.input_type, predict.lengths, predict.data)
    return [float(row[0]) for row in values]


MEMORY = dict(kind=ErrorKind.MODEL_RAISED, message="MemoryError: no", exc_type="MemoryError")


def memory_error(predict: Predict) -> Error:
    return Error(predict.batch_id, **MEMORY)  # type: ignore[arg-type]


# ------------------------------------------------------------------- batch timeouts


def test_a_batch_timeout_is_as_set_else_ten_objectives_with_a_floor():
    assert failures.batch_timeout(2.5, 0.1, 1.0) == 2.5
    assert failures.batch_timeout(0, 0.05, 1.0) == 1.0
    assert failures.batch_timeout(0, 0.5, 1.0) == 5.0


async def test_predicts_carry_the_timeout_of_their_model_version():
    loop = asyncio.get_running_loop()
    d, q, wire, _ = setup(timeout_s=2.5)
    d.add_replica(b"a", hello("a"), loop.time())
    d.submit(q, queries(loop, [1.0]))
    await turn()
    assert wire.take(b"a").timeout_ms == 2500


async def test_a_hung_batch_is_retried_elsewhere_and_its_replica_told_to_restart():
    loop = asyncio.get_running_loop()
    d, q, wire, live = setup()
    now = loop.time()
    d.add_replica(b"a", hello("a"), now)
    qs = queries(loop, [1.0, 2.0])
    d.submit(q, qs)
    await turn()
    wire.take(b"a")
    d.add_replica(b"b", hello("b"), now)
    live.check(loop.time())
    assert wire.restarts == []
    hang(d, b"a")
    live.check(loop.time())  # past the timeout
    assert [who for who, _ in wire.restarts] == [b"a"]
    assert wire.restarts[0][1].startswith("batch timeout: model 'm' version '1' (replica a)")
    # Its queries were suspects: each goes alone to the other replica.
    for _ in qs:
        alone = wire.take(b"b")
        assert alone.size == 1
        answer(d, b"b", alone)
        await turn()
    assert [query.future.result() for query in qs] == [b"10.0", b"20.0"]
    assert not d.by_identity[b"a"].available
    assert d.events[KEY, "timeout"] == 1 and d.events[KEY, "restart:timeout"] == 1
    # It never comes back into rotation, even if it answers late.
    d.heard_from(d.by_identity[b"a"], now + 2)
    assert not d.by_identity[b"a"].available


async def test_a_hung_batchs_queries_past_their_deadline_get_a_default_naming_the_timeout():
    loop = asyncio.get_running_loop()
    d, q, _wire, live = setup()
    now = loop.time()
    d.add_replica(b"a", hello("a"), now)
    d.add_replica(b"b", hello("b"), now)
    (query,) = queries(loop, [1.0])
    d.submit(q, [query])
    await turn()
    overdue([query])
    hang(d, b"a")
    live.check(loop.time())
    outcome = query.future.result()
    assert isinstance(outcome, Expired)
    assert "within its 1 s timeout" in outcome.reason
    assert "being restarted" in outcome.reason


async def test_a_query_is_retried_once_only():
    loop = asyncio.get_running_loop()
    d, q, wire, _live = setup()
    now = loop.time()
    for name in (b"a", b"b", b"c"):
        d.add_replica(name, hello(name.decode()), now)
    (query,) = queries(loop, [1.0])
    d.submit(q, [query])
    await turn()
    (first, _), *_ = wire.sent
    d.remove_replica(first, "disconnected: its connection closed", crashed=True)
    (second, _), *_ = wire.sent[1:]
    d.remove_replica(second, "disconnected: its connection closed", crashed=True)
    # Alone, it took both replicas down: its default says it is quarantined for that.
    outcome = query.future.result()
    assert isinstance(outcome, Expired) and "input quarantined" in outcome.reason
    await turn()
    assert len(wire.sent) == 2


async def test_an_input_that_silences_every_replica_it_reaches_is_sent_twice_at_most():
    """A replica that goes silent with a batch (its model thrashing towards its memory
    limit) leaves rotation and its queries go elsewhere too; that counts as their retry,
    so a poison input cannot go round the replicas, taking each down, until its deadline."""
    loop = asyncio.get_running_loop()
    d, q, wire, _live = setup()
    now = loop.time()
    for name in (b"a", b"b"):
        d.add_replica(name, hello(name.decode()), now)
    (query,) = queries(loop, [666.0])
    d.submit(q, [query])
    await turn()
    (first, _), *_ = wire.sent
    d.suspend_replica(first, "silent for 1.000 s", now)
    (second, _), *_ = wire.sent[1:]
    assert second != first
    d.suspend_replica(second, "silent for 1.000 s", now)
    # Both restart (new connections under the same ids): it is not sent a third time.
    d.add_replica(first + b"'", hello(first.decode(), pid=2), now + 1)
    d.add_replica(second + b"'", hello(second.decode(), pid=2), now + 1)
    await turn()
    assert len(wire.sent) == 2
    outcome = query.future.result()
    assert isinstance(outcome, Expired) and "retried once" in outcome.reason
    # The others are served by the restarted replicas.
    (innocent,) = queries(loop, [1.0])
    d.submit(q, [innocent])
    await turn()
    who, predict = wire.sent[-1]
    answer(d, who, predict)
    assert innocent.future.result() == b"10.0"


async def test_a_benched_replica_still_answers_what_it_was_left_with():
    loop = asyncio.get_running_loop()
    d, q, wire, _live = setup()
    now = loop.time()
    for name in (b"a", b"b"):
        d.add_replica(name, hello(name.decode()), now)
    (query,) = queries(loop, [2.0])
    d.submit(q, [query])
    await turn()
    first, slow = wire.sent.pop()
    d.suspend_replica(first, "silent for 1.000 s", now)
    second, hedge = wire.sent.pop()
    d.suspend_replica(second, "silent for 1.000 s", now)
    d.on_error(first, memory_error(slow))  # the first's answer no longer counts
    assert not query.future.done()
    answer(d, second, hedge)
    assert query.future.result() == b"20.0"
    await turn()
    assert not wire.sent


async def test_a_replica_that_restarts_is_counted_and_says_why_it_last_left():
    loop = asyncio.get_running_loop()
    d, q, _wire, live = setup()
    now = loop.time()
    d.add_replica(b"a", hello("a", pid=10), now)
    d.submit(q, queries(loop, [1.0]))
    await turn()
    hang(d, b"a")
    live.check(loop.time())
    d.remove_replica(b"a", "said goodbye (restarting)")
    d.add_replica(b"a2", hello("a", pid=11), now + 2)
    history = d.status()["m:1"]["replica_history"]["a"]
    assert history["restarts"] == 1 and history["timeouts"] == 1
    # In a container it is pid 1 every time: its start time says it is another process.
    d.remove_replica(b"a2", "disconnected: its connection closed", crashed=True)
    d.add_replica(b"a3", hello("a", pid=1, started_ms=5), now + 3)
    d.remove_replica(b"a3", "disconnected: its connection closed", crashed=True)
    d.add_replica(b"a4", hello("a", pid=1, started_ms=9), now + 4)
    assert d.status()["m:1"]["replica_history"]["a"]["restarts"] == 3
    # The same process reconnecting (a network blip) is no restart.
    d.add_replica(b"a5", hello("a", pid=1, started_ms=9), now + 5)
    assert d.status()["m:1"]["replica_history"]["a"]["restarts"] == 3
    assert history["last_removal"].startswith("said goodbye (restarting), after being told")


# ------------------------------------------------------------ failures and ejection


async def test_a_memory_error_is_retried_on_a_sibling_and_the_client_sees_the_answer():
    loop = asyncio.get_running_loop()
    d, q, wire, _ = setup()
    now = loop.time()
    d.add_replica(b"a", hello("a"), now)
    d.add_replica(b"b", hello("b"), now)
    qs = queries(loop, [1.0, 2.0])
    d.submit(q, qs)
    await turn()
    d.on_error(b"a", memory_error(wire.take(b"a")))
    answer(d, b"b", wire.take(b"b"))
    assert [query.future.result() for query in qs] == [b"10.0", b"20.0"]
    assert d.events[KEY, "retry"] == 1


async def test_a_memory_error_without_a_sibling_is_the_failure():
    loop = asyncio.get_running_loop()
    d, q, wire, _ = setup()
    d.add_replica(b"a", hello("a"), loop.time())
    (query,) = queries(loop, [1.0])
    d.submit(q, [query])
    await turn()
    d.on_error(b"a", memory_error(wire.take(b"a")))
    outcome = query.future.result()
    assert isinstance(outcome, Failure) and outcome.message.endswith("raised MemoryError")


async def test_a_retried_query_does_not_go_back_to_the_replica_it_failed_on():
    loop = asyncio.get_running_loop()
    d, q, wire, _ = setup()
    now = loop.time()
    d.add_replica(b"a", hello("a"), now)
    d.add_replica(b"b", hello("b"), now)
    d.submit(q, queries(loop, [1.0]))
    await turn()  # a holds it
    d.submit(q, queries(loop, [2.0]))
    await turn()  # b holds it
    held = wire.take(b"b")
    d.on_error(b"a", memory_error(wire.take(b"a")))
    await turn()
    assert wire.sent == []  # 1.0 waits for b, though a is idle
    answer(d, b"b", held)
    await turn()
    assert inputs(wire.take(b"b")) == [1.0]


async def test_five_failures_in_a_row_while_a_sibling_succeeds_eject_the_replica():
    loop = asyncio.get_running_loop()
    d, q, wire, _ = setup()
    now = loop.time()
    d.add_replica(b"a", hello("a"), now)
    d.add_replica(b"b", hello("b"), now)
    everything: list[Query] = []
    for i in range(failures.EJECT_AFTER):
        assert wire.restarts == []
        qs = queries(loop, [float(i)])
        everything += qs
        d.submit(q, qs)
        await turn()
        d.on_error(b"a", memory_error(wire.take(b"a")))
        answer(d, b"b", wire.take(b"b"))
    ((who, reason),) = wire.restarts
    assert who == b"a"
    assert reason.startswith("ejected: its last 5 batches failed")
    assert all(isinstance(query.future.result(), bytes) for query in everything)
    assert d.events[KEY, "restart:ejected"] == 1
    assert d.status()["m:1"]["replica_history"]["a"]["ejections"] == 1


@pytest.mark.parametrize(
    "error",
    [
        Error(0, ErrorKind.MODEL_RAISED, "ValueError: bad", "ValueError"),
        Error(0, ErrorKind.BAD_OUTPUT, "model returned 3 outputs for a batch of 1"),
        Error(0, ErrorKind.BAD_INPUT, "cannot decode the batch"),
    ],
)
async def test_a_models_own_failure_is_the_answer_never_retried_nor_ejected(error):
    loop = asyncio.get_running_loop()
    d, q, wire, _ = setup()
    now = loop.time()
    d.add_replica(b"a", hello("a"), now)
    d.add_replica(b"b", hello("b"), now)
    for i in range(3 * failures.EJECT_AFTER):
        (query,) = queries(loop, [float(i)])
        d.submit(q, [query])
        await turn()
        who, predict = wire.sent.pop()
        d.on_error(who, Error(predict.batch_id, error.kind, error.message, error.exc_type))
        outcome = query.future.result()
        assert isinstance(outcome, Failure)
        assert outcome.message.startswith("model 'm' version '1' (replica ")
    await turn()
    assert wire.sent == [] and wire.restarts == []
    assert d.events[KEY, "retry"] == 0


async def test_without_a_succeeding_sibling_nothing_is_ejected():
    loop = asyncio.get_running_loop()
    d, q, wire, _ = setup()
    now = loop.time()
    d.add_replica(b"a", hello("a"), now)
    d.add_replica(b"b", hello("b"), now)
    for i in range(3 * failures.EJECT_AFTER):
        d.submit(q, queries(loop, [float(i)]))
        await turn()
        while wire.sent:
            who, predict = wire.sent.pop()
            d.on_error(who, memory_error(predict))
    assert wire.restarts == []
    assert all(r.available for r in d.by_identity.values())


async def test_an_older_replica_is_benched_but_never_sent_restart():
    loop = asyncio.get_running_loop()
    d, q, wire, live = setup()
    now = loop.time()
    d.add_replica(b"a", Hello("m", "1", InputType.DOUBLES, "a"), now)  # no caps
    d.submit(q, queries(loop, [1.0]))
    await turn()
    hang(d, b"a")
    live.check(loop.time())
    assert wire.restarts == []
    assert d.by_identity[b"a"].unavailable.startswith("batch timeout")


# ------------------------------------------------------------------ quarantine


async def test_an_input_that_hangs_replicas_twice_is_quarantined_and_innocents_are_not():
    loop = asyncio.get_running_loop()
    d, q, wire, live = setup()
    now = loop.time()
    d.add_replica(b"a", hello("a"), now)
    poison, innocent = 666.0, 1.0
    # They hang together: both are suspects, past their deadline (no retry).
    together = queries(loop, [poison, innocent])
    d.submit(q, together)
    await turn()
    overdue(together)
    hang(d, b"a")
    live.check(loop.time())
    d.add_replica(b"b", hello("b"), now)
    # Suspects go alone; the innocent is answered, and cleared.
    second_innocent, second_poison = queries(loop, [innocent, poison])
    d.submit(q, [second_innocent, second_poison])
    await turn()
    first = wire.take(b"b")
    assert inputs(first) == [innocent]
    answer(d, b"b", first)
    await turn()
    assert inputs(wire.take(b"b")) == [poison]
    hang(d, b"b")
    live.check(loop.time())  # the poison input hangs b too, alone
    # Quarantined by that, it is not retried on a third replica: its query gets the
    # default, which says why, while it still had a retry and time left.
    outcome = await second_poison.future
    assert isinstance(outcome, Expired)
    assert outcome.reason.startswith("input quarantined: it hung or crashed")
    with pytest.raises(QuarantinedError, match="input quarantined: it hung or crashed"):
        d.submit(q, queries(loop, [poison]))
    d.add_replica(b"c", hello("c"), now)
    d.submit(q, queries(loop, [innocent]))
    await turn()
    assert inputs(wire.take(b"c")) == [innocent]
    status = d.quarantine_status()
    assert status["count"] == 1
    assert status["inputs"][0]["digest"] == cache_key(KEY, np.array([poison]))[-16:].hex()[:12]
    assert d.events[KEY, "quarantine_refusal"] == 1


async def test_a_replica_crashing_with_an_input_counts_as_an_incident():
    loop = asyncio.get_running_loop()
    d, q, wire, _ = setup()
    now = loop.time()
    for name in (b"a", b"b"):
        d.add_replica(name, hello(name.decode()), now)
    d.submit(q, queries(loop, [666.0]))
    await turn()
    d.remove_replica(wire.sent.pop()[0], "disconnected: its connection closed", crashed=True)
    d.remove_replica(wire.sent.pop()[0], "disconnected: its connection closed", crashed=True)
    with pytest.raises(QuarantinedError):
        d.submit(q, queries(loop, [666.0]))


def test_the_quarantine_ends_and_memory_stays_bounded():
    quarantine = Quarantine(quarantine_s=10, max_tracked=3)
    digest = b"poison"
    for _ in range(QUARANTINE_AFTER):
        quarantine.incident(KEY, digest, True, "hung", now=0.0)
    assert quarantine.check(KEY, digest, 5.0) == (True, True)
    assert quarantine.check(KEY, digest, 11.0) == (False, True)  # served: on probation
    assert quarantine.incident(KEY, digest, True, "hung", now=12.0)  # once more: back in
    for i in range(10):
        quarantine.incident(KEY, b"other%d" % i, False, "crashed", now=13.0)
    assert quarantine.tracked == 3
    assert not quarantine.watches(("x", "1"))


def test_an_incident_in_a_crowded_batch_alone_never_quarantines():
    quarantine = Quarantine()
    for _ in range(5):
        assert not quarantine.incident(KEY, b"d", False, "hung", now=0.0)
    assert quarantine.incident(KEY, b"d", True, "hung", now=0.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["answer", "fail", "hang", "crash"]), st.integers(0, 2))))
def test_every_query_is_answered_once_whatever_the_replicas_do(evs):
    """Batches answered, failed with MemoryError, hung past the timeout or crashed: every
    query ends with exactly one outcome, and a prediction is its own."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        d, q, wire, live = setup()
        now = loop.time()
        ids = [b"r0", b"r1", b"r2"]
        for ident in ids:
            d.add_replica(ident, hello(ident.decode()), now)
        every: list[Query] = []
        for kind, arg in evs:
            qs = queries(loop, [float(len(every) + i) for i in range(arg + 1)], deadline=now + 5)
            for i, query in enumerate(qs):
                query.query_id = len(every) + i
            every += qs
            try:
                d.submit(q, qs)
            except QuarantinedError:
                for query in qs:
                    query.future.set_result(Expired("quarantined"))
            await turn()
            if not wire.sent:
                continue
            who, predict = wire.sent.pop(0)
            if kind == "answer":
                answer(d, who, predict)
            elif kind == "fail":
                d.on_error(who, memory_error(predict))
            elif kind == "hang":
                now += 1.5
                live.check(now)
            else:
                d.remove_replica(who, "crashed", crashed=True)
            for ident in ids:
                if ident not in d.by_identity:
                    d.add_replica(ident, hello(ident.decode(), pid=len(every)), now)
        await turn()
        while wire.sent:
            who, predict = wire.sent.pop(0)
            answer(d, who, predict)
            await turn()
        for query in every:
            if not query.future.done():
                d.expire(query, q)
        for query in every:
            outcome = query.future.result()
            if isinstance(outcome, bytes):
                assert outcome == b"%.1f" % (query.item[0] * 10)

    asyncio.run(scenario())
