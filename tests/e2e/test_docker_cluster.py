"""The notebook flow on a real Docker engine: Redis, both frontends and every replica in
containers built from ``deploy/docker/``, in host networking (bridge networks cannot be
used on these machines; the user-network mode is checked without an engine in
``tests/unit/test_docker_specs.py``).

One cluster serves the module (each test uses its own app and model names); the test of
``stop_all()``'s scope starts a second one. Cluster names are unique per session and
ports come from ``ports.cluster_ports`` (30000-32767, not 31000-31100), so a session
never touches another's containers.
"""

from __future__ import annotations

import itertools
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import polling
import pytest
from ports import cluster_ports

from admin import (
    ClusterAlreadyRunningError,
    ClusterNotRunningError,
    Connection,
    DeployError,
    DockerContainerManager,
    IncompatibleModelError,
    ModelStartError,
)
from admin.deployers.python import deploy_python_closure

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def manager(name: str, ports: dict[str, int] | None = None) -> DockerContainerManager:
    return DockerContainerManager(
        name,
        network_mode="host",
        base_image=os.environ.get("SCHOONER_TEST_BASE_IMAGE", "schooner/base-python:3.11"),
        **(ports or cluster_ports()),
    )


@pytest.fixture(scope="module")
def conn(docker_client: Any, session_id: str) -> Iterator[Connection]:
    c = Connection(manager(f"e2e-{session_id}-a"), deploy_timeout=120)
    try:
        c.start()
        yield c
    finally:
        c.close()
        c.cm.destroy()  # type: ignore[attr-defined]


def containers(docker_client: Any, cluster: str, **labels: str) -> list[Any]:
    wanted = {"schooner.cluster": cluster, **labels}
    return list(
        docker_client.containers.list(
            all=True, filters={"label": [f"{k}={v}" for k, v in wanted.items()]}
        )
    )


# One keep-alive client for every query: a client per request costs more CPU (an SSL
# context each) than the query itself.
_http = httpx.Client(limits=httpx.Limits(max_connections=32, max_keepalive_connections=32))


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    _http.close()


def predict(conn: Connection, app: str, body: Any, timeout: float = 10) -> httpx.Response:
    return _http.post(f"http://{conn.get_query_addr()}/{app}/predict", json=body, timeout=timeout)


def output_of(conn: Connection, app: str, x: Any) -> Any:
    r = predict(conn, app, {"input": x})
    assert r.status_code == 200, r.text
    return r.json()["output"]


def eventually(check: Callable[[], bool], what: str = "") -> None:
    """``polling.eventually`` with the patience containers need, through the moments
    when the cluster refuses connections (a container restarting)."""
    polling.eventually(check, what, timeout=60.0, ignoring=(httpx.HTTPError, OSError))


