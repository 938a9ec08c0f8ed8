"""What the Kubernetes manager does with Docker and a registry, for real: deploying a
model builds its image, tags it under the registry and pushes it there, and the
Deployment it creates runs exactly that image.

A real Docker engine (as the other e2e tests) and a real registry: Debian's
``docker-registry`` (the Distribution registry, registry:2) on 127.0.0.1, which Docker
pushes to without TLS. Only the API server is a fake (``FakeKubeAPIServer``), since no
cluster can run here. Skipped, saying why, without the engine or the registry binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_kube_apiserver import FakeKubeAPIServer
from polling import eventually
from ports import free_port

from admin import DeployError, KubernetesContainerManager
from model_container.bundle import bundle_digest, write_closure_bundle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

BASE_IMAGE = os.environ.get("SCHOONER_TEST_BASE_IMAGE", "schooner/base-python:3.11")
REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@pytest.fixture(scope="module")
def registry(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:<port>`` of a registry running for this module."""
    binary = shutil.which("docker-registry")
    if binary is None:
        message = "the registry binary is missing (apt-get install docker-registry)"
        if os.environ.get("SCHOONER_REQUIRE_DOCKER") == "1":
            pytest.fail(f"Kubernetes image tests cannot run: {message}", pytrace=False)
        pytest.skip(f"Kubernetes image tests skipped: {message}")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(root=root / "data", port=port))
    log = (root / "registry.log").open("wb")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the registry exited: {(root / 'registry.log').read_text()}")
            return httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200

        eventually(
            up,
            lambda: f"the registry to start: {(root / 'registry.log').read_text()}",
            30,
            ignoring=(httpx.HTTPError,),
        )
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def make_model() -> Callable[[Any], list[float]]:
    def model(xs: Any) -> list[float]:
        return [float(x[0]) + 1.0 for x in xs]

    return model


def tags(registry: str, repository: str) -> list[str]:
    reply = httpx.get(f"http://{registry}/v2/{repository}/tags/list", timeout=10)
    if reply.status_code == 404:
        return []
    reply.raise_for_status()
    return list(reply.json().get("tags") or [])


def test_deploying_builds_tags_and_pushes_the_image_the_deployment_runs(
    docker_client: Any, registry: str, tmp_path: Path, session_id: str
) -> None:
    server = FakeKubeAPIServer()
    cm = KubernetesContainerManager(
        f"e2e-{session_id}-k8s",
        registry=f"{registry}/team",
        frontend_image=f"{registry}/team/schooner/frontend:unused",
        base_image=BASE_IMAGE,
        build_network_mode="host",  # the test engine has no default bridge
        apps_api=server.apps,
        core_api=server.core,
        docker_client=docker_client,
    )
    cm.start_cluster()
    bundle = tmp_path / "bundle"
    write_closure_bundle(bundle, make_model(), "doubles")

    digest = cm.build_model("plus-one", "1", bundle)
    assert digest == bundle_digest(bundle)
    # Named by the manager from (name, version, digest): nothing a client could choose.
    image = f"{registry}/team/schooner/model-plus-one:1-{digest[:12]}"
    tag = image.rpartition(":")[2]
    assert docker_client.images.get(image).labels["schooner.bundle-sha256"] == digest
    assert tag in tags(registry, "team/schooner/model-plus-one"), "the image was not pushed"
    # The pushed image is the one built: its digest in the registry is the engine's.
    pushed = docker_client.images.get_registry_data(image).id
    assert pushed in docker_client.images.get(image).attrs["RepoDigests"][0]

    cm.set_num_replicas("plus-one", "1", "doubles", digest, 1)
    name = cm.settings.model_name("plus-one", "1")
    deployment = server.get("Deployment", "schooner", name)
    (container,) = deployment.spec.template.spec.containers
    assert container.image == image
    assert {e.name: e.value for e in container.env}["SCHOONER_BUNDLE_SHA256"] == digest


def test_without_a_registry_nothing_is_built(docker_client: Any, tmp_path: Path) -> None:
    server = FakeKubeAPIServer()
    cm = KubernetesContainerManager(
        apps_api=server.apps, core_api=server.core, docker_client=docker_client
    )
    bundle = tmp_path / "bundle"
    write_closure_bundle(bundle, make_model(), "doubles")
    before = {t for i in docker_client.images.list() for t in i.tags}
    with pytest.raises(DeployError, match="Kubernetes runs images from a registry"):
        cm.build_model("plus-one", "1", bundle)
    assert {t for i in docker_client.images.list() for t in i.tags} == before
