"""Large bodies parsed in a real worker process (``query_frontend.http.offload``) give
the same inputs and the same errors as parsing inline, a worker that dies costs only
the requests it held, and no worker outlives its frontend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import numpy as np
import orjson
import psutil
import pytest
import pytest_asyncio
from polling import eventually

from model_container.protocol import InputType
from query_frontend.http.inputs import InputError, TooManyItemsError, parse_request
from query_frontend.http.offload import BodyParser, ParserUnavailableError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest_asyncio.fixture
async def parser() -> AsyncIterator[BodyParser]:
    parser = BodyParser(threshold=64, workers=1)  # every body below over 64 bytes: a worker
    try:
        yield parser
    finally:
        parser.close()


async def test_a_worker_parses_as_the_event_loop_would(parser: BodyParser) -> None:
    bodies = [
        (orjson.dumps({"input_batch": [[1.5] * n for n in (3, 1, 40)], "uid": "u-1"}),
         InputType.DOUBLES),
        (orjson.dumps({"input": list(range(100)), "version": 7}), InputType.INTS),
        (orjson.dumps({"input": list(range(100))}), InputType.INTS),
        (orjson.dumps({"input_batch": [{"a": [i]} for i in range(20)]}), InputType.JSON),
        (orjson.dumps({"input": "x" * 200}), InputType.STRINGS),
    ]  # fmt: skip
    for body, input_type in bodies:
        assert len(body) > parser.threshold
        items, is_batch, uid, pin = await parser.parse_predict(body, input_type, 10_000)
        want_items, want_batch, want_uid, want_pin = parse_request(body, input_type, 10_000)
        assert (is_batch, uid, pin) == (want_batch, want_uid, want_pin)
        assert len(items) == len(want_items)
        for got, want in zip(items, want_items, strict=True):
            if isinstance(want, np.ndarray):
                assert isinstance(got, np.ndarray) and got.dtype == want.dtype
                assert got.tolist() == want.tolist()
            else:
                assert got == want


async def test_a_worker_raises_what_parsing_inline_raises(parser: BodyParser) -> None:
    not_json = b'{"input": [1.0, 2.0' + b" " * 100
    with pytest.raises(InputError, match="not valid JSON"):
        await parser.parse_predict(not_json, InputType.DOUBLES, 10_000)
    past_float32 = orjson.dumps({"input": [1e308] + [1.0] * 30})
    with pytest.raises(InputError, match=r"input\[0\] is 1e\+308"):
        await parser.parse_predict(past_float32, InputType.FLOATS, 10_000)
    too_many = orjson.dumps({"input_batch": [[1.0]] * 50})
    with pytest.raises(TooManyItemsError, match="over the limit of 10"):
        await parser.parse_predict(too_many, InputType.DOUBLES, 10)


async def test_a_dead_worker_fails_its_request_and_the_next_gets_a_fresh_one(
    parser: BodyParser,
) -> None:
    body = orjson.dumps({"input": [1.0] * 100})
    await parser.parse_predict(body, InputType.DOUBLES, 10_000)  # a worker is running
    pool = parser._pool
    assert pool is not None
    (pid,) = pool._processes  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGKILL)  # the kernel's OOM killer, say
    with pytest.raises(ParserUnavailableError, match="send it again"):
        await parser.parse_predict(body, InputType.DOUBLES, 10_000)
    items, _, _, _ = await parser.parse_predict(body, InputType.DOUBLES, 10_000)
    assert isinstance(items[0], np.ndarray) and items[0].tolist() == [1.0] * 100


PARENT = """
import asyncio
from query_frontend.http.offload import BodyParser
from model_container.protocol import InputType

async def main() -> None:
    parser = BodyParser(0, 1)
    await parser.parse_predict(b'{"input": [1.0, 2.0]}', InputType.DOUBLES, 10)
    print(*parser._pool._processes, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_workers_do_not_outlive_a_frontend_killed_outright() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    with parent:
        assert parent.stdout is not None
        try:
            (worker,) = (int(pid) for pid in parent.stdout.readline().split())
            assert psutil.pid_exists(worker)
        finally:
            parent.kill()
            parent.wait(timeout=30)

    def gone() -> bool:
        try:
            return psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    eventually(gone, f"parsing worker {worker} exits after its frontend's kill -9", 60)
