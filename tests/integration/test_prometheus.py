"""Prometheus and Grafana out of the box: Debian's real ``prometheus`` scraping a real
local cluster with ``deploy/prometheus/prometheus.yml`` as shipped (copied next to the
targets file the manager keeps, with a 1 s scrape interval), and every query of
``deploy/grafana/schooner.json`` answered with data. ``promtool check metrics`` finds
nothing wrong with what the query frontend and a replica serve.

Skipped when ``prometheus``/``promtool`` are not installed, unless
``SCHOONER_REQUIRE_PROMETHEUS=1`` (CI sets it), which makes their absence a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from clusters import started
from polling import eventually
from prometheus_server import Prometheus, require_tool

from admin import Connection, LocalContainerManager, cli
from admin.deployers.python import deploy_python_closure

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "schooner.json"
APP, MODEL = "prom-app", "prom-sum"

pytestmark = pytest.mark.timeout(300)


def dashboard_queries() -> list[tuple[str, str]]:
    """Every (panel title, expression) of the dashboard."""
    doc = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in doc["panels"]
        for target in panel.get("targets", [])
    ]


def substituted(expr: str, app: str = APP, model: str = MODEL) -> str:
    """An expression as Grafana sends it with one app and one model chosen (our names
    have nothing a regex would need escaped)."""
    return expr.replace("$__rate_interval", "1m").replace("$app", app).replace("$model", model)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[Connection]:
    require_tool("prometheus")
    manager = local_manager(tmp_path_factory.mktemp("prom-cluster"))
    with started(manager) as conn:
        conn.register_application(APP, "doubles", "-1", 100_000)
        deploy_python_closure(conn, MODEL, "1", "doubles", lambda xs: [sum(x) for x in xs])
        conn.link_model_to_app(APP, MODEL)
        yield conn


@pytest.fixture(scope="module")
def prometheus(
    cluster: Connection, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    cm = cluster.cm
    assert isinstance(cm, LocalContainerManager)
    server = Prometheus(
        require_tool("prometheus"),
        cm.prometheus_targets_file.parent,
        tmp_path_factory.mktemp("prom") / "tsdb",
    )
    try:
        eventually(
            lambda: server.client.get("/-/ready").status_code == 200,
            "prometheus is ready",
            60,
            ignoring=(httpx.TransportError,),
        )
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def traffic(cluster: Connection) -> Iterator[None]:
    """Predictions all along (some repeated: cache hits), and one bad request a second
    (a 400: the errors panel), until the module ends."""
    stop = threading.Event()
    url = f"{cluster.cm.query_url}/{APP}/predict"

    def send() -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not stop.is_set():
                i += 1
                for body in ({"input": [1.0, float(i % 7)]}, {"input": [float(i), 2.0]}):
                    with contextlib.suppress(httpx.TransportError):
                        client.post(url, json=body)
                if i % 20 == 0:
                    with contextlib.suppress(httpx.TransportError):
                        client.post(url, json={"input": "not a list of doubles"})
                stop.wait(0.02)

    worker = threading.Thread(target=send, name="traffic", daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=15)


def _targets_file(cluster: Connection) -> list[dict[str, Any]]:
    cm = cluster.cm
    assert isinstance(cm, LocalContainerManager)
    return list(json.loads(cm.prometheus_targets_file.read_text()))


def _up(prometheus: Prometheus) -> dict[str, str]:
    """Each active target's address and health."""
    return {t["labels"]["instance"]: t["health"] for t in prometheus.active_targets()}


