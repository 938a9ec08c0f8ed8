"""Everything in admin closes what it opens: HTTP clients, SDK clients, API clients.

``http_clients`` records every ``httpx.Client`` that admin opens (by replacing the class
``admin._http`` instantiates), so a test can check that each one was closed -- on the
way out of a ``with``, and also when what ran inside it raised. The Docker and
Kubernetes managers are given recording fakes for the SDK clients they would open.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_kube_apiserver import FakeKubeAPIServer

from admin import (
    DockerContainerManager,
    KubernetesContainerManager,
    LocalContainerManager,
    ServiceUnavailableError,
)
from admin._http import JSONClient, ManagementClient
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