def test_notebook_flow_serves_an_sklearn_model(
    conn: Connection, docker_client: Any, tmp_path: Path
) -> None:
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=300, n_features=10, random_state=0)
    model = LogisticRegression().fit(x, y)
    lines: list[str] = []
    conn.report.callback = lines.append
    try:
        conn.register_application(
            name="pipeline", input_type="doubles", default_output="-1.0", slo_micros=100000
        )
        deploy_python_closure(
            conn,
            name="test-model",
            version="1",
            input_type="doubles",
            func=model.predict,
            pkgs_to_install=["scikit-learn"],
        )
    finally:
        conn.report.callback = None
    # The image build was shown as it went: its steps and pip's output.
    assert any("[test-model:1] Step" in line for line in lines)
    assert any(
        line.startswith("[test-model:1]") and ("scikit-learn" in line or "Using cache" in line)
        for line in lines
    )
    conn.link_model_to_app(app_name="pipeline", model_name="test-model")

    r = predict(conn, "pipeline", {"input": x[0].tolist()})
    assert r.status_code == 200
    body = r.json()
    assert body["default"] is False
    assert body["output"] == int(model.predict(x[:1])[0])
    r = predict(conn, "pipeline", {"input_batch": x[:20].tolist()})
    outputs = [p["output"] for p in r.json()["batch_predictions"]]
    assert outputs == model.predict(x[:20]).tolist()

    assert "pipeline" in conn.get_all_apps()
    assert "test-model:1" in conn.get_all_models()
    [record] = [m for m in conn.get_all_models(verbose=True) if m["name"] == "test-model"]
    assert record["is_current_version"] is True
    # Recorded: the bundle's digest, never an image name; the image is named after it.
    assert "artifact" not in record
    digest = record["bundle_sha256"]
    image = f"schooner/model-test-model:1-{digest[:12]}"
    assert conn.get_linked_models("pipeline") == ["test-model"]
    replicas = [
        r for r in conn.get_all_model_replicas(verbose=True) if r["model_name"] == "test-model"
    ]
    assert [r["replica_id"] for r in replicas] == ["test-model-1-r0"]
    assert "test-model:1" in conn.inspect_instance()["models"]

    # The replica is a labelled container of the model's image, restarted unless stopped.
    cluster = conn.cm.cluster_name  # type: ignore[attr-defined]
    [replica] = containers(docker_client, cluster, **{"schooner.model": "test-model"})
    assert replica.labels["schooner.role"] == "replica"
    assert replica.labels["schooner.replica_id"] == "test-model-1-r0"
    assert replica.image.tags == [image]
    assert replica.image.labels["schooner.bundle-sha256"] == digest
    env = dict(e.split("=", 1) for e in replica.attrs["Config"]["Env"])
    assert env["SCHOONER_BUNDLE_SHA256"] == digest
    assert replica.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert replica.attrs["HostConfig"]["NetworkMode"] == "host"

    # Every container's log is collected.
    names = {Path(p).name for p in conn.get_logs(tmp_path / "logs")}
    for role in ("redis", "management", "query", "test-model-1-r0"):
        assert f"schooner-{cluster}-{role}.log" in names
    query_log = (tmp_path / "logs" / f"schooner-{cluster}-query.log").read_text()
    assert "replica test-model-1-r0 of model 'test-model' version '1' connected" in query_log

    # Another process attaches by the containers' labels, knowing only the cluster's name.
    other = Connection(DockerContainerManager(cluster))
    other.connect()
    try:
        assert other.get_query_addr() == conn.get_query_addr()
        assert "pipeline" in other.get_all_apps()
    finally:
        other.close()
    with pytest.raises(ClusterAlreadyRunningError, match=cluster):
        Connection(DockerContainerManager(cluster)).start()


def test_the_credentials_stay_in_the_clusters_volumes_and_redis_requires_its_password(
    conn: Connection, docker_client: Any
) -> None:
    import redis

    cm = conn.cm
    assert isinstance(cm, DockerContainerManager)
    cluster = cm.cluster_name
    token = cm.admin_token()
    assert DockerContainerManager(cluster).admin_token() == token  # read back from the volume
    # Redis answers NOAUTH to a client without the cluster's password.
    url = f"redis://127.0.0.1:{cm.settings.redis_port}/0"
    with redis.Redis.from_url(url) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.get("schooner:meta")
    # No secret in any container's image config, environment or command line.
    for container in containers(docker_client, cluster):
        config = repr(container.attrs["Config"]) + repr(container.attrs["Args"])
        assert token not in config and "requirepass" not in config
    volumes = {v.name for v in docker_client.volumes.list()}
    assert {f"schooner-{cluster}-credentials", f"schooner-{cluster}-secrets-frontend"} <= volumes
    # Still serving, with the frontends authenticated to Redis and the replicas by CURVE.
    conn.register_application("behind-auth", "doubles", "shut", 1_000_000)
    eventually(lambda: predict(conn, "behind-auth", {"input": [1.0]}).json()["output"] == "shut")


def test_rollback_changes_the_outputs(conn: Connection) -> None:
    conn.register_application("versions", "doubles", -1, 2_000_000)
    deploy_python_closure(conn, "versioned", "1", "doubles", lambda xs: ["v1"] * len(xs))
    conn.link_model_to_app("versions", "versioned")
    assert output_of(conn, "versions", [1.0]) == "v1"
    deploy_python_closure(conn, "versioned", "2", "doubles", lambda xs: ["v2"] * len(xs))
    eventually(lambda: output_of(conn, "versions", [1.0]) == "v2", what="version 2 serving")
    conn.set_model_version("versioned", "1")
    eventually(lambda: output_of(conn, "versions", [1.0]) == "v1", what="rollback to 1")
    conn.set_model_version("versioned", "2")
    eventually(lambda: output_of(conn, "versions", [1.0]) == "v2", what="forward to 2")


