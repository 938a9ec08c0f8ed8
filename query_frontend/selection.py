"""Which of an app's arms answer a query, under its selection policy.

``single`` has one arm and never comes here (``predict`` serves it directly). ``split``
and ``exp3`` draw one arm per query, by fixed weights or by the bandit's current
probabilities; ``exp4`` asks every arm. Arms that cannot answer now (no version to
route to, no replica connected) are left out of the draw, so one model being down
does not cost the app the queries that would have gone to it: its share goes to the
others. Only when no arm can answer is the full set used, and the query waits for a
replica until its deadline, as a single-model app's would.

With a user id, ``split`` is sticky: the user's draw is a hash of the app and the id,
so the same user lands on the same arm on every frontend, across restarts, and (the
draw being a point on the cumulative weights) mostly stays put when weights change.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from management_frontend.policy_state import EXP3, EXP4, SPLIT, PolicyState, split_shares
from query_frontend.routing import Arm, Route

_TWO_64 = float(2**64)


@dataclass(frozen=True, slots=True)
class Choice:
    """The arm(s) to ask, and for a single draw the probability it had."""

    arms: tuple[Arm, ...]
    probability: float = 1.0


def sticky_point(app: str, uid: str) -> float:
    """A point in [0, 1) fixed by the app and the user id."""
    digest = hashlib.blake2b(f"{app}\x00{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _TWO_64


def split_arms(route: Route, has_replicas: Callable[[Arm], bool]) -> tuple[list[Arm], list[Arm]]:
    """The arms that can be routed to, and those of them that can answer now."""
    routable = [a for a in route.arms if a.key is not None]
    return routable, [a for a in routable if has_replicas(a)]


@dataclass(frozen=True, slots=True)
class Wheel:
    """Arms laid end to end on [0, 1), each on a slice as wide as its probability."""

    ends: list[float]  # where each arm's slice ends: the cumulative probabilities
    choices: list[Choice]  # each arm, with the probability it had

    def slot(self, point: float) -> int:
        """The index of the arm whose slice holds ``point``."""
        return min(bisect.bisect_right(self.ends, point), len(self.choices) - 1)

    def at(self, point: float) -> Choice:
        return self.choices[self.slot(point)]


def wheel(arms: Sequence[Arm], probs: Sequence[float]) -> Wheel:
    """``arms`` on a wheel by ``probs`` (relative: equal if they sum to nothing)."""
    total = sum(probs)
    if total <= 0:
        probs, total = [1.0] * len(arms), float(len(arms))
    return Wheel(
        list(itertools.accumulate(p / total for p in probs)),
        [Choice((arm,), p / total) for arm, p in zip(arms, probs, strict=True)],
    )


def chooser(
    route: Route,
    routable: Sequence[Arm],
    ready: Sequence[Arm],
    state: PolicyState,
    uid: str | None,
    rng: random.Random,
) -> Callable[[], Choice]:
    """What picks the arm(s) for each query of one request (``split_arms`` gives
    ``routable`` and ``ready``): the distribution is worked out once, and each call
    draws from it with at most one ``rng.random()``."""
    policy = route.params.policy
    pool = ready or routable
    if policy == EXP4 or len(pool) <= 1:
        return _always(Choice(tuple(pool)))
    if policy == SPLIT:
        pick = _split(route, routable, pool)
        if uid is not None:
            return _always(pick(sticky_point(route.app.name, uid)))
        return lambda: pick(rng.random())
    if policy == EXP3:
        bandit = wheel(pool, state.probabilities(route.params, [a.name for a in pool]))
        return lambda: bandit.at(rng.random())
    return _always(Choice((pool[0],)))  # single never holds several links


def _split(route: Route, routable: Sequence[Arm], pool: Sequence[Arm]) -> Callable[[float], Choice]:
    """The split arm at a point of the weights: the routable arms' share, or if that
    arm is down, the same point on the shares of the arms that are up."""
    weights = route.params.weights
    every = wheel(routable, split_shares(weights, [a.name for a in routable]))
    up = [arm in pool for arm in routable]
    if all(up):
        return every.at
    upper = wheel(pool, split_shares(weights, [a.name for a in pool]))

    def pick(point: float) -> Choice:
        i = every.slot(point)
        return every.choices[i] if up[i] else upper.at(point)

    return pick


def _always(choice: Choice) -> Callable[[], Choice]:
    return lambda: choice


def ensemble_weights(route: Route, arms: Sequence[Arm], state: PolicyState) -> list[float]:
    """exp4: each arm's weight in the combined answer."""
    return state.probabilities(route.params, [a.name for a in arms])


__all__ = [
    "Choice",
    "Wheel",
    "chooser",
    "ensemble_weights",
    "split_arms",
    "sticky_point",
    "wheel",
]
