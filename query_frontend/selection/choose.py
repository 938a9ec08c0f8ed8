"""Which of an app's arms answer a query, under its selection policy.

``single`` has one arm and never comes here (``http.predict`` serves it directly). ``split``
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

from management_frontend.state.policy import EXP3, EXP4, SPLIT, PolicyState, split_shares
from query_frontend.queries import ModelKey
from query_frontend.routing.table import Arm, Route

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


def split_arms(
    route: Route, has_replicas: Callable[[ModelKey], bool]
) -> tuple[list[Arm], list[Arm]]:
    """The arms that can be routed to, and those of them that can answer now."""
    routable = [a for a in route.arms if a.key is not None]
    return routable, [a for a in routable if a.key is not None and has_replicas(a.key)]


def cumulative(probs: Sequence[float]) -> tuple[list[float], list[float]]:
    """``probs`` normalised (equal if they sum to nothing), and their running sums: each
    arm's slice of [0, 1) ends at its running sum."""
    total = sum(probs)
    if total <= 0:
        probs, total = [1.0] * len(probs), float(len(probs))
    normal = [p / total for p in probs]
    return normal, list(itertools.accumulate(normal))


def slot(ends: list[float], point: float) -> int:
    """The index of the slice (``cumulative``'s running sums) that holds ``point``."""
    return min(bisect.bisect_right(ends, point), len(ends) - 1)


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
        shares, ends = cumulative(split_shares(route.params.weights, [a.name for a in routable]))

        def split_at(point: float) -> Choice:
            i = slot(ends, point)
            if routable[i] in pool:
                return Choice((routable[i],), shares[i])
            # Its arm is down: the same point on the shares of the arms that are up.
            up, up_ends = cumulative(split_shares(route.params.weights, [a.name for a in pool]))
            j = slot(up_ends, point)
            return Choice((pool[j],), up[j])

        if uid is not None:
            return _always(split_at(sticky_point(route.app.name, uid)))
        return lambda: split_at(rng.random())
    if policy == EXP3:
        probs, bandit = cumulative(state.probabilities(route.params, [a.name for a in pool]))

        def draw() -> Choice:
            i = slot(bandit, rng.random())
            return Choice((pool[i],), probs[i])

        return draw
    return _always(Choice((pool[0],)))  # single never holds several links


def _always(choice: Choice) -> Callable[[], Choice]:
    return lambda: choice


def ensemble_weights(route: Route, arms: Sequence[Arm], state: PolicyState) -> list[float]:
    """exp4: each arm's weight in the combined answer."""
    return state.probabilities(route.params, [a.name for a in arms])


__all__ = [
    "Choice",
    "chooser",
    "cumulative",
    "ensemble_weights",
    "slot",
    "split_arms",
    "sticky_point",
]
