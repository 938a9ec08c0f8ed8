"""Pipelines on the admin client's side: the shapes a stage may take, the checks made
before any request, what is sent, the wait for the query frontend, and the CLI's stage
syntax. Against the fake management API and query frontend of
``test_admin_connection`` (a real cluster: ``tests/integration/test_pipelines_admin.py``).
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_admin_connection import (
    DEPLOYS,
    FakeContainerManager,
    FakeSchooner,
)

from admin import ConflictError, Connection, InvalidRequestError, Stage
from admin._pipelines import MAX_STAGES, check_stage_number, describe, stages_json
from admin.cli import _cluster, _managers, main
from admin.cli._pipeline import read_stages_file, stage_spec
from admin.deployers.python import deploy_python_closure

# --------------------------------------------------------------------------- shapes

SINGLE = {"policy": "single", "policy_params": {}}

SHAPES: list[tuple[object, dict[str, Any]]] = [
    ("feat", {"arms": ["feat"], **SINGLE}),
    ("clf:2", {"arms": ["clf:2"], **SINGLE}),
    (["feat"], {"arms": ["feat"], **SINGLE}),
    (("feat:1",), {"arms": ["feat:1"], **SINGLE}),
    ({"arms": ["a"]}, {"arms": ["a"], **SINGLE}),
    ({"arms": "a"}, {"arms": ["a"], **SINGLE}),
    (
        {"arms": ["a", "b"], "policy": "exp4", "policy_params": {"eta": 0.2}},
        {"arms": ["a", "b"], "policy": "exp4", "policy_params": {"eta": 0.2}},
    ),
    (
        {"arms": ["a", "b"], "policy": "exp4", "eta": 0.2},
        {"arms": ["a", "b"], "policy": "exp4", "policy_params": {"eta": 0.2}},
    ),
    (
        {"arms": ["a", "b"], "policy": "exp3", "policy_params": {"eta": 0.2}, "gamma": 0.1},
        {"arms": ["a", "b"], "policy": "exp3", "policy_params": {"eta": 0.2, "gamma": 0.1}},
    ),
    (
        Stage(["clf:1", "clf:2"], policy="split", weights={"clf:1": 90, "clf:2": 10}),
        {
            "arms": ["clf:1", "clf:2"],
            "policy": "split",
            "policy_params": {"weights": {"clf:1": 90, "clf:2": 10}},
        },
    ),
    (Stage("feat"), {"arms": ["feat"], **SINGLE}),
    (  # as get_app_pipeline shows it: the epoch is the cluster's to set
        {"arms": ["a"], "policy": "single", "policy_params": {"loss": "auto"}, "policy_epoch": "e"},
        {"arms": ["a"], "policy": "single", "policy_params": {"loss": "auto"}},
    ),
]


@pytest.mark.parametrize(("stage", "sent"), SHAPES, ids=[repr(s) for s, _ in SHAPES])
def test_every_shape_of_a_stage_becomes_the_apis_stage(stage: object, sent: dict[str, Any]) -> None:
    assert stages_json(["first", stage]) == [{"arms": ["first"], **SINGLE}, sent]


REFUSED: list[tuple[object, str]] = [
    ([], "a pipeline needs at least one stage: pass e.g. ['feat', 'clf']"),
    ("feat", "stages must be a list with one entry per stage"),
    ({"arms": ["a"]}, "stages must be a list with one entry per stage"),
    (Stage("a"), "stages must be a list with one entry per stage"),
    (["m"] * (MAX_STAGES + 1), f"a pipeline has at most {MAX_STAGES} stages, got 9"),
    (["feat", ["a", "b"]], "stage 2 ('a', 'b') has 2 arms but the policy 'single'"),
    (["feat", []], "stage 2 has no arms: name at least one model"),
    (["feat", {"policy": "exp4"}], "stage 2 has no 'arms'"),
    (["feat", 7], "stage 2 is 7: pass a model name"),
    (["feat", Stage(7)], "stage 2: an arm must be a string 'model' or 'model:version', got 7"),
    (["Feat"], "stage 1: model name 'Feat' is not a DNS-1123 label"),
    (["feat", "clf:"], "stage 2: model version '' is not valid"),
    (["feat", ["a", "a"]], "stage 2 names 'a' twice: name each arm once"),
    (["feat", {"arms": ["a", "b"], "policy": "greedy"}], "stage 2 ('a', 'b'): policy 'greedy'"),
    (["feat", {"arms": ["a", "b"], "policy": "weighted"}], "is no longer offered: use 'split'"),
    (
        ["feat", {"arms": ["a", "b"], "policy": "exp4", "gamma": 0.1}],
        "stage 2 ('a', 'b'): policy 'exp4' takes no parameter 'gamma'",
    ),
    (
        ["feat", {"arms": ["a", "b"], "policy": "exp4", "eta": 0.2, "policy_params": {"eta": 1}}],
        "stage 2 gives 'eta' both flat and in policy_params: give each once",
    ),
    (
        ["feat", {"arms": ["a", "b"], "policy": "exp4", "policy_params": [1]}],
        "stage 2 has policy_params [1]: pass a dict of settings",
    ),
    (
        ["feat", Stage(["a", "b"], policy="split", weights={"a": -1})],
        "stage 2 ('a', 'b'): the weight of 'a' must be >= 0",
    ),
]


@pytest.mark.parametrize(("stages", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_a_malformed_pipeline_is_refused_naming_the_stage_from_1(
    stages: object, message: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        stages_json(stages)
    assert message in str(caught.value)
    assert caught.value.status_code is None  # refused here: no request was made


def test_a_stage_prints_and_compares_as_it_was_made() -> None:
    stage = Stage(["a", "b"], policy="exp4", eta=0.2)
    assert repr(stage) == "Stage(['a', 'b'], policy='exp4', eta=0.2)"
    assert stage == Stage(("a", "b"), "exp4", eta=0.2) != Stage(["a", "b"], "exp4")


@pytest.mark.parametrize("stage", [0, -1, MAX_STAGES + 1, True, "2", 1.0, None])
def test_a_stage_number_counts_from_1(stage: object) -> None:
    with pytest.raises(InvalidRequestError, match=r"from 1 .* to 8"):
        check_stage_number(stage)
    assert check_stage_number(2) == 2


def test_a_pipeline_is_described_on_one_line_in_the_clis_syntax() -> None:
    stages = [
        {"arms": ["feat"], "policy": "single"},
        {"arms": ["a", "b:1"], "policy": "exp4"},
        {"arms": ["clf:2"]},
    ]
    assert describe(stages) == "feat -> a,b:1@exp4 -> clf:2"
    assert describe([{"arms": [], "policy": "single"}]) == "-"


# --------------------------------------------------------------------------- the CLI's syntax

SPECS: list[tuple[str, dict[str, Any]]] = [
    ("feat", {"arms": ["feat"]}),
    ("clf:2", {"arms": ["clf:2"]}),
    ("a,b@exp4", {"arms": ["a", "b"], "policy": "exp4", "policy_params": {}}),
    (
        "a, b@exp3:eta=0.2,gamma=0.1",
        {"arms": ["a", "b"], "policy": "exp3", "policy_params": {"eta": 0.2, "gamma": 0.1}},
    ),
    (
        "a,b@exp4:loss=squared",
        {"arms": ["a", "b"], "policy": "exp4", "policy_params": {"loss": "squared"}},
    ),
    (
        "clf:1,clf:2@split:clf:1=90,clf:2=10,loss=absolute",
        {
            "arms": ["clf:1", "clf:2"],
            "policy": "split",
            "policy_params": {"loss": "absolute", "weights": {"clf:1": 90, "clf:2": 10}},
        },
    ),
    ("a,b@split", {"arms": ["a", "b"], "policy": "split", "policy_params": {}}),
]


@pytest.mark.parametrize(("text", "stage"), SPECS, ids=[t for t, _ in SPECS])
def test_a_stage_on_the_command_line(text: str, stage: dict[str, Any]) -> None:
    assert stage_spec(text) == stage
    assert stages_json([stage])  # and the client takes what the syntax gives


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a,,b", "name each arm"),
        ("@exp4", "name each arm"),
        ("a,b@", "name the policy after '@'"),
        ("a,b@exp4:eta", "'eta' is not KEY=VALUE"),
        ("a,b@exp4:=1", "'=1' is not KEY=VALUE"),
        ("a,b@exp4:eta=1,eta=2", "'eta' is given twice"),
    ],
)
def test_a_stage_the_syntax_cannot_read_is_a_usage_error(text: str, problem: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=problem):
        stage_spec(text)


def test_the_stages_file_takes_the_apis_shapes_and_what_pipeline_json_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(["feat", {"arms": ["a", "b"], "policy": "exp4"}]))
    assert read_stages_file(str(listed)) == ["feat", {"arms": ["a", "b"], "policy": "exp4"}]
    printed = {"app": "x", "stages": [{"arms": ["feat"], "policy": "single", "policy_epoch": "e"}]}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(printed)))
    assert read_stages_file("-") == printed["stages"]
    for text, problem in (("{", "not JSON"), ('{"a": 1}', "expected a JSON list of stages")):
        listed.write_text(text)
        with pytest.raises(InvalidRequestError, match=problem):
            read_stages_file(str(listed))
    with pytest.raises(InvalidRequestError, match="cannot read it"):
        read_stages_file(str(tmp_path / "missing.json"))


# --------------------------------------------------------------------------- a Connection


class FakePipelines(FakeSchooner):
    """The fake cluster, with the pipeline endpoints; its ``/status`` lists the stages
    of each app of several, unless ``lists_stages`` is False (an earlier query frontend,
    which serves no pipeline)."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(events)
        self.later_stages: dict[str, list[dict[str, Any]]] = {}
        self.lists_stages = True
        self.refuse: str | None = None
        self.refuse_current: str | None = None  # 409 to making a version current

    def _pipeline(self, app: str) -> list[dict[str, Any]]:
        record = self.apps.get(app, {})
        first = {
            "arms": sorted(self.links.get(app, [])),
            "policy": record.get("policy", "single"),
            "policy_params": record.get("policy_params", {}),
            "policy_epoch": "e1",
        }
        return [first, *self.later_stages.get(app, [])]

    def _status_apps(self) -> dict[str, dict[str, Any]]:
        apps = super()._status_apps()
        if self.lists_stages:
            for name, entry in apps.items():
                if len(self._pipeline(name)) == 1:
                    continue
                entry["stages"] = [
                    {"policy": s["policy"], "arms": {a: self._resolve(a) for a in s["arms"]}}
                    for s in self._pipeline(name)
                ]
        return apps

    def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.strip("/").split("/")
        if parts[:2] == ["admin", "apps"] and parts[3:] == ["pipeline"]:
            app = parts[2]
            body = json.loads(request.content) if request.content else None
            self.events.append(f"{request.method} {request.url.path}")
            self.bodies.append(body)
            if request.method == "PUT":
                if self.refuse:
                    return httpx.Response(400, json={"error": "invalid", "message": self.refuse})
                first, *later = body["stages"]
                self.links[app] = list(first["arms"])
                self.apps[app].update(policy=first["policy"], policy_params=first["policy_params"])
                self.later_stages[app] = [
                    {**s, "arms": sorted(s["arms"]), "policy_epoch": "e2"} for s in later
                ]
                return httpx.Response(200, json={**self.apps[app], "pipeline": self._pipeline(app)})
            return httpx.Response(200, json={"app": app, "stages": self._pipeline(app)})
        if self.refuse_current and request.method == "PUT" and parts[3:] == ["current_version"]:
            self.events.append(f"PUT {request.url.path}")
            return httpx.Response(409, json={"error": "conflict", "message": self.refuse_current})
        if request.method == "GET" and parts == ["admin", "apps"]:
            self.events.append("GET /admin/apps")
            apps = [{**a, "pipeline": self._pipeline(n)} for n, a in sorted(self.apps.items())]
            return httpx.Response(200, json=apps)
        if request.method == "GET" and parts[:2] == ["admin", "apps"] and parts[3:] == ["links"]:
            self.events.append(f"GET {request.url.path}")
            return httpx.Response(200, json=sorted(self.links.get(parts[2], [])))
        if (
            request.method == "PUT"
            and parts[3:] == ["policy"]
            and "stage" in json.loads(request.content)
        ):
            body = json.loads(request.content)
            self.events.append(f"PUT {request.url.path} stage {body['stage']}")
            self.bodies.append(body)
            stage = self.later_stages[parts[2]][body["stage"] - 2]
            stage.update(policy=body["policy"], policy_params=body["params"])
            return httpx.Response(
                200, json={**self.apps[parts[2]], "pipeline": self._pipeline(parts[2])}
            )
        return super().handle(request)


