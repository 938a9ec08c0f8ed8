"""End-to-end fixtures: a real Docker engine, or a skip that says why there is none.

The Docker tests need an engine that answers and the Python base image the cluster's
images are built ``FROM`` (``SCHOONER_TEST_BASE_IMAGE``, default
``schooner/base-python:3.11``, made by ``deploy/docker/build-base-image.sh`` since no
registry can be reached here). Without either they are skipped with the reason, so
``make test`` passes on a machine without Docker; with ``SCHOONER_REQUIRE_DOCKER=1`` (set
by ``.ci/run``, which provisions both) a missing engine fails them instead.

Everything a session creates is removed at its end: containers and volumes of its
clusters, and the images it built, except the base image. ``SCHOONER_KEEP_TEST_IMAGES=1``
keeps the cluster images (content-hashed, so a later session reuses them while the code
is unchanged) for a faster edit-test loop.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).parent
BASE_IMAGE = os.environ.get("SCHOONER_TEST_BASE_IMAGE", "schooner/base-python:3.11")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)


def _engine_or_reason() -> tuple[Any, str]:
    """A docker client, or why the Docker tests cannot run."""
    try:
        import docker
    except ImportError:
        return None, "the docker SDK is not installed (pip install -e '.[dev]')"
    from admin import ContainerManagerError
    from admin.container_managers._docker_engine import connect_to_engine

    try:
        client = connect_to_engine(timeout=30)
    except ContainerManagerError as exc:
        return None, f"{exc}; see ../shared/ENVIRONMENT.md"
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        client.close()
        return None, (
            f"the base image {BASE_IMAGE} is missing: build it with "
            "deploy/docker/build-base-image.sh (or set SCHOONER_TEST_BASE_IMAGE)"
        )
    return client, ""


def _schooner_tags(client: Any) -> set[str]:
    return {tag for image in client.images.list() for tag in image.tags if "schooner/" in tag}


def _removal_order(tag: str) -> int:
    """Children before parents: models, then the frontends, their base, then Redis."""
    repository = tag.rpartition(":")[0].rpartition("/")[2]
    order = {"frontend": 1, "model-container": 2, "redis": 3}
    return order.get(repository, 0)


@pytest.fixture(scope="session")
def session_id() -> str:
    """Unique per session: cluster names start with ``e2e-<it>-``."""
    return f"{os.getpid():x}{secrets.token_hex(2)}"


@pytest.fixture(scope="session")
def docker_client(session_id: str) -> Iterator[Any]:
    """The engine's client; skips (or, in CI, fails) the test when there is none."""
    client, reason = _engine_or_reason()
    if client is None:
        message = f"Docker e2e tests skipped: {reason}"
        if os.environ.get("SCHOONER_REQUIRE_DOCKER") == "1":
            pytest.fail(message.replace("skipped", "cannot run"), pytrace=False)
        pytest.skip(message)
    import docker.errors

    before = _schooner_tags(client)
    try:
        yield client
    finally:
        # What a failed test may have left: containers and volumes of this session's clusters.
        prefix = f"e2e-{session_id}-"
        for container in client.containers.list(all=True, filters={"label": "schooner.cluster"}):
            if container.labels.get("schooner.cluster", "").startswith(prefix):
                with contextlib.suppress(docker.errors.APIError):
                    container.remove(force=True)
        for volume in client.volumes.list(filters={"label": "schooner.cluster"}):
            if (volume.attrs.get("Labels") or {}).get("schooner.cluster", "").startswith(prefix):
                with contextlib.suppress(docker.errors.APIError):
                    volume.remove(force=True)
        keep = os.environ.get("SCHOONER_KEEP_TEST_IMAGES") == "1"
        for tag in sorted(_schooner_tags(client) - before, key=_removal_order):
            if tag == BASE_IMAGE or (keep and _removal_order(tag) > 0):
                continue
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(tag)  # unless another session's container uses it
        client.close()
