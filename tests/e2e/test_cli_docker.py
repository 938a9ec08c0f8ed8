"""The ``schooner`` command, run as a real process, driving a real Docker cluster.

One cluster serves the module, started and destroyed by the CLI itself, in host
networking (no bridge network can be used on these machines). The cluster is named by
``SCHOONER_MANAGER``/``SCHOONER_CLUSTER``/``SCHOONER_BASE_IMAGE`` in the command's
environment, as a user's shell would set them, so each command names only its verb:
every command attaches to the cluster by that name alone. The tests run in file order,
as a user would type the commands: start, register, deploy --func, link, predict,
scale, set-version, logs, status, stop and start again, destroy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polling
import pytest
from ports import cluster_ports

from admin import DockerContainerManager

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SCHOONER = str(Path(sys.executable).with_name("schooner"))
BASE_IMAGE = os.environ.get("SCHOONER_TEST_BASE_IMAGE", "schooner/base-python:3.11")

# The user's own code, in a directory that is not on the replicas' path: deploy --func
# must carry it (both modules) into the model image by value.
MODEL_V1 = """\
import scoring

def predict(xs):
    return [scoring.total(x) for x in xs]
"""
MODEL_V2 = """\
import scoring

def predict(xs):
    return [10 * scoring.total(x) for x in xs]
"""
SCORING = """\
def total(x):
    return float(sum(x))
