"""Waiting in tests: poll a condition until it holds, failing the test if it does not by
a deadline. Nothing asserts how long it took.

``eventually`` polls from plain code. ``eventually_async`` is its twin for coroutines:
it awaits between polls, so that the event loop runs whatever the test waits for, and
its check may be a coroutine function. Both keep time and fail the same way
(``_Deadline``). ``turn`` waits for no condition: it lets the event loop run what was
scheduled for the end of its current turn (the dispatcher sends batches then).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable

import pytest

#: What the test waits for, for the failure message; a callable is asked only on failure
#: (to show, say, the tail of a log as it is then).
What = str | Callable[[], str]


class _Deadline:
    def __init__(self, what: What, timeout: float) -> None:
        self.what = what
        self.timeout = timeout
        self.at = time.monotonic() + timeout

    def enforce(self) -> None:
        """Fail the test if the deadline has passed."""
        if time.monotonic() > self.at:
            what = self.what() if callable(self.what) else self.what
            pytest.fail(f"not true after {self.timeout} s: {what}")


def eventually(
    check: Callable[[], bool],
    what: What = "",
    timeout: float = 10.0,
    ignoring: tuple[type[BaseException], ...] = (),
    interval: float = 0.02,
) -> None:
    """Poll ``check`` until it holds; a check raising one of ``ignoring`` counts as not
    yet (a server still starting, say). Fails the test after ``timeout`` seconds."""
    deadline = _Deadline(what, timeout)
    while True:
        with contextlib.suppress(*ignoring):
            if check():
                return
        deadline.enforce()
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], bool | Awaitable[bool]],
    what: What = "",
    # The twin's parameters: failing with what was awaited, not cancelling the check.
    timeout: float = 10.0,  # noqa: ASYNC109
    ignoring: tuple[type[BaseException], ...] = (),
    interval: float = 0.02,
) -> None:
    """``eventually`` for a coroutine: sleeps with ``asyncio.sleep`` between polls, and
    awaits ``check``'s answer when it is awaitable."""
    deadline = _Deadline(what, timeout)
    while True:
        with contextlib.suppress(*ignoring):
            answer = check()
            if inspect.isawaitable(answer):
                answer = await answer
            if answer:
                return
        deadline.enforce()
        await asyncio.sleep(interval)


async def turn() -> None:
    """Let the event loop take its turn: the dispatcher sends at the end of it, so that
    every query read in one turn rides in the same batch."""
    await asyncio.sleep(0)
