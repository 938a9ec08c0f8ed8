"""Only ``SchoonerError`` leaves the admin package, and its messages say what to fix.

The first test reads every module of ``admin/`` and checks each ``raise`` statement:
what it raises must be a ``SchoonerError`` subclass -- a class named through the
module's imports, a function whose return annotation is one, or a parameter annotated
``type[...]`` of one. Bare ``raise`` (re-raising what was caught) is fine, and so is the
short allow-list below. The other tests call what used to raise ``ValueError`` or
``TypeError`` (or let a library's error through) and check what the user sees now.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
import sys
import threading
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fake_kube_apiserver import FakeKubeAPIServer
from test_admin_connection import FakeContainerManager, FakeSchooner, connected, double

import admin
from admin import (
    Connection,
    ContainerManagerError,
    DeployError,
    DockerContainerManager,
    InvalidRequestError,
    KubernetesContainerManager,
    LocalContainerManager,
    SchoonerError,
)
from admin._http import JSONClient
from admin.container_managers._docker_images import ImageBuilder
from admin.container_managers._docker_specs import ClusterSettings
from admin.container_managers._k8s_specs import KubeSettings
from admin.container_managers._net import free_port
from admin.container_managers._processes import ProcessRecord, is_alive
from admin.container_managers._runtime import pip_install, unsatisfied
from admin.deployers.python import deploy_python_closure
from admin.deployers.sklearn import deploy_sklearn_model

ADMIN = Path(admin.__file__).parent

# (module, what is raised) -> why it may leave the rule.
ALLOWED: dict[tuple[str, str], str] = {
    # Raised inside the argument parser's type= callback, which argparse turns into a
    # usage message and exit status 2: it never reaches a caller of admin.
    ("admin.cli._parser", "argparse.ArgumentTypeError"): "argparse's protocol for a bad value",
    ("admin.cli._deploy", "argparse.ArgumentTypeError"): "argparse's protocol for a bad value",
    ("admin.cli._pipeline", "argparse.ArgumentTypeError"): "argparse's protocol for a bad value",
    # Raised inside orjson's default= hook, which is orjson's protocol for "cannot encode
    # this": orjson raises JSONEncodeError, which _query_wire.dumps translates.
    ("admin._query_wire", "TypeError"): "orjson's own protocol for a value it cannot encode",
}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ADMIN.rglob("*.py")):
        parts = path.relative_to(ADMIN.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imported_names(tree: ast.Module, module: str) -> dict[str, str]:
    """Every name an import binds anywhere in the module (functions import lazily too):
    name -> "module:attribute" (or "module:" for ``import x``)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.partition(".")[0]
                names[bound] = f"{alias.name if alias.asname else bound}:"
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.rsplit(".", node.level)[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                names[alias.asname or alias.name] = f"{base}:{alias.name}"
    return names


class Resolver:
    """Resolves the expression of a ``raise`` to what it raises, in one module."""

    def __init__(self, name: str, tree: ast.Module) -> None:
        self.module: ModuleType = importlib.import_module(name)
        self.imports = imported_names(tree, name)
        self.parents = {
            child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)
        }

    def lookup(self, name: str) -> Any:
        if name in self.imports:
            source, _, attribute = self.imports[name].partition(":")
            found = importlib.import_module(source)
            return getattr(found, attribute) if attribute else found
        if hasattr(self.module, name):
            return getattr(self.module, name)
        assert hasattr(builtins, name), f"{self.module.__name__}: cannot resolve {name}"
        return getattr(builtins, name)

    def value(self, expr: ast.expr) -> Any:
        if isinstance(expr, ast.Name):
            return self.lookup(expr.id)
        if isinstance(expr, ast.Attribute):
            return getattr(self.value(expr.value), expr.attr)
        raise AssertionError(f"cannot resolve {ast.unparse(expr)}")

    def parameter_class(self, node: ast.AST, name: str) -> Any:
        """The class ``X`` of a parameter ``name: type[X]`` of the enclosing function."""
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for arg in [*node.args.args, *node.args.kwonlyargs]:
                    note = arg.annotation
                    if arg.arg == name and isinstance(note, ast.Subscript):
                        assert ast.unparse(note.value) == "type", ast.unparse(note)
                        return self.value(note.slice)
        return None

    def raised(self, node: ast.Raise) -> Any:
        """The exception class ``node`` raises."""
        assert node.exc is not None
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(target, ast.Name) and (cls := self.parameter_class(node, target.id)):
            return cls
        found = self.value(target)
        if inspect.isclass(found):
            return found
        assert callable(found), f"{ast.unparse(target)} is neither a class nor a function"
        return typing.get_type_hints(found)["return"]  # a function that builds the error


