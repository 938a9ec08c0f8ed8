"""Prediction cache of the query frontend: answers by (model, version, input digest).

**Key.** One ``bytes`` object: a prefix naming the model and version, then a
blake2b-128 digest. Not a tuple: the garbage collector tracks tuples and must walk every
tracked object on a full collection, and a full cache holds hundreds of thousands of
keys; with tuple keys those collections stopped the event loop for 40-60 ms at a time,
which was the query frontend's p99. ``bytes`` are not tracked at all. The digest covers
a type tag and the item's raw bytes: the dtype (with byte order, and the shape unless the
array is 1-d) for a numpy item, ``bytes`` for a byte-like one. Equal bytes of different dtypes (the
``int64`` 1 and the ``float64`` 5e-324) get different keys. The version is part of the
key, so a new version, or a rollback, never gets answers cached for another version.
``invalidate_model`` frees a model's entries early, for example when the model is deleted.

**Size.** The cache is bounded by bytes, not by entry count, because outputs range
from ``1`` to megabytes. An entry is charged for its key, its value and
``ENTRY_OVERHEAD``, an estimate of the Python objects holding it (measured with
tracemalloc on CPython 3.11). Without that charge, a million two-byte answers would
count as 2 MB. A value too big for the whole cache is never stored. ``max_bytes=0``
turns the cache off.

**Eviction: LRU, not CLOCK.** Both are O(1). CLOCK's advantage is that a hit only sets
a reference bit and never reorders anything, so concurrent readers never contend. With
one event loop and no threads there are no concurrent readers, so that buys nothing here.
In CPython, LRU is an ``OrderedDict``: a hit is ``move_to_end`` (a C call, about 30 ns)
and an eviction is ``popitem(last=False)``. CLOCK would need a ring of slots, a hand
swept by interpreted Python, and tombstones for ``invalidate_model``. Neither policy
resists scans. The workload this cache serves (the same inputs asked again soon) is
what recency is good at.

**Coalescing.** ``lookup`` returns one of three things:
the cached ``bytes`` (a hit); a ``Flight`` (a miss, and the caller is the *leader*: it
evaluates the input, then calls ``complete(flight, outcome)``, or ``attach``-es the
query's future so that happens by itself); or an ``asyncio.Future`` (an identical query
is being evaluated: the caller is a *follower* and awaits that future). Each follower
gets its own future, so a follower that is cancelled affects nobody else.

Only successful outputs (``bytes``) are stored. If the leader's outcome is a ``Failure``
or an ``Expired``, every follower receives that same outcome, and nothing is stored, so
the next query evaluates again. Followers queued for the same model version right
behind the leader would, in the common case, have failed the same way or waited
behind the same backlog. Retrying each of them would multiply the load exactly when
the model is failing or overloaded. Two exceptions:

- A follower may pass its own ``deadline``. It then receives ``Expired`` at that
  deadline if the leader has not finished. This covers apps with different latency
  objectives that share a model.
- If the leader's future is cancelled (for example, its client went away), followers
  receive ``Expired`` rather than waiting forever. Once the flight has ended, the next
  query starts a new evaluation.

**Disabled cache.** With ``max_bytes=0`` every lookup is a miss and returns a detached
``Flight``, and there is **no coalescing**. The cache is switched off for models whose
answers must not be shared, such as models that sample or have side effects. Merging
concurrent identical queries shares answers in the same way, so the off switch turns
off both.

**Counters** (for Prometheus): ``hits``, ``misses`` and ``coalesced`` partition the
lookups. A follower counts as coalesced, not as a miss. ``evictions`` counts entries
dropped to make room, not those removed by ``invalidate_model``. ``bytes_used`` and
``entries`` are gauges.

Event-loop only: no threads and no locks. Every method must be called from the loop
that runs the queries.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from query_frontend.queries import Expired, Failure, Item, ModelKey, Outcome

CacheKey = bytes  # model_prefix(model, version) + the input's digest

DIGEST_SIZE = 16
# Charged per entry on top of key and value lengths: the OrderedDict slot and link and
# the headers of the key and value bytes objects (CPython 3.11).
ENTRY_OVERHEAD = 200

_BYTES_TAG = b"bytes\0"
_dtype_tags: dict[np.dtype[Any], bytes] = {}


def input_digest(item: Item) -> bytes:
    """The 16-byte blake2b digest of an item's type tag and raw bytes."""
    if isinstance(item, bytes):
        h = hashlib.blake2b(_BYTES_TAG, digest_size=DIGEST_SIZE)
        h.update(item)
        return h.digest()
    tag = _dtype_tags.get(item.dtype)
    if tag is None:
        tag = _dtype_tag(item.dtype)
    if item.ndim != 1:
        tag += repr(item.shape).encode() + b"\0"
    h = hashlib.blake2b(tag, digest_size=DIGEST_SIZE)
    # The array itself, not .data: ~120 ns less per query. numpy's stubs do not declare
    # that arrays support the buffer protocol, hence the ignore.
    h.update(item if item.flags.c_contiguous else np.ascontiguousarray(item))  # type: ignore[arg-type]
    return h.digest()


