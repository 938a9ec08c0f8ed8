"""Batch-size controllers: how many queries to put in the next batch for one model replica.

A controller is told, for every batch that came back, how many queries it held and how
long the replica took (``observe``), and answers how many to send next (``size``). It
keeps the batch's service time under a *budget*, a fraction of the app's latency
objective (``make_controller`` takes the SLO and the fraction). A query first waits for
the batch ahead of it and then rides in the next one, so with one batch in flight per
replica a service time of at most SLO/2 keeps wait plus processing within the SLO: the
default fraction is 0.5. With ``k`` batches in flight per replica a query can wait
behind ``k`` of them: use ``budget_fraction = 1 / (k + 1)``.

Three modes, one interface (:class:`BatchSizeController`):

``aimd``
    Clipper's additive-increase/multiplicative-decrease: grow by ``step`` after a full
    batch that stayed within budget, shrink by 10 % after one that did not. Near the
    size that last broke the budget it probes one query at a time after a calm spell
    that doubles each time the probe fails again, so the sawtooth spends most of its
    time under the budget instead of crossing it every few batches (the plateau of TCP
    BIC/CUBIC, for the same reason).
``latency_model``
    Fits latency ~ a*n + b over a window of recent batches and picks the largest n whose
    predicted high quantile fits the budget. It reaches the right size in a handful of
    batches where AIMD needs ``n*/step``, and re-fits when the model's cost changes.
``fixed``
    Always ``max_batch`` (``max_batch=1`` is the no-batching baseline).

Everything here is pure and deterministic: no clock, no I/O, no randomness, O(window)
per observation. The caller measures the latency: the batch's service time as the
frontend sees it (sent, or the replica's previous batch answered, whichever is later,
until its answer arrived), which includes the per-item packing and transfer costs that
the container's own ``model_micros`` leaves out.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal, Protocol, get_args

__all__ = [
    "DEFAULT_BUDGET_FRACTION",
    "MODES",
    "AimdController",
    "BatchMode",
    "BatchSizeController",
    "FixedController",
    "LatencyModelController",
    "make_controller",
]

BatchMode = Literal["aimd", "latency_model", "fixed"]
MODES: tuple[str, ...] = get_args(BatchMode)

DEFAULT_BUDGET_FRACTION = 0.5


class BatchSizeController(Protocol):
    """Chooses the size of the next batch for one replica from the latencies of past ones.

    ``size()`` is at least 1 and at most the controller's ``max_batch``. ``observe()`` is
    called once per batch that came back, with the number of queries it held and its
    service time in seconds; a batch smaller than ``size()`` was not full.
    """

    def size(self) -> int: ...

    def observe(self, batch_size: int, latency_s: float) -> None: ...


def make_controller(
    mode: BatchMode,
    slo_s: float,
    max_batch: int,
    *,
    budget_fraction: float = DEFAULT_BUDGET_FRACTION,
    initial: int = 1,
) -> BatchSizeController:
    """A controller for one replica. ``mode`` comes from the model's registered settings."""
    if not (slo_s > 0 and math.isfinite(slo_s)):
        raise ValueError(f"slo_s must be a positive number of seconds, got {slo_s!r}")
    if not 0 < budget_fraction <= 1:
        raise ValueError(f"budget_fraction must be in (0, 1], got {budget_fraction!r}")
    budget_s = slo_s * budget_fraction
    if mode == "aimd":
        return AimdController(budget_s, max_batch, initial=initial)
    if mode == "latency_model":
        return LatencyModelController(budget_s, max_batch, initial=initial)
    if mode == "fixed":
        return FixedController(max_batch)
    raise ValueError(f"unknown batching mode {mode!r}; use one of {', '.join(MODES)}")


class FixedController:
    """Always ``max_batch``: the baseline, or a user who knows the right size."""

    def __init__(self, max_batch: int) -> None:
        _check_positive("max_batch", max_batch)
        self.max_batch = max_batch

    def size(self) -> int:
        return self.max_batch

    def observe(self, batch_size: int, latency_s: float) -> None:
        _check_observation(batch_size, latency_s)


