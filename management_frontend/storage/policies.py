"""Selection policies in the control plane: setting an app's policy, reporting and
forgetting what it learned.

The query frontends learn (they write the state, see ``state.policy``); these writes
only change the app record — a stage's policy, settings and ``policy_epoch`` (stage 1's
in the app's own fields, a later stage's in its ``stages`` field) — each in one
transaction with its change-feed entry, and leave deleting old state to the store's
background clean-up. Each stage of a pipeline has its own policy and learned state;
``stage`` numbers them from 1, and stage 1 is what an app's policy always was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from redis.asyncio.client import Pipeline

from management_frontend.errors import Conflict, Invalid
from management_frontend.state.errors import InvalidValue
from management_frontend.state.feed import ChangeKind, ChangeOp
from management_frontend.state.pipelines import stage_name
from management_frontend.state.policy import SINGLE, SPLIT, PolicyParams, PolicyState, new_epoch
from management_frontend.state.records import App, Stage, pipeline_of, text_hash
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
        self,
        app_name: str,
        policy: str,
        params: Mapping[str, Any],
        *,
        stage: int = 1,
        reset_state: bool = False,
    ) -> tuple[App, list[str]]:
        """Give one stage of an app's pipeline (stage 1: the app's own, on its links) a
        selection policy and its settings; returns the app and its links.

        A new policy starts from nothing, as does any policy with ``reset_state``: the
        stage gets a new ``policy_epoch`` in the same transaction, and what the old one
        learned is deleted in the background. Changing only the settings keeps it. The
        other stages are left as they are. A call that changes nothing writes nothing.
        """
        keys = self._store.keys
        parsed = PolicyParams.parse(policy, params)
        stored_params = parsed.to_json()

        async def step(pipe: Pipeline) -> tuple[App, list[str], bool]:
            """The app as it is now, its links, and whether the stage got a new epoch."""
            app = await read_app(pipe, keys, app_name)
            if app is None:
                raise app_missing(app_name)
            links = await read_links(pipe, keys, app_name)
            index = stage_index(app, stage)
            current = pipeline_of(app, links)[index]
            arms = current.arms
            if index == 0:
                _check_first_stage(app_name, policy, parsed, links)
            else:
                _check_later_stage(app_name, index, arms, policy, parsed)
            changed = current.policy != policy or current.policy_params != stored_params
            reset = reset_state or current.policy != policy
            if not changed and not reset:
                return app, links, False
            epoch = new_epoch() if reset else current.policy_epoch
            new = replace(current, policy=policy, policy_params=stored_params, policy_epoch=epoch)
            updated = _with_stage(app, index, new)
            begin(pipe)
            record = updated.to_hash()
            names = ("policy", "policy_params", "policy_epoch") if index == 0 else ("stages",)
            pipe.hset(keys.app(app_name), mapping=as_fields({k: record[k] for k in names}))
            publish(pipe, keys, ChangeKind.APP, ChangeOp.SET_POLICY, app=app_name)
            return updated, links, reset

        watch = [keys.app(app_name), keys.links(app_name)]
        updated, links, renewed = await self._store.transact(watch, step)
        if renewed:
            self._store.clean_up(app_name)
        return updated, links

    async def get_policy_state(
        self, app_name: str, uid: str | None = None, *, stage: int = 1
    ) -> dict[str, Any]:
        """What one stage's policy has learned, per arm; with ``uid``, what that user
        sees (the stage's state plus what the user's own feedback added)."""
        app, links = await self._store.get_app(app_name)
        index = stage_index(app, stage)
        current = pipeline_of(app, links)[index]
        params = params_of(app) if index == 0 else _stage_params(app, index, current)
        state = await self._read_state(app_name, current.policy_epoch, uid)
        return {
            "app": app_name,
            "stage": stage,
            "policy": current.policy,
            "params": params.to_json(),
            "uid": uid,
            **state.to_json(params, current.arms),
        }

    async def reset_policy_state(
        self, app_name: str, uid: str | None = None, *, stage: int = 1
    ) -> None:
        """Forget what one stage's policy learned, or with ``uid`` only that user's part.

        The stage's own record keeps what a user's feedback taught it: resetting a user
        makes them see the stage's state again. Nothing to forget writes nothing.
        """
        keys = self._store.keys

        async def step(pipe: Pipeline) -> str | None:
            app = await read_app(pipe, keys, app_name)
            if app is None:
                raise app_missing(app_name)
            index = stage_index(app, stage)
            current = pipeline_of(app, [])[index]
            state = keys.policy_state(app_name, current.policy_epoch, uid)
            if not await pipe.exists(state):
                return None
            begin(pipe)
            if uid is None:  # a new epoch: one write, however many users there are
                epoch = new_epoch()
                if index == 0:
                    pipe.hset(keys.app(app_name), "policy_epoch", epoch)
                else:
                    renewed = _with_stage(app, index, replace(current, policy_epoch=epoch))
                    pipe.hset(keys.app(app_name), "stages", renewed.to_hash()["stages"])
                where: dict[str, str] = {}
            else:
                epoch = current.policy_epoch
                pipe.delete(state)
                where = {"uid": uid}
            publish(pipe, keys, ChangeKind.APP, ChangeOp.RESET_POLICY, app=app_name, **where)
            return epoch

        epoch = await self._store.transact([keys.app(app_name)], step)
        if epoch is not None and uid is None:
            self._store.clean_up(app_name)

    async def _read_state(self, app: str, epoch: str, uid: str | None) -> PolicyState:
        """A stage's learned state, or what ``uid`` sees: the stage's record plus the
        user's own part, both read in one round trip."""
        keys = self._store.keys
        async with self._store.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.policy_state(app, epoch))
            if uid is not None:
                pipe.hgetall(keys.policy_state(app, epoch, uid))
            parts = [PolicyState.from_hash(text_hash(h)) for h in await pipe.execute()]
        return parts[0] if uid is None else parts[0].plus(parts[1])


