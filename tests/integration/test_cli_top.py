"""``schooner top`` against a real local cluster: the console script itself, in a
subprocess (stdout a pipe, so it prints one frame), after real predictions.

The query frontends write a tick of their counters every 2 s and the management
frontend reads them (``GET /admin/overview``), so each check sends predictions and then
runs ``schooner top --once`` until the frame shows them: the app with a throughput above
zero, the model with its replica connected and in rotation, and with ``--app`` the
default answers of an app with no model, with their reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from polling import eventually

from admin import Connection, LocalContainerManager, QueryClient
from admin.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SCHOONER = Path(sys.executable).parent / "schooner"


def top(data_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``schooner top --once ... --data-dir DIR``: the installed console script."""
    env = {k: v for k, v in os.environ.items() if k != "SCHOONER_ADMIN_TOKEN"}
    return subprocess.run(
        [str(SCHOONER), "top", "--once", *argv, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def cells(out: str, first: str) -> list[str]:
    """The cells of the frame's row that starts with ``first``, or [] if none does."""
    for line in out.splitlines():
        if line.split(maxsplit=1)[:1] == [first]:
            return line.split()
    return []


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, cluster_ports: Callable[[], dict[str, int]]
) -> Iterator[Path]:
    """A local cluster serving ``top-sums`` (linked to ``top-summer``, one replica) and
    ``top-nolink`` (no model: every query gets its default)."""
    data_dir = tmp_path_factory.mktemp("top-cluster")
    code = tmp_path_factory.mktemp("top-code")
    (code / "summer.py").write_text("def predict(xs):\n    return [float(sum(x)) for x in xs]\n")
    argv = ["start", "--data-dir", str(data_dir)]
    for option, port in cluster_ports().items():
        argv += [f"--{option.replace('_', '-')}", str(port)]
    assert main(argv) == 0
    try:
        for step in (
            ["register", "top-sums", "--input-type", "doubles", "--slo-micros", "5000000"],
            ["register", "top-nolink", "--input-type", "doubles", "--default-output", "-1"],
            ["deploy", "top-summer", "1", "--input-type", "doubles", "--func", "summer:predict"],
            ["link", "top-sums", "top-summer"],
        ):
            extra = ["--path", str(code)] if step[0] == "deploy" else []
            assert main([*step, *extra, "--data-dir", str(data_dir)]) == 0, step
        yield data_dir
    finally:
        main(["destroy", "--yes", "--data-dir", str(data_dir)])


@pytest.fixture(scope="module")
def client(cluster: Path) -> Iterator[QueryClient]:
    with Connection(LocalContainerManager(data_dir=cluster)) as conn:
        conn.connect()
        with QueryClient.for_connection(conn) as query:
            yield query


def test_top_shows_the_apps_throughput_and_the_models_replica(
    cluster: Path, client: QueryClient
) -> None:
    frames: list[str] = []

    def shows_traffic() -> bool:
        for i in range(10):
            answer = client.predict("top-sums", [1.0, float(i)])
            assert not answer.default and answer.output == 1.0 + i
        done = top(cluster)
        assert done.returncode == 0, done.stderr
        frames.append(done.stdout)
        app, model = cells(done.stdout, "top-sums"), cells(done.stdout, "top-summer")
        return bool(app) and float(app[1]) > 0 and model[1:4] == ["1", "1", "1/1/1"]

    eventually(shows_traffic, lambda: f"a frame with traffic; the last:\n{frames[-1]}", 60)
    frame = frames[-1]
    assert frame.startswith("schooner top · data dir ")
    assert "None" not in frame
    app = cells(frame, "top-sums")
    assert app[-3:] == ["5000", "single", "top-summer"]  # SLO ms, policy, models
    assert "ok" in cells(frame, "top-summer")
    assert "query frontends" in frame


def test_top_app_shows_the_recent_defaults_with_their_reason(
    cluster: Path, client: QueryClient
) -> None:
    frames: list[str] = []

    def shows_defaults() -> bool:
        for _ in range(3):
            answer = client.predict("top-nolink", [1.0])
            assert answer.default and answer.output == -1
        done = top(cluster, "--app", "top-nolink")
        assert done.returncode == 0, done.stderr
        frames.append(done.stdout)
        return "no model is linked to app 'top-nolink'" in done.stdout

    eventually(shows_defaults, lambda: f"the defaults in a frame; the last:\n{frames[-1]}", 60)
    frame = frames[-1]
    assert "app top-nolink: policy single" in frame
    assert "recent defaults" in frame
    assert cells(frame, "top-nolink")[-5].endswith("%")  # its default rate


def test_top_of_an_unknown_app_or_no_cluster_is_one_line_and_status_1(
    cluster: Path, tmp_path: Path
) -> None:
    done = top(cluster, "--app", "no-such-app")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "no-such-app" in done.stderr
    done = top(tmp_path / "nothing-here")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
