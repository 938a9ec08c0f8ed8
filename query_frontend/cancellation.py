"""Cancellations that redis-py loses, for the background loops that talk to Redis.

A cancellation that lands while redis-py awaits a command's reply is sometimes lost: the
command returns its result as if nothing happened, or raises a ``ConnectionError`` (the
client dropped the connection on the way out). With redis-py 8.1, 118 of 300
cancellations of a task looping on HGETALL were lost so. The task still says it was
asked to stop (``Task.cancelling()``), so a loop that runs until cancelled calls
``stop_if_cancelled`` after every Redis call (at the head of each round, and first in
an ``except`` clause that retries on Redis errors); otherwise it would run on, and the
lifespan's shutdown would wait for it for ever.
"""

from __future__ import annotations

import asyncio


def stop_if_cancelled(cause: BaseException | None = None) -> None:
    """Raise ``CancelledError`` (from ``cause``) if the running task was asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause
