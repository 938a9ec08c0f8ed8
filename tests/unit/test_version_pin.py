"""A request's version pin: read from the body (``inputs``), resolved against the app's
model (``routing.table.pin``)."""

from __future__ import annotations

import pytest

from management_frontend.state.policy import PolicyParams
from management_frontend.state.records import App, Model, ModelVersion, Snapshot
from model_container.protocol import InputType
from query_frontend.http.inputs import InputError, parse_request
from query_frontend.routing.table import PinError, build_route, pin

DOUBLES = InputType.DOUBLES


def snapshot(links: dict[str, list[str]]) -> Snapshot:
    apps = {
        name: App(name=name, input_type=DOUBLES, default_output=-1, slo_micros=1000)
        for name in links
    }
    apps["split"] = App(
        name="split", input_type=DOUBLES, default_output=-1, slo_micros=1000, policy="split"
    )
    models = {
        "m": Model("m", DOUBLES, "2", ["1", "2", "3"]),
        "n": Model("n", DOUBLES, "1", ["1"]),
    }
    versions = {
        (name, v): ModelVersion(name=name, version=v, input_type=DOUBLES)
        for name, model in models.items()
        for v in model.versions
    }
    return Snapshot(apps=apps, links={**links}, models=models, versions=versions)


def test_the_body_says_a_pin_as_a_string_or_an_int() -> None:
    assert parse_request(b'{"input": [1.0]}', DOUBLES)[2:] == (None, None)
    assert parse_request(b'{"input": [1.0], "version": "2"}', DOUBLES)[3] == "2"
    assert parse_request(b'{"input": [1.0], "version": 2}', DOUBLES)[3] == "2"
    assert parse_request(b'{"input": [1.0], "uid": "u", "version": null}', DOUBLES)[2:] == (
        "u",
        None,
    )
    for bad in (b"{}", b"true", b"[1]", b"1.5", b'""'):
        with pytest.raises(InputError, match='"version" must be a version'):
            parse_request(b'{"input": [1.0], "version": %b}' % bad, DOUBLES)


def test_a_pin_routes_to_that_version_of_the_apps_one_model() -> None:
    snap = snapshot({"one": ["m"], "split": ["m:1", "m:2"]})
    route = build_route(snap, snap.apps["one"])
    assert route.model_key == ("m", "2")
    pinned = pin(snap, route, "1")
    assert pinned.model_key == ("m", "1") and pinned.models_json == b'["m:1"]'
    assert pin(snap, route, "2") is route  # the current version: nothing to change
    # Several arms of one model: the pin wins over the policy, any registered version.
    split = build_route(snap, snap.apps["split"])
    assert split.model_key is None
    three = pin(snap, split, "3")
    assert three.model_key == ("m", "3") and three.params == PolicyParams()


def test_a_pin_the_app_cannot_honour_says_why() -> None:
    snap = snapshot({"one": ["m"], "none": [], "two": ["m", "n"]})
    with pytest.raises(PinError) as err:
        pin(snap, build_route(snap, snap.apps["one"]), "9")
    assert str(err.value) == "app 'one': model 'm' has no version '9' (its versions: 1, 2, 3)"
    with pytest.raises(PinError, match="app 'none' has no model linked"):
        pin(snap, build_route(snap, snap.apps["none"]), "1")
    with pytest.raises(PinError, match=r"links several models \(m, n\): a version pin needs"):
        pin(snap, build_route(snap, snap.apps["two"]), "1")