def test_every_target_is_up_and_labelled(cluster: Connection, prometheus: Prometheus) -> None:
    groups = _targets_file(cluster)
    roles = sorted(g["labels"]["role"] for g in groups)
    assert roles == ["query", "replica"]
    replica = next(g for g in groups if g["labels"]["role"] == "replica")
    assert replica["labels"]["model"] == MODEL and replica["labels"]["version"] == "1"
    assert replica["labels"]["replica"] == f"{MODEL}-1-r0"
    wanted = {g["targets"][0] for g in groups}
    eventually(
        lambda: _up(prometheus) == dict.fromkeys(wanted, "up"),
        lambda: f"every target up: {prometheus.active_targets()}",
        60,
    )
    series = prometheus.get("/api/v1/query", query=f'up{{role="replica",model="{MODEL}"}}')
    assert [s["value"][1] for s in series["result"]] == ["1"]
    # The replica's own labels and its target's agree: one set, no exported_* copies.
    info = prometheus.get("/api/v1/query", query="schooner_model_info")["result"]
    assert len(info) == 1
    assert {k: v for k, v in info[0]["metric"].items() if k in ("model", "version", "replica")} == {
        "model": MODEL,
        "version": "1",
        "replica": f"{MODEL}-1-r0",
    }
    assert not [k for k in info[0]["metric"] if k.startswith("exported_")], info


def test_every_dashboard_query_returns_data(
    cluster: Connection, prometheus: Prometheus, traffic: None
) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    answered: dict[str, list[Any]] = {}

    def answers(expr: str) -> bool:
        answered[expr] = prometheus.get("/api/v1/query", query=substituted(expr))["result"]
        return bool(answered[expr])

    for title, expr in queries:
        eventually(
            lambda expr=expr: answers(expr),
            lambda title=title, expr=expr: (
                f"{title!r}: {substituted(expr)} returns data (last: {answered.get(expr)})"
            ),
            90,
            interval=1.0,
        )
    # Not only data: the numbers say what the traffic did.
    throughput = prometheus.get("/api/v1/query", query=substituted(dashboard_expr("Throughput")))[
        "result"
    ]
    assert throughput[0]["metric"] == {"app": APP} and float(throughput[0]["value"][1]) > 0
    hits = prometheus.get("/api/v1/query", query=substituted(dashboard_expr("Cache hit rate")))
    assert float(hits["result"][0]["value"][1]) > 0


def dashboard_expr(title: str) -> str:
    return next(expr for t, expr in dashboard_queries() if t == title)


def test_dashboard_template_variables_list_the_cluster(
    cluster: Connection, prometheus: Prometheus, traffic: None
) -> None:
    doc = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name, wanted in (("app", APP), ("model", MODEL)):
        match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variables[name]["definition"])
        assert match is not None, variables[name]
        metric, label = match.groups()
        eventually(
            lambda metric=metric, label=label, wanted=wanted: (
                wanted in prometheus.get(f"/api/v1/label/{label}/values", **{"match[]": metric})
            ),
            f"{name} lists {wanted}",
            60,
            interval=0.5,
        )


def test_a_bad_query_is_refused(prometheus: Prometheus) -> None:
    """What makes the dashboard check worth something: Prometheus parses each query."""
    reply = prometheus.client.get("/api/v1/query", params={"query": "sum by (app (up)"})
    assert reply.status_code == 400


def test_scaling_moves_the_targets(cluster: Connection, prometheus: Prometheus) -> None:
    def replicas_in_file() -> list[str]:
        return sorted(
            g["labels"]["replica"]
            for g in _targets_file(cluster)
            if g["labels"]["role"] == "replica"
        )

    def replicas_scraped(health: str = "up") -> list[str]:
        return sorted(
            t["labels"].get("replica", "")
            for t in prometheus.active_targets()
            if t["labels"].get("role") == "replica" and t["health"] == health
        )

    cluster.set_num_replicas(MODEL, 3)
    wanted = [f"{MODEL}-1-r{i}" for i in range(3)]
    assert replicas_in_file() == wanted
    eventually(lambda: replicas_scraped() == wanted, replicas_scraped, 60)
    addresses = {g["targets"][0] for g in _targets_file(cluster)}
    assert len(addresses) == 4, addresses  # query frontend and three distinct replica ports

    cluster.set_num_replicas(MODEL, 1)
    assert replicas_in_file() == [f"{MODEL}-1-r0"]
    eventually(
        lambda: (
            sorted(t["labels"].get("replica", "") for t in prometheus.active_targets())
            == ["", f"{MODEL}-1-r0"]
        ),
        prometheus.active_targets,
        60,
    )

    # The dashboard's scale: a count recorded through the REST API, which the cluster's
    # reconciler enacts with no notebook attached; the file follows it too.
    cm = cluster.cm
    admin = {"Authorization": f"Bearer {cm.admin_token()}"}
    scale = f"{cm.management_url}/admin/models/{MODEL}/versions/1/replicas"
    answer = httpx.put(scale, json={"num_replicas": 2}, headers=admin, timeout=10)
    assert answer.status_code == 200, answer.text
    two = [f"{MODEL}-1-r0", f"{MODEL}-1-r1"]
    eventually(lambda: replicas_in_file() == two, replicas_in_file, 60, interval=0.2)
    eventually(lambda: replicas_scraped() == two, replicas_scraped, 60)
    answer = httpx.put(scale, json={"num_replicas": 1}, headers=admin, timeout=10)
    assert answer.status_code == 200, answer.text
    eventually(lambda: replicas_in_file() == two[:1], replicas_in_file, 60, interval=0.2)


