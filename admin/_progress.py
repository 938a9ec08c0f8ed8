"""Waiting with a deadline, and reporting progress while a long step runs.

Every wait in the admin client polls a condition with a deadline (never a fixed
sleep); the condition may raise to fail fast (a replica that exited). Progress lines go
to this package's logger and, when the user gave one, to a callback (the CLI passes
one that writes to stderr; a notebook user may pass ``print``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

ProgressCallback = Callable[[str], None]

logger = logging.getLogger(__name__)


class Reporter:
    """Sends progress lines to the logger and to an optional callback."""

    def __init__(self, callback: ProgressCallback | None = None) -> None:
        self.callback = callback

    def __call__(self, message: str) -> None:
        logger.info("%s", message)
        if self.callback is not None:
            self.callback(message)


def wait_for(
    done: Callable[[], bool],
    *,
    timeout: float,
    on_progress: Callable[[float], None] | None = None,
    progress_every: float = 5.0,
    max_interval: float = 0.5,
) -> bool:
    """Call ``done()`` until it is true (``True``) or ``timeout`` seconds pass (``False``).

    ``done`` may raise to stop waiting at once. ``on_progress(elapsed)`` is called every
    ``progress_every`` seconds while the wait goes on. The polling interval starts at
    20 ms and doubles up to ``max_interval``, so quick steps finish quickly.
    """
    start = time.monotonic()
    deadline = start + timeout
    next_report = start + progress_every
    interval = 0.02
    while True:
        if done():
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        if on_progress is not None and now >= next_report:
            on_progress(now - start)
            next_report = now + progress_every
        time.sleep(min(interval, max(0.0, deadline - now)))
        interval = min(interval * 2, max_interval)