def _dtype_tag(dtype: np.dtype[Any]) -> bytes:
    if dtype.hasobject:
        # The buffer of an object array holds pointers, not values: hashing it is wrong.
        raise TypeError(f"cannot digest an array of dtype {dtype}: it holds Python objects")
    # Structured dtypes of equal size share their .str ('|V16'); their fields tell them apart.
    text = str(dtype.descr) if dtype.names else dtype.str
    tag = text.encode() + b"\0"
    _dtype_tags[dtype] = tag
    return tag


_prefixes: dict[ModelKey, bytes] = {}


def _name_prefix(name: str) -> bytes:
    # Length-prefixed, so no name is a prefix of another's keys whatever it contains.
    encoded = name.encode()
    return b"%d:%b" % (len(encoded), encoded)


def model_prefix(model: ModelKey) -> bytes:
    """How every cache key of a model version starts."""
    prefix = _prefixes.get(model)
    if prefix is None:
        prefix = _prefixes[model] = _name_prefix(model[0]) + _name_prefix(model[1])
    return prefix


def cache_key(model: ModelKey, item: Item) -> CacheKey:
    """The cache key of one input for one model version."""
    return model_prefix(model) + input_digest(item)


def entry_size(key: CacheKey, value: bytes) -> int:
    """The bytes an entry is charged for: its key, its value and ``ENTRY_OVERHEAD``."""
    return ENTRY_OVERHEAD + len(key) + len(value)


@dataclass(frozen=True, slots=True)
class CacheStats:
    max_bytes: int
    bytes_used: int
    entries: int
    hits: int
    misses: int
    coalesced: int
    evictions: int


class Flight:
    """One evaluation in progress, and the followers waiting for its outcome."""

    __slots__ = ("_waiters", "done", "key", "store")

    def __init__(self, key: CacheKey, store: bool = True) -> None:
        self.key = key
        self.store = store  # False once detached: disabled cache, or invalidated meanwhile
        self.done = False
        self._waiters: list[tuple[asyncio.Future[Outcome], asyncio.TimerHandle | None]] = []

    def _join(self, deadline: float | None) -> asyncio.Future[Outcome]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Outcome] = loop.create_future()
        timer = None if deadline is None else loop.call_at(deadline, _expire_waiter, fut)
        self._waiters.append((fut, timer))
        return fut

    def _resolve(self, outcome: Outcome) -> None:
        self.done = True
        for fut, timer in self._waiters:
            if timer is not None:
                timer.cancel()
            if not fut.done():  # a follower may have been cancelled or have expired
                fut.set_result(outcome)
        self._waiters.clear()


def _expire_waiter(fut: asyncio.Future[Outcome]) -> None:
    if not fut.done():
        fut.set_result(Expired("an identical query was still being evaluated at the deadline"))


