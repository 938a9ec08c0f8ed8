"""The notebook flow on the embedded default: real redis-server, both frontends and every
model replica as real local processes, talking over real sockets.

One cluster serves the whole module (each test uses its own app and model names);
the restart test starts its own.
"""

from __future__ import annotations

import base64
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from clusters import started
from polling import eventually

from admin import (
    ConflictError,
    Connection,
    IncompatibleModelError,
    InvalidRequestError,
    LocalContainerManager,
    NotFoundError,
)
from admin.cli import main as cli_main
from admin.deployers.python import deploy_python_closure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def conn(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[Connection]:
    with started(local_manager(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


def predict(conn: Connection, app: str, body: Any, timeout: float = 10) -> httpx.Response:
    url = f"http://{conn.get_query_addr()}/{app}/predict"
    if isinstance(body, bytes):
        return httpx.post(url, content=body, timeout=timeout)
    return httpx.post(url, json=body, timeout=timeout)


def output_of(conn: Connection, app: str, x: Any) -> Any:
    r = predict(conn, app, {"input": x})
    assert r.status_code == 200, r.text
    return r.json()["output"]


def test_notebook_flow_serves_an_sklearn_model(conn: Connection) -> None:
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    x, y = make_classification(n_samples=300, n_features=10, random_state=0)
    model = LogisticRegression().fit(x, y)
    # The cluster serves the whole module: what this test adds is compared with what
    # the other tests left, so that it holds whichever of them ran first.
    apps_before = {a["name"] for a in conn.get_all_apps(verbose=True)}
    models_before = set(conn.get_all_models())

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
    conn.link_model_to_app(app_name="pipeline", model_name="test-model")
    assert conn.get_query_addr() == f"127.0.0.1:{conn.cm.query_port}"  # type: ignore[attr-defined]

    r = predict(conn, "pipeline", {"input": x[0].tolist()})
    assert r.status_code == 200
    body = r.json()
    assert body["default"] is False
    assert body["output"] == int(model.predict(x[:1])[0])
    assert isinstance(body["query_id"], int)

    r = predict(conn, "pipeline", {"input_batch": x[:20].tolist()})
    assert r.status_code == 200
    outputs = [p["output"] for p in r.json()["batch_predictions"]]
    assert outputs == model.predict(x[:20]).tolist()

    assert {a["name"] for a in conn.get_all_apps(verbose=True)} == apps_before | {"pipeline"}
    assert set(conn.get_all_models()) == models_before | {"test-model:1"}
    assert conn.get_linked_models("pipeline") == ["test-model"]

    def replicas() -> list[str]:
        listed = conn.get_all_model_replicas(verbose=True)
        return sorted(r["replica_id"] for r in listed if r["model_name"] == "test-model")

    assert replicas() == ["test-model-1-r0"]

    conn.set_num_replicas("test-model", 2)
    eventually(
        lambda: replicas() == ["test-model-1-r0", "test-model-1-r1"], what="a second replica"
    )
    status = conn.inspect_instance()
    assert len(status["models"]["test-model:1"]["replicas"]) == 2


def test_every_input_type_round_trips(conn: Connection) -> None:
    echo: dict[str, Any] = {
        "ints": (lambda xs: [int(sum(x)) for x in xs], [1, 2, 3], 6),
        "floats": (lambda xs: [float(sum(x)) for x in xs], [0.5, 0.25], 0.75),
        "doubles": (lambda xs: [float(np.prod(x)) for x in xs], [2.0, 3.5], 7.0),
        "bytes": (lambda xs: [len(b) for b in xs], base64.b64encode(b"\x00\x01\x02").decode(), 3),
        "strings": (lambda xs: [s.upper() for s in xs], "héllo", "HÉLLO"),
    }
    for input_type, (func, value, expected) in echo.items():
        name = f"echo-{input_type}"
        conn.register_application(name, input_type, None, 2_000_000)
        deploy_python_closure(conn, name, "1", input_type, func)
        conn.link_model_to_app(name, name)
        assert output_of(conn, name, value) == expected, input_type
        r = predict(conn, name, {"input_batch": [value, value]})
        assert [p["output"] for p in r.json()["batch_predictions"]] == [expected, expected]


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
    with pytest.raises(NotFoundError, match="model 'versioned' has no version '3'"):
        conn.set_model_version("versioned", "3")


def test_two_replicas_both_receive_work(conn: Connection) -> None:
    conn.register_application("pids", "doubles", -1, 5_000_000)
    deploy_python_closure(
        conn, "whoami", "1", "doubles", lambda xs: [os.getpid()] * len(xs), num_replicas=2
    )
    conn.link_model_to_app("pids", "whoami")

    def one(i: int) -> int:
        return int(output_of(conn, "pids", [float(i)]))  # distinct inputs: no cache hits

    seen: set[int] = set()
    waves = itertools.count(0, 64)
    with ThreadPoolExecutor(8) as pool:

        def both_answered() -> bool:
            start = next(waves)
            seen.update(pool.map(one, range(start, start + 64)))
            return len(seen) == 2

        eventually(both_answered, lambda: f"only replica pids {seen} answered", 30)


def test_a_models_batching_settings_reach_the_query_frontend(conn: Connection) -> None:
    conn.register_application("tuned", "doubles", -1, 50_000)
    deploy_python_closure(
        conn,
        "tuned-model",
        "1",
        "doubles",
        lambda xs: [len(xs)] * len(xs),
        batch_size=16,
        batch_mode="latency_model",
        batch_wait_micros=2_000,
    )
    conn.link_model_to_app("tuned", "tuned-model")
    assert output_of(conn, "tuned", [1.0]) == 1  # the model's answer: its batch's size
    model = conn.inspect_instance()["models"]["tuned-model:1"]
    assert (model["batch_mode"], model["max_batch_size"], model["batch_wait_micros"]) == (
        "latency_model",
        16,
        2_000,
    )


def test_no_model_linked_gives_the_default_with_a_reason(conn: Connection) -> None:
    conn.register_application("lonely", "doubles", {"label": "unknown"}, 50_000)
    r = predict(conn, "lonely", {"input": [1.0]})
    assert r.status_code == 200
    body = r.json()
    assert body["default"] is True
    assert body["output"] == {"label": "unknown"}
    assert "no model is linked to app 'lonely'" in body["default_explanation"]


def test_predict_takes_a_trailing_slash_as_clipper_does(conn: Connection) -> None:
    conn.register_application("slashed", "doubles", "none", 50_000, exist_ok=True)
    base = f"http://{conn.get_query_addr()}"
    # The usual URL, and one with an escape (served by the ASGI door, not the protocol).
    for path in ("/slashed/predict/", "/slashe%64/predict/"):
        r = httpx.post(base + path, json={"input": [1.0]}, timeout=10)
        assert r.status_code == 200, (path, r.text)
        assert r.json()["output"] == "none" and r.json()["default"] is True
    r = httpx.get(f"{base}/slashed/predict/", timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"] == "method_not_allowed"


def test_a_model_slower_than_the_slo_gives_the_default(conn: Connection) -> None:
    def slow(xs: Any) -> list[int]:
        time.sleep(1.0)
        return [1] * len(xs)

    conn.register_application("hurry", "doubles", 0, 50_000)
    deploy_python_closure(conn, "sloth", "1", "doubles", slow)
    conn.link_model_to_app("hurry", "sloth")
    body = predict(conn, "hurry", {"input": [1.0]}).json()
    assert body["default"] is True and body["output"] == 0
    assert "did not answer within the latency objective" in body["default_explanation"]


def test_bad_requests_get_specific_errors(conn: Connection) -> None:
    conn.register_application("strict", "doubles", -1, 1_000_000)
    deploy_python_closure(conn, "strict-model", "1", "doubles", lambda xs: [1] * len(xs))
    conn.link_model_to_app("strict", "strict-model")

    r = predict(conn, "no-such-app", {"input": [1.0]})
    assert r.status_code == 404 and "no-such-app" in r.json()["message"]
    r = predict(conn, "strict", b'{"input": [1.0,')
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    r = predict(conn, "strict", {"input": ["a", "b"]})
    assert r.status_code == 400 and "doubles" in r.json()["message"]
    r = predict(conn, "strict", {"input": [[1.0], [2.0]]})
    assert r.status_code == 400 and "nested" in r.json()["message"]
    r = predict(conn, "strict", {"x": 1})
    assert r.status_code == 400 and "input_batch" in r.json()["message"]
    r = predict(conn, "strict", b'{"input": [' + b"1.0," * 3_000_000 + b"1.0]}")
    assert r.status_code == 413 and "limit" in r.json()["message"]
    # Nothing was lost: the app still answers.
    assert output_of(conn, "strict", [1.0]) == 1

    with pytest.raises(InvalidRequestError, match="DNS-1123"):
        conn.register_application("Bad_Name", "doubles", -1, 1000)
    with pytest.raises(InvalidRequestError, match="input_type 'double' is not known"):
        conn.register_application("typo", "double", -1, 1000)
    with pytest.raises(InvalidRequestError, match="slo_micros"):
        conn.register_application("zero-slo", "doubles", -1, 0)
    with pytest.raises(ConflictError, match="app 'strict' already exists"):
        conn.register_application("strict", "doubles", -1, 1000)


def test_a_crashing_model_gives_a_5xx_naming_it_and_keeps_serving(conn: Connection) -> None:
    def fragile(xs: Any) -> list[float]:
        if any(x[0] < 0 for x in xs):
            raise ValueError("negative input")
        return [float(x[0]) for x in xs]

    conn.register_application("fragile", "doubles", -1, 2_000_000)
    deploy_python_closure(conn, "fragile-model", "1", "doubles", fragile)
    conn.link_model_to_app("fragile", "fragile-model")
    conn.register_application("fragile-neighbour", "doubles", -1, 2_000_000)
    deploy_python_closure(conn, "steady-neighbour", "1", "doubles", lambda xs: ["fine"] * len(xs))
    conn.link_model_to_app("fragile-neighbour", "steady-neighbour")
    r = predict(conn, "fragile", {"input": [-1.0]})
    assert r.status_code == 500
    message = r.json()["message"]
    assert "fragile-model" in message and "raised ValueError" in message
    assert "negative input" not in message  # the exception's text is in the replica's log
    assert output_of(conn, "fragile", [2.0]) == 2.0
    # A model that returns the wrong number of outputs is an error too, not a hang.
    deploy_python_closure(conn, "fragile-model", "2", "doubles", lambda xs: [1, 2, 3])
    eventually(lambda: predict(conn, "fragile", {"input": [1.0]}).status_code == 500)
    assert "3 outputs" in predict(conn, "fragile", {"input": [1.0]}).json()["message"]
    # The frontend is still up for everyone else: another app's model answers.
    assert output_of(conn, "fragile-neighbour", [1.0]) == "fine"


def test_a_new_app_and_link_take_effect_without_restart(conn: Connection) -> None:
    conn.register_application("late", "doubles", "none yet", 1_000_000)
    eventually(lambda: predict(conn, "late", {"input": [1.0]}).status_code == 200)
    deploy_python_closure(conn, "late-model", "1", "doubles", lambda xs: ["hi"] * len(xs))
    conn.link_model_to_app("late", "late-model")
    eventually(lambda: output_of(conn, "late", [1.0]) == "hi", what="the link applied")
    conn.unlink_model_from_app("late", "late-model")
    eventually(lambda: predict(conn, "late", {"input": [1.0]}).json()["default"] is True)
    conn.unregister_application("late")
    eventually(lambda: predict(conn, "late", {"input": [1.0]}).status_code == 404)


def test_a_pickle_from_another_python_is_refused_at_deploy(
    conn: Connection, tmp_path: Path
) -> None:
    from model_container.bundle import write_closure_bundle

    bundle = tmp_path / "foreign"
    info = write_closure_bundle(bundle, lambda xs: xs, "doubles", [])
    meta = (bundle / "model.json").read_text()
    (bundle / "model.json").write_text(meta.replace(info.runtime["python"], "3.10.13"))
    with pytest.raises(IncompatibleModelError) as exc:
        conn.build_and_deploy_model("foreign", "1", "doubles", bundle)
    assert "3.10.13" in str(exc.value) and info.runtime["python"] in str(exc.value)
    assert not [m for m in conn.get_all_models() if m.startswith("foreign:")]


def test_restart_keeps_apps_models_links_and_versions(
    tmp_path: Path,
    cluster_ports: Callable[[], dict[str, int]],
    local_manager: Callable[..., LocalContainerManager],
) -> None:
    data_dir = tmp_path / "restart"
    ports = cluster_ports()
    first = Connection(local_manager(data_dir, ports))
    first.start()
    try:
        first.register_application("keep", "doubles", -1, 2_000_000)
        deploy_python_closure(first, "kept", "1", "doubles", lambda xs: ["one"] * len(xs))
        deploy_python_closure(first, "kept", "2", "doubles", lambda xs: ["two"] * len(xs))
        first.link_model_to_app("keep", "kept")
        first.set_model_version("kept", "1")
        assert output_of(first, "keep", [1.0]) == "one"
        kept_info = first.get_model_info("kept", "1")
    finally:
        first.stop_all()

    second = Connection(local_manager(data_dir, ports))
    second.start()
    try:
        assert [a["name"] for a in second.get_all_apps(verbose=True)] == ["keep"]
        assert second.get_linked_models("keep") == ["kept"]
        assert second.get_model_info("kept", "1") == kept_info
        eventually(lambda: output_of(second, "keep", [1.0]) == "one", what="serving after restart")
        second.set_model_version("kept", "2")
        eventually(lambda: output_of(second, "keep", [1.0]) == "two", what="version 2 kept")
    finally:
        second.stop_all()


def test_destroy_gives_a_clean_start_and_leaves_other_files_alone(
    tmp_path: Path,
    cluster_ports: Callable[[], dict[str, int]],
    local_manager: Callable[..., LocalContainerManager],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "destroy"
    ports = cluster_ports()
    first = Connection(local_manager(data_dir, ports))
    first.start()
    try:
        first.register_application("old", "doubles", -1, 2_000_000)
        deploy_python_closure(first, "gone", "1", "doubles", lambda xs: [0] * len(xs))
        (data_dir / "notes.txt").write_text("the user's own file\n")
        # The CLI asks first; with no terminal to ask on, it deletes nothing.
        assert cli_main(["destroy", "--data-dir", str(data_dir)]) == 2
        assert "without --yes" in capsys.readouterr().err
        assert [a["name"] for a in first.get_all_apps(verbose=True)] == ["old"]
    except BaseException:
        first.stop_all()
        raise
    first.close()
    assert cli_main(["destroy", "--data-dir", str(data_dir), "--yes"]) == 0
    assert "destroyed Schooner" in capsys.readouterr().out
    assert not any(p["running"] for p in first.cm.processes())
    # Only Schooner's own entries went; the directory stays for the file left in it.
    assert sorted(p.name for p in data_dir.iterdir()) == ["notes.txt"]

    second = Connection(local_manager(data_dir, ports))
    second.start()
    try:
        assert second.get_all_apps() == [] and second.get_all_models() == []
        second.register_application("old", "doubles", -1, 2_000_000)  # no conflict now
    finally:
        second.close()
        second.cm.destroy()
    assert sorted(p.name for p in data_dir.iterdir()) == ["notes.txt"]


def test_a_replica_that_breaks_the_protocol_is_dropped_and_the_frontend_serves_on(
    conn: Connection,
) -> None:
    import zmq

    from model_container import protocol
    from model_container.rpc_keys import ClientKeys
    from query_frontend.config import Config as FrontendConfig

    # A model served only by a hand-written replica that answers its batch with a RESULT
    # whose lengths do not match its data.
    conn.register_application("rogue-app", "doubles", "fallback", 1_000_000)
    conn.register_model("rogue", "1", "doubles")
    conn.link_model_to_app("rogue-app", "rogue")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    # It holds the cluster's replica keys: this test is about a broken replica, not an
    # impostor (test_rpc_authentication).
    ClientKeys.load(str(conn.cm.data_dir / "secrets" / "replica")).apply(sock)  # type: ignore[attr-defined]

    def next_message(kind: type) -> Any:
        while True:
            assert sock.poll(5000), f"no {kind.__name__}"
            msg = protocol.decode(sock.recv_multipart())
            if isinstance(msg, kind):
                return msg

    try:
        sock.connect(f"tcp://127.0.0.1:{conn.cm.rpc_port}")  # type: ignore[attr-defined]
        hello = protocol.Hello("rogue", "1", protocol.InputType.DOUBLES, "rogue-fake")
        sock.send_multipart(protocol.encode(hello))
        welcome = next_message(protocol.Welcome)
        assert welcome == protocol.Welcome(FrontendConfig.heartbeat_ms)  # the cluster's default
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(predict, conn, "rogue-app", {"input": [1.0]})
            batch = next_message(protocol.Predict)
            broken = protocol.Result(batch.batch_id, b"\xe7\x03\x00\x00", b"1")
            sock.send_multipart(protocol.encode(broken))
            next_message(protocol.Reject)
            body = pending.result(timeout=10).json()
        assert body["default"] is True and body["output"] == "fallback"
        # The frontend serves on: other apps answer, and the replica may register again.
        conn.register_application("sane-app", "doubles", -1, 2_000_000)
        deploy_python_closure(conn, "sane", "1", "doubles", lambda xs: ["ok"] * len(xs))
        conn.link_model_to_app("sane-app", "sane")
        assert output_of(conn, "sane-app", [1.0]) == "ok"
        sock.send_multipart(protocol.encode(hello))
        assert next_message(protocol.Welcome) == welcome  # welcomed as the first time
    finally:
        sock.close(linger=0)
        ctx.term()


def test_redis_refuses_a_client_without_the_password(conn: Connection) -> None:
    import redis

    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    url = f"redis://127.0.0.1:{cm.redis_port}/0"
    with redis.Redis.from_url(url) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.get("schooner:meta")  # NOAUTH: not one key is readable or writable
    password = (cm.data_dir / "secrets" / "all" / "redis-password").read_text().strip()
    with redis.Redis.from_url(url, password=password) as client:
        assert client.ping()
    # The password is on no process's command line, which `ps` shows every user.
    for record in cm.processes():
        cmdline = Path(f"/proc/{record['pid']}/cmdline").read_bytes()
        assert password.encode() not in cmdline, record["name"]
    # The frontends, authenticated, work: an app stored through one reaches the other.
    conn.register_application("behind-auth", "doubles", "shut", 1_000_000)
    assert predict(conn, "behind-auth", {"input": [1.0]}).json()["output"] == "shut"


def test_stopping_a_model_stops_the_processes_it_started(conn: Connection) -> None:
    import subprocess

    import psutil

    children: list[Any] = []

    def spawner(xs: Any) -> list[int]:
        if not children:
            children.append(subprocess.Popen(["sleep", "4242"]))
        return [children[0].pid] * len(xs)

    conn.register_application("spawner-app", "doubles", -1, 2_000_000)
    deploy_python_closure(conn, "spawner", "1", "doubles", spawner)
    conn.link_model_to_app("spawner-app", "spawner")
    child = psutil.Process(int(output_of(conn, "spawner-app", [1.0])))
    assert child.is_running()
    conn.stop_models("spawner")
    eventually(
        lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
        what="the model's subprocess stopped with it",
    )


def test_identical_queries_are_answered_from_the_cache_per_version(conn: Connection) -> None:
    calls: list[int] = []

    def counting(xs: Any) -> list[int]:
        calls.append(len(xs))
        return [len(calls)] * len(xs)  # the answer says how many batches the model ran

    conn.register_application("cached", "doubles", -1, 2_000_000)
    deploy_python_closure(conn, "counter", "1", "doubles", counting)
    conn.link_model_to_app("cached", "counter")
    hits = conn.inspect_instance()["cache"]["hits"]  # of the whole frontend, so far
    first = output_of(conn, "cached", [4.0, 2.0])
    assert [output_of(conn, "cached", [4.0, 2.0]) for _ in range(5)] == [first] * 5
    assert output_of(conn, "cached", [4.0, 3.0]) == first + 1  # another input: evaluated
    status = conn.inspect_instance()["cache"]
    assert status["hits"] == hits + 5
    # A new version never serves the old version's answers.
    deploy_python_closure(conn, "counter", "2", "doubles", lambda xs: ["v2"] * len(xs))
    eventually(lambda: output_of(conn, "cached", [4.0, 2.0]) == "v2", what="v2 answers")


def test_an_app_with_its_cache_off_evaluates_every_query(conn: Connection) -> None:
    calls: list[int] = []

    def counting(xs: Any) -> list[int]:
        calls.append(len(xs))
        return [len(calls)] * len(xs)

    conn.register_application("fresh", "doubles", -1, 2_000_000, cache_enabled=False)
    conn.register_application("reused", "doubles", -1, 2_000_000)
    deploy_python_closure(conn, "tally", "1", "doubles", counting)
    conn.link_model_to_app("fresh", "tally")
    conn.link_model_to_app("reused", "tally")
    answers = [output_of(conn, "fresh", [7.0]) for _ in range(3)]
    assert answers == sorted(set(answers)), f"cache-off app got a reused answer: {answers}"
    # The same model through an app that caches: the second ask is a hit.
    assert output_of(conn, "reused", [8.0]) == output_of(conn, "reused", [8.0])
    # Switched on live, without a restart.
    conn.set_app_cache("fresh", True)
    eventually(
        lambda: output_of(conn, "fresh", [9.0]) == output_of(conn, "fresh", [9.0]),
        what="the fresh app to answer from the cache",
    )


def test_metrics_count_requests_answers_batches_and_cache(conn: Connection) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> Callable[..., float]:
        """The frontend's counters now: ``value(name, **labels)``."""
        token = conn.cm.admin_token()  # /metrics on the query port is the operator's
        text = httpx.get(
            f"http://{conn.get_query_addr()}/metrics",
            timeout=5,
            headers={"Authorization": f"Bearer {token}"},
        ).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

        def value(name: str, **labels: str) -> float:
            return samples.get((name, tuple(sorted(labels.items()))), 0.0)

        return value

    # Unknown apps and cache hits are counted for the whole frontend, which the other
    # tests of this module use too: those two are compared with their values before.
    before = scrape()
    conn.register_application("metered", "doubles", -1, 2_000_000)
    deploy_python_closure(conn, "meter", "1", "doubles", lambda xs: [1] * len(xs))
    conn.link_model_to_app("metered", "meter")
    for i in range(5):
        assert output_of(conn, "metered", [float(i)]) == 1
    assert output_of(conn, "metered", [0.0]) == 1  # a cache hit
    assert predict(conn, "metered", {"input": ["x"]}).status_code == 400
    assert predict(conn, "no-such-app", {"input": [1.0]}).status_code == 404

    value = scrape()

    assert value("schooner_requests_total", app="metered", code="200") == 6
    assert value("schooner_requests_total", app="metered", code="400") == 1
    unknown = {"app": "", "code": "404"}
    assert (
        value("schooner_requests_total", **unknown)
        == before("schooner_requests_total", **unknown) + 1
    )
    assert value("schooner_answers_total", app="metered", kind="prediction") == 6
    assert value("schooner_request_duration_seconds_count", app="metered") == 7
    assert value("schooner_batch_size_count", model="meter", version="1") == 5
    assert value("schooner_model_duration_seconds_count", model="meter", version="1") == 5
    assert value("schooner_queue_wait_seconds_count", model="meter", version="1") == 5
    assert value("schooner_replicas_connected", model="meter", version="1") == 1
    assert value("schooner_replicas_in_rotation", model="meter", version="1") == 1
    assert value("schooner_queue_depth", model="meter", version="1") == 0
    assert value("schooner_cache_hits_total") == before("schooner_cache_hits_total") + 1


def test_killing_a_replica_under_load_loses_no_query(conn: Connection) -> None:
    import psutil

    def steady(xs: Any) -> list[float]:
        time.sleep(0.005)  # long enough that batches are in flight when the kill lands
        return [float(x[0]) for x in xs]

    conn.register_application("steady-app", "doubles", "fallback", 3_000_000)
    deploy_python_closure(conn, "steady", "1", "doubles", steady, num_replicas=2)
    conn.link_model_to_app("steady-app", "steady")
    replicas = conn.get_all_model_replicas(verbose=True)
    victim = next(r for r in replicas if r["model_name"] == "steady")

    def one(i: int) -> tuple[int, Any]:
        r = predict(conn, "steady-app", {"input": [float(i)]})
        return r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(one, i) for i in range(600)]
        # Let the load build up, then kill one replica mid-stream.
        eventually(futures[100].done, what="the first queries answered", timeout=120)
        psutil.Process(victim["pid"]).kill()
        answers = [f.result(timeout=30) for f in futures]
    assert all(code == 200 for code, _ in answers)
    # Every query got its own prediction, or the default; none was lost or mixed up.
    for i, (_, body) in enumerate(answers):
        assert body["output"] == float(i) or (body["default"] and body["output"] == "fallback")
    predictions = sum(1 for _, body in answers if not body["default"])
    assert predictions >= 550, f"only {predictions} of 600 were predictions"


def test_a_session_is_authenticated_end_to_end_and_leaves_no_secret_in_any_log(
    tmp_path: Path,
    local_manager: Callable[..., LocalContainerManager],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The notebook flow unchanged, the admin token found by the client, refused to
    anyone without it, rotated live; API keys close an app; no log holds a secret."""
    from admin import AuthenticationError
    from admin import cli as schooner

    monkeypatch.delenv("SCHOONER_ADMIN_TOKEN", raising=False)
    cm = local_manager(tmp_path / "cluster")
    conn = Connection(cm)
    conn.start()
    secrets: list[str] = []
    try:
        token_file = cm.data_dir / "admin-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        first = cm.admin_token()
        secrets.append(first)
        mgmt, query = f"http://{conn.get_management_addr()}", f"http://{conn.get_query_addr()}"
        # Anyone else: 401 and nothing stored (row 1 of issue 12).
        evil = {"name": "evil", "version": "666", "input_type": "doubles", "num_replicas": 1}
        for headers in ({}, {"Authorization": "Bearer guessed"}):
            r = httpx.post(f"{mgmt}/admin/models", json=evil, headers=headers, timeout=5)
            assert r.status_code == 401, r.text
            assert httpx.get(f"{query}/status", headers=headers, timeout=5).status_code == 401
            assert (
                httpx.get(f"{mgmt}/admin/replicas", headers=headers, timeout=5).status_code == 401
            )
        assert httpx.get(f"{mgmt}/healthz", timeout=5).status_code == 200
        assert "evil:666" not in conn.get_all_models()

        # The notebook flow, as before; then a key closes the app.
        conn.register_application("keyed", "doubles", "-1", 2_000_000)
        deploy_python_closure(conn, "keyed-sum", "1", "doubles", lambda xs: [sum(x) for x in xs])
        conn.link_model_to_app("keyed", "keyed-sum")
        assert output_of(conn, "keyed", [1.0, 2.0]) == 3.0
        key = conn.create_api_key("keyed")
        secrets.append(key)
        assert (conn.get_app_info("keyed") or {})["api_keys"] == 1
        eventually(lambda: predict(conn, "keyed", {"input": [1.0]}).status_code == 401, "closed")
        ok = httpx.post(
            f"{query}/keyed/predict",
            json={"input": [1.0, 2.0]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert ok.status_code == 200 and ok.json()["output"] == 3.0

        # The CLI finds the token too, and makes keys; the key goes to stdout only.
        data_dir = ["--data-dir", str(cm.data_dir)]
        assert schooner.main(["create-api-key", "keyed", *data_dir]) == 0
        cli_key = capsys.readouterr().out.strip()
        secrets.append(cli_key)
        assert cli_key.startswith("sk-keyed-")
        conn.revoke_api_key("keyed", cli_key)

        # Rotation: the connection keeps working, the old token is refused everywhere.
        conn.rotate_admin_token()
        second = cm.admin_token()
        secrets.append(second)
        assert second != first
        old = {"Authorization": f"Bearer {first}"}
        assert httpx.get(f"{mgmt}/admin/apps", headers=old, timeout=5).status_code == 401
        assert httpx.get(f"{query}/status", headers=old, timeout=5).status_code == 401
        replica_metrics = [u for n, u in cm.metrics_urls().items() if n.startswith("replica-")]
        for url in replica_metrics:
            eventually(
                lambda url=url: httpx.get(url, headers=old, timeout=5).status_code == 401,
                "the replica refuses the old token",
            )
            new = {"Authorization": f"Bearer {second}"}
            assert httpx.get(url, headers=new, timeout=5).status_code == 200
        conn.register_application("after-rotation", "doubles", "-1", 100_000)
        assert "after-rotation" in conn.get_all_apps()
        # A new connection reads the new token; an override with the old one is refused,
        # saying where it came from, without showing it.
        with Connection(cm) as other:
            other.connect()
            assert "keyed" in other.get_all_apps()
        monkeypatch.setenv("SCHOONER_ADMIN_TOKEN", first)
        with Connection(cm) as stale:
            stale.connect()
            with pytest.raises(AuthenticationError) as info:
                stale.get_all_apps()
        assert "SCHOONER_ADMIN_TOKEN" in str(info.value) and first not in str(info.value)
        monkeypatch.delenv("SCHOONER_ADMIN_TOKEN")
    finally:
        conn.stop_all()
    logs = list((cm.data_dir / "logs").glob("*.log"))
    assert logs
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret is in {log.name}"


def test_no_process_of_the_cluster_inherits_an_exported_admin_token(
    tmp_path: Path, local_manager: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user who exported SCHOONER_ADMIN_TOKEN (the documented override) does not hand it
    to Redis, the frontends or the replicas that run model code: they hold its digest."""
    cm = local_manager(tmp_path / "data")
    monkeypatch.setenv("SCHOONER_ADMIN_TOKEN", "exported-before-start")
    cm.start_cluster()
    try:
        monkeypatch.setenv("SCHOONER_ADMIN_TOKEN", cm.admin_token())
        conn = Connection(cm)
        conn.connect()
        deploy_python_closure(conn, "envcheck", "1", "doubles", lambda xs: [0] * len(xs))
        processes = [p for p in cm.processes() if p["running"]]
        assert {p["role"] for p in processes} == {
            *("supervisor", "redis", "management", "query", "reconciler", "replica")
        }
        for p in processes:
            environ = Path(f"/proc/{p['pid']}/environ").read_bytes().split(b"\0")
            assert not [v for v in environ if v.startswith(b"SCHOONER_ADMIN_TOKEN=")], p["name"]
        conn.close()
    finally:
        cm.stop_all()


def test_replicas_reach_the_query_frontend_over_the_direct_unix_socket_by_default(
    conn: Connection,
) -> None:
    """The embedded default: no ZeroMQ between a replica and its frontend on one host,
    a socket only this user can reach."""
    import stat

    socket_path, proc = _replica_on_a_local_socket(conn, "unix", "query.usock")
    assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
    # Only libzmq would run I/O threads: a unix-only replica has none.
    assert not [t for t in _thread_names(proc.pid) if t.startswith("ZMQbg")]


def _replica_on_a_local_socket(conn: Connection, scheme: str, file: str) -> tuple[Path, Any]:
    """Serve an app by one replica of a fresh model and check it reaches the query
    frontend at ``scheme://<data_dir>/rpc/<file>``, a socket in a 0700 directory, and
    not over TCP; the socket's path and the replica's ``psutil.Process``."""
    import stat

    import psutil

    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    factor = {"unix": 5, "ipc": 3}[scheme]
    conn.register_application(f"{scheme}-app", "doubles", "none", 2_000_000)
    deploy_python_closure(
        conn, f"{scheme}-model", "1", "doubles", lambda xs: [x[0] * factor for x in xs]
    )
    conn.link_model_to_app(f"{scheme}-app", f"{scheme}-model")
    assert output_of(conn, f"{scheme}-app", [2.0]) == 2.0 * factor

    socket_path = cm.data_dir / "rpc" / file
    assert stat.S_ISSOCK(socket_path.stat().st_mode)
    assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    replicas = [r for r in cm.processes() if r["name"].startswith(f"replica-{scheme}-model")]
    assert len(replicas) == 1
    proc = psutil.Process(replicas[0]["pid"])
    argv = proc.cmdline()
    assert argv[argv.index("--frontend") + 1] == f"{scheme}://{socket_path}"
    # Not over TCP: the replica holds no connection to the RPC port.
    assert all(not c.raddr or c.raddr.port != cm.rpc_port for c in proc.net_connections(kind="tcp"))
    return socket_path, proc


def _thread_names(pid: int) -> list[str]:
    return [(task / "comm").read_text().strip() for task in Path(f"/proc/{pid}/task").iterdir()]


_SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_another_user_cannot_reach_the_direct_unix_socket(conn: Connection) -> None:
    """An attacker on the same host under another uid: the 0700 directory keeps them
    from the socket, and past it the frontend would refuse their uid."""
    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    socket_path = cm.data_dir / "rpc" / "query.usock"
    probe = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except PermissionError:\n"
        "    print('refused')\n"
        "else:\n"
        "    print('connected')\n"
    )
    out = subprocess.run(
        # The system's Python: the probe needs only the standard library, and another
        # user may not be able to read this checkout's venv.
        [_SYSTEM_PYTHON, "-c", probe, str(socket_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    assert out == "refused"


@pytest.fixture(scope="module")
def ipc_conn(
    tmp_path_factory: pytest.TempPathFactory, cluster_ports: Callable[[], dict[str, int]]
) -> Iterator[Connection]:
    """A cluster whose replicas reach the query frontend over ``ipc://``."""
    data_dir = tmp_path_factory.mktemp("ipc")
    manager = LocalContainerManager(
        data_dir=data_dir, rpc_unix=False, rpc_ipc=True, **cluster_ports()
    )
    c = Connection(manager)
    c.start()
    try:
        yield c
    finally:
        c.stop_all()


def test_replicas_on_this_host_reach_the_query_frontend_over_a_private_unix_socket(
    ipc_conn: Connection,
) -> None:
    _replica_on_a_local_socket(ipc_conn, "ipc", "query.sock")


def test_a_client_without_the_cluster_keys_cannot_register_over_the_unix_socket(
    ipc_conn: Connection,
) -> None:
    conn = ipc_conn
    import zmq
    from zmq.utils.monitor import recv_monitor_message

    from model_container import protocol
    from model_container.rpc_keys import ClientKeys

    cm = conn.cm
    assert isinstance(cm, LocalContainerManager)
    address = f"ipc://{cm.data_dir / 'rpc' / 'query.sock'}"
    keys = ClientKeys.load(str(cm.data_dir / "secrets" / "replica"))
    failed = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    )
    hello = protocol.Hello("ipc-impostor", "1", protocol.InputType.DOUBLES, "impostor-0")
    ctx = zmq.Context()
    sockets: list[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]] = []

    def dealer(curve: tuple[bytes, bytes] | None) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, curve[0])
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve[1])
        monitor = sock.get_monitor_socket(failed | zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sock.connect(address)
        sock.send_multipart(protocol.encode(hello))
        sockets.append((sock, monitor))
        return sock, monitor

    def handshake(monitor: zmq.Socket[bytes]) -> int:
        assert monitor.poll(10_000), "no handshake event"
        return int(recv_monitor_message(monitor)["event"])

    try:
        # No CURVE at all, and a key pair of its own (with the server's public key).
        for curve in (None, zmq.curve_keypair()):
            sock, monitor = dealer(curve)
            assert handshake(monitor) & failed
            assert not sock.poll(0), "a client without the cluster's key got an answer"
        # The control: the cluster's replica key completes the handshake and is welcomed.
        sock, monitor = dealer((keys.public, keys.secret))
        assert handshake(monitor) == zmq.EVENT_HANDSHAKE_SUCCEEDED
        assert sock.poll(10_000)
        assert isinstance(protocol.decode(sock.recv_multipart()), protocol.Welcome)
        sock.send_multipart(protocol.encode(protocol.Goodbye("test over")))
    finally:
        for sock, monitor in sockets:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
        ctx.term()


def test_registering_an_app_again_keeps_it_if_identical_and_names_what_differs(
    conn: Connection,
) -> None:
    """A notebook run twice: the second registration of the same app keeps it with
    ``exist_ok=True``; without it, or with other settings, the error says what differs
    and how to start clean, and changes nothing."""
    conn.register_application("again", "doubles", 0.5, 100000, cache_enabled=False)
    try:
        with pytest.raises(
            ConflictError, match=r"exist_ok=True.*unregister_application\('again'\)"
        ):
            conn.register_application("again", "doubles", 0.5, 100000, cache_enabled=False)
        app = conn.register_application(
            "again", "doubles", 0.5, 100000, cache_enabled=False, exist_ok=True
        )
        assert (app["name"], app["slo_micros"], app["cache_enabled"]) == ("again", 100000, False)
        with pytest.raises(ConflictError) as refused:
            conn.register_application("again", "strings", 0.5, 20000, exist_ok=True)
        message = str(refused.value)
        assert "input_type 'doubles' (not 'strings')" in message
        assert "slo_micros 100000 (not 20000)" in message
        assert "cache_enabled False (not True)" in message
        assert "unregister_application('again')" in message
        info = conn.get_app_info("again") or {}
        assert (info["input_type"], info["slo_micros"]) == ("doubles", 100000)
    finally:
        conn.unregister_application("again")


def test_status_tables_print_no_literal_none(
    conn: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    """An app with nothing to explain and a process with no exit reason leave their
    REASON cells empty."""
    conn.register_application("quiet-app", "doubles", 0.0, 100000)
    try:
        capsys.readouterr()
        assert cli_main(["status", "--data-dir", str(conn.cm.data_dir)]) == 0
        printed = capsys.readouterr().out
        assert "quiet-app" in printed and "REASON" in printed
        assert "None" not in printed
    finally:
        conn.unregister_application("quiet-app")
