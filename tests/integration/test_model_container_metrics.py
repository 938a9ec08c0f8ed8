"""A replica's /metrics, scraped over real HTTP while it serves real batches.

``python -m model_container`` runs as a real process with ``--metrics-port``; the test
plays the frontend with ``fake_frontend.FakeFrontend`` (a real ZeroMQ ROUTER) and reads
``/metrics`` with httpx. Then the embedded cluster: ``LocalContainerManager`` gives each
replica a metrics port, and the counters there add up to the queries the query frontend
answered. Counters are recorded just after an answer leaves, so reads poll with a
deadline; nothing asserts a duration.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from credentials import make_cluster_secrets
from fake_frontend import FakeFrontend
from frontend_side import REPLY_S, STARTUP_S
from polling import eventually
from ports import free_port, free_ports
from prometheus_client.parser import text_string_to_metric_families

from admin import Connection, LocalContainerManager
from admin.deployers.python import deploy_python_closure
from model_container import write_closure_bundle
from model_container.bundle import bundle_digest
from model_container.protocol import Error, Hello, InputType, Result

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def make_model() -> Callable[[Any], Any]:
    def model(xs: Any) -> Any:
        if float(xs[0][0]) < 0:
            raise ValueError("negative input")
        return [float(x.sum()) for x in xs]

    return model


def scrape(url: str, token: str) -> Samples:
    response = httpx.get(url, timeout=5, headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def summed(samples: Samples, name: str) -> float:
    """``name`` summed over all its label values."""
    return sum(v for (sample, _), v in samples.items() if sample == name)


@pytest.fixture
def frontend(tmp_path: Path) -> Iterator[FakeFrontend]:
    fake = FakeFrontend(secrets=make_cluster_secrets(tmp_path / "cluster"))
    yield fake
    fake.close()


@pytest.fixture
def start_container(
    tmp_path: Path, frontend: FakeFrontend
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    bundle = tmp_path / "bundle"
    write_closure_bundle(bundle, make_model(), InputType.DOUBLES, ["numpy"])
    started: list[subprocess.Popen[bytes]] = []
    logs: list[Any] = []

    def start(**flags: str | int) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "model_container", "--bundle", str(bundle)]
        argv += ["--bundle-sha256", bundle_digest(bundle)]
        argv += ["--secrets-dir", str(frontend.secrets.replica_dir)]
        for flag, val in flags.items():
            argv += [f"--{flag.replace('_', '-')}", str(val)]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        log = (tmp_path / f"container-{len(started)}.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, cwd=tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=REPLY_S)
    for log in logs:
        log.close()
    for path in sorted(tmp_path.glob("container-*.log")):
        print(f"--- {path.name} ---\n{path.read_text(errors='replace')}")


def test_metrics_endpoint_counts_batches_inputs_and_errors(
    start_container: Callable[..., subprocess.Popen[bytes]], frontend: FakeFrontend, tmp_path: Path
) -> None:
    port = free_port()
    # The replica's credentials are the fake frontend's cluster's (its RPC keys, and the
    # admin token's digest the metrics endpoint checks).
    token = frontend.secrets.admin_token
    start_container(
        frontend=frontend.address,
        name="summer",
        version="v3",
        replica_id="summer-0",
        metrics_port=port,
        heartbeat_ms=200,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    identity, _ = frontend.expect(Hello, STARTUP_S)
    # The endpoint is up before registration, and says so.
    before = scrape(url, token)
    # Without the admin token, nothing: a 401 that does not show the metrics.
    anonymous = httpx.get(url, timeout=5)
    assert anonymous.status_code == 401 and "schooner_model" not in anonymous.text
    assert value(before, "schooner_model_frontend_connected") == 0
    assert value(before, "schooner_model_batches_total") == 0
    info = {"model": "summer", "version": "v3", "input_type": "doubles", "replica": "summer-0"}
    assert value(before, "schooner_model_info", **info) == 1
    assert value(before, "process_resident_memory_bytes") > 0

    frontend.welcome(identity, 200)
    frontend.predict(identity, 1, [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0]])
    assert frontend.expect(Result)[1].batch_id == 1
    frontend.predict(identity, 2, [[-1.0], [2.0]])
    assert frontend.expect(Error)[1].batch_id == 2
    frontend.predict(identity, 3, [[7.0]])
    assert frontend.expect(Result)[1].batch_id == 3

    def counted() -> bool:
        return value(scrape(url, token), "schooner_model_batches_total") == 3

    eventually(counted, "three batches counted")
    after = scrape(url, token)
    assert value(after, "schooner_model_predictions_total") == 4
    assert value(after, "schooner_model_errors_total", kind="model_raised") == 1
    assert value(after, "schooner_model_errors_total", kind="bad_output") == 0
    assert value(after, "schooner_model_batch_size_count") == 3
    assert value(after, "schooner_model_batch_size_sum") == 6
    assert value(after, "schooner_model_predict_duration_seconds_count") == 2
    assert value(after, "schooner_model_batch_duration_seconds_count") == 3
    assert value(after, "schooner_model_frontend_connected") == 1
    assert value(after, "schooner_model_queued_batches") == 0


def test_a_busy_metrics_port_exits_2_saying_so(
    start_container: Callable[..., subprocess.Popen[bytes]], frontend: FakeFrontend, tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = start_container(frontend=frontend.address, name="m", version="1", metrics_port=port)
        assert proc.wait(STARTUP_S) == 2
    log = (tmp_path / "container-0.log").read_text(errors="replace")
    assert f"cannot serve metrics on 127.0.0.1:{port}" in log
    assert "Traceback" not in log


# -------------------------------------------------------------------------- the cluster


@pytest.mark.timeout(300)
def test_local_replicas_each_serve_metrics(tmp_path: Path) -> None:
    query, management, rpc, redis = free_ports(4)
    cm = LocalContainerManager(
        data_dir=tmp_path / "cluster",
        query_port=query,
        management_port=management,
        rpc_port=rpc,
        redis_port=redis,
    )
    conn = Connection(cm)
    conn.start()
    try:
        conn.register_application("metered", "doubles", -1, 5_000_000)
        deploy_python_closure(conn, "meter", "1", "doubles", make_model(), num_replicas=2)
        conn.link_model_to_app("metered", "meter")
        for i in range(10):  # distinct inputs: the frontend's cache answers none of them
            r = httpx.post(
                f"http://{conn.get_query_addr()}/metered/predict",
                json={"input": [float(i), 1.0]},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            assert r.json()["output"] == float(i) + 1.0

        urls = cm.metrics_urls()
        replica_urls = [u for name, u in sorted(urls.items()) if name.startswith("replica-")]
        assert sorted(urls) == ["query", "replica-meter-1-r0", "replica-meter-1-r1"]
        assert all(u.startswith("http://127.0.0.1:") for u in replica_urls)

        token = cm.admin_token()
        for url in urls.values():  # every scrape needs the admin token
            assert httpx.get(url, timeout=5).status_code == 401

        def total(name: str) -> float:
            return sum(summed(scrape(u, token), name) for u in replica_urls)

        eventually(lambda: total("schooner_model_predictions_total") == 10, "10 predictions")
        for index, url in enumerate(replica_urls):
            samples = scrape(url, token)
            info = {
                "model": "meter",
                "version": "1",
                "input_type": "doubles",
                "replica": f"meter-1-r{index}",
            }
            assert value(samples, "schooner_model_info", **info) == 1
            assert value(samples, "schooner_model_frontend_connected") == 1
        assert total("schooner_model_errors_total") == 0
        frontend_view = scrape(urls["query"], token)
        batches = value(frontend_view, "schooner_batch_size_count", model="meter", version="1")
        assert total("schooner_model_batches_total") == batches
    finally:
        conn.stop_all()
