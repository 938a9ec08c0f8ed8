"""The query frontend's copy of what selection policies learned, kept in step with Redis.

Queries read the copy and never wait for Redis. Feedback is written to Redis first (the
``/update`` answer means it is stored) and then added to the copy. Every
``refresh_s`` the app records are read again, which brings in what other query
frontends learned; a user's part is read the first time the user is seen and again
when it is older than ``user_refresh_s``, in the background: meanwhile the user gets
the app's state. A change-feed entry that resets or re-configures an app's policy
drops its copy at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from management_frontend.policy_state import (
    ArmFeedback,
    ArmState,
    PolicyState,
    read_app_part,
    read_user_part,
    record_feedback,
)
from management_frontend.schema import Change, ChangeKind, ChangeOp, Keys

logger = logging.getLogger(__name__)

# Change-feed ops after which an app's learned state may differ from the copy.
_RELOAD_ON = frozenset({ChangeOp.ADD, ChangeOp.DELETE, ChangeOp.SET_POLICY, ChangeOp.RESET_POLICY})
# How long an /update waits for Redis before answering 503.
WRITE_TIMEOUT_S = 2.0


class PolicyStates:
    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        *,
        refresh_s: float = 1.0,
        user_refresh_s: float = 5.0,
        max_users: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._r = r
        self._keys = keys
        self.refresh_s = refresh_s
        self.user_refresh_s = user_refresh_s
        self.max_users = max_users
        self._clock = clock
        self.apps: dict[str, PolicyState] = {}
        self._users: OrderedDict[tuple[str, str], tuple[PolicyState, float]] = OrderedDict()
        self._loading: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.tracked: Callable[[], Iterable[str]] = lambda: ()  # apps that learn

    def view(self, app: str, uid: str | None) -> PolicyState:
        """What a query of ``app`` by ``uid`` sees: the app's state plus the user's part."""
        base = self.apps.get(app)
        if base is None:
            base = self.apps[app] = PolicyState()
            self._spawn(self._load_app(app))
        if uid is None:
            return base
        entry = self._users.get((app, uid))
        if entry is None or self._clock() - entry[1] > self.user_refresh_s:
            self._load_user_later(app, uid)
        if entry is None:
            return base
        self._users.move_to_end((app, uid))
        return base.plus(entry[0])

    def user_part(self, app: str, uid: str) -> PolicyState | None:
        entry = self._users.get((app, uid))
        return entry[0] if entry else None

    async def record(self, app: str, uid: str | None, feedback: Mapping[str, ArmFeedback]) -> None:
        """Store one feedback message in Redis, then in the copy. Raises on Redis errors."""
        await asyncio.wait_for(
            record_feedback(self._r, self._keys, app, uid, feedback), WRITE_TIMEOUT_S
        )
        _add(self.apps.setdefault(app, PolicyState()), feedback)
        if uid is not None:
            entry = self._users.get((app, uid))
            if entry is not None:
                _add(entry[0], feedback)

    def on_change(self, change: Change) -> None:
        """Re-read an app's state when its policy changed or was reset, and drop its users'
        parts (or the one user's part a reset names); the old copy serves until then."""
        if change.kind != ChangeKind.APP or change.fields.get("op") not in _RELOAD_ON:
            return
        app = change.fields.get("app", "")
        uid = change.fields.get("uid")
        for key in [k for k in self._users if k[0] == app and uid in (None, k[1])]:
            del self._users[key]
        if uid is None:
            self._spawn(self._load_app(app))

    def forget(self, app: str) -> None:
        self.apps.pop(app, None)
        for key in [k for k in self._users if k[0] == app]:
            del self._users[key]

    async def run(self) -> None:
        """Re-read the tracked apps' records every ``refresh_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_s)
            for app in list(self.tracked()):
                with contextlib.suppress(RedisError, OSError):
                    await self._load_app(app)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ loading

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_app(self, app: str) -> None:
        try:
            state = await read_app_part(self._r, self._keys, app)
        except (RedisError, OSError) as exc:
            logger.warning("cannot read the policy state of app %s: %s", app, exc)
            return
        self.apps[app] = state

    def _load_user_later(self, app: str, uid: str) -> None:
        if (app, uid) in self._loading:
            return
        self._loading.add((app, uid))
        self._spawn(self._load_user(app, uid))

    async def _load_user(self, app: str, uid: str) -> None:
        try:
            part = await read_user_part(self._r, self._keys, app, uid)
        except (RedisError, OSError) as exc:
            logger.warning("cannot read the policy state of user %s of %s: %s", uid, app, exc)
            return
        finally:
            self._loading.discard((app, uid))
        self._users[(app, uid)] = (part, self._clock())
        self._users.move_to_end((app, uid))
        while len(self._users) > self.max_users:
            self._users.popitem(last=False)


def _add(state: PolicyState, feedback: Mapping[str, ArmFeedback]) -> None:
    state.updates += 1
    for arm, fb in feedback.items():
        entry = state.arms.setdefault(arm, ArmState())
        entry.log_weight += fb.log_weight
        entry.updates += 1
        entry.loss_sum += fb.loss
