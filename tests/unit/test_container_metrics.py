"""The model container's Prometheus metrics: what one batch, one error, one reconnect
counts, the model worker recording them, the HTTP endpoint, and the CLI flags."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from credentials import make_cluster_secrets
from polling import eventually

from admin.container_managers._credentials import new_token, write_private
from model_container import ContainerConfig, ModelContainer, protocol
from model_container import credentials as cred
from model_container.cli import parse_args
from model_container.metrics import ContainerMetrics, MetricsServer, MetricsServerError
from model_container.protocol import Error, ErrorKind, InputType, Predict, Result
from model_container.worker import BatchRunner

REPLY_S = 10.0


def metrics() -> ContainerMetrics:
    return ContainerMetrics("summer", "3", InputType.DOUBLES, "summer-3-r0")


def value(m: ContainerMetrics, name: str, **labels: str) -> float:
    found = m.registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def batch(batch_id: int, rows: list[list[float]]) -> Predict:
    arrays = [np.asarray(row, dtype="<f8") for row in rows]
    lengths, data = protocol.pack_arrays(arrays, np.dtype("<f8"))
    return Predict(batch_id, InputType.DOUBLES, lengths, data.tobytes())


def test_everything_starts_at_zero_with_every_error_kind_present() -> None:
    m = metrics()
    assert value(m, "schooner_model_batches_total") == 0
    assert value(m, "schooner_model_predictions_total") == 0
    for kind in ErrorKind:
        assert value(m, "schooner_model_errors_total", kind=kind.value) == 0
    assert value(m, "schooner_model_frontend_connected") == 0
    assert value(m, "schooner_model_batch_size_count") == 0


def test_info_names_the_model_version_and_replica() -> None:
    labels = {"model": "summer", "version": "3", "input_type": "doubles", "replica": "summer-3-r0"}
    assert value(metrics(), "schooner_model_info", **labels) == 1


def test_a_batch_answered_counts_its_inputs_size_and_model_time() -> None:
    m = metrics()
    m.batch_done(4, 0.003, Result(1, b"", b"", model_micros=2500))
    m.batch_done(2, 0.001, Result(2, b"", b"", model_micros=500))
    assert value(m, "schooner_model_batches_total") == 2
    assert value(m, "schooner_model_predictions_total") == 6
    assert value(m, "schooner_model_batch_size_count") == 2
    assert value(m, "schooner_model_batch_size_sum") == 6
    assert value(m, "schooner_model_batch_size_bucket", le="2.0") == 1
    assert value(m, "schooner_model_predict_duration_seconds_count") == 2
    assert value(m, "schooner_model_predict_duration_seconds_sum") == pytest.approx(0.003)
    assert value(m, "schooner_model_batch_duration_seconds_sum") == pytest.approx(0.004)
    assert value(m, "schooner_model_errors_total", kind="model_raised") == 0


def test_a_failed_batch_counts_an_error_of_its_kind_and_no_predictions() -> None:
    m = metrics()
    m.batch_done(3, 0.01, Error(1, ErrorKind.MODEL_RAISED, "ValueError: no"))
    m.batch_done(1, 0.01, Error(2, ErrorKind.BAD_OUTPUT, "model returned 0 outputs"))
    m.batch_done(1, 0.01, Error(3, ErrorKind.MODEL_RAISED, "ValueError: no"))
    assert value(m, "schooner_model_batches_total") == 3
    assert value(m, "schooner_model_predictions_total") == 0
    assert value(m, "schooner_model_errors_total", kind="model_raised") == 2
    assert value(m, "schooner_model_errors_total", kind="bad_output") == 1
    assert value(m, "schooner_model_batch_size_sum") == 5
    # The model time is the RESULT's: a failed batch has none.
    assert value(m, "schooner_model_predict_duration_seconds_count") == 0
    assert value(m, "schooner_model_batch_duration_seconds_count") == 3


def test_refused_batches_count_as_answered_with_an_error() -> None:
    m = metrics()
    m.batch_refused(ErrorKind.NOT_READY)
    m.batch_refused(ErrorKind.BAD_INPUT)
    assert value(m, "schooner_model_batches_total") == 2
    assert value(m, "schooner_model_errors_total", kind="not_ready") == 1
    assert value(m, "schooner_model_errors_total", kind="bad_input") == 1
    assert value(m, "schooner_model_batch_size_count") == 0


def test_connection_state_reconnects_and_queue_depth() -> None:
    m = metrics()
    registered = [1]
    m.track_frontends(lambda: registered[0], lambda: 1)
    assert value(m, "schooner_model_frontend_connected") == 1
    registered[0] = 0
    m.reconnected(dropped_batches=3)
    m.reconnected(dropped_batches=0)
    assert value(m, "schooner_model_frontend_connected") == 0
    assert value(m, "schooner_model_reconnects_total") == 2
    assert value(m, "schooner_model_dropped_batches_total") == 3
    depth = [0]
    m.track_queue(lambda: depth[0])
    depth[0] = 5
    assert value(m, "schooner_model_queued_batches") == 5  # read at scrape time


class ResizedWhileCopied(dict[str, Any]):
    """Sessions whose first copy fails, as when the serving loop adds one meanwhile."""

    copies = 0

    def values(self) -> Any:
        self.copies += 1
        if self.copies == 1:
            raise RuntimeError("dictionary changed size during iteration")
        return super().values()


def test_a_container_reads_its_frontends_at_scrape_time(tmp_path: Path) -> None:
    secrets = make_cluster_secrets(tmp_path)
    config = ContainerConfig(
        "tcp://127.0.0.1:7000",
        "summer",
        "3",
        InputType.DOUBLES,
        "r0",
        secrets_dir=str(secrets.replica_dir),
    )
    container = ModelContainer(config, lambda xs: xs)
    m = container.metrics
    assert value(m, "schooner_model_frontend_connected") == 0
    assert value(m, "schooner_model_frontends") == 0
    sessions = ResizedWhileCopied(
        a=SimpleNamespace(registered=True, pending=[]),
        b=SimpleNamespace(registered=False, pending=[]),
    )
    container._sessions = sessions
    assert value(m, "schooner_model_frontend_connected") == 1  # copied again, not raised
    assert value(m, "schooner_model_frontends") == 2
    sessions["a"].registered = False
    assert value(m, "schooner_model_frontend_connected") == 0


def test_process_metrics_are_in_the_registry_unless_turned_off() -> None:
    text = metrics().exposition().decode()
    assert "python_info{" in text
    bare = ContainerMetrics("m", "1", "doubles", "r", process_metrics=False).exposition()
    assert b"python_info" not in bare
    assert b"schooner_model_batches_total 0.0" in bare


def test_registries_are_separate() -> None:
    a, b = metrics(), metrics()
    a.batch_refused(ErrorKind.NOT_READY)
    assert value(b, "schooner_model_batches_total") == 0


# ------------------------------------------------------------------ the batch runner


def test_the_runner_records_each_batch_it_runs() -> None:
    def model(xs: list[np.ndarray]) -> list[float]:
        if xs[0][0] < 0:
            raise ValueError("negative")
        return [float(x.sum()) for x in xs]

    m = metrics()
    runner = BatchRunner(model, InputType.DOUBLES, m)
    kinds = []
    for msg in (batch(1, [[1.0, 2.0], [3.0], [4.0]]), batch(2, [[-1.0]]), batch(3, [[2.0]])):
        outcome = runner.run(msg)
        runner.record(msg, 0.001, outcome)
        kinds.append(type(outcome).__name__)
    assert kinds == ["Result", "Error", "Result"]
    assert not runner.fatal
    assert value(m, "schooner_model_batches_total") == 3
    assert value(m, "schooner_model_predictions_total") == 4
    assert value(m, "schooner_model_errors_total", kind="model_raised") == 1
    assert value(m, "schooner_model_batch_size_sum") == 5
    assert value(m, "schooner_model_predict_duration_seconds_count") == 2


def test_the_runner_notes_a_memory_error_as_fatal() -> None:
    def model(xs: list[np.ndarray]) -> list[float]:
        raise MemoryError("out")

    runner = BatchRunner(model, InputType.DOUBLES, metrics())
    outcome = runner.run(batch(4, [[1.0]]))
    assert isinstance(outcome, Error) and outcome.exc_type == "MemoryError"
    assert runner.fatal == "memory limit: the model raised MemoryError on batch 4"


# ------------------------------------------------------------------ the endpoint


def test_the_endpoint_serves_the_registry_and_releases_its_port(tmp_path: Path) -> None:
    secrets = make_cluster_secrets(tmp_path)
    m = metrics()
    m.batch_done(2, 0.001, Result(1, b"", b"", model_micros=100))
    server = MetricsServer(m.registry, "127.0.0.1", 0, secrets.replica_dir)
    try:
        assert server.url == f"http://127.0.0.1:{server.port}/metrics"
        response = httpx.get(server.url, timeout=5, headers=secrets.admin_headers)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "schooner_model_predictions_total 2.0" in response.text
    finally:
        server.close()
    # The port is free again: a restarted endpoint gets it at once.
    MetricsServer(m.registry, "127.0.0.1", server.port, secrets.replica_dir).close()


def test_a_scrape_without_the_admin_token_is_401_and_shows_nothing(tmp_path: Path) -> None:
    secrets = make_cluster_secrets(tmp_path)
    m = metrics()
    server = MetricsServer(m.registry, "127.0.0.1", 0, secrets.replica_dir)
    try:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            response = httpx.get(server.url, timeout=5, headers=headers)
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"] == "unauthorized"
            assert "schooner_model" not in response.text
        # Rotated: the replica re-reads its hash; the new token works, the old one not.
        new = new_token()
        write_private(secrets.replica_dir / cred.ADMIN_TOKEN_SHA256, cred.sha256_hex(new))

        def rotated() -> bool:
            old = httpx.get(server.url, timeout=5, headers=secrets.admin_headers)
            return old.status_code == 401

        eventually(rotated, "the old token refused")
        fresh = {"Authorization": f"Bearer {new}"}
        assert httpx.get(server.url, timeout=5, headers=fresh).status_code == 200
    finally:
        server.close()


def test_without_a_secrets_dir_every_scrape_is_refused() -> None:
    server = MetricsServer(metrics().registry, "127.0.0.1", 0, None)
    try:
        response = httpx.get(server.url, timeout=5, headers={"Authorization": "Bearer x"})
        assert response.status_code == 401
        assert "--secrets-dir" in response.json()["message"]
    finally:
        server.close()


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(MetricsServerError, match=rf"127\.0\.0\.1:{port}.*--metrics-port"):
            MetricsServer(metrics().registry, "127.0.0.1", port, None)


# ------------------------------------------------------------------ the command line

REQUIRED = ["--bundle", "b", "--frontend", "tcp://127.0.0.1:7000", "--name", "m", "--version", "1"]


def test_metrics_are_off_by_default_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHOONER_METRICS_PORT", raising=False)
    monkeypatch.delenv("SCHOONER_METRICS_HOST", raising=False)
    args = parse_args(REQUIRED)
    assert (args.metrics_host, args.metrics_port) == ("127.0.0.1", 0)


def test_metrics_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHOONER_METRICS_PORT", "9100")
    monkeypatch.setenv("SCHOONER_METRICS_HOST", "0.0.0.0")
    args = parse_args(REQUIRED)
    assert (args.metrics_host, args.metrics_port) == ("0.0.0.0", 9100)
    args = parse_args([*REQUIRED, "--metrics-port", "9200", "--metrics-host", "::1"])
    assert (args.metrics_host, args.metrics_port) == ("::1", 9200)  # the flag wins


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--metrics-port", "70000"], {}, "must be in 0..65535"),
        (["--metrics-port", "-1"], {}, "must be in 0..65535"),
        ([], {"SCHOONER_METRICS_PORT": "nine"}, "SCHOONER_METRICS_PORT must be an integer"),
    ],
)
def test_bad_metrics_port_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    monkeypatch.delenv("SCHOONER_METRICS_PORT", raising=False)
    for name, val in env.items():
        monkeypatch.setenv(name, val)
    with pytest.raises(SystemExit) as exc_info:
        parse_args([*REQUIRED, *argv])
    assert exc_info.value.code == 2
    assert message in capsys.readouterr().err