def pipeline_cluster() -> tuple[Connection, FakePipelines, list[str]]:
    events: list[str] = []
    api = FakePipelines(events)
    conn = Connection(FakeContainerManager(api), transport=api.transport(), timeout=1.0)
    conn.connect()
    conn.register_application("reviews", "strings", "-1", 100000)
    for name, kind in (("feat", "strings"), ("clf", "doubles"), ("alt", "doubles")):
        conn.register_model(name, "1", kind)
    events.clear()
    return conn, api, events


def test_set_app_pipeline_sends_the_stages_and_waits_until_the_query_frontend_serves_them() -> None:
    conn, api, events = pipeline_cluster()
    api.status_lag = 2  # the query frontend has not followed the feed yet
    app = conn.set_app_pipeline("reviews", ["feat", {"arms": ["clf", "alt"], "policy": "exp4"}])
    assert api.bodies[-4] == {
        "stages": [
            {"arms": ["feat"], "policy": "single", "policy_params": {}},
            {"arms": ["clf", "alt"], "policy": "exp4", "policy_params": {}},
        ],
        "reset_state": False,
    }
    assert events == ["PUT /admin/apps/reviews/pipeline"] + ["GET /status"] * 3
    assert [s["arms"] for s in app["pipeline"]] == [["feat"], ["alt", "clf"]]  # as recorded
    assert [s["arms"] for s in conn.get_app_pipeline("reviews")] == [["feat"], ["alt", "clf"]]

    conn.set_app_pipeline("reviews", ["clf"], reset_state=True)
    assert api.bodies[-2]["reset_state"] is True
    assert [s["arms"] for s in conn.get_app_pipeline("reviews")] == [["clf"]]


