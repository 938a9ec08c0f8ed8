"""The deadline rule: give up early enough that the default reaches the client in time."""

import pytest

from query_frontend.batching.deadlines import MAX_MARGIN_FRACTION, LagTracker, answer_by


def test_a_quiet_loop_gives_up_one_millisecond_before_the_objective():
    assert answer_by(10.0, 0.020, 0.0) == pytest.approx(10.019)
    assert answer_by(10.0, 0.002, 0.0) == pytest.approx(10.0018)  # a tenth of a tiny SLO


def test_late_timers_move_the_deadline_earlier_but_never_by_more_than_a_quarter():
    assert answer_by(10.0, 0.020, 0.003) == pytest.approx(10.016)
    assert answer_by(10.0, 0.020, 5.0) == pytest.approx(10.0 + 0.020 * (1 - MAX_MARGIN_FRACTION))


def test_lag_is_the_worst_recent_lateness_and_fades_when_the_loop_recovers():
    lag = LagTracker()
    assert lag.lag(0.0) == 0.0
    lag.observe(0.004, now=1.0)
    lag.observe(0.001, now=1.0)  # a smaller one does not hide the worst
    assert lag.lag(1.0) == pytest.approx(0.004)
    assert lag.lag(2.0) == pytest.approx(0.002)  # halves each second
    assert lag.lag(11.0) < 0.00001
    lag.observe(0.003, now=2.0)  # bigger than what is left of the old one
    assert lag.lag(2.0) == pytest.approx(0.003)
