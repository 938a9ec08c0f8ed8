"""Prediction cache: byte bound and LRU order, input digests, version keys, coalescing."""

import asyncio
import gc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from query_frontend.caching.cache import (
    ENTRY_OVERHEAD,
    Flight,
    PredictionCache,
    cache_key,
    entry_size,
    input_digest,
)
from query_frontend.queries import Expired, Failure

MODEL = ("m", "1")


def key(n: int, model=MODEL):
    return cache_key(model, np.array([float(n)]))


def room_for(n_entries: int, value_len: int) -> int:
    """A max_bytes that holds exactly ``n_entries`` values of ``value_len`` bytes."""
    return n_entries * entry_size(key(0), b"x" * value_len)


async def wait(fut):
    return await asyncio.wait_for(fut, timeout=5)


# ------------------------------------------------------------------------- keys


def test_equal_bytes_of_different_dtypes_get_different_digests():
    ints = np.array([1, 2], dtype="<i8")
    floats = ints.view("<f8")  # the very same 16 bytes
    assert ints.tobytes() == floats.tobytes()
    digests = {input_digest(ints), input_digest(floats), input_digest(ints.tobytes())}
    assert len(digests) == 3


def test_digest_depends_on_values_byte_order_and_shape_not_on_memory_layout():
    a = np.arange(6, dtype="<f8")
    assert input_digest(a) == input_digest(a.copy())
    assert input_digest(a) != input_digest(np.arange(1, 7, dtype="<f8"))
    assert input_digest(a) != input_digest(a.astype(">f8"))  # same values, other byte order
    assert input_digest(a.reshape(2, 3)) != input_digest(a.reshape(3, 2))
    strided = np.arange(12, dtype="<f8")[::2]
    assert input_digest(strided) == input_digest(np.ascontiguousarray(strided))
    fortran = np.asfortranarray(a.reshape(2, 3))
    assert input_digest(fortran) == input_digest(a.reshape(2, 3))
    assert len(input_digest(a)) == 16


def test_object_arrays_are_refused():
    with pytest.raises(TypeError, match="Python objects"):
        input_digest(np.array([1, "a"], dtype=object))


def test_versions_of_one_model_never_share_entries():
    cache = PredictionCache(1 << 20)
    item = np.array([1.0, 2.0])
    v1, v2 = cache_key(("m", "1"), item), cache_key(("m", "2"), item)
    assert v1 != v2
    cache.put(v1, b"1")
    assert cache.get(v2) is None
    assert isinstance(cache.lookup(v2), Flight)
    assert cache.get(v1) == b"1"


# ------------------------------------------------------------------- byte bound


def test_eviction_keeps_the_bound_and_the_recently_used():
    cache = PredictionCache(room_for(3, 8))
    for n in range(3):
        assert cache.put(key(n), b"%08d" % n)
    assert cache.bytes_used == cache.max_bytes
    assert cache.get(key(0)) == b"00000000"  # 0 is now the most recent, 1 the least
    assert cache.put(key(3), b"00000003")
    assert key(1) not in cache
    assert [key(n) in cache for n in (0, 2, 3)] == [True, True, True]
    assert cache.evictions == 1
    assert cache.bytes_used <= cache.max_bytes
    # A bigger value makes room for itself by evicting as many as it needs, oldest first.
    assert cache.put(key(4), b"x" * (8 + entry_size(key(0), b"x" * 8)))
    assert [key(n) in cache for n in (2, 0, 3, 4)] == [False, False, True, True]
    assert cache.evictions == 3
    assert cache.bytes_used <= cache.max_bytes


def test_a_hit_through_lookup_also_counts_as_recent_use():
    cache = PredictionCache(room_for(2, 1))
    cache.put(key(0), b"0")
    cache.put(key(1), b"1")
    assert cache.lookup(key(0)) == b"0"
    cache.put(key(2), b"2")
    assert [key(n) in cache for n in range(3)] == [True, False, True]
    assert (cache.hits, cache.misses) == (1, 0)


def test_a_value_bigger_than_the_cache_is_not_stored_and_drops_the_stale_one():
    cache = PredictionCache(room_for(1, 8))
    cache.put(key(0), b"old")
    assert not cache.put(key(0), b"x" * 100)
    assert cache.get(key(0)) is None
    assert cache.bytes_used == 0
    assert cache.evictions == 0


def test_replacing_a_value_recharges_its_size():
    cache = PredictionCache(1 << 20)
    cache.put(key(0), b"short")
    cache.put(key(0), b"a longer value")
    assert cache.bytes_used == entry_size(key(0), b"a longer value")
    assert cache.entries == 1


def test_resize_evicts_the_least_recent_and_zero_turns_the_cache_off():
    cache = PredictionCache(room_for(4, 1))
    for n in range(4):
        cache.put(key(n), b"%d" % n)
    cache.get(key(0))
    cache.resize(room_for(2, 1))
    assert [key(n) in cache for n in range(4)] == [True, False, False, True]
    cache.resize(0)
    assert (cache.entries, cache.bytes_used, cache.enabled) == (0, 0, False)
    with pytest.raises(ValueError, match=">= 0"):
        cache.resize(-1)
    with pytest.raises(ValueError, match=">= 0"):
        PredictionCache(-1)