def test_a_prebuilt_image_is_deployed_by_the_bundle_digest_it_carries(
    conn: Connection, docker_client: Any
) -> None:
    conn.register_application("prebuilt", "doubles", -1, 2_000_000)
    deploy_python_closure(conn, "prebuilt", "1", "doubles", lambda xs: ["built"] * len(xs))
    digest = (conn.get_model_info("prebuilt", "1") or {})["bundle_sha256"]
    image = f"schooner/model-prebuilt:1-{digest[:12]}"

    # The image of a version deployed before carries its digest: another version may run it.
    conn.deploy_model("prebuilt", "2", "doubles", image)
    assert (conn.get_model_info("prebuilt", "2") or {})["bundle_sha256"] == digest
    conn.link_model_to_app("prebuilt", "prebuilt")
    assert output_of(conn, "prebuilt", [1.0]) == "built"

    # An image without the label is refused before anything is registered.
    base = conn.cm.base_image  # type: ignore[attr-defined]
    with pytest.raises(DeployError, match=r"carries no valid schooner\.bundle-sha256 label"):
        conn.deploy_model("prebuilt", "3", "doubles", base)
    assert conn.get_model_info("prebuilt", "3") is None

    # The container checks the bundle in the image against the digest it is given.
    env = {
        "SCHOONER_INSECURE_RPC": "1",  # no keys needed: it must stop before it dials out
        "SCHOONER_BUNDLE_SHA256": "0" * 64,
        "SCHOONER_FRONTEND": "tcp://127.0.0.1:9",
        "SCHOONER_MODEL_NAME": "prebuilt",
        "SCHOONER_MODEL_VERSION": "1",
    }
    refused = docker_client.containers.run(image, environment=env, detach=True)
    try:
        assert refused.wait(timeout=60)["StatusCode"] == 2
        log = refused.logs().decode()
        assert f"has sha256 {digest}, but this model version was deployed with {'0' * 64}" in log
    finally:
        refused.remove(force=True)


def test_every_container_runs_as_an_unprivileged_user(conn: Connection, docker_client: Any) -> None:
    """No process of the cluster is root or holds a capability, and none can gain one;
    the model still loads from its image and answers, and Redis writes its volume."""
    conn.register_application("unprivileged", "doubles", -1, 2_000_000)
    deploy_python_closure(
        conn, "whoami-uid", "1", "doubles", lambda xs: [__import__("os").getuid()] * len(xs)
    )
    conn.link_model_to_app("unprivileged", "whoami-uid")
    assert output_of(conn, "unprivileged", [1.0]) == 10001

    cluster = conn.cm.cluster_name  # type: ignore[attr-defined]
    found = {c.labels["schooner.role"]: c for c in containers(docker_client, cluster)}
    assert {"redis", "management", "query", "replica"} <= set(found)
    for role, container in found.items():
        host = container.attrs["HostConfig"]
        assert host["CapDrop"] == ["ALL"], role
        assert "no-new-privileges" in host["SecurityOpt"], role
        # Every process in the container, as the kernel sees it (pid 1 and the server).
        code, out = container.exec_run(
            ["sh", "-c", "grep -h -E '^(Uid|CapEff|CapPrm|NoNewPrivs):' /proc/[0-9]*/status"]
        )
        assert code == 0, out
        lines = [line.split() for line in out.decode().splitlines()]
        assert lines, role
        for field, *values in lines:
            if field == "Uid:":
                assert all(int(v) == 10001 for v in values), (role, values)
            elif field == "NoNewPrivs:":
                assert values == ["1"], (role, values)
            else:
                assert int(values[0], 16) == 0, (role, field, values)
    # Redis keeps its append-only file in the volume, as its user.
    code, out = found["redis"].exec_run(["sh", "-c", "stat -c '%u' /data/appendonlydir"])
    assert (code, out.decode().strip()) == (0, "10001")


