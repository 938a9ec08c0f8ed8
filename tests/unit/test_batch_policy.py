"""Batch-size controllers against synthetic latency curves: convergence, back-off, bounds."""

import math
import random
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from query_frontend.batching.controllers import (
    MODES,
    AimdController,
    BatchSizeController,
    FixedController,
    LatencyModelController,
    make_controller,
)

MS = 1e-3
SLO = 20 * MS
BUDGET = 10 * MS  # the default budget: half the SLO
OVER = BUDGET * (1 + 1e-9)  # over budget, not merely by a rounding error of the curve
Curve = Callable[[int], float]


def linear(per_item: float, fixed: float) -> Curve:
    return lambda n: fixed + per_item * n


# The curve of the brief: 0.2 ms + 0.05 ms per query; 196 queries take exactly 10 ms.
CURVE = linear(0.05 * MS, 0.2 * MS)
N_STAR = 196


def largest_fitting(curve: Curve, budget: float = BUDGET) -> int:
    n = 1
    while curve(n + 1) <= budget * (1 + 1e-9):
        n += 1
    return n


def run(
    ctrl: BatchSizeController,
    curve: Curve,
    steps: int,
    rng: random.Random | None = None,
    sigma: float = 0.0,
) -> list[tuple[int, float]]:
    """Saturated load: every batch is full. Returns (size, latency) per batch."""
    trace = []
    for _ in range(steps):
        n = ctrl.size()
        latency = curve(n)
        if rng is not None:
            latency *= max(0.0, 1 + rng.gauss(0, sigma))
        ctrl.observe(n, latency)
        trace.append((n, latency))
    return trace


def steps_to_settle(trace: list[tuple[int, float]], low: float, high: float) -> int:
    """The first step from which every size stays within [low, high]."""
    settled = len(trace)
    for i in range(len(trace) - 1, -1, -1):
        if not low <= trace[i][0] <= high:
            break
        settled = i
    return settled


# --------------------------------------------------------------------------- factory


def test_make_controller_builds_each_mode_with_half_the_slo_as_budget():
    aimd = make_controller("aimd", SLO, 64)
    model = make_controller("latency_model", SLO, 64)
    assert isinstance(aimd, AimdController)
    assert isinstance(model, LatencyModelController)
    assert aimd.budget_s == model.budget_s == pytest.approx(BUDGET)
    assert isinstance(make_controller("fixed", SLO, 64), FixedController)
    third = make_controller("aimd", SLO, 64, budget_fraction=1 / 3)  # 2 batches in flight
    assert isinstance(third, AimdController)
    assert third.budget_s == pytest.approx(SLO / 3)
    assert set(MODES) == {"aimd", "latency_model", "fixed"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "greedy"}, "unknown batching mode 'greedy'; use one of aimd"),
        ({"slo_s": 0.0}, "slo_s must be a positive"),
        ({"slo_s": math.inf}, "slo_s must be a positive"),
        ({"max_batch": 0}, "max_batch must be at least 1"),
        ({"budget_fraction": 1.5}, "budget_fraction"),
        ({"initial": 0}, "initial must be at least 1"),
    ],
)
def test_make_controller_rejects_bad_settings_with_a_clear_message(kwargs, match):
    args = {"mode": "aimd", "slo_s": SLO, "max_batch": 64} | kwargs
    with pytest.raises(ValueError, match=match):
        make_controller(**args)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("batch_size", "latency", "says"),
    [
        (0, 0.001, "a batch holds at least one query, got batch_size=0"),
        (1, -0.001, "latency_s must be a finite, non-negative time, got -0.001"),
        (1, math.nan, "latency_s must be a finite, non-negative time, got nan"),
        (1, math.inf, "latency_s must be a finite, non-negative time, got inf"),
    ],
)
def test_observe_rejects_impossible_measurements(mode, batch_size, latency, says):
    ctrl = make_controller(mode, SLO, 64)
    with pytest.raises(ValueError, match=f"^{re.escape(says)}$"):
        ctrl.observe(batch_size, latency)


def test_fixed_is_always_max_batch():
    ctrl = make_controller("fixed", SLO, 1)
    run(ctrl, linear(1.0, 1.0), 10)  # far over budget: no effect
    assert ctrl.size() == 1
    assert make_controller("fixed", SLO, 64).size() == 64


# ------------------------------------------------------------------------------ AIMD