def test_going_back_to_one_stage_waits_until_the_stages_are_gone() -> None:
    conn, api, events = pipeline_cluster()
    conn.set_app_pipeline("reviews", ["feat", "clf"])
    events.clear()
    api.status_lag = 2  # still showing the two stages
    conn.set_app_pipeline("reviews", ["feat"])
    assert events == ["PUT /admin/apps/reviews/pipeline"] + ["GET /status"] * 3
    assert "stages" not in api.status_view["reviews"]


def test_an_earlier_query_frontend_is_waited_on_for_stage_1_and_never_for_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn, api, events = pipeline_cluster()
    api.lists_stages = False
    conn.set_app_pipeline("reviews", ["feat"])
    assert events == ["PUT /admin/apps/reviews/pipeline", "GET /status"]
    conn.set_app_pipeline("reviews", ["feat", "clf"])  # it serves no pipeline: a warning
    assert "had not applied the pipeline of 'reviews'" in caplog.text


def test_a_malformed_pipeline_sends_nothing() -> None:
    conn, _api, events = pipeline_cluster()
    with pytest.raises(InvalidRequestError, match=r"stage 2 .* has 2 arms"):
        conn.set_app_pipeline("reviews", ["feat", ["clf", "alt"]])
    with pytest.raises(InvalidRequestError, match="reset_state must be True or False"):
        conn.set_app_pipeline("reviews", ["feat"], reset_state="yes")  # type: ignore[arg-type]
    assert events == []