def test_promtool_finds_no_problem_in_our_metrics(cluster: Connection, traffic: None) -> None:
    promtool = require_tool("promtool")
    cm = cluster.cm
    assert isinstance(cm, LocalContainerManager)
    auth = {"Authorization": f"Bearer {cm.admin_token()}"}
    urls = cm.metrics_urls()
    replica = next(u for name, u in urls.items() if name.startswith("replica-"))
    for what, url in (("query frontend", urls["query"]), ("replica", replica)):
        text = httpx.get(url, headers=auth, timeout=10).text
        assert "schooner_" in text
        checked = subprocess.run(
            [promtool, "check", "metrics"],
            check=False,
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0 and not checked.stdout.strip(), (
            f"{what}: {checked.stdout}{checked.stderr}"
        )
    # The management frontend serves no metrics (docs/metrics.md): nothing to check there.
    mgmt = httpx.get(f"{cm.management_url}/metrics", headers=auth, timeout=10)
    assert mgmt.status_code == 404


def test_the_cli_says_where_prometheus_finds_the_cluster(
    cluster: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    cm = cluster.cm
    assert isinstance(cm, LocalContainerManager)
    config = cm.prometheus_targets_file.parent / "prometheus.yml"
    config.unlink(missing_ok=True)
    args = ["prometheus", "--data-dir", str(cm.data_dir)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"targets file: {cm.prometheus_targets_file}\n" in out
    assert f"admin token:  {cm.data_dir / 'admin-token'}\n" in out
    assert "pass --write-config" in out and not config.exists()
    assert cli.main([*args, "--write-config"]) == 0
    out = capsys.readouterr().out
    assert config.read_text() == (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert f"run:          prometheus --config.file {config} " in out
    assert cm.admin_token() not in out


def test_a_replica_the_supervisor_restarts_is_scraped_again(
    cluster: Connection, prometheus: Prometheus
) -> None:
    cm = cluster.cm
    assert isinstance(cm, LocalContainerManager)
    name = f"replica-{MODEL}-1-r0"

    def row() -> dict[str, Any]:
        return next(r for r in cm.processes() if r["name"] == name)

    def scraped() -> dict[str, str]:
        return {
            t["labels"]["instance"]: t["health"]
            for t in prometheus.active_targets()
            if t["labels"].get("replica") == f"{MODEL}-1-r0"
        }

    before = row()
    os.kill(before["pid"], signal.SIGKILL)
    eventually(
        lambda: row()["running"] and row()["pid"] != before["pid"], "the replica is back", 60
    )
    # The file names the address the running replica listens on, and Prometheus finds it.
    (group,) = [g for g in _targets_file(cluster) if g["labels"].get("replica") == f"{MODEL}-1-r0"]
    assert group["targets"] == [row()["metrics_addr"]]
    eventually(lambda: scraped() == {row()["metrics_addr"]: "up"}, scraped, 60, interval=0.5)


def test_the_cli_on_a_data_dir_with_no_cluster_says_so_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "none"
    assert cli.main(["prometheus", "--data-dir", str(data_dir)]) == 1
    assert "no cluster runs on data dir" in capsys.readouterr().err
    assert not data_dir.exists()
