"""Review findings on pipelines, as unit tests: a stored pipeline that cannot be read."""

from __future__ import annotations

import json

import pytest

from management_frontend.state.records import App, Model, ModelVersion, Snapshot, Stage
from model_container.protocol import InputType
from query_frontend.routing.table import build_route

DOUBLES = InputType.DOUBLES


def stored(stages: str) -> dict[str, str]:
    app = App(name="a", input_type=DOUBLES, default_output=-1, slo_micros=50_000)
    return {**app.to_hash(), "stages": stages}


@pytest.mark.parametrize(
    "stages", ["{not json", "null", "{}", "[1]", '[{"arms": "abc"}]', '[{"arms": [1]}]', '"x"']
)
def test_an_unreadable_stages_field_reads_as_a_stage_that_cannot_answer(stages: str) -> None:
    # It must neither make the whole snapshot unreadable (routing of every app frozen)
    # nor read as a one-stage app (stage 1's outputs served as the app's answers).
    app = App.from_hash(stored(stages))
    assert len(app.stages) == 1
    model = Model("m", DOUBLES, "1", ["1"])
    snap = Snapshot(
        apps={"a": app},
        links={"a": ["m"]},
        models={"m": model},
        versions={("m", "1"): ModelVersion(name="m", version="1", input_type=DOUBLES)},
    )
    route = build_route(snap, app)
    assert len(route.stages) == 2
    second = route.stages[1]
    assert second.model_key is None
    assert "stage 2" in second.no_model_reason
    assert "cannot be read" in second.no_model_reason


def test_a_readable_stages_field_reads_as_before() -> None:
    later = Stage(["b", "c:2"], "exp3", {"eta": 0.2}, "e2")
    text = json.dumps([later.to_json()])
    app = App.from_hash(stored(text))
    assert app.stages == (later,)
    assert App.from_hash(stored("[]")).stages == ()
