"""No code from the network, on the embedded default: real redis-server, both frontends
and every replica as real local processes.

Row 1 of issue 12: a client recorded ``/tmp/evil-bundle`` as a version's artifact and
the operator's next ``stop_all(); start()`` ran it. Now a version records only its
bundle's sha256; the manager stores bundles under ``<data_dir>/bundles/<sha256>`` and
each replica refuses a bundle whose digest differs -- before it unpickles anything.
The planted pickles here would create a marker directory when loaded: the tests assert
it never appears.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from polling import eventually

from admin import (
    Connection,
    DeployError,
    InvalidRequestError,
    LocalContainerManager,
    ModelStartError,
)
from admin.deployers.python import deploy_python_closure
from model_container.bundle import bundle_digest, write_closure_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class MakesMarker:
    """Unpickling this runs ``os.mkdir(path)``: what a planted pickle would do, harmlessly."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def evil_bundle(path: Path, marker: Path) -> Path:
    """A well-formed closure bundle whose pickle creates ``marker`` when it is loaded."""
    write_closure_bundle(path, lambda xs: ["HIJACKED"] * len(xs), "doubles")
    (path / "func.pkl").write_bytes(pickle.dumps(MakesMarker(marker)))
    return path


def output_of(conn: Connection, app: str, x: Any) -> Any:
    r = httpx.post(f"http://{conn.get_query_addr()}/{app}/predict", json={"input": x}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["output"]


@pytest.fixture
def cluster(
    tmp_path: Path, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[tuple[Connection, Path]]:
    data_dir = tmp_path / "cluster"
    conn = Connection(local_manager(data_dir))
    conn.start()
    try:
        yield conn, data_dir
    finally:
        conn.stop_all()


def test_a_client_cannot_name_a_path_for_the_cluster_to_run(
    cluster: tuple[Connection, Path], tmp_path: Path
) -> None:
    conn, _data_dir = cluster
    marker = tmp_path / "evil-code-ran"
    evil = evil_bundle(tmp_path / "evil-bundle", marker)
    # Through the admin client's own (authenticated) connection: being allowed to call
    # the management API is not enough to make the cluster run a path.
    body = {
        "name": "logreg",
        "version": "666",
        "input_type": "doubles",
        "artifact": str(evil),
        "num_replicas": 1,
        "set_current": True,
    }
    with pytest.raises(InvalidRequestError, match="'artifact' is no longer accepted"):
        conn._api.request("POST", "/admin/models", body)
    # Naming its digest instead gets nothing either: the cluster never stored that bundle.
    body = {k: v for k, v in body.items() if k != "artifact"}
    conn._api.request("POST", "/admin/models", {**body, "bundle_sha256": bundle_digest(evil)})
    conn.stop_all()
    with pytest.raises(ModelStartError, match=r"logreg:666.*is not in this cluster's store"):
        conn.start()
    assert not marker.exists(), "the attacker's bundle was loaded"


def test_a_bundle_changed_in_the_store_is_refused_at_the_next_start_and_scale(
    cluster: tuple[Connection, Path], tmp_path: Path
) -> None:
    conn, data_dir = cluster
    conn.register_application("honest", "doubles", -1, 2_000_000)
    conn.register_application("victim", "doubles", -1, 2_000_000)
    deploy_python_closure(conn, "honest", "1", "doubles", lambda xs: ["honest"] * len(xs))
    deploy_python_closure(conn, "victim", "1", "doubles", lambda xs: ["victim"] * len(xs))
    conn.link_model_to_app("honest", "honest")
    conn.link_model_to_app("victim", "victim")
    assert output_of(conn, "victim", [1.0]) == "victim"

    recorded = (conn.get_model_info("victim", "1") or {})["bundle_sha256"]
    stored = data_dir / "bundles" / recorded
    assert bundle_digest(stored) == recorded
    assert (stored.stat().st_mode & 0o777) == 0o700
    marker = tmp_path / "tampered-code-ran"
    conn.stop_all()
    (stored / "func.pkl").write_bytes(pickle.dumps(MakesMarker(marker)))

    with pytest.raises(ModelStartError, match="victim:1") as restored:
        conn.start()
    assert "changed after it was deployed" in str(restored.value)
    assert not marker.exists(), "the tampered pickle was loaded on restore"
    # The untouched model came back; the tampered one serves nothing.
    eventually(lambda: output_of(conn, "honest", [1.0]) == "honest", what="honest restored")
    assert output_of(conn, "victim", [1.0]) != "victim"
    (log,) = (data_dir / "logs").glob("replica-victim-1-r*.log")
    assert f"was deployed with {recorded}" in log.read_text()

    with pytest.raises(ModelStartError, match="changed after it was deployed"):
        conn.set_num_replicas("victim", 2)
    assert not marker.exists(), "the tampered pickle was loaded on scaling"


def test_deploy_model_takes_a_bundle_directory_but_never_an_image_here(
    cluster: tuple[Connection, Path], tmp_path: Path
) -> None:
    conn, data_dir = cluster
    bundle = tmp_path / "prepared"
    write_closure_bundle(bundle, lambda xs: ["prepared"] * len(xs), "doubles")
    conn.register_application("prepared", "doubles", -1, 2_000_000)
    conn.deploy_model("prepared", "1", "doubles", bundle)
    conn.link_model_to_app("prepared", "prepared")
    assert output_of(conn, "prepared", [1.0]) == "prepared"
    assert (conn.get_model_info("prepared", "1") or {})["bundle_sha256"] == bundle_digest(bundle)
    assert (data_dir / "bundles" / bundle_digest(bundle)).is_dir()

    with pytest.raises(DeployError, match="runs model bundles it stores itself, not images"):
        conn.deploy_model("prepared", "2", "doubles", "attacker/evil:latest")
    assert conn.get_model_info("prepared", "2") is None


def test_a_version_registered_without_a_bundle_is_never_started(
    cluster: tuple[Connection, Path],
) -> None:
    conn, _data_dir = cluster
    with pytest.raises(InvalidRequestError, match="register_model records no artifact"):
        conn.register_model("elsewhere", "1", "doubles", "/tmp/evil-bundle")
    conn.register_model("elsewhere", "1", "doubles")
    with pytest.raises(DeployError, match="no bundle is recorded for it"):
        conn.set_num_replicas("elsewhere", 1)
    assert (conn.get_model_info("elsewhere", "1") or {})["num_replicas"] == 0
    # Recorded anyway (as a schema-1 version with only an artifact would read): start()
    # does not run it, and says to deploy it again.
    conn._api.set_num_replicas("elsewhere", "1", 1)
    conn.stop_all()
    with pytest.raises(ModelStartError, match=r"elsewhere:1 is recorded without a bundle"):
        conn.start()
