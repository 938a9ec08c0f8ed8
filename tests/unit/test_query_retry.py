"""The query client's waits between attempts (``admin._query_retry``): Retry-After read
as seconds or an HTTP date, exponential backoff with jitter, every wait capped."""

from __future__ import annotations

import email.utils
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from admin import InvalidRequestError
from admin._query_retry import RetryPolicy, retry_after_seconds

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # a date past: no wait
        (None, None),
        ("", None),
        ("-1", None),
        ("inf", None),
        ("nan", None),
        ("soon", None),
        ("Mon, 99 Foo 2026 25:00:00", None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


def test_backoff_doubles_with_jitter_between_half_and_all_of_each_step() -> None:
    policy = RetryPolicy(backoff=0.2, max_wait=100.0, rng=random.Random(7))
    for retry in range(1, 8):
        step = 0.2 * 2 ** (retry - 1)
        draws = [policy.wait(retry) for _ in range(50)]
        assert all(step / 2 <= w <= step for w in draws)
        assert len(set(draws)) > 1  # jittered, not in lockstep


def test_retry_after_is_honoured_plus_jitter_and_capped() -> None:
    policy = RetryPolicy(backoff=0.1, max_wait=10.0, rng=random.Random(1))
    assert all(3.0 <= policy.wait(1, 3.0) <= 3.1 for _ in range(50))
    assert policy.wait(1, 3600.0) == 10.0
    assert policy.wait(1, 0.0) <= 0.1


@given(
    retry=st.integers(1, 10_000),
    backoff=st.floats(0, 1e6),
    max_wait=st.floats(0, 1e6),
    retry_after=st.none() | st.floats(0, 1e9),
)
def test_no_wait_is_negative_or_over_max_wait(
    retry: int, backoff: float, max_wait: float, retry_after: float | None
) -> None:
    policy = RetryPolicy(backoff=backoff, max_wait=max_wait, rng=random.Random(retry))
    assert 0.0 <= policy.wait(retry, retry_after) <= max_wait


@pytest.mark.parametrize(
    "settings",
    [{"max_retries": -1}, {"max_retries": 1.5}, {"max_retries": True}, {"backoff": -0.1},
     {"backoff": float("nan")}, {"max_wait": float("inf")}],
)  # fmt: skip
def test_bad_settings_say_what_is_allowed(settings: dict[str, object]) -> None:
    with pytest.raises(InvalidRequestError, match=next(iter(settings))):
        RetryPolicy(**settings)  # type: ignore[arg-type]
