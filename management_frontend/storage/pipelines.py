"""Setting an app's whole pipeline: the stages its queries go through, each a set of
arms under its own selection policy (``state.pipelines``, ``records.Stage``).

Stage 1 is what an app is today, its links set and the app hash's policy fields; the
stages after it are the app hash's ``stages`` field. ``set_pipeline`` writes all of
them in one WATCHed transaction with one change-feed entry (APP ``set_pipeline``), after
checking every rule a pipeline keeps, so a refused pipeline stores nothing:

    check_stages   what the request alone decides: how many stages, arms, policies,
                   their settings (pure)
    plan_stages    what the stored state decides: models and pinned versions exist,
                   input types agree, each stage takes what the one before it declares
                   it answers, and which stages keep what their policy learned (pure)

A stage keeps its ``policy_epoch`` (what its policy learned) when the stage at the same
position had the same policy; otherwise, or with ``reset_state``, it gets a new one and
the old state is deleted in the background (``cleanup.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from redis.asyncio.client import Pipeline

from management_frontend.errors import Conflict, Invalid
from management_frontend.state import rules
from management_frontend.state.errors import InvalidValue
from management_frontend.state.feed import ChangeKind, ChangeOp
from management_frontend.state.keys import parse_arm
from management_frontend.state.pipelines import MAX_STAGES, accepts, stage_name
from management_frontend.state.policy import SINGLE, SPLIT, PolicyParams, new_epoch
from management_frontend.state.records import App, Model, ModelVersion, Stage, pipeline_of
from management_frontend.storage.reads import read_app, read_links, read_model, read_version
from management_frontend.storage.store import Store, app_missing, as_fields, begin, listed, publish
from model_container.protocol import InputType


def _stage_error(index: int, arms: Sequence[str], message: str) -> Invalid:
    return Invalid(f"{stage_name(index, arms)}: {message}")


def check_stage(index: int, stage: Stage) -> Stage:
    """One requested stage with its arms sorted and its settings filled in; ``Invalid``
    names the stage (from 1) and says what to fix."""
    arms = list(stage.arms)
    if not arms:
        raise Invalid(
            f"stage {index + 1} has no arms: give it at least one model, as 'model' (it "
            "follows the current version) or 'model:version' (pinned)"
        )
    try:
        for arm in arms:
            rules.check_arm(arm)
        rules.policy(stage.policy)
        params = PolicyParams.parse(stage.policy, stage.policy_params)
    except InvalidValue as exc:
        raise _stage_error(index, arms, exc.message) from exc
    twice = sorted({arm for arm in arms if arms.count(arm) > 1})
    if twice:
        raise _stage_error(
            index, arms, f"it names {listed(twice)} more than once: name each arm once"
        )
    if stage.policy == SINGLE and len(arms) > 1:
        raise _stage_error(
            index,
            arms,
            f"it has {len(arms)} arms and the {SINGLE!r} policy serves one: keep one arm, or "
            "give the stage a policy that uses several (split, exp3 or exp4)",
        )
    if stage.policy == SPLIT and params.weights:
        unknown = [arm for arm in params.weights if arm not in arms]
        if unknown:
            raise _stage_error(
                index,
                arms,
                f"the split weights name {listed(unknown)}, which is not an arm of this stage "
                f"(its arms: {listed(sorted(arms))}): weigh only the stage's own arms",
            )
    return Stage(sorted(arms), stage.policy, params.to_json())


def check_stages(stages: Sequence[Stage]) -> list[Stage]:
    """The requested pipeline, each stage checked (``check_stage``) and normalised."""
    if not stages:
        raise Invalid(
            "a pipeline needs at least one stage: send stages as a list of "
            '{"arms": [...], "policy": ..., "policy_params": {...}}, the first stage first'
        )
    if len(stages) > MAX_STAGES:
        raise Invalid(
            f"a pipeline has at most {MAX_STAGES} stages, got {len(stages)}: chain fewer models"
        )
    return [check_stage(i, stage) for i, stage in enumerate(stages)]


def resolved_version(model: Model, arm: str) -> str | None:
    """The version an arm answers with: its pinned one, else the model's current one."""
    return parse_arm(arm)[1] or model.current_version


def _takers(declared: str) -> str:
    """The input types a stage may take to accept outputs declared ``declared``."""
    return ", ".join(repr(t.value) for t in InputType if accepts(t, declared))


def _givers(input_type: InputType) -> str:
    """The declared output types a stage of ``input_type`` takes."""
    return ", ".join(repr(t.value) for t in InputType if accepts(input_type, t.value))


def _stage_input_type(app: App, index: int, stage: Stage, models: Mapping[str, Model]) -> InputType:
    """The input type every arm of the stage takes (its models exist, pinned versions
    too); stage 1's must be the app's (409, as linking such a model is today)."""
    found: dict[str, InputType] = {}
    for arm in stage.arms:
        name, version = parse_arm(arm)
        model = models.get(name)
        if model is None:
            raise _stage_error(
                index, stage.arms, f"model {name!r} does not exist: deploy a version of it first"
            )
        if version is not None and version not in model.versions:
            raise _stage_error(
                index,
                stage.arms,
                f"model {name!r} has no version {version!r} (its versions: "
                f"{listed(model.versions)})",
            )
        found[arm] = model.input_type
    kinds = set(found.values())
    if len(kinds) > 1:
        each = ", ".join(f"{arm!r} takes {t.value!r}" for arm, t in found.items())
        raise _stage_error(
            index,
            stage.arms,
            f"its arms take different input types ({each}): the arms of one stage take "
            "the same input type",
        )
    (kind,) = kinds
    if index == 0 and kind != app.input_type:
        raise Conflict(
            f"{stage_name(index, stage.arms)} takes input type {kind.value!r} but app "
            f"{app.name!r} takes {app.input_type.value!r}: the first stage takes the app's "
            "input, so give it models whose input type matches the app's"
        )
    return kind


