"""Issue 12, row 11: two servers of a cluster set to the same port are refused when the
manager is constructed, naming both settings, instead of one server dying on bind and
``start()`` failing later with a confusing 404."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from admin import DockerContainerManager, KubernetesContainerManager, LocalContainerManager
from admin.container_managers.base import ContainerManager
from admin.exceptions import InvalidRequestError


def local(tmp_path: Path, **ports: Any) -> ContainerManager:
    return LocalContainerManager(data_dir=tmp_path, **ports)


def docker(_tmp_path: Path, **ports: Any) -> ContainerManager:
    return DockerContainerManager("c", docker_client=object(), **ports)  # type: ignore[arg-type]


def kube(_tmp_path: Path, **ports: Any) -> ContainerManager:
    return KubernetesContainerManager("c", apps_api=object(), core_api=object(), **ports)


MANAGERS: dict[str, Callable[..., ContainerManager]] = {
    "local": local,
    "docker": docker,
    "kubernetes": kube,
}


@pytest.mark.parametrize("make", MANAGERS.values(), ids=MANAGERS.keys())
def test_equal_query_and_management_ports_are_refused(
    make: Callable[..., ContainerManager], tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make(tmp_path, query_port=8080, management_port=8080)
    message = str(info.value)
    assert "query_port and management_port are both 8080" in message
    assert "different management_port" in message
    assert not list(tmp_path.iterdir()), "nothing is written for a refused manager"


@pytest.mark.parametrize("make", [local, docker], ids=["local", "docker"])
@pytest.mark.parametrize(
    ("ports", "named"),
    [
        ({"rpc_port": 1337}, "query_port and rpc_port are both 1337"),
        ({"redis_port": 1338}, "management_port and redis_port are both 1338"),
        ({"rpc_port": 9000, "redis_port": 9000}, "rpc_port and redis_port are both 9000"),
    ],
)
def test_rpc_and_redis_ports_must_differ_from_the_others(
    make: Callable[..., ContainerManager], tmp_path: Path, ports: dict[str, int], named: str
) -> None:
    with pytest.raises(InvalidRequestError, match=named):
        make(tmp_path, **ports)


@pytest.mark.parametrize("make", [local, docker], ids=["local", "docker"])
def test_redis_port_is_free_to_reuse_when_redis_runs_elsewhere(
    make: Callable[..., ContainerManager], tmp_path: Path
) -> None:
    make(tmp_path, redis_port=1338, redis_url="redis://redis.example:6379/0")