def test_a_pipeline_the_cluster_refuses_raises_its_message() -> None:
    conn, api, _events = pipeline_cluster()
    api.refuse = "stage 2 ('clf') takes input type 'doubles' but stage 1 ('feat') answers ..."
    with pytest.raises(InvalidRequestError) as caught:
        conn.set_app_pipeline("reviews", ["feat", "clf"])
    assert caught.value.status_code == 400
    assert api.refuse in str(caught.value)


def test_a_later_stages_policy_is_set_read_and_reset_by_its_number() -> None:
    conn, api, events = pipeline_cluster()
    conn.set_app_pipeline("reviews", ["feat", {"arms": ["clf", "alt"], "policy": "exp4"}])
    events.clear()
    app = conn.set_selection_policy("reviews", "exp3", stage=2, eta=0.3)
    assert api.bodies[-2] == {
        "policy": "exp3",
        "params": {"eta": 0.3},
        "reset_state": False,
        "stage": 2,
    }
    assert app["pipeline"][1]["policy"] == "exp3"
    conn.get_policy_state("reviews", stage=2)
    conn.reset_policy_state("reviews", uid="u1", stage=2)
    conn.get_policy_state("reviews")  # stage 1: the request of an app without stages
    assert events == [
        "PUT /admin/apps/reviews/policy stage 2",
        "GET /status",
        "GET /admin/apps/reviews/policy/state?stage=2",
        "DELETE /admin/apps/reviews/policy/state?uid=u1&stage=2",
        "GET /admin/apps/reviews/policy/state",
    ]
    with pytest.raises(InvalidRequestError, match="stage must be a stage's number"):
        conn.set_selection_policy("reviews", "exp3", stage=0)


