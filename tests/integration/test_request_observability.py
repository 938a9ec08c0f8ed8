"""Request ids, Server-Timing and the access log against a real local cluster.

A client's ``X-Request-Id`` comes back on the answer, is in the query frontend's
access log (logs/query.log) and in the log line the model itself writes with
``logging`` in its replica's log; a request without one gets one made up, returned and
logged the same way. Every predict/update answer has a ``Server-Timing`` header; every
request has one access-log line with its fields. A cluster whose access log samples
nothing (``SCHOONER_ACCESS_LOG_SAMPLE=0``) still logs errors and defaults.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from clusters import started
from polling import eventually

from admin import Connection, LocalContainerManager
from admin.deployers.python import deploy_python_closure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_TIMING = re.compile(
    r"queue;dur=\d+\.\d{3}, batch;dur=\d+\.\d{3}, model;dur=\d+\.\d{3}, total;dur=\d+\.\d{3}"
)


def _scoring_model() -> Callable[[Any], list[float]]:
    """A model that logs with ``logging`` (defined in a function: cloudpickle then ships
    it by value, not as a reference to this test module)."""

    def scoring(xs: Any) -> list[float]:
        import logging

        logging.getLogger("scoring-model").info("scoring %d inputs", len(xs))
        return [float(sum(x)) for x in xs]

    return scoring


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[tuple[Connection, Path]]:
    data_dir = tmp_path_factory.mktemp("obs")
    with started(local_manager(data_dir)) as c:
        c.register_application("scored", "doubles", -1, 5_000_000, cache_enabled=False)
        c.register_application("cached", "doubles", -1, 5_000_000)
        deploy_python_closure(c, "scorer", "1", "doubles", _scoring_model())
        c.link_model_to_app("scored", "scorer")
        c.link_model_to_app("cached", "scorer")
        c.register_application("idle", "doubles", "nothing yet", 50_000)
        url = f"http://{c.get_query_addr()}"
        eventually(
            lambda: (
                not httpx.post(f"{url}/scored/predict", json={"input": [1.0]}, timeout=10)
                .json()
                .get("default")
            ),
            "the model answers",
            timeout=60,
        )
        yield c, data_dir


@pytest.fixture(scope="module")
def url(cluster: tuple[Connection, Path]) -> str:
    return f"http://{cluster[0].get_query_addr()}"


def _access_lines(data_dir: Path) -> list[dict[str, Any]]:
    lines = []
    for text in (data_dir / "logs" / "query.log").read_text().splitlines():
        if text.startswith("{"):
            lines.append(orjson.loads(text))
    return lines


def _logged(data_dir: Path, request_id: str) -> list[dict[str, Any]]:
    return [line for line in _access_lines(data_dir) if line["request_id"] == request_id]


def _one_line(data_dir: Path, request_id: str) -> dict[str, Any]:
    eventually(lambda: _logged(data_dir, request_id), f"an access-log line for {request_id}")
    (line,) = _logged(data_dir, request_id)
    return line


def test_a_client_request_id_comes_back_and_reaches_the_model_log(
    cluster: tuple[Connection, Path], url: str
) -> None:
    _, data_dir = cluster
    r = httpx.post(
        f"{url}/scored/predict",
        json={"input": [1.0, 2.0]},
        headers={"X-Request-Id": "client-req.1:a/b+c=d"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["output"] == 3.0
    assert r.headers["x-request-id"] == "client-req.1:a/b+c=d"
    assert _TIMING.fullmatch(r.headers["server-timing"]), r.headers["server-timing"]

    line = _one_line(data_dir, "client-req.1:a/b+c=d")
    assert line["method"] == "POST" and line["path"] == "/scored/predict"
    assert line["app"] == "scored" and line["status"] == 200
    assert line["models"] == ["scorer:1"]
    assert line["default"] is False and line["default_reason"] is None
    assert line["queries"] == 1 and line["cached"] == 0
    for field in ("queue_ms", "batch_wait_ms", "model_ms", "total_ms"):
        assert isinstance(line[field], float) and line[field] >= 0
    assert line["total_ms"] >= line["model_ms"]
    # Timed by a clock finer than the event loop's millisecond steps: a round trip to a
    # replica never reads as no time at all.
    assert line["total_ms"] > 0
    assert float(r.headers["server-timing"].rsplit("total;dur=", 1)[1]) > 0
    assert line["client"].startswith("127.0.0.1:")
    assert line["time"].endswith("Z") and "T" in line["time"]
    assert "request_id_replaced" not in line

    def model_logged() -> bool:
        logs = (data_dir / "logs").glob("replica-*.log")
        return any(
            "[client-req.1:a/b+c=d]" in text and "scoring 1 inputs" in text
            for text in (p.read_text() for p in logs)
        )

    eventually(model_logged, "the model's log line naming the request")


def test_a_request_without_an_id_gets_one_made_up(
    cluster: tuple[Connection, Path], url: str
) -> None:
    _, data_dir = cluster
    r = httpx.post(f"{url}/scored/predict", json={"input_batch": [[1.0], [2.0]]}, timeout=10)
    assert r.status_code == 200
    made = r.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", made)
    line = _one_line(data_dir, made)
    assert line["queries"] == 2 and line["models"] == ["scorer:1"]
    other = httpx.post(f"{url}/scored/predict", json={"input": [1.0]}, timeout=10)
    assert other.headers["x-request-id"] != made


def test_an_insane_request_id_is_replaced_and_the_log_says_so(
    cluster: tuple[Connection, Path], url: str
) -> None:
    _, data_dir = cluster
    bad = "has spaces and \u00e9" + "x" * 200
    r = httpx.post(
        f"{url}/scored/predict",
        json={"input": [1.0]},
        headers={"X-Request-Id": bad.encode()},
        timeout=10,
    )
    assert r.status_code == 200
    made = r.headers["x-request-id"]
    assert made != bad and re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", made)
    assert _one_line(data_dir, made)["request_id_replaced"] is True


def test_errors_defaults_updates_and_cache_hits_are_logged_and_timed(
    cluster: tuple[Connection, Path], url: str
) -> None:
    _, data_dir = cluster
    missing = httpx.post(
        f"{url}/nosuchapp/predict", json={"input": [1.0]}, headers={"X-Request-Id": "e-404"}
    )
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "e-404"
    assert missing.headers["server-timing"].startswith("total;dur=")
    assert _one_line(data_dir, "e-404")["status"] == 404

    bad = httpx.post(f"{url}/scored/predict", content=b"{", headers={"X-Request-Id": "e-400"})
    assert bad.status_code == 400 and bad.headers["x-request-id"] == "e-400"
    assert _one_line(data_dir, "e-400")["status"] == 400

    idle = httpx.post(f"{url}/idle/predict", json={"input": [1.0]}, headers={"X-Request-Id": "d-1"})
    assert idle.json()["default"] is True
    line = _one_line(data_dir, "d-1")
    assert line["default"] is True and line["default_reason"] and line["models"] == []

    def default_in_activity() -> bool:  # the telemetry's recent defaults name the request
        recent = cluster[0].get_app_activity("idle")["recent_defaults"]
        return any(d["request_id"] == "d-1" for d in recent)

    eventually(default_in_activity, "the default in the app's activity", timeout=30)

    update = httpx.post(
        f"{url}/scored/update",
        json={"input": [1.0], "label": 1.0},
        headers={"X-Request-Id": "u-1"},
        timeout=10,
    )
    assert update.status_code == 200 and update.headers["x-request-id"] == "u-1"
    assert "server-timing" in update.headers
    line = _one_line(data_dir, "u-1")
    assert line["path"] == "/scored/update" and line["models"] == ["scorer:1"]

    first = httpx.post(f"{url}/cached/predict", json={"input": [7.0]}, timeout=10)
    assert first.status_code == 200 and _TIMING.fullmatch(first.headers["server-timing"])
    again = httpx.post(
        f"{url}/cached/predict", json={"input": [7.0]}, headers={"X-Request-Id": "c-1"}
    )
    assert again.headers["server-timing"].startswith('cache;desc="hit", total;dur=')
    assert _one_line(data_dir, "c-1")["cached"] == 1


def test_a_client_gone_before_its_answer_is_logged_as_499(
    cluster: tuple[Connection, Path], url: str
) -> None:
    _, data_dir = cluster
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        # Closed with a reset, mid-body: the frontend sees the connection lost at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(
            b"POST /scored/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\nX-Request-Id: gone-1\r\n\r\n{"input": ['
        )
    line = _one_line(data_dir, "gone-1")
    assert line["status"] == 499 and line["app"] == "scored"


def test_open_inference_answers_carry_the_request_id(
    cluster: tuple[Connection, Path], url: str
) -> None:
    _, data_dir = cluster
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}
    r = httpx.post(
        f"{url}/v2/models/scored/infer", json=body, headers={"X-Request-Id": "v2-1"}, timeout=10
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "v2-1"
    assert _TIMING.fullmatch(r.headers["server-timing"])
    assert _one_line(data_dir, "v2-1")["path"] == "/v2/models/scored/infer"
    gone = httpx.post(f"{url}/v2/models/nope/infer", json=body, headers={"X-Request-Id": "v2-2"})
    assert gone.status_code == 404 and gone.headers["x-request-id"] == "v2-2"
    packed = httpx.post(
        f"{url}/v2/models/scored/infer",
        json=body,
        headers={"X-Request-Id": "v2-3", "Content-Encoding": "gzip"},
    )
    assert packed.status_code == 415 and packed.headers["x-request-id"] == "v2-3"
    assert _one_line(data_dir, "v2-3")["status"] == 415


def test_a_cluster_sampling_nothing_logs_only_errors_and_defaults(
    tmp_path_factory: pytest.TempPathFactory,
    local_manager: Callable[..., LocalContainerManager],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHOONER_ACCESS_LOG_SAMPLE", "0")  # the manager's processes inherit it
    data_dir = tmp_path_factory.mktemp("obs-sampled")
    with started(local_manager(data_dir)) as c:
        c.register_application("scored", "doubles", -1, 5_000_000, cache_enabled=False)
        deploy_python_closure(c, "scorer", "1", "doubles", _scoring_model())
        c.link_model_to_app("scored", "scorer")
        c.register_application("idle", "doubles", "nothing yet", 50_000)
        url = f"http://{c.get_query_addr()}"

        def answered(request_id: str) -> bool:
            r = httpx.post(
                f"{url}/scored/predict",
                json={"input": [1.0]},
                headers={"X-Request-Id": request_id},
                timeout=10,
            )
            return r.status_code == 200 and r.json()["default"] is False

        eventually(lambda: answered("warm-up"), "the model answers", timeout=60)
        answers = [f"ok-{i}" for i in range(20)]
        for request_id in answers:
            assert answered(request_id)
        defaults = [f"d-{i}" for i in range(3)]
        for request_id in defaults:
            r = httpx.post(
                f"{url}/idle/predict", json={"input": [1.0]}, headers={"X-Request-Id": request_id}
            )
            assert r.json()["default"] is True
        # The last request: the log is written in order, so its line comes after the others'.
        r = httpx.post(
            f"{url}/nosuchapp/predict", json={"input": [1.0]}, headers={"X-Request-Id": "last"}
        )
        assert r.status_code == 404
        assert _one_line(data_dir, "last")["status"] == 404
        logged = {line["request_id"] for line in _access_lines(data_dir)}
        assert set(defaults) <= logged
        assert not logged & set(answers)
