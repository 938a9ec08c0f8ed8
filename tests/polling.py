"""Waiting in tests: poll a condition until it holds, failing the test if it does not by
a deadline. Nothing asserts how long it took."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def eventually(
    check: Callable[[], bool],
    what: str = "",
    timeout: float = 10.0,
    ignoring: tuple[type[BaseException], ...] = (),
) -> None:
    """Poll ``check`` until it holds; a check raising one of ``ignoring`` counts as not
    yet (a server still starting, say). Fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except ignoring:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"not true after {timeout} s: {what}")
        time.sleep(0.02)