def test_scale_to_two_replicas_and_back(conn: Connection, docker_client: Any) -> None:
    cluster = conn.cm.cluster_name  # type: ignore[attr-defined]
    conn.register_application("scaled", "doubles", -1, 5_000_000)
    deploy_python_closure(
        conn,
        "whoami",
        "1",
        "doubles",
        lambda xs: [__import__("os").environ["SCHOONER_REPLICA_ID"]] * len(xs),
    )
    conn.link_model_to_app("scaled", "whoami")

    def mine() -> list[str]:
        found = containers(docker_client, cluster, **{"schooner.model": "whoami"})
        return sorted(c.labels["schooner.replica_id"] for c in found)

    conn.set_num_replicas("whoami", 2)
    assert mine() == ["whoami-1-r0", "whoami-1-r1"]
    seen: set[str] = set()
    waves = itertools.count(0, 64)
    with ThreadPoolExecutor(8) as pool:

        def both_answered() -> bool:
            start = next(waves)
            seen.update(
                pool.map(lambda i: output_of(conn, "scaled", [float(i)]), range(start, start + 64))
            )
            return len(seen) == 2

        eventually(both_answered, what="both replicas answered")
    assert seen == {"whoami-1-r0", "whoami-1-r1"}

    conn.set_num_replicas("whoami", 1)
    assert mine() == ["whoami-1-r0"]
    eventually(
        lambda: (
            [r for r in conn.get_all_model_replicas() if r.startswith("whoami-1-")]
            == ["whoami-1-r0"]
        ),
        what="the removed replica unregistered",
    )
    assert output_of(conn, "scaled", [1e6]) == "whoami-1-r0"
    conn.stop_models("whoami")
    assert mine() == []


def test_a_replica_killed_under_load_restarts_and_every_query_is_answered(
    conn: Connection, docker_client: Any
) -> None:
    def steady(xs: Any) -> list[float]:
        time.sleep(0.005)  # long enough that batches are in flight when the kill lands
        return [float(x[0]) for x in xs]

    cluster = conn.cm.cluster_name  # type: ignore[attr-defined]
    conn.register_application("steady-app", "doubles", "fallback", 3_000_000)
    deploy_python_closure(conn, "steady", "1", "doubles", steady, num_replicas=2)
    conn.link_model_to_app("steady-app", "steady")
    [victim] = containers(docker_client, cluster, **{"schooner.replica_id": "steady-1-r0"})

    def one(i: int) -> tuple[int, Any]:
        r = predict(conn, "steady-app", {"input": [float(i)]}, timeout=30)
        return r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(one, i) for i in range(1000)]
        # Let the load build up, then crash one replica mid-stream.
        eventually(futures[100].done, what="the first queries answered")
        killed_at = time.time()
        # The container's main process dies as in a crash (`docker kill` would count as a
        # deliberate stop, which the restart policy respects).
        os.kill(victim.attrs["State"]["Pid"], 9)
        answers = [f.result(timeout=60) for f in futures]
    assert all(code == 200 for code, _ in answers)
    # Every query got its own prediction, or the default; none was lost or mixed up.
    for i, (_, body) in enumerate(answers):
        assert body["output"] == float(i) or (body["default"] and body["output"] == "fallback")

    # The engine restarted the container, and the replica registered again.
    def back() -> bool:
        victim.reload()
        records = [
            r
            for r in conn.get_all_model_replicas(verbose=True)
            if r["replica_id"] == "steady-1-r0" and r["connected_at"] > killed_at
        ]
        return victim.status == "running" and victim.attrs["RestartCount"] >= 1 and bool(records)

    eventually(back, what="the killed replica restarted and registered again")
    assert all(s.running for s in conn.cm.replica_states("steady", "1"))
    assert output_of(conn, "steady-app", [12345.0]) == 12345.0


def test_restarting_the_redis_container_loses_nothing(conn: Connection, docker_client: Any) -> None:
    cluster = conn.cm.cluster_name  # type: ignore[attr-defined]
    conn.register_application("durable", "doubles", -1, 2_000_000)
    deploy_python_closure(conn, "durable-model", "1", "doubles", lambda xs: ["kept"] * len(xs))
    conn.link_model_to_app("durable", "durable-model")

    def state() -> tuple[Any, ...]:
        return (
            conn.get_all_apps(verbose=True),
            conn.get_all_models(verbose=True),
            conn.get_linked_models("durable"),
            conn.get_model_info("durable-model", "1"),
        )

    before = state()
    [redis] = containers(docker_client, cluster, **{"schooner.role": "redis"})
    redis.restart(timeout=30)
    eventually(lambda: state() == before, what="the same apps, models and links after the restart")
    assert output_of(conn, "durable", [1.0]) == "kept"
    # Writes work again, and reach the query frontend through the change feed.
    conn.register_application("after-restart", "doubles", -1, 2_000_000)
    conn.link_model_to_app("after-restart", "durable-model")
    eventually(lambda: output_of(conn, "after-restart", [2.0]) == "kept", what="a new app served")


