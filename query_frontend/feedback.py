"""Turning ``/update`` feedback into losses and into what each arm learns.

Losses (``loss`` in the app's policy parameters):

    zero_one   0 if the answer equals the label, else 1 (numbers compare by value)
    squared    sum of squared differences (numbers, or equal-shaped lists of numbers)
    absolute   sum of absolute differences
    auto       squared when the label or an answer holds a non-integer number and
               both are numeric; zero_one otherwise

What is learned (``policy_state.ArmFeedback.log_weight``):

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
millions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from management_frontend.policy_state import EXP3, EXP4, ArmFeedback, PolicyParams
from query_frontend.ensemble import holds_fraction, numeric, weighted_mean

ZERO_ONE = "zero_one"
SQUARED = "squared"
ABSOLUTE = "absolute"
# One update may move a log-weight by at most this much: one outlier label must not
# wipe out what thousands of updates taught.
MAX_STEP = 5.0


class LabelError(ValueError):
    """The label cannot be compared with an answer under the app's loss."""


@dataclass(frozen=True, slots=True)
class Answered:
    arm: str  # the link that answered
    label: str  # "model:version", as responses name it
    value: Any  # its answer, parsed


def loss_kind(loss: str, label: Any, values: Sequence[Any]) -> str:
    if loss != "auto":
        return loss
    if numeric(label) is None or any(numeric(v) is None for v in values):
        return ZERO_ONE
    fractional = holds_fraction(label) or any(holds_fraction(v) for v in values)
    return SQUARED if fractional else ZERO_ONE


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
) -> Lesson:
    """What one feedback message teaches.

    ``probability`` is the chance the one exp3 arm had; ``weights`` the exp4 weights of
    the arms that answered; ``scale`` the state's (loss sum, update count) so far.
    """
    values = [a.value for a in answered]
    kind = loss_kind(params.loss, label, values)
    losses = [measure(kind, a.value, label, a.label) for a in answered]
    total, count = scale
    typical = (total + sum(losses)) / (count + len(losses)) if losses else 1.0
    typical = typical if typical > 0 else 1.0

    def bounded(loss: float) -> float:  # a loss in [0, 1)
        return loss if kind == ZERO_ONE else loss / (loss + typical)

    steps = [0.0] * len(answered)
    if params.policy == EXP3 and len(answered) == 1:
        steps[0] = -params.eta * bounded(losses[0]) / max(probability, 1e-6)
    elif params.policy == EXP4 and answered:
        gradient = _gradient(kind, values, weights, label, typical)
        if gradient is None:
            steps = [-params.eta * bounded(loss) for loss in losses]
        else:
            steps = [-params.eta * g for g in gradient]
    arms = {
        a.arm: ArmFeedback(max(-MAX_STEP, min(MAX_STEP, step)), loss)
        for a, step, loss in zip(answered, steps, losses, strict=True)
    }
    return Lesson({a.label: loss for a, loss in zip(answered, losses, strict=True)}, arms)


def _gradient(
    kind: str, values: Sequence[Any], weights: Sequence[float], label: Any, typical: float
) -> list[float] | None:
    """d(loss of the weighted mean)/d(log-weight) per arm, unitless; None for classes."""
    if kind == ZERO_ONE or len(values) < 2:
        return None
    mean = weighted_mean(values, weights)
    y = numeric(label)
    if mean is None or y is None or mean.shape != y.shape:
        return None
    error = mean - y
    direction = 2 * error if kind == SQUARED else np.sign(error)
    grads: list[float] = []
    for value in values:
        arr = numeric(value)
        assert arr is not None  # weighted_mean checked every value
        grads.append(float(np.sum(direction * (arr - mean))) / typical)
    return grads


__all__ = ["EXP3", "EXP4", "Answered", "LabelError", "Lesson", "learn", "loss_kind", "measure"]
