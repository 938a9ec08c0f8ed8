"""Everything in admin closes what it opens: HTTP clients, SDK clients, API clients.

``http_clients`` records every ``httpx.Client`` that admin opens (by replacing the class
``admin._http`` instantiates), so a test can check that each one was closed -- on the
way out of a ``with``, and also when what ran inside it raised. The Docker and
Kubernetes managers are given recording fakes for the SDK clients they would open. The
Connection and CLI tests run against ``FakeSchooner`` (test_admin_connection.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_kube_apiserver import FakeKubeAPIServer
from test_admin_connection import FAKE_TOKEN, FakeContainerManager, FakeSchooner

from admin import (
    ClusterNotRunningError,
    Connection,
    DockerContainerManager,
    KubernetesContainerManager,
    LocalContainerManager,
    ModelStartError,
    ServiceUnavailableError,
    cli,
)
from admin._http import JSONClient, ManagementClient
from admin.cli import _managers as cli_managers
from admin.container_managers import docker as docker_module
from admin.container_managers import kubernetes as kubernetes_module
from admin.container_managers._net import healthz_check


@pytest.fixture
def http_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[httpx.Client]]:
    """Every httpx.Client admin opens during the test."""
    opened: list[httpx.Client] = []

    class Recorded(httpx.Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(httpx, "Client", Recorded)
    yield opened


def left_open(clients: list[httpx.Client]) -> list[str]:
    return [str(c.base_url) for c in clients if not c.is_closed]


def answer(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/healthz":
        return httpx.Response(200, json={"status": "ok"})
    return httpx.Response(404, json={"error": "not_found", "message": "no such thing"})


# --------------------------------------------------------------------------- HTTP clients


def test_a_json_client_closes_on_leaving_with(http_clients: list[httpx.Client]) -> None:
    with ManagementClient("http://m", transport=httpx.MockTransport(answer)) as client:
        assert client.healthz() == {"status": "ok"}
        assert not client.is_closed
    assert client.is_closed
    assert len(http_clients) == 1 and left_open(http_clients) == []


def test_a_json_client_closes_when_the_block_raises(http_clients: list[httpx.Client]) -> None:
    with (
        pytest.raises(Exception, match="no such thing"),
        JSONClient("http://m", transport=httpx.MockTransport(answer)) as client,
    ):
        client.get_object("/nope")
    assert left_open(http_clients) == []


def test_close_is_idempotent() -> None:
    client = JSONClient("http://m", transport=httpx.MockTransport(answer))
    client.close()
    client.close()
    assert client.is_closed


def test_the_readiness_check_closes_its_client_up_or_down(
    http_clients: list[httpx.Client],
) -> None:
    assert healthz_check("http://127.0.0.1:9")() is False  # nothing listens on port 9
    assert len(http_clients) == 1 and left_open(http_clients) == []


def test_a_client_that_cannot_connect_is_still_closed(http_clients: list[httpx.Client]) -> None:
    with (
        pytest.raises(ServiceUnavailableError),
        ManagementClient("http://127.0.0.1:9", timeout=1) as client,
    ):
        client.healthz()
    assert left_open(http_clients) == []


# --------------------------------------------------------------------------- SDK clients


class Closable:
    """Stands in for a docker.DockerClient or a kubernetes ApiClient: counts close()."""

    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_the_local_manager_opens_nothing_and_is_a_context_manager(tmp_path: Any) -> None:
    with LocalContainerManager(data_dir=tmp_path / "data") as cm:
        assert cm.get_query_addr() == "127.0.0.1:1337"
    cm.close()  # nothing to close, and closing twice is fine


def test_the_docker_manager_closes_the_client_it_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Closable] = []

    def connect_to_engine() -> Closable:
        opened.append(Closable())
        return opened[-1]

    monkeypatch.setattr(docker_module, "connect_to_engine", connect_to_engine)
    with DockerContainerManager("c") as cm:
        assert cm.client is cm.client is opened[0]  # one client, opened on first use
    assert opened[0].closed == 1
    cm.close()
    assert opened[0].closed == 1, "closed once: close() is idempotent"
    # Used again after close(): a new client, closed in turn.
    assert cm.client is opened[1]
    cm.close()
    assert [c.closed for c in opened] == [1, 1]


def test_the_docker_manager_leaves_a_client_it_was_given_open() -> None:
    given = Closable()
    with DockerContainerManager("c", docker_client=given) as cm:  # type: ignore[arg-type]
        assert cm.client is given
    assert given.closed == 0
    assert cm.client is given, "the given client is still the manager's after close()"


def test_the_kubernetes_manager_closes_the_api_client_it_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = FakeKubeAPIServer()
    loaded: list[Closable] = []

    def load_client(kube_context: str | None, kubeconfig: str | None) -> tuple[Any, Any, Any]:
        loaded.append(Closable())
        return loaded[-1], server.apps, server.core

    monkeypatch.setattr(kubernetes_module, "load_client", load_client)
    with KubernetesContainerManager("c") as cm:
        assert cm.replica_states("m", "1") == []
        assert cm.replica_states("m", "2") == []
    assert [c.closed for c in loaded] == [1], "one client, loaded once, closed once"
    assert cm.replica_states("m", "1") == []  # loads a new one
    cm.close()
    assert [c.closed for c in loaded] == [1, 1]


def test_the_kubernetes_manager_leaves_clients_it_was_given_open() -> None:
    server = FakeKubeAPIServer()
    docker_client = Closable()
    cm = KubernetesContainerManager(
        "c",
        apps_api=server.apps,
        core_api=server.core,
        docker_client=docker_client,  # type: ignore[arg-type]
    )
    with cm:
        assert cm.replica_states("m", "1") == []
        assert cm.docker_client is docker_client
    assert docker_client.closed == 0
    assert cm.replica_states("m", "1") == []  # still its clients after close()


def test_the_kubernetes_manager_closes_a_docker_client_it_opened(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[Closable] = []
    monkeypatch.setattr(
        kubernetes_module, "connect_to_engine", lambda: opened.append(Closable()) or opened[-1]
    )
    server = FakeKubeAPIServer()
    with KubernetesContainerManager("c", apps_api=server.apps, core_api=server.core) as cm:
        assert cm.docker_client is opened[0]
    assert opened[0].closed == 1


# --------------------------------------------------------------------------- Connection


class ClosingManager(FakeContainerManager):
    """A fake manager that counts close(), as a Docker or Kubernetes manager would."""

    closed = 0

    def close(self) -> None:
        self.closed += 1


def fake_connection() -> tuple[Connection, FakeSchooner, ClosingManager]:
    api = FakeSchooner([])
    cm = ClosingManager(api)
    return Connection(cm, transport=api.transport()), api, cm


def test_entering_a_connection_returns_it_and_starts_nothing(
    http_clients: list[httpx.Client],
) -> None:
    conn, api, cm = fake_connection()
    with conn as entered:
        assert entered is conn
        assert not conn.connected
        assert api.events == []
    assert http_clients == []
    assert cm.closed == 1, "leaving closes the manager's clients too"


def test_leaving_a_connection_closes_every_client_and_the_cluster_keeps_running(
    http_clients: list[httpx.Client],
) -> None:
    conn, api, cm = fake_connection()
    with conn:
        conn.connect()
        conn.register_application("app", "doubles", "-1.0", 100000)
        conn.deploy_model("m", "1", "doubles", "prebuilt/m:1", num_replicas=2)
        conn.link_model_to_app("app", "m")
        conn.set_model_version("m", "1")
        assert conn.inspect_instance()["apps"]["app"]["model"] == "m:1"
        # The query frontend's clients (/status) are closed as soon as they are done.
        assert left_open(http_clients) == ["http://fake-management:1338"]
    assert not conn.connected
    assert len(http_clients) > 2 and left_open(http_clients) == []
    assert cm.closed == 1
    assert "cm.stop_all" not in api.events, "closing never stops the cluster"


def test_leaving_a_connection_on_an_error_still_closes_it(
    http_clients: list[httpx.Client],
) -> None:
    conn, _api, cm = fake_connection()
    with pytest.raises(ModelStartError), conn:
        conn.connect()
        cm.crash = True
        conn.deploy_model("m", "1", "doubles", "prebuilt/m:1")
    assert left_open(http_clients) == [] and cm.closed == 1


def test_close_is_idempotent_and_connect_opens_again(http_clients: list[httpx.Client]) -> None:
    conn, _api, cm = fake_connection()
    conn.connect()
    conn.close()
    conn.close()
    assert cm.closed == 2
    conn.connect()
    assert conn.get_all_models() == []
    conn.close()
    assert len(http_clients) == 2 and left_open(http_clients) == []


def test_a_failed_connect_leaves_nothing_open(http_clients: list[httpx.Client]) -> None:
    cm = ClosingManager(FakeSchooner([]))
    conn = Connection(cm, transport=httpx.MockTransport(lambda r: httpx.Response(503)))
    with pytest.raises(ServiceUnavailableError):
        conn.connect()
    assert not conn.connected and left_open(http_clients) == []


def test_a_connect_that_finds_no_cluster_closes_what_the_manager_opened() -> None:
    class NoCluster(ClosingManager):
        def connect(self) -> None:
            raise ClusterNotRunningError("no cluster here")

    cm = NoCluster(FakeSchooner([]))
    with pytest.raises(ClusterNotRunningError):
        Connection(cm).connect()
    assert cm.closed == 1


def test_stop_all_releases_the_managers_clients_after_stopping(
    http_clients: list[httpx.Client],
) -> None:
    conn, api, cm = fake_connection()
    conn.connect()
    conn.stop_all()
    assert api.events[-1] == "cm.stop_all" and cm.closed == 1
    assert left_open(http_clients) == []


# --------------------------------------------------------------------------- the CLI


class RunningLocalManager(LocalContainerManager):
    """The CLI's manager, with a cluster that is taken to be running (FakeSchooner)."""

    def start_cluster(self) -> None:
        pass

    def connect(self) -> None:
        pass

    def admin_token(self) -> str:
        return FAKE_TOKEN