@pytest.mark.parametrize("deploy", DEPLOYS.values(), ids=DEPLOYS.keys())
def test_every_deploy_path_declares_the_output_type_only_when_given(
    deploy: Callable[[Connection, dict[str, Any]], object],
) -> None:
    conn, api, _events = pipeline_cluster()
    deploy(conn, {"output_type": "doubles"})
    assert api.versions["m", "1"]["output_type"] == "doubles"
    conn, api, _events = pipeline_cluster()
    deploy(conn, {})
    assert "output_type" not in api.versions["m", "1"]  # a server without pipelines takes it


@pytest.mark.parametrize("deploy", DEPLOYS.values(), ids=DEPLOYS.keys())
def test_an_unknown_output_type_is_refused_before_anything_is_built(
    deploy: Callable[[Connection, dict[str, Any]], object],
) -> None:
    conn, api, events = pipeline_cluster()
    with pytest.raises(InvalidRequestError, match="output_type 'vectors' is not known"):
        deploy(conn, {"output_type": "vectors"})
    assert [e for e in events if not e.startswith("GET")] == []
    assert ("m", "1") not in api.versions


def test_a_deployed_version_the_cluster_will_not_make_current_is_not_kept() -> None:
    conn, api, events = pipeline_cluster()
    api.refuse_current = "stage 2 ('clf') of app 'reviews' takes input type 'doubles' but ..."
    with pytest.raises(ConflictError) as caught:
        deploy_python_closure(conn, "feat", "2", "strings", str.upper, output_type="strings")
    message = str(caught.value)
    assert api.refuse_current in message and "feat:2 was not made current" in message
    assert "cm.stop_models feat ['2']" in events
    assert ("feat", "2") not in api.versions  # deleted again: it can be deployed again
    assert api.models["feat"]["current_version"] == "1"


# --------------------------------------------------------------------------- CLI verbs


@pytest.fixture
def cli_cluster(monkeypatch: pytest.MonkeyPatch) -> tuple[Connection, FakePipelines]:
    """A connection to the fake cluster, and a new one for every command (which closes
    its own)."""
    conn, api, _events = pipeline_cluster()

    def connect(args: argparse.Namespace) -> Connection:
        fresh = Connection(FakeContainerManager(api), transport=api.transport(), timeout=1.0)
        fresh.connect()
        return fresh

    monkeypatch.setattr(_managers, "connect", connect)
    return conn, api


