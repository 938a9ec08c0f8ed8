"""Turning ``/update`` feedback into losses and into what each arm learns.

Losses (``loss`` in the app's policy parameters):

    zero_one   0 if the answer equals the label, else 1 (numbers compare by value)
    squared    sum of squared differences (numbers, or equal-shaped lists of numbers)
    absolute   sum of absolute differences
    auto       squared when the answers are numbers and one holds a non-integer
               (a regressor's), zero_one otherwise (a classifier's labels, ints
               included): decided by the answers alone, as ``ensemble`` decides
               how to combine them

What is learned (``management_frontend.state.policy.ArmFeedback.log_weight``):

    exp3   the arm that answered: -eta * loss / p, p being the chance it had of being
           drawn (importance weighting keeps the estimate unbiased: Auer et al. 2002)
    exp4   classes (zero_one): every arm that answered, -eta * loss (Hedge, the
           weighted-majority rule); numbers: exponentiated gradient on the loss of the
           *combined* answer (Kivinen and Warmuth 1997), which learns the best mix of
           the models rather than the best single model
    other  nothing; the losses are still counted, so a split (A/B) test reports the
           mean loss of each arm

Numeric losses are made unitless by dividing by the typical loss so far (the state's
mean loss per arm update), so ``eta`` means the same for labels in metres or in
millions. Once there is a history, a loss over ``OUTLIER_FACTOR`` times the typical one
is counted as that much: one absurd label must not make every later loss look tiny.
A label whose loss is not a finite number is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from management_frontend.state.policy import EXP3, EXP4, ArmFeedback, PolicyParams
from query_frontend.selection.ensemble import holds_fraction, numeric, weighted_mean

ZERO_ONE = "zero_one"
SQUARED = "squared"
# One update may move a log-weight by at most this much: one outlier label must not
# wipe out what thousands of updates taught.
MAX_STEP = 5.0
OUTLIER_FACTOR = 100.0
MIN_HISTORY = 10  # arm updates before outliers are capped


class LabelError(ValueError):
    """The label cannot be compared with an answer under the app's loss."""


@dataclass(frozen=True, slots=True)
class Answered:
    arm: str  # the link that answered
    label: str  # "model:version", as responses name it
    value: Any  # its answer, parsed


def loss_kind(loss: str, values: Sequence[Any]) -> str:
    if loss != "auto":
        return loss
    if not values or any(numeric(v) is None for v in values):
        return ZERO_ONE
    return SQUARED if any(holds_fraction(v) for v in values) else ZERO_ONE


def measure(kind: str, value: Any, label: Any, who: str) -> float:
    """The loss of one answer; ``LabelError`` if the label does not fit it."""
    if kind == ZERO_ONE:
        return 0.0 if same(value, label) else 1.0
    y, y_hat = numeric(label), numeric(value)
    if y is None:
        raise LabelError(
            f"the {kind} loss needs a numeric label (a number or a list of numbers), "
            f"got {orjson.dumps(label).decode()[:80]}"
        )
    if y_hat is None or y_hat.shape != y.shape:
        raise LabelError(
            f"the label {orjson.dumps(label).decode()[:80]} cannot be compared with the "
            f"answer of {who}, {orjson.dumps(value).decode()[:80]}, under the {kind} loss: "
            "send a label of the same shape, or set the app's loss to 'zero_one'"
        )
    with np.errstate(over="ignore", invalid="ignore"):  # an inf loss is refused by learn
        diff = y_hat - y
        return float(np.sum(diff * diff)) if kind == SQUARED else float(np.sum(np.abs(diff)))


def same(value: Any, label: Any) -> bool:
    a, b = numeric(value), numeric(label)
    if a is not None and b is not None:
        return a.shape == b.shape and bool(np.array_equal(a, b))
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        label, option=orjson.OPT_SORT_KEYS
    )