def _check_feeds(
    index: int,
    stage: Stage,
    input_type: InputType,
    before: Stage,
    models: Mapping[str, Model],
    versions: Mapping[tuple[str, str], ModelVersion],
) -> None:
    """Stage ``index`` (>= 1) takes what every arm of the stage before it declares it
    answers (undeclared output types are checked at run time, on each output)."""
    for arm in before.arms:
        name = parse_arm(arm)[0]
        version = resolved_version(models[name], arm)
        mv = versions.get((name, version)) if version else None
        if mv is None or accepts(input_type, mv.output_type):
            continue
        raise Invalid(
            f"{stage_name(index, stage.arms)} takes input type {input_type.value!r} but "
            f"{stage_name(index - 1, before.arms)} answers with '{name}:{version}', which "
            f"declares output type {mv.output_type!r}: give stage {index + 1} models taking "
            f"{_takers(mv.output_type)}, or give stage {index} a model whose declared output "
            f"type stage {index + 1} takes ({_givers(input_type)})"
        )


def plan_stages(
    app: App,
    links: Sequence[str],
    wanted: Sequence[Stage],
    models: Mapping[str, Model],
    versions: Mapping[tuple[str, str], ModelVersion],
    *,
    reset_state: bool = False,
) -> list[Stage]:
    """The stages to store for ``app`` (now linking ``links``), each with its epoch.

    ``wanted`` is ``check_stages``'s; ``models`` holds every model it names, ``versions``
    the version each arm resolves to (those missing count as undeclared). Raises
    ``Invalid`` (or ``Conflict`` for stage 1 taking another input type than the app)."""
    types = [_stage_input_type(app, i, stage, models) for i, stage in enumerate(wanted)]
    for i in range(1, len(wanted)):
        _check_feeds(i, wanted[i], types[i], wanted[i - 1], models, versions)
    old = pipeline_of(app, links)
    planned: list[Stage] = []
    for i, stage in enumerate(wanted):
        keep = (
            not reset_state
            and i < len(old)
            and old[i].policy == stage.policy
            and bool(old[i].policy_epoch)
        )
        planned.append(replace(stage, policy_epoch=old[i].policy_epoch if keep else new_epoch()))
    return planned


def _with_first(app: App, stages: Sequence[Stage]) -> App:
    """``app`` whose pipeline is ``stages`` (the first in its own policy fields)."""
    first = stages[0]
    return replace(
        app,
        policy=first.policy,
        policy_params=dict(first.policy_params),
        policy_epoch=first.policy_epoch,
        stages=tuple(stages[1:]),
    )


class PipelineStore:
    """An app's pipeline, on top of a ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def set_pipeline(
        self, app_name: str, stages: Sequence[Stage], *, reset_state: bool = False
    ) -> tuple[App, list[str]]:
        """Make ``stages`` the app's pipeline (stage 1 first); returns the app and its
        links (stage 1's arms). A pipeline equal to the stored one writes nothing."""
        keys = self._store.keys
        wanted = check_stages(stages)
        names = sorted({parse_arm(arm)[0] for stage in wanted for arm in stage.arms})

        async def step(pipe: Pipeline) -> tuple[App, list[str], set[str]]:
            """The app as it is now, its links, and the epochs it stopped using."""
            app = await read_app(pipe, keys, app_name)
            if app is None:
                raise app_missing(app_name)
            links = await read_links(pipe, keys, app_name)
            models: dict[str, Model] = {}
            for name in names:
                model = await read_model(pipe, keys, name)
                if model is not None:
                    models[name] = model
            versions: dict[tuple[str, str], ModelVersion] = {}
            for stage in wanted[:-1]:  # the last stage's outputs are the answer
                for arm in stage.arms:
                    name = parse_arm(arm)[0]
                    version = resolved_version(models[name], arm) if name in models else None
                    if version and (name, version) not in versions:
                        mv = await read_version(pipe, keys, name, version)
                        if mv is not None:
                            versions[name, version] = mv
            planned = plan_stages(app, links, wanted, models, versions, reset_state=reset_state)
            old = pipeline_of(app, links)
            if planned == old:
                return app, links, set()
            updated = _with_first(app, planned)
            record = updated.to_hash()
            fields = {k: record[k] for k in ("policy", "policy_params", "policy_epoch", "stages")}
            arms = planned[0].arms
            begin(pipe)
            pipe.hset(keys.app(app_name), mapping=as_fields(fields))
            if arms != links:
                pipe.delete(keys.links(app_name))
                pipe.sadd(keys.links(app_name), *arms)
            publish(pipe, keys, ChangeKind.APP, ChangeOp.SET_PIPELINE, app=app_name)
            dropped = {s.policy_epoch for s in old} - {s.policy_epoch for s in planned}
            return updated, list(arms), dropped

        watch = [keys.app(app_name), keys.links(app_name)]
        for name in names:
            watch += [keys.model(name), keys.versions(name)]
        app, links, dropped = await self._store.transact(watch, step)
        if dropped:
            self._store.clean_up(app_name)
        return app, links