def test_aimd_starts_at_one_and_grows_by_step_after_each_full_batch():
    trace = run(make_controller("aimd", SLO, 512), CURVE, 10)
    assert [n for n, _ in trace] == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]


def test_aimd_settles_just_under_the_size_where_latency_crosses_the_budget():
    trace = run(make_controller("aimd", SLO, 512), CURVE, 1500)
    late = trace[300:]
    sizes = [n for n, _ in late]
    assert min(sizes) >= math.floor(0.9 * N_STAR)
    assert max(sizes) <= N_STAR + 2
    assert sum(sizes) / len(sizes) >= 0.95 * N_STAR
    over = sum(latency > OVER for _, latency in late)
    assert over / len(late) < 0.02


def test_aimd_backs_off_ten_percent_on_a_latency_spike_and_recovers():
    ctrl = make_controller("aimd", SLO, 512)
    run(ctrl, CURVE, 600)
    before = ctrl.size()
    assert before >= 0.9 * N_STAR
    ctrl.observe(before, 5 * BUDGET)
    assert ctrl.size() == math.floor(0.9 * before)
    trace = run(ctrl, CURVE, 400)
    assert max(n for n, _ in trace[-100:]) >= N_STAR - 2


def test_aimd_does_not_grow_on_batches_that_were_not_full():
    ctrl = make_controller("aimd", SLO, 512, initial=50)
    for _ in range(100):
        ctrl.observe(10, 0.1 * BUDGET)  # light load: latency says nothing about 50+
    assert ctrl.size() == 50
    ctrl.observe(10, 2 * BUDGET)  # but a small batch over budget is still a warning
    assert ctrl.size() == 45


def test_aimd_ignores_a_batch_taken_before_the_last_back_off():
    ctrl = make_controller("aimd", SLO, 512, initial=100)
    ctrl.observe(100, 2 * BUDGET)  # two batches of 100 were in flight; one came back
    assert ctrl.size() == 90
    ctrl.observe(100, 2 * BUDGET)  # the other: the same overload, not a second one
    assert ctrl.size() == 90


def test_aimd_never_goes_below_one_nor_above_max_batch():
    ctrl = make_controller("aimd", SLO, 8)
    run(ctrl, lambda n: 3 * BUDGET, 50)
    assert ctrl.size() == 1
    ctrl = make_controller("aimd", SLO, 8)
    run(ctrl, lambda n: 0.0, 50)
    assert ctrl.size() == 8


def test_aimd_probes_ever_more_rarely_when_the_same_size_keeps_failing():
    # A slow model: 1 ms per query, 9 fit in the budget, 10 do not.
    curve = linear(1 * MS, 0.5 * MS)
    trace = run(make_controller("aimd", SLO, 64), curve, 1000)
    late = trace[200:]
    assert {n for n, _ in late} <= {9, 10}
    assert sum(latency > OVER for _, latency in late) / len(late) < 0.03


# -------------------------------------------------------------------- latency model


def test_latency_model_finds_n_star_in_fewer_steps_than_aimd():
    band = (0.9 * N_STAR, 1.1 * N_STAR)
    model = steps_to_settle(run(make_controller("latency_model", SLO, 512), CURVE, 400), *band)
    aimd = steps_to_settle(run(make_controller("aimd", SLO, 512), CURVE, 400), *band)
    assert model <= 12  # doubling from 1, then the fit
    assert model < aimd / 5


def test_latency_model_picks_the_largest_size_that_fits():
    for per_item, fixed in [(0.05 * MS, 0.2 * MS), (1 * MS, 0.5 * MS), (0.3 * MS, 1 * MS)]:
        curve = linear(per_item, fixed)
        ctrl = make_controller("latency_model", SLO, 512)
        run(ctrl, curve, 100)
        assert ctrl.size() == largest_fitting(curve)


def test_latency_model_drops_the_size_at_once_when_the_model_gets_slower():
    ctrl = make_controller("latency_model", SLO, 512)
    run(ctrl, CURVE, 200)
    assert ctrl.size() == N_STAR
    slower = linear(0.1 * MS, 0.4 * MS)  # every batch takes twice as long
    trace = run(ctrl, slower, 200)
    assert trace[1][0] < N_STAR  # cut after the first slow batch
    assert sum(latency > OVER for _, latency in trace) <= 3
    n_new = largest_fitting(slower)
    assert all(0.9 * n_new <= n <= n_new for n, _ in trace[10:])