def test_set_pipeline_and_pipeline_on_the_command_line(
    cli_cluster: tuple[Connection, FakePipelines], capsys: pytest.CaptureFixture[str]
) -> None:
    _conn, api = cli_cluster
    assert main(["set-pipeline", "reviews", "feat", "clf,alt@exp4:eta=0.2"]) == 0
    assert capsys.readouterr().out == "reviews: feat -> alt,clf@exp4\n"
    assert api.later_stages["reviews"][0]["policy_params"] == {"eta": 0.2}

    assert main(["pipeline", "reviews"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "reviews: feat -> alt,clf@exp4"
    assert out[2].split() == ["STAGE", "ARMS", "POLICY", "POLICY_PARAMS"]
    assert out[3].split() == ["1", "feat", "single"]
    assert out[4].split() == ["2", "alt,clf", "exp4", '{"eta":0.2}']

    assert main(["pipeline", "reviews", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [s["arms"] for s in printed["stages"]] == [["feat"], ["alt", "clf"]]


def test_set_pipeline_from_a_file_round_trips_what_pipeline_prints(
    cli_cluster: tuple[Connection, FakePipelines],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    conn, _api = cli_cluster
    conn.set_app_pipeline("reviews", ["feat", Stage(["clf", "alt"], policy="exp3", gamma=0.2)])
    assert main(["pipeline", "reviews", "--json"]) == 0
    saved = tmp_path / "stages.json"
    saved.write_text(capsys.readouterr().out)
    conn.set_app_pipeline("reviews", ["clf"])
    assert main(["set-pipeline", "reviews", "--file", str(saved), "--reset-state"]) == 0
    assert [s["policy"] for s in conn.get_app_pipeline("reviews")] == ["single", "exp3"]


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["set-pipeline", "reviews"], "name at least one STAGE"),
        (["set-pipeline", "reviews", "feat", "--file", "x.json"], "not both"),
        (["set-pipeline", "reviews", "a,b@"], "name the policy after '@'"),
        (["set-policy", "reviews", "exp4", "--stage", "0"], "'0' is not a whole number >= 1"),
        (["set-policy", "reviews", "exp4", "--param", "stage=2"], "is not KEY=VALUE"),
    ],
)
def test_pipeline_usage_errors_exit_2(
    argv: list[str], problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert problem in capsys.readouterr().err


def test_a_refused_pipeline_exits_1_with_the_clusters_message(
    cli_cluster: tuple[Connection, FakePipelines], capsys: pytest.CaptureFixture[str]
) -> None:
    _conn, api = cli_cluster
    api.refuse = "stage 2 ('clf') takes input type 'doubles' but stage 1 ('feat') ..."
    assert main(["set-pipeline", "reviews", "feat", "clf"]) == 1
    assert api.refuse in capsys.readouterr().err


def test_the_policy_verbs_take_a_stage(
    cli_cluster: tuple[Connection, FakePipelines], capsys: pytest.CaptureFixture[str]
) -> None:
    conn, api = cli_cluster
    conn.set_app_pipeline("reviews", ["feat", {"arms": ["clf", "alt"], "policy": "exp4"}])
    assert main(["set-policy", "reviews", "exp3", "--stage", "2", "--param", "eta=0.4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["stage"], printed["policy"], printed["policy_params"]) == (
        2,
        "exp3",
        {"eta": 0.4},
    )
    assert api.later_stages["reviews"][0]["policy"] == "exp3"


def test_apps_shows_a_pipeline_apps_stages(
    cli_cluster: tuple[Connection, FakePipelines], capsys: pytest.CaptureFixture[str]
) -> None:
    conn, _api = cli_cluster
    conn.set_app_pipeline("reviews", ["feat", "clf"])
    assert main(["apps"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split()[-1] == "STAGES" and row.split()[-1] == "clf"
    assert row.split()[-3:] == ["feat", "->", "clf"]


def test_status_shows_each_stages_routes_and_the_recorded_pipeline() -> None:
    instance = {
        "apps": {
            "plain": {"policy": "single", "arms": {"m": "m:1"}, "models": ["m:1"]},
            "reviews": {
                "policy": "single",
                "arms": {"feat": "feat:1"},
                "models": ["feat:1"],
                "stages": [
                    {"policy": "single", "arms": {"feat": "feat:1"}},
                    {"policy": "exp4", "arms": {"clf:1": "clf:1", "alt": None}},
                ],
            },
        }
    }
    pipelines = {
        "plain": [{"arms": ["m"], "policy": "single"}],
        "reviews": [
            {"arms": ["feat"], "policy": "single"},
            {"arms": ["alt", "clf:1"], "policy": "exp4"},
        ],
    }
    rows = {r["app"]: r for r in _cluster._app_rows(instance, pipelines)}
    assert rows["plain"]["models"] == "m:1" and rows["plain"]["pipeline"] is None
    assert rows["reviews"]["models"] == "feat:1 -> alt?,clf:1"
    assert rows["reviews"]["pipeline"] == "feat -> alt,clf:1@exp4"