"""


class CLI:
    """Runs ``schooner`` against one cluster, from ``cwd``."""

    def __init__(self, cluster: str, cwd: Path) -> None:
        self.cluster = cluster
        self.cwd = cwd
        self.start_argv: list[str] = []  # how the cluster was started
        self.env = {
            **os.environ,
            "SCHOONER_MANAGER": "docker",
            "SCHOONER_CLUSTER": cluster,
            "SCHOONER_BASE_IMAGE": BASE_IMAGE,
        }

    def run(
        self, *argv: str, stdin: str = "", timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SCHOONER, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            timeout=timeout,
            check=False,
        )

    def ok(self, *argv: str, stdin: str = "", timeout: float = 600) -> str:
        done = self.run(*argv, stdin=stdin, timeout=timeout)
        assert done.returncode == 0, (
            f"schooner {' '.join(argv)} exited {done.returncode}:\n{done.stderr}"
        )
        return done.stdout

    def json(self, *argv: str) -> Any:
        return json.loads(self.ok(*argv))


@pytest.fixture(scope="module")
def cli(
    docker_client: Any, session_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CLI]:
    work = tmp_path_factory.mktemp("cli")
    (work / "code").mkdir()
    (work / "code" / "scoring.py").write_text(SCORING)
    (work / "code" / "model_v1.py").write_text(MODEL_V1)
    (work / "code" / "model_v2.py").write_text(MODEL_V2)
    runner = CLI(f"e2e-{session_id}-cli", work)
    ports = cluster_ports()
    runner.start_argv = ["start", "--network-mode", "host"]
    for option, port in ports.items():
        runner.start_argv += [f"--{option.replace('_', '-')}", str(port)]
    try:
        out = runner.ok(*runner.start_argv, timeout=900)
        assert f"http://127.0.0.1:{ports['query_port']}" in out
        yield runner
    finally:
        runner.run("destroy", "--yes")
        with DockerContainerManager(runner.cluster) as cm:  # whatever a failure left
            cm.destroy()


def containers(docker_client: Any, cluster: str, **labels: str) -> list[Any]:
    wanted = {"schooner.cluster": cluster, **labels}
    return list(
        docker_client.containers.list(
            all=True, filters={"label": [f"{k}={v}" for k, v in wanted.items()]}
        )
    )


def test_register_deploy_link_and_predict(cli: CLI) -> None:
    app = cli.json("register", "sums", "--input-type", "doubles", "--default-output", "-1.0")
    assert app["name"] == "sums" and app["default_output"] == -1.0
    # A notebook (or script) run twice: the same app again is no error with --exist-ok.
    again = cli.run("register", "sums", "--input-type", "doubles", "--default-output", "-1.0")
    assert again.returncode == 1
    assert "already exists" in again.stderr and "pass --exist-ok" in again.stderr
    assert "`schooner unregister sums`" in again.stderr
    cli.ok("register", "sums", "--input-type", "doubles", "--default-output", "-1.0", "--exist-ok")

    out = cli.ok(
        "deploy",
        "summer",
        "1",
        "--input-type",
        "doubles",
        "--func",
        "model_v1:predict",
        "--path",
        "code",
    )
    assert "deployed summer:1" in out
    cli.ok("link", "sums", "summer")
    answer = cli.json("predict", "sums", "[1, 2, 3.5]")
    assert answer["output"] == 6.5 and answer["default"] is False
    assert answer["models"] == ["summer:1"]
    batch = cli.json("predict", "sums", "[[1], [2, 2]]", "--batch")
    assert [a["output"] for a in batch] == [1.0, 4.0]
    bad = cli.run("predict", "sums", "[1, 2")
    assert bad.returncode == 2 and "not JSON" in bad.stderr


def test_apps_and_models_list_what_was_made(cli: CLI) -> None:
    (app,) = cli.json("apps", "--json")
    assert app["name"] == "sums" and app["linked_models"] == "summer"
    table = cli.ok("models")
    assert table.splitlines()[0].split() == [
        "NAME",
        "VERSION",
        "INPUT_TYPE",
        "IS_CURRENT_VERSION",
        "NUM_REPLICAS",
    ]
    assert table.splitlines()[1].split() == ["summer", "1", "doubles", "yes", "1"]
    assert "None" not in table


def test_scale_runs_that_many_replica_containers(cli: CLI, docker_client: Any) -> None:
    cli.ok("scale", "summer", "2")
    running = [
        c
        for c in containers(docker_client, cli.cluster, **{"schooner.model": "summer"})
        if c.status == "running"
    ]
    assert len(running) == 2
    replicas = cli.json("replicas", "--json")
    assert sorted(r["replica_id"] for r in replicas) == ["summer-1-r0", "summer-1-r1"]
    assert cli.json("predict", "sums", "[2, 2]")["output"] == 4.0


def test_set_version_rolls_back_to_the_version_named(cli: CLI) -> None:
    cli.ok(
        "deploy",
        "summer",
        "2",
        "--input-type",
        "doubles",
        "--func",
        "model_v2:predict",
        "--path",
        "code",
    )
    assert cli.json("predict", "sums", "[1, 1]")["output"] == 20.0  # version 2 is current
    cli.ok("set-version", "summer", "1")
    answer = cli.json("predict", "sums", "[1, 1]")
    assert answer["output"] == 2.0 and answer["models"] == ["summer:1"]
    current = [m["version"] for m in cli.json("models", "--json") if m["is_current_version"]]
    assert current == ["1"]


def test_logs_list_the_containers_and_print_the_end_of_one(cli: CLI, tmp_path: Path) -> None:
    names = cli.ok("logs").split()
    assert {"query", "management", "redis", "summer-1-r0"} <= set(names)
    tail = cli.ok("logs", "query", "-n", "5")
    assert 0 < len(tail.splitlines()) <= 5
    assert "replica summer-1-r0" in cli.ok("logs", "query", "-n", "500")
    missing = cli.run("logs", "nope")
    assert missing.returncode == 1 and "known: " in missing.stderr
    copied = cli.ok("logs", "--out", str(tmp_path)).split()
    assert str(tmp_path / f"schooner-{cli.cluster}-query.log") in copied


def test_status_shows_the_containers_and_apps_without_a_literal_none(cli: CLI) -> None:
    out = cli.ok("status")
    assert f"running on cluster {cli.cluster!r} (docker)" in out
    lines = out.splitlines()
    assert any(line.split()[:3] == ["query", "query", "running"] for line in lines if line)
    assert any(line.split()[:3] == ["summer-1-r1", "replica", "running"] for line in lines if line)
    assert any(line.startswith("sums") and "summer:1" in line for line in lines)
    assert "None" not in out
    doc = cli.json("status", "--json")
    assert doc["running"] and doc["manager"] == "docker" and doc["cluster"] == cli.cluster


def test_stop_then_start_brings_back_apps_models_and_replicas(cli: CLI, docker_client: Any) -> None:
    out = cli.ok("stop")
    assert f"stopped Schooner on cluster {cli.cluster!r} (docker)" in out
    assert containers(docker_client, cli.cluster) == []
    stopped = cli.run("status")
    assert stopped.returncode == 1 and "not running" in stopped.stdout
    cli.ok(*cli.start_argv)
    assert [a["name"] for a in cli.json("apps", "--json")] == ["sums"]

    def answers() -> bool:
        done = cli.run("predict", "sums", "[1, 1]")
        return done.returncode == 0 and json.loads(done.stdout)["output"] == 2.0

    polling.eventually(
        answers,
        "summer:1 answering again after the restart",
        timeout=60,
        interval=0.5,
    )


def test_unlink_unregister_then_destroy_leave_nothing(cli: CLI, docker_client: Any) -> None:
    cli.ok("unlink", "sums", "summer")
    cli.ok("unregister", "sums")
    assert cli.json("apps", "--json") == []
    refused = cli.run("destroy")  # no terminal to ask, no --yes
    assert refused.returncode == 2 and "without --yes" in refused.stderr
    assert containers(docker_client, cli.cluster)
    out = cli.ok("destroy", "--yes")
    assert f"destroyed Schooner on cluster {cli.cluster!r} (docker)" in out
    assert containers(docker_client, cli.cluster) == []
    volumes = docker_client.volumes.list(filters={"label": f"schooner.cluster={cli.cluster}"})
    assert volumes == []
    gone = cli.run("status")
    assert gone.returncode == 1 and "not running" in gone.stdout
