"""Slowing down guesses of the admin token at the dashboard's login form.

Each client address may fail ``max_failures`` times within ``window_s``; after that its
logins are refused (429, with how long to wait) without the token being checked, until
its oldest failure leaves the window. A success does not clear earlier failures: a
guesser that also knows the token gains nothing. The table is bounded (the addresses
with the oldest failures are dropped first), so a flood of addresses cannot grow it
without limit. In memory, per process: a restart forgets it, which costs a guesser
far more time than it gains.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Final

MAX_FAILURES: Final = 5
WINDOW_S: Final = 60.0
MAX_ADDRESSES: Final = 10_000


class LoginThrottle:
    """Failed logins per client address over a sliding window."""

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window_s: float = WINDOW_S,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        horizon = self._clock() - self.window_s
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again; 0 when it may now."""
        failures = self._recent(address)
        if failures is None or len(failures) < self.max_failures:
            return 0.0
        return max(0.0, failures[-self.max_failures] + self.window_s - self._clock())

    def failed(self, address: str) -> None:
        """Count a failed login from ``address``."""
        failures = self._recent(address)
        if failures is None:
            if len(self._failures) >= self.max_addresses:
                oldest = min(self._failures, key=lambda a: self._failures[a][-1])
                del self._failures[oldest]
            failures = self._failures[address] = deque(maxlen=self.max_failures)
        failures.append(self._clock())
