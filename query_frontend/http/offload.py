"""Parsing large request bodies off the event loop, in worker processes.

Parsing a body is a few long C calls that hold the GIL: for a 10 MiB body of 800,000
doubles on the 2-core test machine, ``orjson.loads`` took 100-260 ms, the depth check
30 ms and the conversion to numpy 100 ms. Inline, every other app's queries waited for
all of it. A thread does not help: while it parses, the event loop waits for the GIL (a
1 ms ticker on the loop saw 330 ms stalls with the parse in ``asyncio.to_thread``,
1.1 s inline). So a body over ``threshold`` bytes is parsed by a small pool of worker
processes: the loop hands over the bytes and takes back the items, numeric inputs as one
flat array and the inputs' lengths (one buffer to copy instead of thousands of small
objects), the rest as bytes; and it answers other requests meanwhile. Workers are
spawned, never forked from a process that runs ZeroMQ and event-loop threads, the first
one when the first large body arrives. A body at or under ``threshold`` (the usual
query) is parsed inline, as before: the hot path pays one comparison.

A worker that dies (killed, out of memory) fails only the requests it held (503, retry);
the next large body starts a fresh pool. A worker costs memory of its own: ~55 MiB idle
(it imports the frontend's modules), ~125 MiB while it parses a 10 MiB body; it parses
one body at a time, so that is its bound whatever the number of large bodies waiting.

What crosses between the frontend and its workers is pickled by ``concurrent.futures``
over a private pipe: the frontend unpickles only what its own worker (same user, our
code) pickled, never anything a client sent as a pickle; a client's body travels as
bytes and comes back as arrays, bytes and strings.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import numpy as np

from model_container.protocol import InputType
from query_frontend.http.inputs import parse_request
from query_frontend.queries import Item

__all__ = ["BodyParser", "ParserUnavailableError", "pack", "unpack"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: What a parse of a request body returns: its items first, then what else it read.
ItemsAnd = TypeVar("ItemsAnd", bound=tuple[Any, ...])
#: How often a worker checks that its frontend is still alive.
ORPHAN_CHECK_S = 0.5
#: Items as they cross between processes: numeric arrays flattened into one array and
#: the length of each; bytes as they are.
Packed = tuple[np.ndarray[Any, Any], list[int]] | list[bytes]


class ParserUnavailableError(Exception):
    """The worker parsing a body died: the request may be sent again."""


def pack(items: list[Item]) -> Packed:
    if items and isinstance(items[0], np.ndarray):
        arrays: list[np.ndarray[Any, Any]] = items  # type: ignore[assignment]
        flat = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        return flat, [len(a) for a in arrays]
    return items  # type: ignore[return-value]


def unpack(packed: Packed) -> list[Item]:
    if isinstance(packed, tuple):
        flat, lengths = packed
        if len(lengths) == 1:
            return [flat]
        return list(np.split(flat, np.cumsum(lengths[:-1])))
    return list(packed)


def _parse_packed(fn: Callable[..., tuple[Any, ...]], body: bytes, *args: Any) -> tuple[Any, ...]:
    """In a worker: ``fn(body, *args)``, the items it returns first packed."""
    items, *rest = fn(body, *args)
    return (pack(items), *rest)


def _start_worker(parent: int) -> None:
    """A worker lives as long as its frontend: a SIGTERM or Ctrl-C sent to the whole
    process group must not kill it under a frontend that is draining (it exits when the
    frontend closes the pool), and it must not outlive a frontend killed outright (a
    pool's workers hold their own queue's write end open, so they never see it close:
    they would wait for work for ever)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def exit_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_CHECK_S)
        os._exit(0)

    threading.Thread(target=exit_with_parent, name="exit-with-frontend", daemon=True).start()


class BodyParser:
    """Parses request bodies: those over ``threshold`` bytes in up to ``workers`` worker
    processes, the rest inline."""

    def __init__(self, threshold: int, workers: int) -> None:
        self.threshold = threshold
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def inline(self, body: bytes) -> bool:
        """Whether ``body`` is parsed on the loop (small, or no workers)."""
        return len(body) <= self.threshold or self.workers <= 0

    async def parse_predict(
        self, body: bytes, input_type: InputType, max_items: int
    ) -> tuple[list[Item], bool, str | None, str | None]:
        """``inputs.parse_request(body, ...)``: the items of a predict request, whether it
        was a batch request, its uid and its version pin; off the loop if the body is
        large."""
        return await self.parse_items(parse_request, body, input_type, max_items)

    async def parse_items(self, fn: Callable[..., ItemsAnd], body: bytes, *args: Any) -> ItemsAnd:
        """``fn(body, *args)``, a parse returning the items first (then anything else
        picklable): in a worker if ``body`` is large, the items crossing back packed."""
        if self.inline(body):
            return fn(body, *args)
        packed, *rest = await self.run(_parse_packed, fn, body, *args)
        return (unpack(packed), *rest)  # type: ignore[return-value]

    async def parse(self, fn: Callable[..., T], body: bytes, *args: Any) -> T:
        """``fn(body, *args)``: in a worker if ``body`` is large, else inline (what it
        returns crosses processes pickled: for many small arrays, see ``parse_predict``)."""
        if self.inline(body):
            return fn(body, *args)
        return await self.run(fn, body, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker process (``fn`` and its arguments picklable; what it
        raises is raised here); ``ParserUnavailableError`` if the worker died."""
        pool = self._pool
        if pool is None:
            # Spawned: a fork would copy this process's ZeroMQ and event-loop threads' locks.
            context = multiprocessing.get_context("spawn")
            pool = self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=context,
                initializer=_start_worker,
                initargs=(os.getpid(),),
            )
        try:
            return await asyncio.wrap_future(pool.submit(fn, *args))
        except BrokenProcessPool:
            if self._pool is pool:
                logger.error("a body-parsing worker died: starting a fresh pool")
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise ParserUnavailableError(
                "the worker parsing this request's body stopped; send it again"
            ) from None

    def close(self) -> None:
        """Stop the workers (they finish what they parse; nobody waits for it)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