class AimdController:
    """Additive increase while full batches fit the budget, multiplicative back-off when not.

    ``step`` defaults to 2: the overshoot after an increase is ``step`` items' worth of
    latency, which the half-SLO budget absorbs even for slow models (n* of 5-10), while
    warm-up to a few hundred still takes only ~n*/2 batches. ``backoff`` 0.9 is Clipper's
    10 %. Within ``step`` of the last failure point, each +1 waits for ``probe_every``
    full batches within budget, twice as many each time the budget breaks again at or
    below that point (up to 8 times as many): on a steady curve the probe that fails
    becomes rare, so well under 5 % of batches run over. The point is forgotten once a
    batch of that size fits (the spike was noise, or the model got faster), and growth
    is by ``step`` again.

    Only a full batch (``batch_size == size()``) within budget grows the size: a smaller
    one says nothing about a larger size. A batch over budget cuts it even if it was not
    full. A batch larger than ``size()`` was taken before the last cut and is ignored, so
    two batches in flight do not cut twice for one overload.
    """

    def __init__(
        self,
        budget_s: float,
        max_batch: int,
        *,
        initial: int = 1,
        step: int = 2,
        backoff: float = 0.9,
        probe_every: int = 8,
    ) -> None:
        _check_budget(budget_s)
        _check_positive("max_batch", max_batch)
        _check_positive("initial", initial)
        _check_positive("step", step)
        _check_positive("probe_every", probe_every)
        _check_backoff(backoff)
        self.budget_s = budget_s  # may be reassigned (the app's SLO changed)
        self.max_batch = max_batch  # may be reassigned (the model's settings changed)
        self._size = min(initial, max_batch)
        self._step = step
        self._backoff = backoff
        self._probe_every = probe_every
        self._ceiling: int | None = None  # the size at the last back-off
        self._calm = 0  # full batches within budget since the last probe
        self._wait = probe_every  # calm batches needed per probe

    def size(self) -> int:
        return min(self._size, self.max_batch)

    def observe(self, batch_size: int, latency_s: float) -> None:
        _check_observation(batch_size, latency_s)
        size = self.size()
        if batch_size > size:
            return  # taken before the last back-off, which already answered for it
        if latency_s > self.budget_s:
            # Even a batch smaller than the size ran over: a full one would too.
            failed_again = self._ceiling is not None and size <= self._ceiling
            self._wait = (
                min(2 * self._wait, 8 * self._probe_every) if failed_again else self._probe_every
            )
            self._ceiling = size
            self._size = _shrink(size, self._backoff)
            self._calm = 0
        elif batch_size == size:
            self._grow(size)
        # A batch under the size that fit says nothing about a larger size: keep it.

    def _grow(self, size: int) -> None:
        if self._ceiling is not None and size >= self._ceiling:
            self._ceiling = None
        if self._ceiling is None or size + self._step < self._ceiling:
            self._size = min(size + self._step, self.max_batch)
            return
        self._calm += 1
        if self._calm >= self._wait:
            self._calm = 0
            self._size = min(size + 1, self.max_batch)


