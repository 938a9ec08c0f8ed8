"""Selection policies in the control plane: setting an app's policy, reporting and
forgetting what it learned.

The query frontends learn (they write the state, see ``state.policy``); these writes
only change the app record — its policy, settings and ``policy_epoch`` — each in one
transaction with its change-feed entry, and leave deleting old state to the store's
background clean-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from redis.asyncio.client import Pipeline

from management_frontend.errors import Conflict, Invalid
from management_frontend.state.errors import InvalidValue
from management_frontend.state.feed import ChangeKind, ChangeOp
from management_frontend.state.policy import SINGLE, SPLIT, PolicyParams, PolicyState, new_epoch
from management_frontend.state.records import App, text_hash
from management_frontend.storage.reads import read_app, read_links
from management_frontend.storage.store import Store, app_missing, as_fields, begin, listed, publish


def params_of(app: App) -> PolicyParams:
    """The app's stored policy settings; a policy this Schooner does not know is a 409."""
    try:
        return PolicyParams.parse(app.policy, app.policy_params)
    except InvalidValue as exc:
        raise Conflict(
            f"app {app.name!r} has a selection policy this management frontend cannot read "
            f"({exc.message}): set one with PUT /admin/apps/{app.name}/policy"
        ) from exc


class PolicyStore:
    """An app's selection policy and learned state, on top of a ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def set_policy(
        self, app_name: str, policy: str, params: Mapping[str, Any], *, reset_state: bool = False
    ) -> App:
        """Give an app a selection policy and its settings.

        A new policy starts from nothing, as does any policy with ``reset_state``: the
        app gets a new ``policy_epoch`` in the same transaction, and what the old one
        learned is deleted in the background. Changing only the settings keeps it. A
        call that changes nothing writes nothing.
        """
        keys = self._store.keys
        parsed = PolicyParams.parse(policy, params)
        stored_params = parsed.to_json()

        async def step(pipe: Pipeline) -> tuple[App, bool]:
            """The app as it is now, and whether it got a new epoch."""
            app = await read_app(pipe, keys, app_name)
            if app is None:
                raise app_missing(app_name)
            links = await read_links(pipe, keys, app_name)
            if policy == SINGLE and len(links) > 1:
                raise Conflict(
                    f"app {app_name!r} has {len(links)} links ({listed(links)}) and the "
                    f"{SINGLE!r} policy serves one: unlink all but one of them first"
                )
            if policy == SPLIT and parsed.weights:
                unknown = [arm for arm in parsed.weights if arm not in links]
                if unknown:
                    raise Invalid(
                        f"the split weights name {listed(unknown)}, which app {app_name!r} "
                        f"does not link (its links: {listed(links)}): link it first, or "
                        "weigh only linked models"
                    )
            changed = app.policy != policy or app.policy_params != stored_params
            reset = reset_state or app.policy != policy
            if not changed and not reset:
                return app, False
            epoch = new_epoch() if reset else app.policy_epoch
            updated = replace(app, policy=policy, policy_params=stored_params, policy_epoch=epoch)
            begin(pipe)
            record = updated.to_hash()
            fields = {k: record[k] for k in ("policy", "policy_params", "policy_epoch")}
            pipe.hset(keys.app(app_name), mapping=as_fields(fields))
            publish(pipe, keys, ChangeKind.APP, ChangeOp.SET_POLICY, app=app_name)
            return updated, reset

        watch = [keys.app(app_name), keys.links(app_name)]
        updated, renewed = await self._store.transact(watch, step)
        if renewed:
            self._store.clean_up(app_name)
        return updated

    async def get_policy_state(self, app_name: str, uid: str | None = None) -> dict[str, Any]:
        """What the app's policy has learned, per arm; with ``uid``, what that user sees
        (the app's state plus what the user's own feedback added)."""
        app, links = await self._store.get_app(app_name)
        params = params_of(app)
        state = await self._read_state(app_name, app.policy_epoch, uid)
        return {
            "app": app_name,
            "policy": app.policy,
            "params": params.to_json(),
            "uid": uid,
            **state.to_json(params, links),
        }

    async def reset_policy_state(self, app_name: str, uid: str | None = None) -> None:
        """Forget what the app's policy learned, or with ``uid`` only that user's part.

        The app's own record keeps what a user's feedback taught it: resetting a user
        makes them see the app's state again. Nothing to forget writes nothing.
        """
        keys = self._store.keys

        async def step(pipe: Pipeline) -> str | None:
            app = await read_app(pipe, keys, app_name)
            if app is None:
                raise app_missing(app_name)
            state = keys.policy_state(app_name, app.policy_epoch, uid)
            if not await pipe.exists(state):
                return None
            begin(pipe)
            if uid is None:  # a new epoch: one write, however many users there are
                epoch = new_epoch()
                pipe.hset(keys.app(app_name), "policy_epoch", epoch)
                where: dict[str, str] = {}
            else:
                epoch = app.policy_epoch
                pipe.delete(state)
                where = {"uid": uid}
            publish(pipe, keys, ChangeKind.APP, ChangeOp.RESET_POLICY, app=app_name, **where)
            return epoch

        epoch = await self._store.transact([keys.app(app_name)], step)
        if epoch is not None and uid is None:
            self._store.clean_up(app_name)

    async def _read_state(self, app: str, epoch: str, uid: str | None) -> PolicyState:
        """The app's learned state, or what ``uid`` sees: the app's record plus the
        user's own part, both read in one round trip."""
        keys = self._store.keys
        async with self._store.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.policy_state(app, epoch))
            if uid is not None:
                pipe.hgetall(keys.policy_state(app, epoch, uid))
            parts = [PolicyState.from_hash(text_hash(h)) for h in await pipe.execute()]
        return parts[0] if uid is None else parts[0].plus(parts[1])
