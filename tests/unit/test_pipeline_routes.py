"""A pipeline app's route (``routing.table``): each stage routed as an app of its own;
what an output becomes as the next stage's input (``http.inputs.from_output``); and the
learned-state copies of a pipeline's stages kept side by side (``PolicyStates.retain``)."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
import redis.asyncio as aioredis

from management_frontend.state.keys import Keys
from management_frontend.state.records import App, Model, ModelVersion, Snapshot, Stage
from model_container.protocol import InputType
from query_frontend.http.inputs import InputError, from_output
from query_frontend.routing.table import PinError, build_route, pin, tightest_slos
from query_frontend.selection.learned import PolicyStates

STRINGS, DOUBLES = InputType.STRINGS, InputType.DOUBLES


def snapshot(app: App, links: list[str]) -> Snapshot:
    models = {
        "feat": Model("feat", STRINGS, "1", ["1"]),
        "clf": Model("clf", DOUBLES, "2", ["1", "2"]),
        "other": Model("other", DOUBLES, "1", ["1"]),
    }
    versions = {
        (name, v): ModelVersion(name=name, version=v, input_type=m.input_type)
        for name, m in models.items()
        for v in m.versions
    }
    return Snapshot(apps={app.name: app}, links={app.name: links}, models=models, versions=versions)


def app(*stages: Stage, slo: int = 50_000) -> App:
    return App(name="reviews", input_type=STRINGS, default_output=-1, slo_micros=slo, stages=stages)


def test_each_stage_is_routed_with_its_own_input_type_policy_and_epoch() -> None:
    later = Stage(["clf:1", "other"], "split", {"weights": {"clf:1": 3, "other": 1}}, "e2")
    route = build_route(snapshot(app(later), ["feat"]), app(later))
    assert route.model_key is None and not route.no_model_reason
    first, second = route.stages
    assert first.model_key == ("feat", "1") and first.app.input_type is STRINGS
    assert first.name == "stage 1 ('feat')"
    assert second.model_key is None and second.policy == "split"
    assert second.app.input_type is DOUBLES and second.app.policy_epoch == "e2"
    assert [a.label for a in second.arms] == ["clf:1", "other:1"]
    assert second.name == "stage 2 ('clf:1', 'other')"
    # The app's own fields stay those of its first stage (SLO, keys, status).
    assert route.app.input_type is STRINGS and route.arms == first.arms


def test_a_stage_whose_model_is_gone_says_so_and_a_one_stage_app_is_unchanged() -> None:
    gone = app(Stage(["missing"]))
    stage = build_route(snapshot(gone, ["feat"]), gone).stages[1]
    assert stage.model_key is None and "missing" in stage.no_model_reason
    plain = App(name="reviews", input_type=STRINGS, default_output=-1, slo_micros=1)
    route = build_route(snapshot(plain, ["feat"]), plain)
    assert route.stages == () and route.model_key == ("feat", "1")


def test_a_pipeline_takes_no_version_pin_and_its_models_get_its_slo() -> None:
    piped = app(Stage(["clf"]), slo=30_000)
    snap = snapshot(piped, ["feat"])
    route = build_route(snap, piped)
    with pytest.raises(PinError, match="pipeline"):
        pin(snap, route, "1")
    assert tightest_slos([route]) == {("feat", "1"): 0.03, ("clf", "2"): 0.03}


def test_an_output_becomes_the_input_a_client_could_have_sent() -> None:
    item = from_output(b"[1.5, 2, 3]", DOUBLES)
    assert isinstance(item, np.ndarray) and item.dtype == np.float64
    assert item.tolist() == [1.5, 2.0, 3.0]
    assert from_output(b'"hello"', STRINGS) == b"hello"
    assert from_output(b'{"a": [1]}', InputType.JSON) == b'{"a": [1]}'
    with pytest.raises(InputError, match="list of numbers"):
        from_output(b'"text"', DOUBLES)
    with pytest.raises(InputError, match="ints"):
        from_output(b"[1.5]", InputType.INTS)
    with pytest.raises(InputError, match="string"):
        from_output(b"[1.0]", STRINGS)


async def test_the_learned_state_of_every_stage_is_kept_side_by_side() -> None:
    r = aioredis.Redis(port=1)  # never reached: loads fail in the background, quietly
    states = PolicyStates(r, Keys())
    first = states.app_state("reviews", "e1")
    second = states.app_state("reviews", "e2")
    assert states.app_state("reviews", "e1") is first  # not dropped by the other stage's
    states.retain([("reviews", "e2")])
    assert ("reviews", "e1") not in states.apps
    assert states.app_state("reviews", "e2") is second
    await states.close()
    await r.aclose()


async def test_a_stage_the_earlier_stages_left_no_time_says_so() -> None:
    """Stage 1 answers, but the deadline has passed: stage 2 is not asked, and the
    default blames neither stage alone."""
    from typing import cast

    from query_frontend.batching.evaluate import Evaluator
    from query_frontend.composition import Pipeline
    from query_frontend.queries import Expired

    class Answers:
        """Answers every input at once, as a cache hit would: ``[1.0]``."""

        def __init__(self) -> None:
            self.asked: list[str] = []

        def submit(self, key: tuple[str, str], *args: object, **kw: object) -> list[bytes]:
            self.asked.append(key[0])
            return [b"[1.0]"]

    piped = app(Stage(["clf"]))
    route = build_route(snapshot(piped, ["feat"]), piped)
    answers = Answers()
    pipeline = Pipeline(
        cast(Evaluator, answers), random.Random(0), cast(PolicyStates, None), from_output
    )
    past = asyncio.get_running_loop().time() - 1.0
    (answer,) = await pipeline.run(route.stages, [b"text"], [0], past, None)
    assert answers.asked == ["feat"]
    assert isinstance(answer.outcome, Expired)
    assert answer.outcome.reason == "stage 2 ('clf'): no time was left after stage 1 ('feat')"


async def test_a_stage_that_refuses_the_inputs_is_named_and_counted() -> None:
    """Stage 2's queue is full: the request is refused (the caller's 503), the message
    names stage 2, and stage 2 counts the inputs as its errors."""
    from typing import cast

    from query_frontend.batching.dispatch import OverloadedError
    from query_frontend.batching.evaluate import Evaluator
    from query_frontend.composition import Pipeline, StageStats

    class FullAtClf:
        def submit(self, key: tuple[str, str], *args: object, **kw: object) -> list[bytes]:
            if key[0] == "clf":
                raise OverloadedError("clf:2 has 1000 queries waiting")
            return [b"[1.0]", b"[2.0]"]

    piped = app(Stage(["clf"]))
    route = build_route(snapshot(piped, ["feat"]), piped)
    loop = asyncio.get_running_loop()
    pipeline = Pipeline(
        cast(Evaluator, FullAtClf()), random.Random(0), cast(PolicyStates, None), from_output
    )
    stats: list[StageStats] = []
    with pytest.raises(OverloadedError) as refused:
        await pipeline.run(route.stages, [b"a", b"b"], [0, 1], loop.time() + 1, None, None, stats)
    assert str(refused.value) == "stage 2 ('clf'): clf:2 has 1000 queries waiting"
    assert [(s.errors, s.defaults) for s in stats] == [(0, 0), (2, 0)]