class LatencyModelController:
    """Largest n whose predicted latency quantile fits the budget, from a fitted line.

    Latency ~ a*n + b. The slope ``a`` comes from a least-squares fit over the last
    ``window`` batches; the prediction for a size n is ``a*n`` plus the ``quantile`` of
    the recent ``latency - a*n`` (the intercept with its noise). Choosing the default
    0.95: with a half-SLO budget a query misses its SLO only if the batch it waited behind
    and its own batch both run long, so a per-batch p95 within the budget gives roughly a
    per-query p99 within the SLO; and in a window of 64 it ignores the top three batches,
    so one garbage-collection pause does not pin the size down for a whole window.

    Robustness:
    - The slope is replaced only by a fit with enough spread in batch sizes (a standard
      deviation of at least ``min_spread`` of their mean) and a standard error within
      ``slope_tolerance`` of the slope. Under steady load every batch has the same size
      and the last good slope is kept; the quantile of ``latency - a*n`` still follows
      the data, so the line is re-anchored where the replica runs and drift still moves
      the size (and moving it brings back the spread a new fit needs).
    - It never jumps past twice the largest batch it has data for: extrapolation from
      small batches is probed by doubling rather than trusted.
    - A batch over budget *and* far over the prediction (by ``surprise`` times the
      model's noise, the quantile minus the median, and by at least 5 % of the budget)
      cuts the size by 10 % at once. A second such batch in a row means the curve itself changed (a
      slower model version, a noisy neighbour): the window restarts from those two.
    - Until there is a usable slope (too few points, or a <= 0 because latency does not
      grow measurably with n) it grows like slow start, doubling after each full batch
      within budget up to ``max_batch``, and cuts by 10 % over budget.
    """

    def __init__(
        self,
        budget_s: float,
        max_batch: int,
        *,
        initial: int = 1,
        window: int = 64,
        quantile: float = 0.95,
        min_points: int = 3,
        min_spread: float = 0.05,
        slope_tolerance: float = 0.25,
        surprise: float = 3.0,
        backoff: float = 0.9,
    ) -> None:
        _check_budget(budget_s)
        _check_positive("max_batch", max_batch)
        _check_positive("initial", initial)
        if window < 3:
            raise ValueError(f"window must be at least 3 batches, got {window!r}")
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
        if not 3 <= min_points <= window:
            raise ValueError(f"min_points must be in [3, window], got {min_points!r}")
        if not min_spread >= 0:
            raise ValueError(f"min_spread must be non-negative, got {min_spread!r}")
        if not slope_tolerance > 0:
            raise ValueError(f"slope_tolerance must be positive, got {slope_tolerance!r}")
        if not surprise >= 1:
            raise ValueError(f"surprise must be at least 1, got {surprise!r}")
        _check_backoff(backoff)
        self.budget_s = budget_s  # may be reassigned; takes effect at the next observation
        self.max_batch = max_batch  # may be reassigned
        self._size = min(initial, max_batch)
        self._points: deque[tuple[int, float]] = deque(maxlen=window)
        self._quantile = quantile
        self._min_points = min_points
        self._min_spread = min_spread
        self._slope_tolerance = slope_tolerance
        self._surprise = surprise
        self._backoff = backoff
        self._slope: float | None = None  # the last well-determined slope, s per query
        # With a slope: (slope, median and quantile of latency - slope * n over the window)
        self._line: tuple[float, float, float] | None = None
        self._suspect: tuple[int, float] | None = None  # the last batch, if it broke the fit

    def size(self) -> int:
        return min(self._size, self.max_batch)

    def predict(self, batch_size: int) -> float | None:
        """The predicted latency quantile of a batch of this size; None before a fit."""
        if self._line is None:
            return None
        slope, _, high = self._line
        return slope * batch_size + high

    def observe(self, batch_size: int, latency_s: float) -> None:
        _check_observation(batch_size, latency_s)
        size = self.size()
        point = (batch_size, latency_s)
        surprised = self._is_surprise(batch_size, latency_s)
        if surprised and self._suspect is not None:
            self._points.clear()
            self._points.append(self._suspect)
        self._suspect = point if surprised and self._suspect is None else None
        self._points.append(point)
        self._refit()

        if self._line is not None:
            chosen = self._choose()
            self._size = min(chosen, _shrink(size, self._backoff)) if surprised else chosen
        elif latency_s > self.budget_s:
            if batch_size <= size:  # a larger one was taken before the last cut
                self._size = _shrink(size, self._backoff)
        elif batch_size == size:
            self._size = min(2 * size, self.max_batch)

    def _is_surprise(self, batch_size: int, latency_s: float) -> bool:
        if self._line is None or latency_s <= self.budget_s:
            return False
        slope, median, high = self._line
        excess = latency_s - slope * batch_size - high
        return excess > max(self._surprise * (high - median), 0.05 * self.budget_s)

    def _refit(self) -> None:
        points = self._points
        k = len(points)
        mean_n = sum(n for n, _ in points) / k
        sxx = sum((n - mean_n) ** 2 for n, _ in points)
        if k >= self._min_points and sxx >= k * (self._min_spread * mean_n) ** 2 and sxx > 0:
            mean_l = sum(lat for _, lat in points) / k
            a = sum((n - mean_n) * (lat - mean_l) for n, lat in points) / sxx
            if a > 0:
                b = mean_l - a * mean_n
                sse = sum((lat - a * n - b) ** 2 for n, lat in points)
                if math.sqrt(sse / (k - 2) / sxx) <= self._slope_tolerance * a:
                    self._slope = a
        if self._slope is None:
            self._line = None
            return
        slope = self._slope
        offsets = sorted(lat - slope * n for n, lat in points)
        high = offsets[math.ceil(self._quantile * k) - 1]
        self._line = (slope, offsets[(k - 1) // 2], high)

    def _choose(self) -> int:
        assert self._line is not None
        slope, _, high = self._line
        # The epsilon keeps an exact fit (latency == budget at n*) from rounding to n* - 1.
        room = (self.budget_s - high) / slope + 1e-9
        # A slope near zero makes ``room`` huge or infinite (floor would overflow); NaN
        # and anything under one batch of one come out as 1 below.
        fits = self.max_batch if room >= self.max_batch else math.floor(room) if room >= 1 else 1
        explored = 2 * max(n for n, _ in self._points)
        return max(1, min(fits, explored, self.max_batch))


def _shrink(size: int, factor: float) -> int:
    """``size * factor`` rounded down, but always at least one smaller, and never below 1."""
    return max(1, min(size - 1, math.floor(size * factor)))


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")


def _check_budget(budget_s: float) -> None:
    if not (budget_s > 0 and math.isfinite(budget_s)):
        raise ValueError(f"budget_s must be a positive number of seconds, got {budget_s!r}")


def _check_backoff(backoff: float) -> None:
    if not 0 < backoff < 1:
        raise ValueError(f"backoff must be in (0, 1), e.g. 0.9 for a 10 % cut, got {backoff!r}")


def _check_observation(batch_size: int, latency_s: float) -> None:
    if batch_size < 1:
        raise ValueError(f"a batch holds at least one query, got batch_size={batch_size!r}")
    if not (latency_s >= 0 and math.isfinite(latency_s)):
        raise ValueError(f"latency_s must be a finite, non-negative time, got {latency_s!r}")