def raise_statements() -> Iterator[tuple[str, int, str, Any]]:
    for name, path in modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        resolver = Resolver(name, tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and node.exc is not None:
                target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                yield name, node.lineno, ast.unparse(target), resolver.raised(node)


def test_every_raise_in_admin_raises_a_schooner_error() -> None:
    checked, broken = 0, []
    for module, line, text, cls in raise_statements():
        checked += 1
        if (module, text) in ALLOWED:
            continue
        if not (inspect.isclass(cls) and issubclass(cls, SchoonerError)):
            broken.append(f"{module}:{line}: raise {text} ({cls!r})")
    assert checked > 100, "the walk found too few raise statements: is admin/ where it was?"
    assert broken == [], "raise a SchoonerError subclass (admin/exceptions.py):\n" + "\n".join(
        broken
    )


def test_the_rule_catches_what_it_should() -> None:
    """The resolver itself: a plain ValueError is found, a SchoonerError passes."""
    tree = ast.parse(
        "from admin.exceptions import DeployError\n"
        "def f(error: type[DeployError]):\n"
        "    raise error('x')\n"
        "def g():\n"
        "    raise ValueError('x')\n"
    )
    resolver = Resolver("admin.exceptions", tree)
    found = {
        ast.unparse(n.exc): resolver.raised(n)
        for n in ast.walk(tree)
        if isinstance(n, ast.Raise) and n.exc is not None
    }
    assert found == {"error('x')": admin.DeployError, "ValueError('x')": ValueError}


# --------------------------------------------------------------------------- bad arguments


def docker_manager(**kw: Any) -> DockerContainerManager:
    return DockerContainerManager("c", docker_client=object(), **kw)  # type: ignore[arg-type]


def kube_manager(**kw: Any) -> KubernetesContainerManager:
    server = FakeKubeAPIServer()
    return KubernetesContainerManager(apps_api=server.apps, core_api=server.core, **kw)


MANAGERS = {
    "local": lambda tmp, **kw: LocalContainerManager(data_dir=tmp / "data", **kw),
    "docker": lambda tmp, **kw: docker_manager(**kw),
    "kubernetes": lambda tmp, **kw: kube_manager(**kw),
}


@pytest.mark.parametrize("kind", MANAGERS)
@pytest.mark.parametrize("count", [-1, 1.5, True, "2"])
def test_a_bad_replica_count_is_an_invalid_request_on_every_manager(
    kind: str, count: Any, tmp_path: Path
) -> None:
    cm = MANAGERS[kind](tmp_path)
    with pytest.raises(InvalidRequestError, match=r"num_replicas must be (>= 0|an integer)"):
        cm.set_num_replicas("m", "1", "doubles", "ab" * 32, count)


@pytest.mark.parametrize("kind", MANAGERS)
@pytest.mark.parametrize("port", [0, 70000, "1337", None])
def test_a_bad_port_is_an_invalid_request_on_every_manager(
    kind: str, port: Any, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequestError, match=r"query_port=.*use (a port|an integer) in"):
        MANAGERS[kind](tmp_path, query_port=port)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ClusterSettings("c", network_mode="bridge"), "use None .* or 'host'"),
        (lambda: KubeSettings("c", service_type="Ingress"), "use one of ClusterIP"),
        (lambda: KubeSettings("c", query_replicas=0), "query_replicas must be >= 1"),
        (lambda: KubeSettings("c", query_replicas="2"), "must be an integer >= 1"),
        (lambda: KubeSettings("c", resources={"web": {}}), "unknown role.*use redis"),
    ],
)
def test_bad_manager_settings_are_invalid_requests_that_say_what_is_allowed(
    make: Any, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        make()


def test_deploy_sklearn_model_without_predict_says_what_to_pass() -> None:
    conn = Connection(FakeContainerManager(FakeSchooner([])))
    with pytest.raises(InvalidRequestError, match="has no predict method: pass a fitted"):
        deploy_sklearn_model(conn, "m", "1", "doubles", object())


def test_pkgs_to_install_that_is_not_a_list_of_strings_says_what_to_pass() -> None:
    conn = Connection(FakeContainerManager(FakeSchooner([])))
    for pkgs in ("scikit-learn", ["numpy", 1]):
        with pytest.raises(InvalidRequestError, match=r"pkgs_to_install must be a list of pip"):
            deploy_python_closure(conn, "m", "1", "doubles", double, pkgs_to_install=pkgs)  # type: ignore[arg-type]


def test_deploy_sklearn_model_without_sklearn_says_to_pin_the_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Estimator:
        def predict(self, xs: Any) -> Any:
            return xs

    monkeypatch.setitem(sys.modules, "sklearn", None)
    conn = Connection(FakeContainerManager(FakeSchooner([])))
    with pytest.raises(InvalidRequestError, match=r"pass pkgs_to_install="):
        deploy_sklearn_model(conn, "m", "1", "doubles", Estimator())


# --------------------------------------------------------------------------- libraries underneath


def test_an_unpicklable_closure_is_a_deploy_error_that_says_what_to_fix() -> None:
    conn, _api, events = connected()
    lock = threading.Lock()

    def locked(xs: list[float]) -> list[float]:
        with lock:
            return xs

    with pytest.raises(DeployError, match=r"cannot pickle .*lock.*can be pickled \(no open files"):
        deploy_python_closure(conn, "m", "1", "doubles", locked)
    assert events == [], "nothing is asked of the cluster for a model that cannot be pickled"


@pytest.mark.parametrize(
    ("default_output", "why"),
    [
        (object(), "is a Python object: use JSON values only"),
        (float("nan"), "is NaN: use a finite number"),
    ],
)
def test_a_value_that_is_not_json_is_an_invalid_request_before_any_request(
    default_output: object, why: str
) -> None:
    conn, _api, events = connected()
    with pytest.raises(InvalidRequestError, match=rf"default_output {why}") as info:
        conn.register_application("app", "doubles", default_output, 100000)
    assert info.value.status_code is None
    assert events == []


def test_a_base_url_that_is_no_url_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError, match="is not a URL of the management frontend"):
        JSONClient("http://[::1")