def test_entry_size_charges_key_value_and_overhead():
    k = cache_key(("model", "v2"), b"in")
    assert entry_size(k, b"out") == ENTRY_OVERHEAD + len(b"5:model2:v2") + 16 + 3


def test_keys_are_untracked_by_the_garbage_collector():
    # A full cache must not give every full collection hundreds of thousands of objects
    # to walk: those pauses were the frontend's p99.
    cache = PredictionCache(1 << 20)
    cache.put(key(1), b"1")
    (stored,) = cache._entries
    assert not gc.is_tracked(stored)


def test_invalidating_a_model_spares_one_whose_name_it_prefixes():
    cache = PredictionCache(1 << 20)
    item = np.array([1.0])
    cache.put(cache_key(("m", "1"), item), b"a")
    cache.put(cache_key(("m1", "1"), item), b"b")
    cache.put(cache_key(("m", "11"), item), b"c")
    assert cache.invalidate_model("m", "1") == 1
    assert cache_key(("m", "11"), item) in cache
    assert cache.invalidate_model("m") == 1
    assert cache_key(("m1", "1"), item) in cache


class ReferenceLRU:
    """The obvious O(n) LRU over a byte bound, to hold the real one to."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.items: list[tuple[bytes, bytes]] = []  # least recent first

    def _pop(self, k):
        for i, (kk, v) in enumerate(self.items):
            if kk == k:
                del self.items[i]
                return v
        return None

    def get(self, k):
        v = self._pop(k)
        if v is not None:
            self.items.append((k, v))
        return v

    def put(self, k, v):
        self._pop(k)
        size = entry_size(k, v)
        if size > self.max_bytes:
            return
        while sum(entry_size(kk, vv) for kk, vv in self.items) + size > self.max_bytes:
            self.items.pop(0)
        self.items.append((k, v))

    def drop_model(self, name):
        self.items = [(k, v) for k, v in self.items if MODEL_OF[k] != name]

    def resize(self, max_bytes):
        self.max_bytes = max_bytes
        while sum(entry_size(k, v) for k, v in self.items) > max_bytes:
            self.items.pop(0)


MODEL_OF = {
    cache_key((m, v), b"%d" % n): m for m in ("a", "b") for v in ("1", "2") for n in range(4)
}
KEYS = list(MODEL_OF)
OPS = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=600)),
    st.tuples(st.just("get"), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("invalidate"), st.sampled_from(["a", "b"]), st.none()),
    st.tuples(st.just("resize"), st.integers(0, 3000), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(max_bytes=st.integers(0, 3000), ops=st.lists(OPS, max_size=60))
def test_property_bound_accounting_and_last_value_wins(max_bytes, ops):
    cache = PredictionCache(max_bytes)
    ref = ReferenceLRU(max_bytes)
    last: dict[bytes, bytes] = {}
    for op, arg, value in ops:
        if op == "put":
            cache.put(arg, value)
            ref.put(arg, value)
            last[arg] = value
        elif op == "get":
            got = cache.get(arg)
            assert got is None or got == last[arg]
            assert got == ref.get(arg)
        elif op == "invalidate":
            cache.invalidate_model(arg)
            ref.drop_model(arg)
            last = {k: v for k, v in last.items() if MODEL_OF[k] != arg}
        else:
            cache.resize(arg)
            ref.resize(arg)
        stored = {k: v for k, v in last.items() if k in cache}
        assert cache.bytes_used == sum(entry_size(k, v) for k, v in stored.items())
        assert cache.bytes_used <= cache.max_bytes
        assert cache.entries == len(stored)
        assert set(stored) == {k for k, _ in ref.items}  # the same entries were evicted


# ------------------------------------------------------------------- coalescing


async def ask(cache: PredictionCache, k, evaluate, deadline=None):
    """The wiring the frontend uses: a hit, a follower's wait, or a leader's evaluation."""
    found = cache.lookup(k, deadline)
    if isinstance(found, bytes):
        return found
    if isinstance(found, Flight):
        fut = asyncio.get_running_loop().create_future()
        cache.attach(found, fut)
        fut.set_result(await evaluate())
        return await fut
    return await wait(found)


class Model:
    """Counts evaluations; each one waits for ``release`` so that callers pile up."""

    def __init__(self, outcome):
        self.outcome = outcome
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self):
        self.calls += 1
        await self.release.wait()
        return self.outcome


async def test_ten_concurrent_identical_queries_share_one_evaluation():
    cache = PredictionCache(1 << 20)
    model = Model(b"[42]")
    tasks = [asyncio.create_task(ask(cache, key(7), model)) for _ in range(10)]
    await asyncio.sleep(0)  # let every task reach its lookup
    assert (cache.misses, cache.coalesced, cache.hits) == (1, 9, 0)
    model.release.set()
    results = await wait(asyncio.gather(*tasks))
    assert results == [b"[42]"] * 10
    assert model.calls == 1
    assert await ask(cache, key(7), model) == b"[42]"
    assert (cache.hits, cache.misses, cache.coalesced, cache.entries) == (1, 1, 9, 1)
    assert cache.bytes_used == entry_size(key(7), b"[42]")


@pytest.mark.parametrize("outcome", [Failure("model raised"), Expired("too slow")])
async def test_a_failed_evaluation_reaches_every_follower_and_is_not_stored(outcome):
    cache = PredictionCache(1 << 20)
    model = Model(outcome)
    tasks = [asyncio.create_task(ask(cache, key(1), model)) for _ in range(4)]
    await asyncio.sleep(0)
    model.release.set()
    assert await wait(asyncio.gather(*tasks)) == [outcome] * 4
    assert (cache.entries, cache.bytes_used) == (0, 0)
    assert isinstance(cache.lookup(key(1)), Flight)  # the next query evaluates again
    assert (cache.misses, cache.coalesced) == (2, 3)


async def test_disabled_cache_always_misses_and_never_coalesces():
    cache = PredictionCache(0)
    model = Model(b"1")
    model.release.set()
    assert not cache.enabled
    first, second = cache.lookup(key(1)), cache.lookup(key(1))
    assert isinstance(first, Flight) and isinstance(second, Flight)
    cache.complete(first, b"1")
    assert not cache.put(key(1), b"1")
    assert await wait(asyncio.gather(*(ask(cache, key(1), model) for _ in range(3)))) == [b"1"] * 3
    assert model.calls == 3
    assert (cache.misses, cache.coalesced, cache.hits, cache.entries) == (5, 0, 0, 0)


async def test_a_cancelled_leader_answers_its_followers_with_expired():
    cache = PredictionCache(1 << 20)
    flight = cache.lookup(key(1))
    assert isinstance(flight, Flight)
    leader = asyncio.get_running_loop().create_future()
    cache.attach(flight, leader)
    follower = cache.lookup(key(1))
    leader.cancel()
    outcome = await wait(follower)
    assert isinstance(outcome, Expired) and "cancelled" in outcome.reason
    assert isinstance(cache.lookup(key(1)), Flight)  # a fresh evaluation, not a dead one


async def test_a_follower_never_waits_past_its_own_deadline():
    cache = PredictionCache(1 << 20)
    loop = asyncio.get_running_loop()
    flight = cache.lookup(key(1))
    assert isinstance(flight, Flight)
    hurried = cache.lookup(key(1), deadline=loop.time() + 0.01)
    patient = cache.lookup(key(1))
    assert isinstance(await wait(hurried), Expired)
    assert not patient.done()
    cache.complete(flight, b"late")
    assert await wait(patient) == b"late"
    assert cache.get(key(1)) == b"late"


async def test_a_cancelled_follower_does_not_disturb_the_others():
    cache = PredictionCache(1 << 20)
    flight = cache.lookup(key(1))
    assert isinstance(flight, Flight)
    gone, staying = cache.lookup(key(1)), cache.lookup(key(1))
    gone.cancel()
    cache.complete(flight, b"ok")
    cache.complete(flight, b"a second answer is ignored")
    assert await wait(staying) == b"ok"
    assert cache.get(key(1)) == b"ok"


async def test_invalidate_model_drops_its_entries_and_its_flights_store_nothing():
    cache = PredictionCache(1 << 20)
    other = ("other", "1")
    for n in range(3):
        cache.put(key(n), b"m")
        cache.put(key(n, model=("m", "2")), b"m2")
    cache.put(key(0, model=other), b"o")
    flight = cache.lookup(key(9))
    assert isinstance(flight, Flight)
    follower = cache.lookup(key(9))
    assert cache.invalidate_model("m", version="2") == 3
    assert cache.invalidate_model("m") == 3
    assert cache.entries == 1
    assert cache.bytes_used == entry_size(key(0, model=other), b"o")
    fresh = cache.lookup(key(9))  # does not join the evaluation begun before invalidation
    assert isinstance(fresh, Flight) and fresh is not flight
    cache.complete(flight, b"stale")
    assert await wait(follower) == b"stale"
    assert key(9) not in cache
    cache.complete(fresh, b"new")
    assert cache.get(key(9)) == b"new"


async def test_a_batch_with_the_same_input_twice_evaluates_it_once():
    cache = PredictionCache(1 << 20)
    first, second = cache.lookup(key(5)), cache.lookup(key(5))
    assert isinstance(first, Flight) and isinstance(second, asyncio.Future)
    cache.complete(first, b"5")
    assert await wait(second) == b"5"


def test_stats_snapshot():
    cache = PredictionCache(1 << 20)
    cache.put(key(1), b"1")
    cache.get(key(1))
    cache.get(key(2))
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.max_bytes) == (1, 1, 1, 1 << 20)
    assert stats.bytes_used == cache.bytes_used
