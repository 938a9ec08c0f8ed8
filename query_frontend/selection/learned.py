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
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from management_frontend.state.feed import Change, ChangeKind, ChangeOp
from management_frontend.state.keys import Keys
from management_frontend.state.policy import RECORDED, ArmFeedback, ArmState, PolicyState
from query_frontend.cancellation import stop_if_cancelled
from query_frontend.selection.learned_store import LearnedStateStore

logger = logging.getLogger(__name__)

# Change-feed ops after which an app's learned state may differ from the copy.
_RELOAD_ON = frozenset({ChangeOp.ADD, ChangeOp.DELETE, ChangeOp.SET_POLICY, ChangeOp.RESET_POLICY})
# How long an /update waits for Redis before answering 503.
WRITE_TIMEOUT_S = 2.0


class PolicyStates:
    """Copies of learned state by (app, epoch), and of users' parts by (app, epoch, uid)."""

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
        self._store = LearnedStateStore(r, keys)
        self.refresh_s = refresh_s
        self.user_refresh_s = user_refresh_s
        self.max_users = max_users
        self._clock = clock
        self.apps: dict[tuple[str, str], PolicyState] = {}
        self._users: OrderedDict[tuple[str, str, str], tuple[PolicyState, float]] = OrderedDict()
        self._loading: set[tuple[str, str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # The (app, epoch) of every app whose policy learns, to re-read periodically.
        self.tracked: Callable[[], Iterable[tuple[str, str]]] = lambda: ()

    def view(self, app: str, epoch: str, uid: str | None) -> PolicyState:
        """What a query of ``app`` by ``uid`` sees: the app's state plus the user's part."""
        base = self.app_state(app, epoch)
        if uid is None:
            return base
        key = (app, epoch, uid)
        entry = self._users.get(key)
        if entry is None or self._clock() - entry[1] > self.user_refresh_s:
            self._load_user_later(key)
        if entry is None:
            return base
        self._users.move_to_end(key)
        return base.plus(entry[0])

    def app_state(self, app: str, epoch: str) -> PolicyState:
        state = self.apps.get((app, epoch))
        if state is None:
            # A new epoch (a reset, a new policy, a stage of a pipeline): the copies no
            # route uses any more are dropped by ``retain``.
            state = self.apps[(app, epoch)] = PolicyState()
            self._spawn(self._load_app(app, epoch))
        return state

    def retain(self, in_use: Iterable[tuple[str, str]]) -> None:
        """Forget the copies (and users' parts) of every (app, epoch) not ``in_use``: an
        app's old epochs once the routes no longer name them. A pipeline app has one
        epoch per stage, all in use at once."""
        keep = set(in_use)
        for key in [k for k in self.apps if k not in keep]:
            del self.apps[key]
        for user in [k for k in self._users if k[:2] not in keep]:
            del self._users[user]

    async def record(
        self,
        app: str,
        epoch: str,
        uid: str | None,
        feedback: Mapping[str, ArmFeedback],
        feedback_id: str | None = None,
    ) -> int:
        """Store one feedback message in Redis, then in the copy; ``RECORDED``,
        ``STALE`` or ``DUPLICATE`` (see ``LearnedStateStore.record``). Raises on Redis errors."""
        status = await asyncio.wait_for(
            self._store.record(app, epoch, uid, feedback, feedback_id),
            WRITE_TIMEOUT_S,
        )
        if status != RECORDED:
            return status
        _add(self.app_state(app, epoch), feedback, levelled=True)
        if uid is not None:
            entry = self._users.get((app, epoch, uid))
            if entry is not None:
                _add(entry[0], feedback, levelled=False)
        return status

    def on_change(self, change: Change) -> None:
        """Re-read an app's state when its policy changed or was reset, and drop its
        users' parts (or the one user's part a reset names); the copy serves meanwhile.
        A new epoch needs nothing here: its first query reads it."""
        if change.kind != ChangeKind.APP or change.fields.get("op") not in _RELOAD_ON:
            return
        app = change.fields.get("app", "")
        uid = change.fields.get("uid")
        for key in [k for k in self._users if k[0] == app and uid in (None, k[2])]:
            del self._users[key]
        if uid is None:
            for _, epoch in [k for k in self.apps if k[0] == app]:
                self._spawn(self._load_app(app, epoch))

    async def run(self) -> None:
        """Re-read the tracked apps' records every ``refresh_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_s)
            tracked = list(self.tracked())
            if not tracked:
                continue
            try:
                states = await self._store.read_apps(tracked)
            except (RedisError, OSError) as exc:
                stop_if_cancelled(exc)
                logger.warning("cannot read the policy state of %d app(s): %s", len(tracked), exc)
                continue
            stop_if_cancelled()
            for key, state in zip(tracked, states, strict=True):
                if key in self.apps:  # not replaced by a newer epoch meanwhile
                    self.apps[key] = state

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ loading

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_app(self, app: str, epoch: str) -> None:
        try:
            state = await self._store.read(app, epoch)
        except (RedisError, OSError) as exc:
            logger.warning("cannot read the policy state of app %s: %s", app, exc)
            return
        if (app, epoch) in self.apps:  # not replaced by a newer epoch meanwhile
            self.apps[(app, epoch)] = state

    def _load_user_later(self, key: tuple[str, str, str]) -> None:
        if key in self._loading:
            return
        self._loading.add(key)
        self._spawn(self._load_user(key))

    async def _load_user(self, key: tuple[str, str, str]) -> None:
        app, epoch, uid = key
        try:
            part = await self._store.read(app, epoch, uid)
        except (RedisError, OSError) as exc:
            logger.warning("cannot read the policy state of user %s of %s: %s", uid, app, exc)
            return
        finally:
            self._loading.discard(key)
        self._users[key] = (part, self._clock())
        self._users.move_to_end(key)
        while len(self._users) > self.max_users:
            self._users.popitem(last=False)


def _add(state: PolicyState, feedback: Mapping[str, ArmFeedback], *, levelled: bool) -> None:
    """Add feedback to a copy as the script adds it to Redis (``levelled``: the app's
    record, where an arm's first log-weight is its start)."""
    state.updates += 1
    for arm, fb in feedback.items():
        entry = state.arms.get(arm)
        if entry is None:
            entry = state.arms[arm] = ArmState(fb.start if levelled else 0.0)
        entry.log_weight += fb.log_weight
        entry.updates += 1
        entry.loss_sum += fb.loss