def test_a_data_dir_that_cannot_be_made_is_a_container_manager_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cm = LocalContainerManager(data_dir=blocker / "data")
    with pytest.raises(ContainerManagerError, match=r"cannot use the data directory .*file.*"):
        cm.start_cluster()
    with pytest.raises(ContainerManagerError, match=r"a file stands where a directory is"):
        cm.set_num_replicas("m", "1", "doubles", "ab" * 32, 1)


def test_get_logs_into_a_file_is_an_error_that_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "data" / "logs").mkdir(parents=True)
    (tmp_path / "data" / "logs" / "query.log").write_text("x\n")
    target = tmp_path / "taken"
    target.write_text("a file")
    conn = Connection(LocalContainerManager(data_dir=tmp_path / "data"))
    with pytest.raises(ContainerManagerError, match=rf"cannot copy the logs .*{target.name}"):
        conn.get_logs(target)


def test_pip_install_into_a_path_that_is_a_file_is_a_deploy_error(tmp_path: Path) -> None:
    target = tmp_path / "site-packages"
    target.write_text("a file")
    with pytest.raises(DeployError, match=r"cannot prepare .* for pip"):
        pip_install(sys.executable, target, ["x"], log_path=tmp_path / "pip.log", timeout=5)


def test_a_free_port_on_a_host_that_is_not_here_is_a_container_manager_error() -> None:
    with pytest.raises(ContainerManagerError, match=r"cannot pick a free port on 192\.0\.2\.1"):
        free_port("192.0.2.1")  # TEST-NET-1: never an address of this machine


def test_a_process_record_with_a_damaged_pid_is_not_alive() -> None:
    record = ProcessRecord("query", "query", -1, 0.0, [], "")
    assert not is_alive(record)


def test_a_docker_host_the_sdk_cannot_use_is_a_container_manager_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "ftp://nowhere")
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    with pytest.raises(ContainerManagerError, match=r"cannot reach the Docker engine"):
        DockerContainerManager("c").client  # noqa: B018 (connects)