def stage_index(app: App, stage: int) -> int:
    """The 0-based index of stage ``stage`` (from 1) of the app's pipeline; a stage it
    does not have is a 400 saying how many it has."""
    count = 1 + len(app.stages)
    if not 1 <= stage <= count:
        have = "1 stage" if count == 1 else f"{count} stages"
        raise Invalid(
            f"app {app.name!r} has no stage {stage}: its pipeline has {have}, numbered from "
            f"1 (set more with PUT /admin/apps/{app.name}/pipeline)"
        )
    return stage - 1


def _with_stage(app: App, index: int, stage: Stage) -> App:
    """``app`` with the stage at 0-based ``index`` replaced (stage 0 is its own fields)."""
    if index == 0:
        return replace(
            app,
            policy=stage.policy,
            policy_params=dict(stage.policy_params),
            policy_epoch=stage.policy_epoch,
        )
    later = list(app.stages)
    later[index - 1] = stage
    return replace(app, stages=tuple(later))


def _stage_params(app: App, index: int, stage: Stage) -> PolicyParams:
    """A later stage's stored policy settings; one this Schooner cannot read is a 409."""
    try:
        return PolicyParams.parse(stage.policy, stage.policy_params)
    except InvalidValue as exc:
        raise Conflict(
            f"{stage_name(index, stage.arms)} of app {app.name!r} has a selection policy this "
            f"management frontend cannot read ({exc.message}): set one with PUT "
            f"/admin/apps/{app.name}/policy"
        ) from exc


def _check_first_stage(app_name: str, policy: str, parsed: PolicyParams, links: list[str]) -> None:
    """The app's own policy fits its links (as it always had to)."""
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


def _check_later_stage(
    app_name: str, index: int, arms: list[str], policy: str, parsed: PolicyParams
) -> None:
    """A later stage's policy fits its arms."""
    where = stage_name(index, arms)
    if policy == SINGLE and len(arms) > 1:
        raise Conflict(
            f"{where} of app {app_name!r} has {len(arms)} arms and the {SINGLE!r} policy "
            "serves one: set the pipeline with one arm in that stage first (PUT "
            f"/admin/apps/{app_name}/pipeline)"
        )
    if policy == SPLIT and parsed.weights:
        unknown = [arm for arm in parsed.weights if arm not in arms]
        if unknown:
            raise Invalid(
                f"the split weights name {listed(unknown)}, which is not an arm of {where}: "
                "weigh only the stage's own arms"
            )
