"""Combining the answers of several models into one (exp4), by weights.

Numbers are averaged, weighted; anything else is decided by a weighted vote. Which one
follows the app's loss: ``zero_one`` votes, ``squared`` and ``absolute`` average, and
``auto`` averages when the answers are numbers and at least one is not a whole number
(a regressor's), else votes (a classifier's labels, ints included). Answers that cannot
be averaged (different shapes, not numbers) are voted on whatever the loss says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

MEAN = "mean"
VOTE = "vote"


def numeric(value: Any) -> np.ndarray[Any, Any] | None:
    """``value`` as a float array if it is a number or a (nested) list of numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return np.asarray(float(value))
    if not isinstance(value, list) or not value:
        return None
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged
        return None
    if arr.dtype.kind not in "iuf":
        return None
    return arr.astype(np.float64)


def holds_fraction(value: Any) -> bool:
    """Whether a JSON value holds a float (a regressor's answer, not a class label)."""
    if isinstance(value, float):
        return True
    if isinstance(value, list):
        return any(holds_fraction(v) for v in value)
    return False


def mode_for(loss: str, values: Sequence[Any]) -> str:
    if loss == "zero_one":
        return VOTE
    if loss in ("squared", "absolute"):
        return MEAN
    return MEAN if any(holds_fraction(v) for v in values) else VOTE


def combine(outputs: Sequence[bytes], weights: Sequence[float], loss: str) -> bytes:
    """One answer from the answers of several models (JSON texts), by their weights."""
    if len(outputs) == 1:
        return outputs[0]
    values = [orjson.loads(o) for o in outputs]
    if mode_for(loss, values) == MEAN:
        mean = weighted_mean(values, weights)
        if mean is not None:
            return orjson.dumps(mean.tolist())
    return outputs[vote(values, weights)]


def weighted_mean(values: Sequence[Any], weights: Sequence[float]) -> np.ndarray[Any, Any] | None:
    arrays = [numeric(v) for v in values]
    first = arrays[0]
    if first is None or any(a is None or a.shape != first.shape for a in arrays):
        return None
    total = float(sum(weights)) or 1.0
    stacked = np.stack([a for a in arrays if a is not None])
    w = np.asarray(weights, dtype=np.float64) / total
    return np.tensordot(w, stacked, axes=1)


def vote(values: Sequence[Any], weights: Sequence[float]) -> int:
    """Index of an answer with the most weight behind it (the first such on a tie)."""
    tally: dict[bytes, float] = {}
    first: dict[bytes, int] = {}
    for i, (value, weight) in enumerate(zip(values, weights, strict=True)):
        key = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        tally[key] = tally.get(key, 0.0) + weight
        first.setdefault(key, i)
    best = max(tally.values())
    return min(first[k] for k, v in tally.items() if v == best)
