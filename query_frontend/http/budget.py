"""A bound on the bytes of request bodies a query frontend holds at once.

Every predict and update request takes its body's size from one frontend-wide budget
before the body is read (its ``Content-Length``; a body without one, chunk by chunk as
it arrives) and gives it back when its answer is ready, on every path: answered,
refused, failed, or the client gone. A request that does not fit is refused at once with
503 and ``Retry-After``, before its body is read: sixteen concurrent 10 MiB bodies no
longer take half a gigabyte, and a frontend under a flood of large bodies still has
memory and time for everyone else.

Fairness between apps: one app may hold at most its share of the budget (half of it,
but never less than one largest body), so that a client flooding one app with large
bodies leaves the other half to the other apps instead of taking the whole budget. It is
a cap, not a reservation: with no other app busy, the flooded app still gets only its
share (a predictable bound is worth more here than the memory left idle).
"""

from __future__ import annotations

__all__ = ["BodyBudget", "BudgetFullError", "Hold", "app_share"]


class BudgetFullError(Exception):
    """A request body that does not fit in the budget now: retry shortly."""


def app_share(limit: int, max_body_bytes: int) -> int:
    """What one app may hold of a budget of ``limit`` bytes: half, but at least one
    largest body (when the budget holds one), so that every legal body can get in."""
    return max(limit // 2, min(max_body_bytes, limit))


class BodyBudget:
    """Bytes of request bodies held, in total and by app (see the module)."""

    __slots__ = ("_by_app", "app_limit", "held", "limit")

    def __init__(self, limit: int, app_limit: int) -> None:
        self.limit = limit
        self.app_limit = app_limit
        self.held = 0
        self._by_app: dict[str, int] = {}

    def take(self, app: str, size: int) -> None:
        """Hold ``size`` more bytes for ``app``; ``BudgetFullError`` (and nothing held)
        if the frontend or the app has no room for them now."""
        by_app = self._by_app.get(app, 0)
        if self.held + size > self.limit:
            raise BudgetFullError(
                f"the query frontend holds {self.held} bytes of request bodies already "
                f"(its limit is {self.limit}); this body of {size} bytes does not fit now: "
                "retry shortly"
            )
        if by_app + size > self.app_limit:
            raise BudgetFullError(
                f"app '{app}' has {by_app} bytes of request bodies in flight already (an "
                f"app may hold {self.app_limit} of the frontend's {self.limit}); this body "
                f"of {size} bytes does not fit now: retry shortly"
            )
        self.held += size
        self._by_app[app] = by_app + size

    def give(self, app: str, size: int) -> None:
        """Give back ``size`` bytes ``app`` held."""
        self.held -= size
        left = self._by_app[app] - size
        if left:
            self._by_app[app] = left
        else:
            del self._by_app[app]

    def held_by(self, app: str) -> int:
        return self._by_app.get(app, 0)


class Hold:
    """What one request holds of a budget: grown as its body arrives, released once."""

    __slots__ = ("app", "budget", "size")

    def __init__(self, budget: BodyBudget, app: str) -> None:
        self.budget = budget
        self.app = app
        self.size = 0

    def grow(self, size: int) -> None:
        """Hold ``size`` more bytes; ``BudgetFullError`` if they do not fit."""
        if size:
            self.budget.take(self.app, size)
            self.size += size

    def release(self) -> None:
        if self.size:
            self.budget.give(self.app, self.size)
            self.size = 0