class PredictionCache:
    """A byte-bounded LRU of model outputs that also merges concurrent identical queries."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (0 turns the cache off), got {max_bytes}")
        self._max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, bytes] = OrderedDict()  # least recent first
        self._flights: dict[CacheKey, Flight] = {}
        self.bytes_used = 0
        self.hits = 0
        self.misses = 0
        self.coalesced = 0
        self.evictions = 0

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def enabled(self) -> bool:
        return self._max_bytes > 0

    @property
    def entries(self) -> int:
        return len(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: CacheKey) -> bool:
        """Whether ``key`` is stored; unlike ``get``, this neither counts nor refreshes it."""
        return key in self._entries

    def stats(self) -> CacheStats:
        return CacheStats(
            self._max_bytes,
            self.bytes_used,
            len(self._entries),
            self.hits,
            self.misses,
            self.coalesced,
            self.evictions,
        )

    # ------------------------------------------------------------------ plain cache

    def get(self, key: CacheKey) -> bytes | None:
        """The stored output for ``key``, made most recent; ``None`` on a miss."""
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: CacheKey, value: bytes) -> bool:
        """Store an output, evicting the least recently used; False if it cannot fit."""
        old = self._entries.pop(key, None)
        if old is not None:  # drop it even if the new value does not fit: it is stale
            self.bytes_used -= entry_size(key, old)
        size = entry_size(key, value)
        if size > self._max_bytes:
            return False
        self._evict_until(self._max_bytes - size)
        self._entries[key] = value
        self.bytes_used += size
        return True

    def _evict_until(self, budget: int) -> None:
        entries = self._entries
        while self.bytes_used > budget:
            key, value = entries.popitem(last=False)
            self.bytes_used -= entry_size(key, value)
            self.evictions += 1

    def resize(self, max_bytes: int) -> None:
        """Change the bound (0 turns the cache off), evicting what no longer fits."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 (0 turns the cache off), got {max_bytes}")
        self._max_bytes = max_bytes
        self._evict_until(max_bytes)

    def invalidate_model(self, name: str, version: str | None = None) -> int:
        """Drop a model's entries (one version's, if given); return how many were dropped.

        Evaluations in flight for it still answer their followers, but store nothing,
        and later lookups start a fresh evaluation instead of joining them. This is O(n)
        in the entries held; it runs on control-plane changes, not per query.
        """

        prefix = _name_prefix(name) if version is None else model_prefix((name, version))

        def matches(key: CacheKey) -> bool:
            return key.startswith(prefix)

        doomed = [key for key in self._entries if matches(key)]
        for key in doomed:
            self.bytes_used -= entry_size(key, self._entries.pop(key))
        for key in [key for key in self._flights if matches(key)]:
            self._flights.pop(key).store = False
        return len(doomed)

    def clear(self) -> None:
        """Drop every entry; evaluations in flight store nothing (counters are kept)."""
        self._entries.clear()
        self.bytes_used = 0
        for flight in self._flights.values():
            flight.store = False
        self._flights.clear()

    # ---------------------------------------------------------------- coalescing

    def lookup(
        self, key: CacheKey, deadline: float | None = None
    ) -> bytes | asyncio.Future[Outcome] | Flight:
        """A hit's bytes; a ``Flight`` the caller must complete; or a future to await.

        ``deadline`` (in ``loop.time()`` seconds) bounds a follower's wait: its future
        then resolves with ``Expired`` if the leader has not finished by then.
        """
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return value
        if self._max_bytes == 0:
            self.misses += 1
            return Flight(key, store=False)  # off: no coalescing either (module docstring)
        flight = self._flights.get(key)
        if flight is None:
            self.misses += 1
            flight = self._flights[key] = Flight(key)
            return flight
        self.coalesced += 1
        return flight._join(deadline)

    def complete(self, flight: Flight, outcome: Outcome) -> None:
        """End a leader's evaluation: store a successful output, answer every follower.

        Later calls for the same flight are ignored.
        """
        if flight.done:
            return
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        if flight.store and isinstance(outcome, bytes):
            self.put(flight.key, outcome)
        flight._resolve(outcome)

    def attach(self, flight: Flight, future: asyncio.Future[Outcome]) -> None:
        """Complete ``flight`` with whatever ``future`` (the leader's query) ends with.

        A cancelled future gives the followers ``Expired`` rather than leaving them waiting.
        """
        future.add_done_callback(lambda fut: self.complete(flight, _outcome_of(fut)))


def _outcome_of(fut: asyncio.Future[Outcome]) -> Outcome:
    if fut.cancelled():
        return Expired("the identical query this one was merged with was cancelled")
    exc = fut.exception()
    if exc is not None:
        return Failure(f"the identical query this one was merged with failed: {exc!r}")
    return fut.result()
