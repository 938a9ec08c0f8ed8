"""Request ids, the latency split, Server-Timing, the access log's choice and lines, and
PREDICT's request ids and traceparents, without a cluster."""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import numpy as np
import orjson
import pytest

from model_container import current_request_ids, protocol
from model_container.protocol import InputType, Predict
from model_container.request_context import install
from model_container.worker import run_batch
from query_frontend.observability.access_log import AccessLog, line
from query_frontend.observability.requests import RequestIds
from query_frontend.observability.timing import Split, server_timing, split
from query_frontend.queries import Expired, RequestTrace
from tests.timed_queries import timed_query


def test_a_sane_client_request_id_is_kept_and_others_are_made_up() -> None:
    ids = RequestIds(b"abc")
    kept = ids.trace([(b"x-request-id", b"Order-1.2:3/4+5=6_7")])
    assert kept.id == "Order-1.2:3/4+5=6_7" and not kept.replaced
    for bad in (b"", b"a b", b"x" * 129, "\u00e9".encode(), b"a\r\nb"):
        trace = ids.trace([(b"x-request-id", bad)])
        assert trace.replaced and trace.id.startswith("abc-"), bad
    made = {ids.trace([]).id for _ in range(100)}
    assert len(made) == 100
    assert RequestIds().new() != RequestIds().new()  # another process, another prefix


def test_the_split_takes_the_longest_wait_of_the_request_s_queries() -> None:
    trace = RequestTrace(b"r")
    trace.queries = [timed_query(1.0, 1.010, 0.004, 0.002), timed_query(1.0, 1.003, 0.0, 0.005)]
    timing = split(trace, arrival=0.999, now=1.020)
    assert timing.queue == pytest.approx(0.006)
    assert timing.batch == pytest.approx(0.004)
    assert timing.model == pytest.approx(0.005)
    assert timing.total == pytest.approx(0.021)
    assert server_timing(trace, timing) == (
        b"queue;dur=6.000, batch;dur=4.000, model;dur=5.000, total;dur=21.000"
    )


def test_server_timing_of_cache_hits_and_of_refusals() -> None:
    hit = RequestTrace(b"r")
    hit.cached = 1
    assert server_timing(hit, Split(0, 0, 0, 0.0005)) == b'cache;desc="hit", total;dur=0.500'
    assert server_timing(RequestTrace(b"r"), Split(0, 0, 0, 0.001)) == b"total;dur=1.000"
    partial = RequestTrace(b"r")
    partial.cached = 1
    partial.queries = [timed_query(1.0, 1.001, 0.0, 0.0)]
    assert server_timing(partial, Split(0.001, 0, 0, 0.002)).startswith(b'cache;desc="partial"')


def test_sampling_nothing_still_logs_errors_and_defaults() -> None:
    log = AccessLog(0.0)
    ok = RequestTrace(b"r")
    ok.outcomes = [b"1"]
    assert not log.wants(200, ok)
    assert log.wants(503, ok) and log.wants(404, RequestTrace(b"r"))
    defaulted = RequestTrace(b"r")
    defaulted.outcomes = [b"1", Expired("too slow")]
    assert log.wants(200, defaulted)
    assert AccessLog(1.0).wants(200, ok)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        AccessLog(1.5)


def test_the_cap_bounds_lines_a_second_errors_included_and_says_what_it_left_out() -> None:
    now = [100.2]
    log = AccessLog(1.0, max_per_s=3, clock=lambda: now[0])
    ok = RequestTrace(b"r")
    ok.outcomes = [b"1"]
    assert [log.wants(200, ok) for _ in range(3)] == [True, True, True]
    assert not log.wants(200, ok)
    assert not log.wants(500, ok)  # a flood of errors is capped too
    now[0] = 101.0  # the next second: lines again, and the first says 2 were left out
    assert log.wants(200, ok)
    log.log(ok, "POST", "/a/predict", 200, Split(0, 0, 0, 0.001), None)
    entry = log._queue.get_nowait()
    assert entry is not None and entry[-1] == 2
    assert orjson.loads(line(*entry))["suppressed"] == 2
    uncapped = AccessLog(1.0, max_per_s=0)
    assert all(uncapped.wants(200, ok) for _ in range(10_000))
    with pytest.raises(ValueError, match=">= 0"):
        AccessLog(1.0, max_per_s=-1)