def test_a_bad_package_fails_the_deploy_with_the_build_error(conn: Connection) -> None:
    with pytest.raises(DeployError) as exc:
        deploy_python_closure(
            conn,
            "bad-package",
            "1",
            "doubles",
            lambda xs: xs,
            pkgs_to_install=["schooner-e2e-no-such-package"],
        )
    message = str(exc.value)
    assert "building bad-package:1 failed" in message
    assert "No matching distribution found for schooner-e2e-no-such-package" in message
    assert "\x1b[" not in message
    assert not [m for m in conn.get_all_models() if m.startswith("bad-package:")]


def test_a_model_that_cannot_load_is_reported_with_its_log(
    conn: Connection, docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module that exists here but not in the image: the pickle refers to it by name.
    (tmp_path / "e2e_only_here.py").write_text("def predict(xs):\n    return [1] * len(xs)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import e2e_only_here  # type: ignore[import-not-found]

    try:
        with pytest.raises(ModelStartError) as exc:
            deploy_python_closure(conn, "cannot-load", "1", "doubles", e2e_only_here.predict)
    finally:
        sys.modules.pop("e2e_only_here", None)
    message = str(exc.value)
    assert "cannot-load-1-r0" in message and "status 2" in message
    assert "No module named 'e2e_only_here'" in message  # from the container's log
    # Nothing is left: no version registered, no container restarting forever.
    assert not [m for m in conn.get_all_models() if m.startswith("cannot-load:")]
    cluster = conn.cm.cluster_name  # type: ignore[attr-defined]
    assert containers(docker_client, cluster, **{"schooner.model": "cannot-load"}) == []


def test_a_pickle_from_another_python_is_refused_before_building(
    conn: Connection, tmp_path: Path
) -> None:
    from model_container.bundle import write_closure_bundle

    bundle = tmp_path / "foreign"
    info = write_closure_bundle(bundle, lambda xs: xs, "doubles", [])
    meta = (bundle / "model.json").read_text()
    (bundle / "model.json").write_text(meta.replace(info.runtime["python"], "3.10.13"))
    with pytest.raises(IncompatibleModelError, match=r"3\.10\.13"):
        conn.build_and_deploy_model("foreign", "1", "doubles", bundle)
    assert not [m for m in conn.get_all_models() if m.startswith("foreign:")]


def test_stop_all_stops_only_its_cluster_and_start_brings_everything_back(
    conn: Connection, docker_client: Any, session_id: str
) -> None:
    name = f"e2e-{session_id}-b"
    ports = cluster_ports()
    second = Connection(manager(name, ports), deploy_timeout=120)
    try:
        second.start()
        second.register_application("second-app", "doubles", -1, 2_000_000)
        deploy_python_closure(second, "second-model", "1", "doubles", lambda xs: ["b"] * len(xs))
        second.link_model_to_app("second-app", "second-model")
        assert output_of(second, "second-app", [1.0]) == "b"
        ours = {c.name for c in containers(docker_client, conn.cm.cluster_name)}  # type: ignore[attr-defined]

        second.stop_all()
        assert containers(docker_client, name) == []
        assert {c.name for c in containers(docker_client, conn.cm.cluster_name)} == ours  # type: ignore[attr-defined]
        assert predict(conn, "no-such-app", {"input": [1.0]}).status_code == 404  # still up
        with pytest.raises(ClusterNotRunningError, match=name):
            Connection(DockerContainerManager(name)).connect()

        # The Redis volume kept the state; start() brings the replicas back from it.
        second = Connection(manager(name, ports), deploy_timeout=120)
        second.start()
        assert "second-app" in second.get_all_apps()
        assert second.get_linked_models("second-app") == ["second-model"]
        eventually(lambda: output_of(second, "second-app", [2.0]) == "b", what="serving again")
    finally:
        second.close()
        second.cm.destroy()  # type: ignore[attr-defined]
    assert containers(docker_client, name) == []
    assert not docker_client.volumes.list(filters={"label": f"schooner.cluster={name}"})


def test_a_tls_cluster_serves_https_verified_by_its_ca(
    docker_client: Any, session_id: str, tmp_path: Path
) -> None:
    """The certificate and key are mounted into containers that run as uid 10001: the
    key is given to that group (0640), as docs/deploy say."""
    import ssl

    import trustme

    from admin import TLSVerificationError
    from admin._http import ManagementClient

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    issued.cert_chain_pems[0].write_to_path(str(cert_file))
    issued.private_key_pem.write_to_path(str(key_file))
    os.chown(key_file, -1, 10001)
    key_file.chmod(0o640)

    name = f"e2e-{session_id}-tls"
    cm = DockerContainerManager(
        name,
        network_mode="host",
        base_image=os.environ.get("SCHOONER_TEST_BASE_IMAGE", "schooner/base-python:3.11"),
        tls_certfile=cert_file,
        tls_keyfile=key_file,
        tls_ca=ca_file,
        **cluster_ports(),
    )
    tls = Connection(cm, deploy_timeout=120)
    try:
        tls.start()
        assert cm.query_url.startswith("https://")
        tls.register_application("secure", "doubles", -1, 2_000_000)
        deploy_python_closure(tls, "sum", "1", "doubles", lambda xs: [sum(x) for x in xs])
        tls.link_model_to_app("secure", "sum")
        with httpx.Client(verify=ssl.create_default_context(cafile=str(ca_file))) as client:
            r = client.post(f"{cm.query_url}/secure/predict", json={"input": [1.0, 2.0]})
        assert r.status_code == 200, r.text
        assert r.json()["output"] == 3.0
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{cm.get_query_addr()}/healthz", timeout=5)
        with (
            ManagementClient(cm.management_url) as untrusting,
            pytest.raises(TLSVerificationError, match="tls_ca="),
        ):
            untrusting.list_apps()
    finally:
        tls.close()
        cm.destroy()


def test_a_replica_that_hits_its_memory_limit_is_restarted_and_says_why(
    conn: Connection, docker_client: Any
) -> None:
    def hog(xs: Any) -> list[float]:
        if any(x[0] < 0 for x in xs):  # the poison input: 512 MiB, written
            blob = b"\x01" * (512 * 2**20)
            return [float(len(blob))] * len(xs)
        return [float(x[0]) for x in xs]

    cluster = conn.cm.cluster_name  # type: ignore[attr-defined]
    conn.register_application("hog-app", "doubles", "fallback", 3_000_000)
    deploy_python_closure(conn, "hog", "1", "doubles", hog, num_replicas=2, memory_limit="256Mi")
    conn.link_model_to_app("hog-app", "hog")

    def state() -> tuple[Any, ...]:
        return (
            conn.get_all_apps(verbose=True),
            conn.get_all_models(verbose=True),
            conn.get_linked_models("hog-app"),
        )

    before = state()
    replicas = containers(docker_client, cluster, **{"schooner.model": "hog"})
    assert len(replicas) == 2
    for c in replicas:  # memory and swap alike: no swap to page out to
        assert c.attrs["HostConfig"]["Memory"] == 256 * 2**20
        assert c.attrs["HostConfig"]["MemorySwap"] == 256 * 2**20
    pids = {c.name: c.attrs["State"]["Pid"] for c in replicas}

    # The poison query is answered (the default, or an error), never left hanging.
    predict(conn, "hog-app", {"input": [-1.0]}, timeout=60)

    def killed_and_back() -> bool:
        found = containers(docker_client, cluster, **{"schooner.model": "hog"})
        hit = [
            c
            for c in found
            if c.attrs["RestartCount"] >= 1
            and c.attrs["State"]["OOMKilled"]
            and c.status == "running"
            and c.attrs["State"]["Pid"] != pids[c.name]
        ]
        return bool(hit)

    eventually(killed_and_back, what="a replica killed at its memory limit, restarted")
    states = conn.cm.replica_states("hog", "1")
    assert all(s.running for s in states), [s.detail for s in states]
    hit = [s for s in states if s.memory_limit_hit]
    assert hit and all(s.restarts >= 1 for s in hit)
    assert all("hit its memory limit (256Mi)" in s.detail for s in hit), [s.detail for s in hit]
    # Other queries are served again, by restarted replicas too; nothing else changed.
    eventually(lambda: output_of(conn, "hog-app", [7.0]) == 7.0, what="served again")
    assert state() == before


def test_a_replica_that_exits_for_a_restart_comes_back_and_says_why(
    conn: Connection, docker_client: Any
) -> None:
    """Status 75 is how a replica leaves when its query frontend asks it to (a batch past
    its timeout, or ejected): the engine starts it afresh, and that is no failure."""

    def obeys(xs: Any) -> list[float]:
        if any(x[0] == -75.0 for x in xs):
            os._exit(75)  # what model_container does on RESTART
        return [float(x[0]) for x in xs]

    cluster = conn.cm.cluster_name  # type: ignore[attr-defined]
    conn.register_application("obeys-app", "doubles", "fallback", 3_000_000)
    deploy_python_closure(conn, "obeys", "1", "doubles", obeys, num_replicas=1)
    conn.link_model_to_app("obeys-app", "obeys")
    [replica] = containers(docker_client, cluster, **{"schooner.model": "obeys"})
    pid = replica.attrs["State"]["Pid"]

    predict(conn, "obeys-app", {"input": [-75.0]}, timeout=60)

    def back() -> bool:
        replica.reload()
        state = replica.attrs["State"]
        return (
            replica.status == "running"
            and state["Pid"] != pid
            and replica.attrs["RestartCount"] >= 1
        )

    eventually(back, what="the replica restarted by the engine")
    [state] = conn.cm.replica_states("obeys", "1")
    assert state.running and not state.memory_limit_hit and state.restarts >= 1
    # The status of its last exit comes from the engine's die event.
    assert "exited at its query frontend's request" in state.detail, state.detail
    eventually(lambda: output_of(conn, "obeys-app", [5.0]) == 5.0, what="served again")


def _consecutive_ports() -> dict[str, int]:
    """Cluster ports whose rpc_port + 1 is free too (a second query frontend's)."""
    from ports import free_port

    while True:
        ports = cluster_ports()
        try:
            sock = socket.create_server(("127.0.0.1", ports["rpc_port"] + 1))
        except OSError:
            continue
        sock.close()
        if ports["rpc_port"] + 1 not in ports.values():
            return ports
        ports["redis_port"] = free_port()


def test_two_query_frontends_share_the_port_and_restart_one_at_a_time(
    docker_client: Any, session_id: str
) -> None:
    name = f"e2e-{session_id}-n2"
    cm = DockerContainerManager(
        name,
        network_mode="host",
        base_image=os.environ.get("SCHOONER_TEST_BASE_IMAGE", "schooner/base-python:3.11"),
        query_frontends=2,
        **_consecutive_ports(),
    )
    two = Connection(cm, deploy_timeout=120)
    try:
        two.start()
        queries = containers(docker_client, name, **{"schooner.role": "query"})
        assert sorted(c.name for c in queries) == [
            f"schooner-{name}-query",
            f"schooner-{name}-query-1",
        ]
        two.register_application("both", "doubles", "fallback", 5_000_000)
        deploy_python_closure(two, "echo", "1", "doubles", lambda xs: [x[0] for x in xs])
        two.link_model_to_app("both", "echo")
        # The replica registered with each frontend.
        eventually(
            lambda: (
                sorted(
                    r["frontend"]
                    for r in two.get_all_model_replicas(verbose=True)
                    if r["model_name"] == "echo"
                )
                == [f"docker-{name}-query", f"docker-{name}-query-1"]
            ),
            what="the replica registered with both frontends",
        )
        before = (two.get_all_apps(verbose=True), two.get_all_models(verbose=True))

        def one(i: int) -> float:
            # A new connection each: the kernel spreads them over both frontends. One
            # refused or reset before it was answered was not accepted: sent again.
            for _ in range(20):
                try:
                    with httpx.Client(timeout=30) as client:
                        r = client.post(
                            f"http://{two.get_query_addr()}/both/predict",
                            json={"input": [float(i)]},
                        )
                except httpx.TransportError:
                    continue
                assert r.status_code == 200, r.text
                return float(r.json()["output"])
            raise AssertionError(f"query {i} was never answered")

        started = {c.name: c.attrs["State"]["StartedAt"] for c in queries}
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(one, i) for i in range(400)]
            eventually(futures[20].done, what="the first queries answered")
            two.cm.restart_query_frontends()  # type: ignore[attr-defined]
            answers = [f.result(timeout=120) for f in futures]
        assert answers == [float(i) for i in range(400)]
        for c in queries:  # each was restarted (drained by SIGTERM), and serves again
            c.reload()
            assert c.status == "running" and c.attrs["State"]["StartedAt"] != started[c.name]
        assert (two.get_all_apps(verbose=True), two.get_all_models(verbose=True)) == before
        assert output_of(two, "both", [3.0]) == 3.0
    finally:
        two.close()
        cm.destroy()
