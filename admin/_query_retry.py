"""How long the query client waits before sending a request again.

Exponential backoff with jitter: before retry *n* (1 for the first), a wait drawn
between half and all of ``backoff * 2**(n-1)``, never over ``max_wait``; the jitter keeps
a fleet of clients refused together from coming back in lockstep. A ``Retry-After`` the
server sent (delay-seconds or an HTTP date, RFC 9110 §10.2.3) is honoured instead: the
wait is at least what it asks, plus a little jitter, cut to ``max_wait`` so that one
answer cannot park a caller for an hour. Which failures may be retried at all is the
caller's decision (``_query_call``); this module only does the arithmetic, with no clock
and no sleeping of its own.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from admin.exceptions import InvalidRequestError

DEFAULT_MAX_WAIT = 10.0


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds from ``now`` (a Unix time);
    ``None`` without one or for a value that is neither seconds nor an HTTP date. A date
    in the past asks for no wait."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110's IMF-fixdate is always GMT
        return None
    return max(0.0, when.timestamp() - now)


def _number(value: object, name: str, *, integer: bool = False) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= 0:
        kind = "a whole number" if integer else "a number"
        raise InvalidRequestError(f"{name} must be {kind} >= 0, got {value!r}")
    if not math.isfinite(value):
        raise InvalidRequestError(f"{name} must be finite, got {value!r}")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_retries`` retries after the first attempt, waiting as the module
    says. ``rng`` draws the jitter (seed it to replay a sequence of waits)."""

    max_retries: int = 3
    backoff: float = 0.1
    max_wait: float = DEFAULT_MAX_WAIT
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        _number(self.max_retries, "max_retries", integer=True)
        _number(self.backoff, "backoff")
        _number(self.max_wait, "max_wait")

    def wait(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first), given the
        answer's ``Retry-After`` in seconds, if it had one."""
        step = min(self.max_wait, self.backoff * 2.0 ** min(retry - 1, 60))
        if retry_after is None:
            return step * (0.5 + 0.5 * self.rng.random())
        return min(self.max_wait, retry_after + step * self.rng.random())
