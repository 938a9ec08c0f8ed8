"""Clipper's admin API (``admin.clipper``) against a real Docker cluster.

Code written for Clipper changes only its imports; these tests check, behaviour by
behaviour, what such code sees: Clipper's method names, record keys, return values and
``ClipperException``, and its answers (string outputs that are JSON come back as JSON
values). One cluster serves the module, started with ``start_clipper()`` by Clipper's
``DockerContainerManager`` keywords, in host networking (``docker_network="host"``:
these machines have no bridge network); each test uses its own app and model names.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polling
import pytest
from ports import cluster_ports

from admin.clipper import (
    CLIPPER_DOCKER_LABEL,
    ClipperConnection,
    ClipperException,
    DockerContainerManager,
    UnconnectedException,
)
from admin.clipper.deployers import python as python_deployer
from model_container.bundle import write_closure_bundle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

BASE_IMAGE = os.environ.get("SCHOONER_TEST_BASE_IMAGE", "schooner/base-python:3.11")


def clipper_manager(name: str) -> DockerContainerManager:
    ports = cluster_ports()
    return DockerContainerManager(
        cluster_name=name,
        clipper_query_port=ports["query_port"],
        clipper_management_port=ports["management_port"],
        clipper_rpc_port=ports["rpc_port"],
        redis_port=ports["redis_port"],
        prometheus_port=9090,  # accepted, unused: metrics are the query frontend's
        docker_network="host",
        base_image=BASE_IMAGE,
    )


@pytest.fixture(scope="module")
def conn(docker_client: Any, session_id: str) -> Iterator[ClipperConnection]:
    c = ClipperConnection(clipper_manager(f"e2e-{session_id}-clipper"))
    try:
        c.start_clipper()
        yield c
    finally:
        c.stop_all()
        c.cm.destroy()  # type: ignore[attr-defined]


_http = httpx.Client()


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    _http.close()


def predict(conn: ClipperConnection, app: str, body: Any, slash: str = "") -> httpx.Response:
    return _http.post(f"http://{conn.get_query_addr()}/{app}/predict{slash}", json=body, timeout=10)


def answer(conn: ClipperConnection, app: str, x: Any) -> dict[str, Any]:
    r = predict(conn, app, {"input": x})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def eventually(check: Any, what: str = "") -> None:
    polling.eventually(check, what, timeout=60.0, ignoring=(httpx.HTTPError, OSError))


def cluster_containers(docker_client: Any, conn: ClipperConnection, **labels: str) -> list[Any]:
    wanted = {CLIPPER_DOCKER_LABEL: conn.cm.cluster_name, **labels}  # type: ignore[attr-defined]
    return list(
        docker_client.containers.list(filters={"label": [f"{k}={v}" for k, v in wanted.items()]})
    )


def registered(conn: ClipperConnection, model: str) -> list[str]:
    return sorted(
        m["model_version"] for m in conn.get_all_models(verbose=True) if m["model_name"] == model
    )


def test_the_seed_walkthrough_runs_as_written(conn: ClipperConnection) -> None:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = ["good movie", "great plot", "bad acting", "awful film", "good acting", "bad plot"]
    model = make_pipeline(CountVectorizer(), LogisticRegression()).fit(
        texts, ["pos", "pos", "neg", "neg", "pos", "neg"]
    )
    conn.register_application(
        name="reviews", input_type="strings", default_output="-1.0", slo_micros=1_000_000
    )
    python_deployer.deploy_python_closure(
        conn,
        name="test-model",
        version=1,
        input_type="strings",
        pkgs_to_install=["scikit-learn"],
        func=model.predict,
        registry="localhost:5000",  # accepted; this manager keeps images on its engine
    )
    conn.link_model_to_app(app_name="reviews", model_name="test-model")
    body = answer(conn, "reviews", "a great movie")
    assert body["default"] is False
    assert body["output"] == model.predict(["a great movie"])[0] == "pos"
    assert conn.get_current_model_version("test-model") == "1"


def test_records_have_clippers_keys_and_versions_roll_back(conn: ClipperConnection) -> None:
    conn.register_application("records", "doubles", "-1.0", 2_000_000)
    assert conn.get_app_info("records") == {
        "name": "records",
        "input_type": "doubles",
        "default_output": "-1.0",
        "latency_slo_micros": 2_000_000,
        "linked_models": [],
    }
    assert conn.get_app_info("no-such-app") is None
    assert conn.get_app_info("fake_app") is None  # a name no app can have
    assert "records" in conn.get_all_apps()
    assert {"name": "records"}.items() <= next(
        a for a in conn.get_all_apps(verbose=True) if a["name"] == "records"
    ).items()
    # Unlinked: the default, "-1.0" answered as the JSON number Clipper answered.
    body = answer(conn, "records", [1.0])
    assert body["default"] is True
    assert body["output"] == -1.0

    python_deployer.deploy_python_closure(conn, "rec", 1, "doubles", lambda xs: ["1"] * len(xs))
    python_deployer.deploy_python_closure(
        conn, "rec", "v2", "doubles", lambda xs: ['{"v": 2}'] * len(xs)
    )
    assert conn.get_current_model_version("rec") == "v2"
    conn.link_model_to_app("records", "rec")
    assert conn.get_linked_models("records") == ["rec"]
    assert conn.get_app_info("records")["linked_models"] == ["rec"]  # type: ignore[index]
    assert answer(conn, "records", [1.0])["output"] == {"v": 2}

    conn.set_model_version("rec", 1)
    eventually(lambda: answer(conn, "records", [1.0])["output"] == 1, "rollback to version 1")
    versions = {
        m["model_version"]: m for m in conn.get_all_models(verbose=True) if m["model_name"] == "rec"
    }
    assert set(versions["1"]) == {
        "model_name",
        "model_version",
        "input_type",
        "labels",
        "container_name",
        "model_data_path",
        "is_current_version",
    }
    assert versions["1"]["is_current_version"] is True
    assert versions["v2"]["is_current_version"] is False
    assert versions["1"]["container_name"].startswith("schooner/model-rec:1-")
    info = conn.get_model_info("rec", 1)
    assert info is not None and info["is_current_version"] is True
    assert conn.get_model_info("rec", "v9") is None
    assert sorted(m for m in conn.get_all_models() if m.startswith("rec:")) == ["rec:1", "rec:v2"]
    with pytest.raises(ClipperException, match="No versions of model nothing"):
        conn.get_current_model_version("nothing")


def test_replicas_scale_and_are_listed_as_clipper_did(
    conn: ClipperConnection, docker_client: Any
) -> None:
    python_deployer.deploy_python_closure(conn, "scaled", 1, "integers", lambda xs: [0] * len(xs))
    assert conn.get_num_replicas("scaled") == 1
    conn.set_num_replicas("scaled", 2)
    assert conn.get_num_replicas("scaled", 1) == 2
    assert len(cluster_containers(docker_client, conn, **{"schooner.model": "scaled"})) == 2
    replicas = [r for r in conn.get_all_model_replicas(verbose=True) if r["model_name"] == "scaled"]
    assert sorted(r["model_replica_id"] for r in replicas) == [0, 1]
    assert {r["model_id"] for r in replicas} == {"scaled:1"}
    assert {r["input_type"] for r in replicas} == {"integers"}
    assert {"scaled:1:0", "scaled:1:1"} <= set(conn.get_all_model_replicas())
    assert conn.get_model_replica_info("scaled", 1, 1) == {
        "model_id": "scaled:1",
        "model_name": "scaled",
        "model_version": "1",
        "model_replica_id": 1,
        "input_type": "integers",
    }
    assert conn.get_model_replica_info("scaled", 1, 7) is None
    conn.set_num_replicas("scaled", 1, version=1)
    assert conn.get_num_replicas("scaled") == 1

    conn.register_model("elsewhere", "v1", "doubles")
    with pytest.raises(ClipperException, match="containerless model elsewhere:v1"):
        conn.set_num_replicas("elsewhere", 5, "v1")
    with pytest.raises(ClipperException, match="non-registered model"):
        conn.set_num_replicas("elsewhere", 1, "v7")


def test_links_endpoints_and_apps_come_and_go(conn: ClipperConnection) -> None:
    conn.register_application("linking", "doubles", "DEFAULT", 2_000_000)
    with pytest.raises(ClipperException, match="No model with name 'not_deployed' exists"):
        conn.link_model_to_app("linking", "not_deployed")
    conn.register_model("ext", "v1", "doubles")
    conn.link_model_to_app("linking", "ext")
    assert conn.get_linked_models("linking") == ["ext"]
    conn.unlink_model_from_app("linking", "ext")
    assert conn.get_linked_models("linking") == []

    python_deployer.create_endpoint(
        conn, "endpoint", "doubles", lambda xs: [str(len(x)) for x in xs]
    )
    assert conn.get_linked_models("endpoint") == ["endpoint"]
    assert conn.get_model_info("endpoint", 1) is not None
    assert conn.get_app_info("endpoint")["default_output"] == "None"  # type: ignore[index]
    body = predict(conn, "endpoint", {"input": [1.0, 2.0, 3.0]}, slash="/").json()
    assert body["output"] == 3 and body["default"] is False

    conn.delete_application("endpoint")  # Clipper's deprecated name
    conn.unregister_application("linking")
    assert conn.get_app_info("endpoint") is None
    assert not {"endpoint", "linking"} & set(conn.get_all_apps())


def test_stop_methods_stop_and_unregister_as_clipper_did(
    conn: ClipperConnection, docker_client: Any
) -> None:
    def zeros(xs: Any) -> list[str]:
        return ["0"] * len(xs)

    for name in ("jimmy", "robert"):
        for version in ("i", "ii"):
            python_deployer.deploy_python_closure(conn, name, version, "doubles", zeros)

    def running(name: str) -> int:
        return len(cluster_containers(docker_client, conn, **{"schooner.model": name}))

    assert running("jimmy") == running("robert") == 2
    conn.stop_inactive_model_versions(["jimmy"])  # "ii" is current
    assert registered(conn, "jimmy") == ["ii"] and running("jimmy") == 1
    conn.stop_versioned_models({"robert": ["ii"]})
    assert registered(conn, "robert") == ["i"] and running("robert") == 1
    conn.stop_models(["jimmy"])
    assert registered(conn, "jimmy") == [] and running("jimmy") == 0
    conn.stop_all_model_containers()
    assert not [c for c in cluster_containers(docker_client, conn) if "schooner.model" in c.labels]
    # Unregistered, but for the versions apps still depend on (stopped; kept for them).
    linked = {m for app in conn.get_all_apps(verbose=True) for m in app["linked_models"]}
    assert {m.partition(":")[0] for m in conn.get_all_models()} <= linked
    assert registered(conn, "robert") == []


def test_addresses_logs_and_the_instance(conn: ClipperConnection, tmp_path: Path) -> None:
    cm = conn.cm
    assert isinstance(cm, DockerContainerManager)
    assert cm.get_admin_addr() == cm.get_management_addr()
    assert _http.get(f"http://{cm.get_admin_addr()}/healthz").status_code in (200, 401)
    token = {"Authorization": f"Bearer {cm.admin_token()}"}  # metrics are not public
    metrics = _http.get(f"http://{conn.get_metric_addr()}/metrics", headers=token)
    assert metrics.status_code == 200 and "# TYPE" in metrics.text
    assert conn.get_query_addr() == f"127.0.0.1:{cm.clipper_query_port}"

    logs = conn.get_clipper_logs(logging_dir=str(tmp_path / "logs"))
    assert len(logs) >= 3 and all(Path(p).is_file() for p in logs)
    instance = conn.inspect_instance()
    assert isinstance(instance, dict) and instance

    # A second connection attaches by the cluster's name; an unconnected one says so.
    fresh = ClipperConnection(DockerContainerManager(cluster_name=cm.cluster_name))
    with pytest.raises(UnconnectedException):
        fresh.get_all_apps()
    fresh.connect()
    try:
        assert fresh.get_query_addr() == conn.get_query_addr()
    finally:
        fresh.connection.close()


def test_test_predict_function_calls_the_function_as_a_replica_would(
    conn: ClipperConnection,
) -> None:
    def total(xs: Any) -> list[float]:
        # A replica passes a 2-d float64 array (no assert here: pytest rewrites asserts
        # into calls of its own, which the model container does not have).
        if not (isinstance(xs, np.ndarray) and xs.dtype == np.float64):
            return [-2.0] * len(xs)
        return [float(sum(x)) for x in xs]

    conn.register_application("summing", "doubles", "-1.0", 2_000_000)
    python_deployer.deploy_python_closure(conn, "summer", 1, "doubles", total)
    conn.link_model_to_app("summing", "summer")
    single = conn.test_predict_function({"input": [1.1, 2.2, 3.3]}, total, "doubles")
    assert single == [answer(conn, "summing", [1.1, 2.2, 3.3])["output"]] == [sum([1.1, 2.2, 3.3])]
    batch = [[1.1, 2.2, 3.3], [4.4, 5.5, 6.6]]
    served = predict(conn, "summing", {"input_batch": batch}).json()["batch_predictions"]
    assert conn.test_predict_function({"input_batch": batch}, total, "doubles") == [
        p["output"] for p in served
    ]
    assert conn.test_predict_function({"input": [1, 2]}, total, "doubles") == "Invalid input type"
    assert conn.test_predict_function({"x": [1.0]}, total, "doubles") == (
        "Invalid input type or JSON key"
    )


def test_build_model_then_deploy_model_by_the_image_name(
    conn: ClipperConnection, tmp_path: Path
) -> None:
    write_closure_bundle(tmp_path / "bundle", lambda xs: ["built"] * len(xs), "doubles")
    image = conn.build_model(
        "built", 1, str(tmp_path / "bundle"), "clipper/python37-closure-container:0.4.1"
    )
    assert image.startswith("schooner/model-built:1-")
    conn.deploy_model("built", 1, "doubles", image)
    conn.register_model("built", 2, "doubles", image=image)  # recorded with it, 0 replicas
    assert conn.get_num_replicas("built", 2) == 0
    conn.set_num_replicas("built", 1, version=2)
    assert conn.get_num_replicas("built", 2) == 1
    conn.build_and_deploy_model(
        "built", 3, "doubles", str(tmp_path / "bundle"), "default", labels=["third"]
    )
    info = conn.get_model_info("built", 3)
    assert info is not None and info["labels"] == ["third"] and info["is_current_version"]
    with pytest.raises(ClipperException, match="bundle"):
        conn.build_and_deploy_model("built", 4, "doubles", str(tmp_path), "default")


def test_a_request_pins_a_version_as_clipper_allowed(conn: ClipperConnection) -> None:
    """Clipper's ``{"input": ..., "version": "v1"}``: answered by that version; an unknown
    version is refused (400) saying so. (The query frontend's part: branch i15-oip.)"""
    conn.register_application("pinning", "doubles", "DEFAULT", 3_000_000)
    python_deployer.deploy_python_closure(
        conn, "pinned", "v1", "doubles", lambda xs: ["1"] * len(xs)
    )
    conn.link_model_to_app("pinning", "pinned")
    python_deployer.deploy_python_closure(
        conn, "pinned", "v2", "doubles", lambda xs: ["2"] * len(xs)
    )
    eventually(lambda: answer(conn, "pinning", [1.0])["output"] == 2, "version v2 serving")
    pinned = predict(conn, "pinning", {"input": [1.0], "version": "v1"})
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["output"] == 1 and pinned.json()["default"] is False
    unknown = predict(conn, "pinning", {"input": [1.0], "version": "nope"})
    assert unknown.status_code == 400
    assert "nope" in unknown.text