def test_an_access_log_line_has_the_fields_and_nothing_of_the_body() -> None:
    trace = RequestTrace(b"bad-id-replaced", replaced=True)
    trace.app = "sums"
    trace.outcomes = [Expired("no replica of model 'm' version '1' is connected")]
    record = orjson.loads(
        line(0.0, trace, "POST", "/sums/predict", 200, Split(0.001, 0, 0, 0.002), "1.2.3.4:5")
    )
    assert record == {
        "time": "1970-01-01T00:00:00.000000Z",
        "request_id": "bad-id-replaced",
        "method": "POST",
        "path": "/sums/predict",
        "app": "sums",
        "status": 200,
        "models": [],
        "default": True,
        "default_reason": "no replica of model 'm' version '1' is connected",
        "queries": 1,
        "cached": 0,
        "queue_ms": 1.0,
        "batch_wait_ms": 0.0,
        "model_ms": 0.0,
        "total_ms": 2.0,
        "client": "1.2.3.4:5",
        "request_id_replaced": True,
    }


def test_the_access_log_writes_on_its_thread_and_flushes_at_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = AccessLog(1.0)
    log.start()
    trace = RequestTrace(b"t-1")
    trace.app = "a"
    with caplog.at_level(logging.INFO, logger="schooner.access"):
        log.log(trace, "POST", "/a/predict", 404, Split(0, 0, 0, 0), None)
        log.close()
    (record,) = [r for r in caplog.records if r.name == "schooner.access"]
    assert orjson.loads(record.getMessage())["request_id"] == "t-1"


def _predict(**fields: Any) -> Predict:
    lengths, data = protocol.pack_arrays([np.array([1.0]), np.array([2.0])], np.dtype("<f8"))
    return Predict(3, InputType.DOUBLES, lengths, data.tobytes(), **fields)


def test_predict_carries_request_ids_and_traceparents_only_when_given() -> None:
    plain = protocol.encode(_predict())
    assert set(msgpack.unpackb(plain[0])) == {"v", "t", "id", "it", "n"}
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    full = protocol.decode(protocol.encode(_predict(request_ids=("a", "b"), traceparents=(tp, tp))))
    assert isinstance(full, Predict)
    assert full.request_ids == ("a", "b") and full.traceparents == (tp, tp)


@pytest.mark.parametrize("bad", [["only-one"], "a,b", [1, 2], {"a": 1}])
def test_a_malformed_request_id_list_is_ignored_not_fatal(bad: object) -> None:
    frames = protocol.encode(_predict())
    head = msgpack.unpackb(frames[0])
    head["rid"] = bad
    decoded = protocol.decode([msgpack.packb(head), *frames[1:]])
    assert isinstance(decoded, Predict) and decoded.request_ids == ()


def test_the_model_sees_its_batch_s_request_ids_in_its_log_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    install()
    seen: list[tuple[str, ...]] = []

    def model(xs: Any) -> list[float]:
        seen.append(current_request_ids())
        logging.getLogger("a-model").warning("scoring")
        return [0.0] * len(xs)

    with caplog.at_level(logging.WARNING, logger="a-model"):
        run_batch(model, InputType.DOUBLES, _predict(request_ids=("r-1", "r-2")))
        logging.getLogger("a-model").warning("outside")
    assert seen == [("r-1", "r-2")]
    scoring, outside = [r for r in caplog.records if r.name == "a-model"]
    assert scoring.request_id == "r-1,r-2"  # type: ignore[attr-defined]
    assert outside.request_id == "-"  # type: ignore[attr-defined]
    assert current_request_ids() == ()


def test_a_local_cluster_passes_its_access_log_sample_to_every_query_frontend(
    tmp_path: Any,
) -> None:
    from admin import InvalidRequestError, LocalContainerManager

    default = LocalContainerManager(data_dir=tmp_path / "a")
    assert "--access-log-sample" not in default._query_specs()[0].argv
    sampled = LocalContainerManager(
        data_dir=tmp_path / "b", access_log_sample=0.5, query_frontends=2
    )
    for spec in sampled._query_specs():
        assert spec.argv[spec.argv.index("--access-log-sample") + 1] == "0.5"
    with pytest.raises(InvalidRequestError, match="access_log_sample"):
        LocalContainerManager(data_dir=tmp_path / "c", access_log_sample=float("nan"))