@dataclass(frozen=True, slots=True)
class Lesson:
    losses: dict[str, float]  # by "model:version" label, for the answer
    arms: dict[str, ArmFeedback]  # by arm, for the state


def learn(
    params: PolicyParams,
    answered: Sequence[Answered],
    label: Any,
    *,
    probability: float,
    weights: Sequence[float],
    scale: tuple[float, int],
    starts: Mapping[str, float] | None = None,
) -> Lesson:
    """What one feedback message teaches; ``LabelError`` if the label cannot be used.

    ``probability`` is the chance the one exp3 arm had; ``weights`` the exp4 weights of
    the arms that answered; ``scale`` the app state's (loss sum, arm updates) so far;
    ``starts`` each arm's log-weight as the state shows it (for an arm's first record).
    """
    try:
        return _learn(params, answered, label, probability, weights, scale, starts or {})
    except (TypeError, ValueError, RecursionError) as exc:  # absurdly nested or sized values
        if isinstance(exc, LabelError):
            raise
        raise LabelError(f"the label cannot be compared with the answers: {exc}") from None


def _learn(
    params: PolicyParams,
    answered: Sequence[Answered],
    label: Any,
    probability: float,
    weights: Sequence[float],
    scale: tuple[float, int],
    starts: Mapping[str, float],
) -> Lesson:
    values = [a.value for a in answered]
    kind = loss_kind(params.loss, values)
    losses = [measure(kind, a.value, label, a.label) for a in answered]
    if not all(math.isfinite(loss) for loss in losses):
        raise LabelError(
            f"the {kind} loss of this label is not a finite number: send a label on the "
            "scale of the answers"
        )
    total, count = scale
    if count >= MIN_HISTORY and total > 0:
        cap = OUTLIER_FACTOR * total / count
        counted = [min(loss, cap) for loss in losses]
    else:
        counted = losses
    typical = (total + sum(counted)) / (count + len(counted)) if counted else 1.0
    typical = typical if typical > 0 else 1.0

    def bounded(loss: float) -> float:  # a loss in [0, 1)
        return loss if kind == ZERO_ONE else loss / (loss + typical)

    steps = [0.0] * len(answered)
    if params.policy == EXP3 and len(answered) == 1:
        steps[0] = -params.eta * bounded(counted[0]) / max(probability, 1e-6)
    elif params.policy == EXP4 and answered:
        if kind == ZERO_ONE:
            steps = [-params.eta * bounded(loss) for loss in counted]
        elif len(answered) >= 2:  # one answer says nothing about how to mix them
            gradient = _gradient(kind, values, weights, label, typical)
            if gradient is not None:
                steps = [-params.eta * g for g in gradient]
    arms = {
        a.arm: ArmFeedback(_clip(step), loss, starts.get(a.arm, 0.0))
        for a, step, loss in zip(answered, steps, counted, strict=True)
    }
    return Lesson({a.label: loss for a, loss in zip(answered, losses, strict=True)}, arms)


def _clip(step: float) -> float:
    if math.isnan(step):
        return -MAX_STEP
    return max(-MAX_STEP, min(MAX_STEP, step))


def _gradient(
    kind: str, values: Sequence[Any], weights: Sequence[float], label: Any, typical: float
) -> list[float] | None:
    """d(loss of the weighted mean)/d(log-weight) per arm, unitless; None for classes."""
    if len(values) < 2:
        return None
    mean = weighted_mean(values, weights)
    y = numeric(label)
    if mean is None or y is None or mean.shape != y.shape:
        return None
    grads: list[float] = []
    with np.errstate(over="ignore", invalid="ignore"):  # a NaN step is clipped by learn
        error = mean - y
        direction = 2 * error if kind == SQUARED else np.sign(error)
        for value in values:
            arr = numeric(value)
            assert arr is not None  # weighted_mean checked every value
            grads.append(float(np.sum(direction * (arr - mean))) / typical)
    return grads


__all__ = ["Answered", "LabelError", "Lesson", "learn", "loss_kind", "measure"]