def test_latency_model_grows_when_the_model_gets_faster():
    ctrl = make_controller("latency_model", SLO, 512)
    run(ctrl, CURVE, 200)
    faster = linear(0.025 * MS, 0.1 * MS)
    run(ctrl, faster, 200)
    assert ctrl.size() >= 0.9 * largest_fitting(faster)


def test_latency_model_rides_out_a_single_spike():
    ctrl = make_controller("latency_model", SLO, 512)
    run(ctrl, CURVE, 200)
    ctrl.observe(N_STAR, 5 * BUDGET)  # one garbage-collection pause
    assert ctrl.size() == math.floor(0.9 * N_STAR)
    trace = run(ctrl, CURVE, 5)
    assert trace[-1][0] == N_STAR


def test_latency_model_goes_to_max_batch_when_latency_does_not_grow_with_size():
    rng = random.Random(7)
    ctrl = make_controller("latency_model", SLO, 256)
    run(ctrl, lambda n: 0.3 * MS, 20, rng, sigma=0.1)
    assert ctrl.size() == 256


def test_latency_model_explores_no_further_than_twice_what_it_has_seen():
    ctrl = LatencyModelController(BUDGET, 512, initial=4)
    for n in (1, 2, 3, 4):
        ctrl.observe(n, CURVE(n))  # light load: tiny batches, a perfect fit
    assert ctrl.predict(N_STAR) == pytest.approx(BUDGET)
    assert ctrl.size() == 8


def test_latency_model_keeps_its_slope_while_every_batch_has_the_same_size():
    ctrl = make_controller("latency_model", SLO, 512)
    assert isinstance(ctrl, LatencyModelController)
    run(ctrl, CURVE, 200)
    # A fixed cost appears (say, a bigger payload) while the size stays put: the known
    # slope is re-anchored on the new latencies and the size moves by the right amount.
    shifted = linear(0.05 * MS, 1.2 * MS)
    run(ctrl, shifted, 100)
    assert ctrl.size() == largest_fitting(shifted)


# ------------------------------------------------------------------- noise, both modes

curves = st.tuples(
    st.floats(0.005 * MS, 3 * MS),  # per query
    st.floats(0.02 * MS, 4 * MS),  # fixed cost per batch
).filter(lambda c: c[0] + c[1] <= 0.6 * BUDGET)  # a batch of one fits with room to spare


@pytest.mark.parametrize("mode", ["aimd", "latency_model"])
@settings(max_examples=40, deadline=None)
@given(
    curve=curves,
    sigma=st.floats(0.0, 0.1),
    spikes=st.sampled_from([0.0, 0.01]),
    seed=st.integers(0, 2**32 - 1),
)
def test_noisy_latency_stays_within_bounds_and_mostly_within_budget(
    mode, curve, sigma, spikes, seed
):
    max_batch = 256
    ctrl = make_controller(mode, SLO, max_batch)
    rng = random.Random(seed)
    per_item, fixed = curve
    over = counted = 0
    for step in range(1500):
        n = ctrl.size()
        assert 1 <= n <= max_batch
        latency = (fixed + per_item * n) * max(0.0, 1 + rng.gauss(0, sigma))
        spike = rng.random() < spikes
        ctrl.observe(n, latency * 4 if spike else latency)
        if step >= 300 and not spike:
            counted += 1
            over += latency > OVER
    assert over / counted < 0.10


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=60, deadline=None)
@given(
    max_batch=st.integers(1, 300),
    observations=st.lists(
        st.tuples(st.integers(1, 400), st.floats(0.0, 1.0, allow_nan=False)), max_size=200
    ),
)
def test_size_stays_within_one_and_max_batch_whatever_is_observed(mode, max_batch, observations):
    ctrl = make_controller(mode, SLO, max_batch)
    for batch_size, latency in observations:
        ctrl.observe(batch_size, latency)
        assert 1 <= ctrl.size() <= max_batch


def test_max_batch_can_be_lowered_while_running():
    ctrl = make_controller("aimd", SLO, 512)
    run(ctrl, CURVE, 300)
    assert isinstance(ctrl, AimdController)
    ctrl.max_batch = 32
    assert ctrl.size() == 32
    run(ctrl, CURVE, 10)
    assert ctrl.size() == 32
