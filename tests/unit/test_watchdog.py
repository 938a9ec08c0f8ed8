"""The batch watchdog is armed only when the timer armed last does not cover a batch."""

from collections.abc import Iterator

import pytest

from model_container.watchdog import SLACK, BatchWatchdog, watchdog_s

TIMEOUT_MS = 20_000  # the watchdog fires 31 s or more after arming: never in this test
EARLIEST = watchdog_s(TIMEOUT_MS)


@pytest.fixture
def watchdog() -> Iterator[BatchWatchdog]:
    dog = BatchWatchdog()
    yield dog
    dog.disarm()


def test_it_fires_within_the_window_of_the_batch(watchdog: BatchWatchdog) -> None:
    assert watchdog.fires_at is None
    assert watchdog.cover(TIMEOUT_MS, 100.0)
    assert watchdog.fires_at == pytest.approx(100.0 + EARLIEST * (1 + SLACK))


def test_batches_soon_after_reuse_the_timer(watchdog: BatchWatchdog) -> None:
    watchdog.cover(TIMEOUT_MS, 100.0)
    armed = watchdog.fires_at
    watchdog.cover(TIMEOUT_MS, 100.0 + EARLIEST * SLACK * 0.9)
    assert watchdog.fires_at == armed


def test_a_batch_the_timer_would_kill_too_early_rearms_it(watchdog: BatchWatchdog) -> None:
    watchdog.cover(TIMEOUT_MS, 100.0)
    later = 100.0 + EARLIEST * SLACK * 1.1
    watchdog.cover(TIMEOUT_MS, later)
    assert watchdog.fires_at == pytest.approx(later + EARLIEST * (1 + SLACK))


def test_a_shorter_timeout_rearms_it(watchdog: BatchWatchdog) -> None:
    watchdog.cover(TIMEOUT_MS, 100.0)
    watchdog.cover(TIMEOUT_MS // 2, 100.0)
    assert watchdog.fires_at == pytest.approx(100.0 + watchdog_s(TIMEOUT_MS // 2) * (1 + SLACK))


def test_the_idle_loop_disarms_it_before_it_fires(watchdog: BatchWatchdog) -> None:
    watchdog.cover(TIMEOUT_MS, 100.0)
    disarm_at = watchdog.disarm_at()
    assert disarm_at is not None
    fires_at = watchdog.fires_at
    assert fires_at is not None and 100.0 + EARLIEST < disarm_at < fires_at
    watchdog.disarm_if_due(disarm_at - 0.01)
    assert watchdog.fires_at is not None
    watchdog.disarm_if_due(disarm_at)
    assert watchdog.fires_at is None and watchdog.disarm_at() is None
