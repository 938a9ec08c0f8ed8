"""Whether a pipeline's stages still take what the stage before each answers, when a
write other than setting the pipeline changes what a stage answers with.

``pipelines.py`` checks a whole pipeline when it is set. Two other writes change the
version an arm of a stage answers with, and so what it declares it answers
(``ModelVersion.output_type``): linking a model to a pipeline app (a new arm of stage 1)
and making another version of a model current (every plain arm of it, in every app).
Both run these checks inside their own WATCHed transaction (each reads through the
pipeline, watching what it reads), so a pipeline never holds, at the moment of a write,
an arm whose declared outputs the next stage cannot take. Outputs left undeclared are
checked by the query frontend, on each one.
"""

from __future__ import annotations

from redis.asyncio.client import Pipeline

from management_frontend.errors import Conflict, Invalid
from management_frontend.state.keys import Keys, parse_arm
from management_frontend.state.pipelines import accepts, stage_name
from management_frontend.state.records import App, Model, ModelVersion, Stage, pipeline_of
from management_frontend.storage.reads import (
    read_app,
    read_links,
    read_members,
    read_model,
    read_version,
)
from model_container.protocol import InputType


async def stage_input_type(pipe: Pipeline, keys: Keys, stage: Stage) -> InputType | None:
    """The input type a stage takes (its arms share one); watched from here on."""
    if not stage.arms:
        return None
    name = parse_arm(stage.arms[0])[0]
    await pipe.watch(keys.model(name))
    model = await read_model(pipe, keys, name)
    return None if model is None else model.input_type


async def check_new_first_arm(
    pipe: Pipeline, keys: Keys, app: App, arms: list[str], model: Model, version: str | None
) -> None:
    """A new arm of a pipeline's first stage (``arms``: the stage with it) must declare,
    if it declares anything, an output type the second stage takes: a 400 as ``PUT
    .../pipeline`` gives."""
    resolved = version or model.current_version
    mv = await read_version(pipe, keys, model.name, resolved) if resolved else None
    if mv is None or not app.stages:
        return
    then = app.stages[0]
    taker = await stage_input_type(pipe, keys, then)
    if taker is None or accepts(taker, mv.output_type):
        return
    raise Invalid(
        f"{stage_name(1, then.arms)} takes input type {taker.value!r} but "
        f"{stage_name(0, sorted(arms))} would answer with '{model.name}:{resolved}', which "
        f"declares output type {mv.output_type!r}: link a model whose declared output type "
        f"stage 2 takes, or set the app's pipeline anew (PUT /admin/apps/{app.name}/pipeline)"
    )


async def check_new_current(pipe: Pipeline, keys: Keys, mv: ModelVersion) -> None:
    """``mv`` about to become its model's current version: every app stage that follows
    the model (a plain arm) and is followed by another stage must have a next stage that
    takes what ``mv`` declares it answers; else a 409 naming the app and both stages.
    Every app's record and links are watched from here on (only when ``mv`` declares an
    output type that some stage could refuse)."""
    if not mv.output_type or mv.output_type == InputType.JSON.value:
        return
    apps = await read_members(pipe, keys.apps)
    if not apps:
        return
    await pipe.watch(*[k for a in apps for k in (keys.app(a), keys.links(a))])
    for name in apps:
        app = await read_app(pipe, keys, name)
        if app is None or not app.stages:
            continue
        stages = pipeline_of(app, await read_links(pipe, keys, name))
        for i, stage in enumerate(stages[:-1]):
            if mv.name not in stage.arms:
                continue
            then = stages[i + 1]
            taker = await stage_input_type(pipe, keys, then)
            if taker is None or accepts(taker, mv.output_type):
                continue
            raise Conflict(
                f"version {mv.version!r} of model {mv.name!r} declares output type "
                f"{mv.output_type!r}, which {stage_name(i + 1, then.arms)} of app {name!r} "
                f"cannot take (it takes {taker.value!r}) from {stage_name(i, stage.arms)}: "
                "keep a version current whose outputs that stage takes, pin the version "
                f"that stage should use, or set the app's pipeline anew (PUT "
                f"/admin/apps/{name}/pipeline)"
            )