@pytest.fixture
def cli_cluster(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, http_clients: list[httpx.Client]
) -> FakeSchooner:
    """The CLI against FakeSchooner: every client it opens gets the fake's transport."""
    fake = FakeSchooner([])
    fake.apps["app"] = {"name": "app", "policy": "single", "cache_enabled": True}
    fake.models["m"] = {"name": "m", "input_type": "doubles", "versions": ["1"]}
    fake.versions["m", "1"] = {"name": "m", "version": "1", "num_replicas": 0}
    opened = httpx.Client  # the recording class of http_clients

    class ToTheFake(opened):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["transport"] = fake.transport()
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(httpx, "Client", ToTheFake)
    monkeypatch.setattr(cli_managers, "LocalContainerManager", RunningLocalManager)
    monkeypatch.setenv("SCHOONER_HOME", str(tmp_path))
    return fake


COMMANDS = {
    "start": (["start"], 0),
    "status": (["status"], 0),
    # FakeSchooner cannot list apps (500): an error path, exit status 1.
    "apps": (["apps", "--json"], 1),
    "models": (["models"], 0),
    "replicas": (["replicas"], 0),
    "scale an unknown model": (["scale", "nope", "2"], 1),
    "set-version": (["set-version", "m", "1"], 0),
    "set-policy": (["set-policy", "app", "exp3", "--param", "eta=0.2"], 0),
    "policy-state": (["policy-state", "app", "--json"], 0),
    "create-api-key": (["create-api-key", "app"], 0),
    "revoke an unknown key": (["revoke-api-key", "app", "0" * 64], 1),
}