def test_a_credential_plugin_failing_mid_call_is_a_container_manager_error() -> None:
    from kubernetes.config.config_exception import ConfigException

    class Core:
        def list_namespaced_pod(self, *args: Any, **kw: Any) -> Any:
            raise ConfigException("exec plugin: token expired and refresh failed")

    cm = KubernetesContainerManager(apps_api=object(), core_api=Core())
    with pytest.raises(ContainerManagerError, match=r"refresh failed; check that the cluster"):
        cm.replica_states("m", "1")


def test_a_build_context_that_cannot_be_written_is_an_error_of_what_was_built(
    tmp_path: Path,
) -> None:
    builder = ImageBuilder(
        object(),  # type: ignore[arg-type]
        base_image="python:3.11-slim",
        network_mode=None,
        wheelhouse=None,
        timeout=5,
        push=False,
        report=lambda line: None,
    )
    missing = tmp_path / "no-such-bundle"
    with pytest.raises(DeployError, match=r"cannot prepare the build context of m:1"):
        builder.model_image("base", "m", "1", missing, "ab" * 32, [], {})


def test_a_host_that_is_not_this_machines_is_named_not_called_busy(tmp_path: Path) -> None:
    cm = LocalContainerManager(data_dir=tmp_path / "data", host="192.0.2.1")
    with pytest.raises(ContainerManagerError, match=r"cannot bind port .* on 192\.0\.2\.1: "):
        cm.start_cluster()
    assert not (tmp_path / "data" / "cluster.json").exists()


def test_a_marker_that_cannot_be_evaluated_is_left_to_pip() -> None:
    # packaging raises UndefinedComparison for this marker; pip gets to say why.
    assert unsatisfied(['x; python_version ~= "3"'], {}) == ['x; python_version ~= "3"']


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.set_num_replicas("m", -1),
        lambda c: c.set_model_version("m", "1", num_replicas=-1),
        lambda c: c.deploy_model("m", "1", "doubles", "prebuilt/m:1", num_replicas=-1),
        lambda c: c.build_and_deploy_model("m", "1", "doubles", "/bundle", num_replicas=-1),
        lambda c: deploy_python_closure(c, "m", "1", "doubles", double, num_replicas=-1),
    ],
)
def test_a_negative_replica_count_is_refused_before_any_request(call: Any) -> None:
    conn, _api, events = connected()
    with pytest.raises(InvalidRequestError, match=r"num_replicas must be >= 0, got -1"):
        call(conn)
    assert events == [], "nothing is built, registered or scaled"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.stop_models(5), "pass a model name or a list of them, got 5"),
        (lambda c: c.stop_models(["m", "Bad_Name"]), "model name 'Bad_Name' is not a DNS-1123"),
        (lambda c: c.stop_inactive_model_versions(None), "pass a model name or a list of them"),
        (lambda c: c.stop_versioned_models(None), "pass the versions by model"),
        (lambda c: c.stop_versioned_models({"m": None}), "pass a model's versions as a list"),
        (
            lambda c: c.register_application("a", "doubles", -1, 1000, policy_params=5),
            "policy_params must be a JSON object, got 5",
        ),
        (
            lambda c: c.deploy_model("m", "1", "doubles", "prebuilt/m:1", labels=5),
            "labels must be a list of strings, got 5",
        ),
        (
            lambda c: c.deploy_model("m", "1", "doubles", "prebuilt/m:1", labels=["a", 7]),
            "labels must be a list of strings, but it holds 7",
        ),
        (lambda c: c.get_app_info(5), "a name must be a string, got 5"),
        (lambda c: c.get_linked_models(None), "a name must be a string, got None"),
    ],
)
def test_arguments_of_the_wrong_kind_are_invalid_requests_before_any_request(
    call: Any, message: str
) -> None:
    conn, _api, events = connected()
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        call(conn)
    assert events == [], "nothing is sent, stopped or registered"


def test_one_version_given_as_a_string_is_one_version_not_its_characters() -> None:
    conn, _api, events = connected()
    conn.deploy_model("m", "12", "doubles", "prebuilt/m:1")
    events.clear()
    conn.stop_versioned_models({"m": "12"})
    assert "PUT /admin/models/m/versions/12/replicas" in events
    assert not any("/versions/1/" in e or "/versions/2/" in e for e in events)
