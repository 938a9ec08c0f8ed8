"""The ``schooner`` command's parsing, exit codes and messages, with no cluster running."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from admin import LocalContainerManager
from admin.cli import _managers, build_parser, main


def test_every_documented_command_parses(tmp_path: Path) -> None:
    parser = build_parser()
    for argv in (
        ["start", "--data-dir", str(tmp_path), "--query-port", "2000", "--redis-port", "2001"],
        ["stop", "--data-dir", str(tmp_path)],
        ["destroy", "--data-dir", str(tmp_path), "--yes"],
        ["status", "--json"],
        ["apps"],
        ["models", "--json"],
        ["replicas"],
        ["logs", "query", "-n", "5"],
        ["scale", "m", "2", "--version", "1"],
        ["set-version", "m", "1"],
        ["set-policy", "app", "exp3", "--param", "eta=0.2", "--reset-state"],
        ["policy-state", "app", "--uid", "u1", "--json"],
    ):
        assert parser.parse_args(argv).command == argv[0]


def test_start_port_flags_reach_the_manager_and_the_others_keep_its_defaults(
    tmp_path: Path,
) -> None:
    args = build_parser().parse_args(["start", "--data-dir", str(tmp_path), "--rpc-port", "7100"])
    assert _managers.start_options(args) == {"rpc_port": 7100}
    cm = _managers.manager(args, **_managers.start_options(args))
    assert isinstance(cm, LocalContainerManager)
    assert (cm.query_port, cm.management_port, cm.rpc_port) == (1337, 1338, 7100)
    assert cm.data_dir == tmp_path


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


def test_stop_when_nothing_runs_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stop", "--data-dir", str(tmp_path / "d")]) == 0
    assert "stopped" in capsys.readouterr().out


def test_status_when_not_running_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--data-dir", str(tmp_path)]) == 1
    assert "not running" in capsys.readouterr().out


def test_listing_when_not_running_says_how_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["apps", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "schooner start" in err


def test_logs_lists_and_tails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "query.log").write_text("one\ntwo\nthree\n")
    assert main(["logs", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "query\n"
    assert main(["logs", "query", "-n", "2", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "two\nthree\n"
    assert main(["logs", "nope", "--data-dir", str(tmp_path)]) == 1
    assert "known: query" in capsys.readouterr().err
    assert main(["logs", "--out", str(tmp_path / "copy"), "--data-dir", str(tmp_path)]) == 0
    assert (tmp_path / "copy" / "query.log").read_text() == "one\ntwo\nthree\n"


class FakeConnection:
    """What the policy commands call on a Connection, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __enter__(self) -> FakeConnection:  # the commands use their connection in `with`
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def set_selection_policy(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("set_selection_policy", args, kwargs))
        params = {k: v for k, v in kwargs.items() if k != "reset_state"}
        return {"name": args[0], "policy": args[1], "policy_params": params, "slo_micros": 1}

    def get_policy_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("get_policy_state", args, kwargs))
        return {
            "app": "app",
            "policy": "exp3",
            "params": {"eta": 0.1, "gamma": 0.1, "loss": "auto"},
            "uid": kwargs.get("uid"),
            "updates": 3,
            "arms": {
                "m1": {"probability": 0.75, "log_weight": 0.0, "updates": 2, "mean_loss": 0.1},
                "m2:1": {"probability": 0.25, "log_weight": -1.5, "updates": 0, "mean_loss": None},
                "old": {
                    "probability": 0.0,
                    "log_weight": -2.0,
                    "updates": 1,
                    "mean_loss": 3.0,
                    "linked": False,
                },
            },
        }


@pytest.fixture
def fake_connection(monkeypatch: pytest.MonkeyPatch) -> FakeConnection:
    conn = FakeConnection()

    def connect(args: argparse.Namespace) -> FakeConnection:
        return conn

    monkeypatch.setattr(_managers, "connect", connect)
    return conn


def test_set_policy_reads_param_values_as_json_when_they_parse(
    fake_connection: FakeConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["set-policy", "app", "split", "--param", 'weights={"m:1": 90, "m:2": 10}']
    argv += ["--param", "loss=squared", "--param", "eta=0.5", "--reset-state"]
    assert main(argv) == 0
    assert fake_connection.calls == [
        (
            "set_selection_policy",
            ("app", "split"),
            {
                "reset_state": True,
                "weights": {"m:1": 90, "m:2": 10},
                "loss": "squared",
                "eta": 0.5,
            },
        )
    ]
    printed = json.loads(capsys.readouterr().out)
    assert printed["policy"] == "split" and printed["policy_params"]["loss"] == "squared"


def test_set_policy_without_params_keeps_the_state_by_default(
    fake_connection: FakeConnection,
) -> None:
    assert main(["set-policy", "app", "exp4"]) == 0
    assert fake_connection.calls == [
        ("set_selection_policy", ("app", "exp4"), {"reset_state": False})
    ]


@pytest.mark.parametrize("param", ["eta", "=1", "policy=exp3", "reset_state=true", "a-b=1"])
def test_set_policy_refuses_a_param_that_is_not_a_setting(
    param: str, fake_connection: FakeConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["set-policy", "app", "exp3", "--param", param])
    assert info.value.code == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err
    assert fake_connection.calls == []


def test_policy_state_prints_a_table_of_arms(
    fake_connection: FakeConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy-state", "app", "--uid", "u1"]) == 0
    assert fake_connection.calls == [("get_policy_state", ("app",), {"uid": "u1"})]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "app app, user u1: policy exp3, 3 update(s)"
    assert out[2].split() == ["ARM", "PROBABILITY", "LOG_WEIGHT", "UPDATES", "MEAN_LOSS", "LINKED"]
    assert out[3].split() == ["m1", "0.750", "0.000", "2", "0.1", "yes"]
    assert out[4].split() == ["m2:1", "0.250", "-1.500", "0", "-", "yes"]
    assert out[5].split() == ["old", "0.000", "-2.000", "1", "3", "no"]


def test_policy_state_json_is_the_whole_answer(
    fake_connection: FakeConnection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["policy-state", "app", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["uid"] is None and set(doc["arms"]) == {"m1", "m2:1", "old"}