@pytest.mark.parametrize(("argv", "status"), COMMANDS.values(), ids=COMMANDS.keys())
def test_every_cli_command_closes_the_clients_it_opens(
    argv: list[str],
    status: int,
    cli_cluster: FakeSchooner,
    http_clients: list[httpx.Client],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(argv) == status, capsys.readouterr().err
    assert http_clients, "the command opened no client: is it still talking to the fake?"
    assert left_open(http_clients) == []


def test_a_cli_command_that_raises_still_closes_its_clients(
    cli_cluster: FakeSchooner,
    http_clients: list[httpx.Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def boom(self: Connection, verbose: bool = False) -> list[Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(Connection, "get_all_models", boom)
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["models"])
    assert http_clients and left_open(http_clients) == []


def test_status_names_the_open_apps_when_the_query_port_is_reachable_from_elsewhere(
    cli_cluster: FakeSchooner, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class OnEveryInterface(RunningLocalManager):
        def connect(self) -> None:
            self.host = "0.0.0.0"

    cli_cluster.apps["closed"] = {"name": "closed", "policy": "single", "cache_enabled": True}
    monkeypatch.setattr(cli_managers, "LocalContainerManager", OnEveryInterface)
    assert cli.main(["create-api-key", "closed"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("sk-closed-")
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    warning = out.strip().splitlines()[-1]
    assert warning.startswith("open to anyone") and ": app;" in warning
    assert "closed" not in warning
    assert key not in out
    # On loopback only, nothing to warn about.
    monkeypatch.setattr(cli_managers, "LocalContainerManager", RunningLocalManager)
    assert cli.main(["status"]) == 0
    assert "open to anyone" not in capsys.readouterr().out
