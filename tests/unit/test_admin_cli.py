"""The ``schooner`` command's parsing, exit codes and messages, with no cluster running."""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from admin import DockerContainerManager, KubernetesContainerManager, LocalContainerManager
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


# --------------------------------------------------------------------------- every manager


def _parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The top-level parser ("") and every verb's."""
    found = {"": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def test_every_argument_of_every_verb_has_help_text() -> None:
    parsers = _parsers(build_parser())
    assert len(parsers) > 20
    missing = [
        f"{verb or 'schooner'} {action.option_strings or action.dest}"
        for verb, parser in parsers.items()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert missing == []
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert all(choice.help for choice in sub._choices_actions), "a verb without help"


@pytest.mark.parametrize(
    "argv",
    [
        ["register", "app", "--input-type", "doubles", "--default-output", "-1.0", "--exist-ok"],
        ["unregister", "app"],
        ["deploy", "m", "1", "--input-type", "doubles", "--func", "pkg.mod:model.predict"],
        ["deploy", "m", "1", "--input-type", "doubles", "--pickle", "m.pkl", "--pkg", "a"],
        ["deploy", "m", "1", "--input-type", "floats", "--onnx", "m.onnx", "--output-name", "y"],
        ["link", "app", "m", "--version", "2"],
        ["unlink", "app", "m"],
        ["predict", "app", "[1, 2]", "--version", "1", "--api-key-stdin"],
        ["predict", "app", "[[1], [2]]", "--batch"],
        ["logs", "query", "--manager", "docker"],
        ["scale", "m", "3", "--manager", "kubernetes", "--namespace", "ml"],
        ["start", "--manager", "docker", "--network-mode", "host", "--base-image", "b:1"],
        ["destroy", "--yes", "--manager", "docker", "--cluster", "prod"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_the_new_verbs_parse(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.command == argv[0]
    from admin.cli import usage_problem

    assert usage_problem(args) is None


def test_register_reads_the_default_output_as_json_when_it_parses() -> None:
    parse = build_parser().parse_args
    assert parse(["register", "a", "--input-type", "doubles"]).default_output is None
    assert (
        parse(["register", "a", "--input-type", "ints", "--default-output", "-1.0"]).default_output
        == -1.0
    )
    assert (
        parse(["register", "a", "--input-type", "ints", "--default-output", "no"]).default_output
        == "no"
    )
    assert parse(["register", "a", "--input-type", "ints"]).slo_micros == 100000


def test_the_cluster_options_go_before_or_after_the_verb_and_after_wins() -> None:
    parse = build_parser().parse_args
    before = parse(["--manager", "docker", "--cluster", "prod", "apps"])
    after = parse(["apps", "--manager", "docker", "--cluster", "prod"])
    assert (before.manager, before.cluster) == (after.manager, after.cluster) == ("docker", "prod")
    both = parse(["--cluster", "a", "apps", "--cluster", "b"])
    assert both.cluster == "b"
    assert parse(["apps", "--cluster-name", "old"]).cluster == "old"  # the old flag's name
    plain = parse(["apps"])
    assert (plain.manager, plain.cluster) == ("local", "default")


def test_the_manager_and_cluster_default_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHOONER_MANAGER", "docker")
    monkeypatch.setenv("SCHOONER_CLUSTER", "prod")
    args = build_parser().parse_args(["apps"])
    assert (args.manager, args.cluster) == ("docker", "prod")
    cm = _managers.manager(args)
    assert isinstance(cm, DockerContainerManager) and cm.cluster_name == "prod"
    assert build_parser().parse_args(["--manager", "local", "apps"]).manager == "local"


def test_an_unknown_manager_from_the_environment_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCHOONER_MANAGER", "nomad")
    with pytest.raises(SystemExit) as info:
        main(["apps"])
    assert info.value.code == 2
    assert "unknown manager 'nomad'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--manager", "docker", "apps", "--data-dir", "/x"], "--data-dir does not apply"),
        (["apps", "--namespace", "ml"], "--namespace does not apply to --manager local"),
        (["--manager", "kubernetes", "start", "--rpc-port", "7"], "--rpc-port does not apply"),
        (["start", "--network-mode", "host"], "--network-mode does not apply"),
        (["start", "--registry", "r"], "--registry does not apply to --manager local"),
        (
            ["deploy", "m", "1", "--input-type", "ints", "--func", "a:b", "--output-name", "y"],
            "--output-name goes with --onnx",
        ),
        (
            ["deploy", "m", "1", "--input-type", "ints", "--onnx", "m.onnx", "--path", "."],
            "--path goes with --func or --pickle",
        ),
        (["deploy", "m", "1", "--input-type", "ints"], "one of the arguments --func --pickle"),
        (
            ["deploy", "m", "1", "--input-type", "ints", "--func", "a:b", "--pickle", "f"],
            "not allowed with argument",
        ),
        (["start", "--tls-certfile", "c.pem"], "--tls-certfile and --tls-keyfile go together"),
        (["scale", "m", "two"], "invalid int value"),
    ],
)
def test_a_wrong_command_line_is_a_usage_error_that_says_why(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_each_manager_is_built_from_its_own_options(tmp_path: Path) -> None:
    parse = build_parser().parse_args
    local = _managers.manager(parse(["--cluster", "c1", "apps"]))
    assert isinstance(local, LocalContainerManager) and local.data_dir.name == "c1"
    docker = _managers.manager(
        parse(["--manager", "docker", "--cluster", "c2", "--base-image", "b:1", "apps"])
    )
    assert isinstance(docker, DockerContainerManager)
    assert (docker.cluster_name, docker.base_image) == ("c2", "b:1")
    argv = ["--manager", "kubernetes", "--cluster", "c3", "--namespace", "ml"]
    argv += ["--management-addr", "127.0.0.1:9", "--registry", "r.example/t", "apps"]
    kube = _managers.manager(parse(argv))
    assert isinstance(kube, KubernetesContainerManager)
    assert (kube.cluster_name, kube.namespace, kube.registry) == ("c3", "ml", "r.example/t")
    assert kube.get_management_addr() == "127.0.0.1:9"


def test_docker_start_options_reach_the_manager() -> None:
    argv = ["--manager", "docker", "start", "--network-mode", "host", "--query-port", "30001"]
    args = build_parser().parse_args(argv)
    cm = _managers.manager(args, **_managers.start_options(args))
    assert isinstance(cm, DockerContainerManager)
    assert cm.settings.host_mode and cm.settings.query_port == 30001
    assert cm.settings.redis_port == 6379  # the Docker manager's own default, not local's


def test_no_table_prints_a_literal_none() -> None:
    from admin.cli._tables import table

    rows = [{"a": None, "b": True, "c": {"k": None}}, {"b": False}]
    printed = table(rows, ["a", "b", "c"])
    assert "None" not in printed
    assert printed.splitlines()[1].split() == ["yes", '{"k":null}']


# --------------------------------------------------------------------------- deploy


class Deployed:
    """What cmd_deploy handed the deployers, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch, fake_connection: FakeConnection) -> Deployed:
    from admin.cli import _deploy

    record = Deployed()

    def closure(*args: Any, **kwargs: Any) -> None:
        import cloudpickle

        # Pickled inside the command, as deploy_python_closure pickles it.
        kwargs["pickled"] = cloudpickle.dumps(args[4])
        record.calls.append(("closure", args, kwargs))

    monkeypatch.setattr(_deploy, "deploy_python_closure", closure)
    return record


def test_deploy_func_pickles_the_users_modules_by_value(
    deployed: Deployed, tmp_path: Path, fake_connection: FakeConnection
) -> None:
    code = tmp_path / "code"
    (code / "mypkg").mkdir(parents=True)
    (code / "mypkg" / "__init__.py").write_text("")
    (code / "mypkg" / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    (code / "mypkg" / "model.py").write_text(
        "from mypkg.helper import double\n\n"
        "class Model:\n    def predict(self, xs):\n        return [double(x) for x in xs]\n\n"
        "model = Model()\n"
    )
    argv = ["deploy", "m", "1", "--input-type", "doubles", "--func", "mypkg.model:model.predict"]
    argv += ["--path", str(code), "--replicas", "2", "--pkg", "numpy"]
    assert main(argv) == 0
    ((kind, args, kwargs),) = deployed.calls
    assert kind == "closure" and args[1:4] == ("m", "1", "doubles")
    assert kwargs["num_replicas"] == 2 and kwargs["pkgs_to_install"] == ["numpy"]
    assert args[4]([1.0, 2.0]) == [2.0, 4.0]
    # Unpickled where the user's code is not importable: its code travelled in the pickle.
    load = "import pickle, sys; f = pickle.loads(sys.stdin.buffer.read()); print(f([3]))"
    done = subprocess.run(
        [sys.executable, "-c", load],
        input=kwargs["pickled"],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "[6]"
    import cloudpickle

    assert cloudpickle.list_registry_pickle_by_value() == set(), "left registered"
    assert str(code) not in sys.path


def test_deploy_pickle_takes_a_callable_or_a_models_predict(
    deployed: Deployed, tmp_path: Path
) -> None:
    import pickle

    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit([[0.0], [1.0], [2.0]], [0.0, 2.0, 4.0])
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    (tmp_path / "func.pkl").write_bytes(pickle.dumps(len))
    for name in ("model.pkl", "func.pkl"):
        argv = ["deploy", "m", "1", "--input-type", "doubles", "--pickle", str(tmp_path / name)]
        assert main(argv) == 0
    (_, model_args, _), (_, func_args, _) = deployed.calls
    assert list(model_args[4]([[3.0]])) == pytest.approx([6.0])
    assert func_args[4] is len


@pytest.mark.parametrize(
    ("setup", "source", "message"),
    [
        (None, ["--pickle", "missing.pkl"], "there is no such file"),
        ("not a pickle", ["--pickle", "bad.pkl"], "cannot load it"),
        (None, ["--func", "no_such_module_here:f"], "cannot import no_such_module_here"),
        (None, ["--func", "json:nothing"], "json has no nothing"),
        (None, ["--func", "json:__doc__"], "not a function or method"),
    ],
)
def test_deploy_from_a_source_that_cannot_be_loaded_exits_1_and_deploys_nothing(
    setup: str | None,
    source: list[str],
    message: str,
    deployed: Deployed,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    if setup is not None:
        (tmp_path / "bad.pkl").write_text(setup)
    assert main(["deploy", "m", "1", "--input-type", "doubles", *source]) == 1
    assert message in capsys.readouterr().err
    assert deployed.calls == []


def test_deploy_onnx_hands_the_file_to_the_onnx_deployer(
    fake_connection: FakeConnection, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    from admin.cli import _deploy

    monkeypatch.setattr(_deploy, "deploy_onnx_model", lambda *a, **kw: calls.append((a, kw)))
    argv = ["deploy", "iris", "2", "--input-type", "floats", "--onnx", str(tmp_path / "m.onnx")]
    argv += ["--output-name", "probabilities", "--batch-size", "8", "--replicas", "3"]
    argv += ["--output-type", "doubles"]
    assert main(argv) == 0
    ((args, kwargs),) = calls
    assert args == (fake_connection, "iris", "2", "floats", tmp_path / "m.onnx")
    assert kwargs == {
        "output_name": "probabilities",
        "num_replicas": 3,
        "batch_size": 8,
        "pkgs_to_install": None,
        "output_type": "doubles",
    }


# --------------------------------------------------------------------------- predict


@dataclasses.dataclass
class Prediction:
    """``admin.query_client.Prediction``'s fields."""

    output: Any
    default: bool
    default_explanation: str | None
    models: tuple[str, ...]
    query_id: int
    partial: bool = False
    missing: tuple[str, ...] = ()
    partial_explanation: str | None = None
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)


class FakeQueryClient:
    """``admin.query_client.QueryClient``'s interface, answering from the input."""

    made: ClassVar[list[FakeQueryClient]] = []

    def __init__(self, address: str, *, api_key: str | None = None, **kw: Any) -> None:
        self.address, self.api_key, self.kw = address, api_key, kw
        self.asked: list[tuple[str, Any, Any]] = []
        self.closed = False
        FakeQueryClient.made.append(self)

    def predict(self, app: str, x: Any, *, version: str | None = None) -> Prediction:
        self.asked.append((app, x, version))
        if x == "late":
            return Prediction(-1.0, True, "no model answered in time", (), 7)
        if x == "some":
            return Prediction(1, False, None, ("a:1",), 8, True, ("b:1",), "b:1 was late")
        return Prediction(sum(x), False, None, ("m:1",), 7)

    def predict_batch(
        self, app: str, xs: list[Any], *, version: str | None = None
    ) -> list[Prediction]:
        return [self.predict(app, x, version=version) for x in xs]

    def __enter__(self) -> FakeQueryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.closed = True


class RunningManager(LocalContainerManager):
    def connect(self) -> None:
        pass


@pytest.fixture
def query_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeQueryClient]:
    from admin.cli import _predict

    monkeypatch.setattr(_predict, "QueryClient", FakeQueryClient)
    monkeypatch.setattr(_managers, "LocalContainerManager", RunningManager)
    FakeQueryClient.made.clear()
    return FakeQueryClient


def test_predict_prints_the_answer_as_json(
    query_client: type[FakeQueryClient], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["predict", "app", "[1, 2.5]", "--version", "1", "--data-dir", str(tmp_path)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {
        "query_id": 7,
        "output": 3.5,
        "default": False,
        "models": ["m:1"],
    }
    (client,) = query_client.made
    assert client.address == "http://127.0.0.1:1337" and client.api_key is None
    assert client.asked == [("app", [1, 2.5], "1")] and client.closed


def test_predict_a_pinned_batch_a_default_and_a_partial_answer(
    query_client: type[FakeQueryClient], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", "app", '[[1], "late", "some"]', "--batch", "--version", "2"]) == 0
    first, second, third = json.loads(capsys.readouterr().out)
    assert [v for _, _, v in query_client.made[0].asked] == ["2", "2", "2"]
    assert first["output"] == 1 and "default_explanation" not in first
    assert "partial" not in first and "raw" not in first
    assert third["partial"] and third["missing"] == ["b:1"]
    assert third["partial_explanation"] == "b:1 was late"
    assert second == {
        "query_id": 7,
        "output": -1.0,
        "default": True,
        "default_explanation": "no model answered in time",
        "models": [],
    }


def test_predict_reads_the_api_key_and_the_input_from_stdin(
    query_client: type[FakeQueryClient],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("sk-app-secret\n[4, 5]\n"))
    assert main(["predict", "app", "-", "--api-key-stdin"]) == 0
    (client,) = query_client.made
    assert client.api_key == "sk-app-secret" and client.asked == [("app", [4, 5], None)]
    assert "sk-app-secret" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["predict", "app", "[1, 2"], "", "the input is not JSON"),
        (["predict", "app", "3", "--batch"], "", "--batch takes a JSON list"),
        (["predict", "app", "[1]", "--api-key-stdin"], "\n", "no API key"),
    ],
)
def test_predict_with_an_input_it_cannot_send_is_a_usage_error(
    argv: list[str],
    stdin: str,
    message: str,
    query_client: type[FakeQueryClient],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert query_client.made == []
