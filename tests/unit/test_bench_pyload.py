"""The pipeline benchmark's Python load generator (``benchmarks.pyload``): its statistics,
its reading of answers, and its chains against a real HTTP server on a real socket; the
text models both pipeline contenders run (``benchmarks.baselines.text_model``); and the
pipeline-against-chain ratios of the report."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import cloudpickle
import orjson
import pytest

from benchmarks.baselines.text_model import (
    NUM_TEXT_FEATURES,
    corpus,
    make_featuriser,
    train_text_model,
)
from benchmarks.pyload import (
    Call,
    HttpError,
    Tally,
    content_length,
    drive,
    percentile,
    summarize,
)
from benchmarks.report import ratios


def test_percentiles_are_nearest_rank() -> None:
    ordered = list(range(1, 101))  # 1..100
    assert percentile(ordered, 50) == 50
    assert percentile(ordered, 90) == 90
    assert percentile(ordered, 99) == 99
    assert percentile(ordered, 99.9) == 100
    assert percentile(ordered, 100) == 100
    assert percentile([7], 50) == 7 and percentile([7], 99.9) == 7
    assert percentile([], 99) == 0
    assert percentile([1, 2], 0) == 1  # never rank 0


def test_the_summary_has_wrks_fields_in_milliseconds() -> None:
    tally = Tally(
        latencies_ns=[3_000_000, 1_000_000, 2_000_000, 4_000_000],
        http_requests=8,
        non2xx=1,
        defaults=2,
        errors=3,
        timeouts=1,
    )
    doc = summarize(tally, concurrency=4, duration_s=2.0)
    assert doc["requests"] == 4 and doc["http_requests"] == 8
    assert doc["rps"] == 2.0
    assert doc["p50_ms"] == 2.0 and doc["p99_ms"] == 4.0 and doc["max_ms"] == 4.0
    assert doc["mean_ms"] == 2.5
    assert (doc["non2xx"], doc["defaults"], doc["socket_errors"]) == (1, 2, 4)
    empty = summarize(Tally(), concurrency=1, duration_s=1.0)
    assert empty["requests"] == 0 and empty["rps"] == 0.0 and empty["p99_ms"] == 0.0


def test_content_length_is_read_whatever_its_case() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-LENGTH: 42"
    assert content_length(head) == 42
    with pytest.raises(HttpError, match="without Content-Length"):
        content_length(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked")


def test_a_call_is_a_post_with_its_body_length_and_the_key_when_given() -> None:
    call = Call.of("http://127.0.0.1:8000/text/predict", api_key="k3y")
    raw = call.raw(b'{"input":"a b"}')
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /text/predict HTTP/1.1\r\n")
    assert b"\r\nContent-Length: 15" in head and b"Authorization: Bearer k3y" in head
    assert body == b'{"input":"a b"}'
    with pytest.raises(ValueError, match="only http://"):
        Call.of("https://127.0.0.1/x")


class _Server:
    """A small HTTP/1.1 keep-alive server: ``/feat`` answers the input's word count as a
    list, ``/clf`` the sum of its input, ``/default`` the app's default, ``/fail`` a
    500, ``/close`` closes the connection; every body it received is kept."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[Any]] = {}
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                length = content_length(head.rstrip(b"\r\n"))
                doc = orjson.loads(await reader.readexactly(length))
                self.bodies.setdefault(path, []).append(doc["input"])
                status, answer = 200, {"output": 0, "default": False}
                if path == "/feat":
                    answer["output"] = [float(len(doc["input"].split()))]
                elif path == "/clf":
                    answer["output"] = sum(doc["input"])
                elif path == "/default":
                    answer["default"] = True
                elif path == "/fail":
                    status = 500
                elif path == "/close":
                    return
                body = orjson.dumps(answer)
                writer.write(
                    b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (status, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


async def _drive(paths: list[str], concurrency: int = 4, duration: float = 0.3) -> Any:
    server = _Server()
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = srv.sockets[0].getsockname()[1]
    bodies = [orjson.dumps({"input": "one two three"}), orjson.dumps({"input": "four five"})]
    async with srv:
        calls = [Call.of(server.url(p)) for p in paths]
        summary = await drive(calls, bodies, concurrency, duration, timeout_s=2.0)
    return summary, server


def test_a_chain_posts_each_answers_output_to_the_next_call() -> None:
    summary, server = asyncio.run(_drive(["/feat", "/clf"]))
    assert summary["requests"] > 0
    assert summary["http_requests"] == 2 * summary["requests"]
    assert summary["non2xx"] == summary["defaults"] == summary["socket_errors"] == 0
    # The second call got what the first answered: the word counts, as lists.
    assert set(map(tuple, server.bodies["/clf"])) == {(3.0,), (2.0,)}
    assert len(server.bodies["/feat"]) == len(server.bodies["/clf"])
    assert summary["p50_ms"] > 0 and summary["p50_ms"] <= summary["p99_ms"]


def test_a_chain_stops_at_an_error_or_a_default_and_counts_it() -> None:
    summary, server = asyncio.run(_drive(["/fail", "/clf"]))
    assert summary["requests"] > 0 and summary["non2xx"] == summary["requests"]
    assert "/clf" not in server.bodies
    summary, server = asyncio.run(_drive(["/default", "/clf"]))
    assert summary["defaults"] == summary["requests"] > 0
    assert "/clf" not in server.bodies


def test_a_closed_connection_is_a_socket_error_and_the_run_still_ends() -> None:
    summary, _ = asyncio.run(_drive(["/close"], concurrency=2, duration=0.2))
    assert summary["requests"] == 0
    assert summary["socket_errors"] > 0


def test_nothing_listening_is_a_socket_error() -> None:
    async def run() -> Any:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        calls = [Call.of(f"http://127.0.0.1:{port}/x")]
        return await drive(calls, [b"{}"], 1, 0.1, timeout_s=1.0)

    summary = asyncio.run(run())
    assert summary["requests"] == 0 and summary["socket_errors"] > 0


def test_the_generator_prints_one_result_line() -> None:
    """The command line run.py starts (its process, its BENCH_JSON line), against
    nothing listening: it still reports, with the errors counted."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.pyload", "http://127.0.0.1:9/predict"),
            *("--concurrency", "1", "--duration", "0.2"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    [line] = [ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")]
    doc = json.loads(line.removeprefix("BENCH_JSON "))
    assert doc["requests"] == 0 and doc["socket_errors"] > 0 and doc["concurrency"] == 1


def test_the_featuriser_is_deterministic_and_shipped_by_value(tmp_path: Any) -> None:
    featurise = make_featuriser()
    texts = [text for text, _ in corpus(5, seed=3)]
    rows = featurise(texts)
    assert len(rows) == 5 and all(len(r) == NUM_TEXT_FEATURES for r in rows)
    assert rows == make_featuriser()(texts)
    assert featurise([""]) == [[0.0] * NUM_TEXT_FEATURES]
    assert corpus(5, seed=3) == corpus(5, seed=3)
    # A replica cannot import ``benchmarks``: the pickled function must not need it.
    blob = tmp_path / "feat.pkl"
    blob.write_bytes(cloudpickle.dumps(featurise))
    code = (
        "import sys, pickle; sys.modules['benchmarks'] = None; "
        f"f = pickle.loads(open({str(blob)!r}, 'rb').read()); print(f(['market goal']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    assert json.loads(done.stdout) == featurise(["market goal"])


def test_the_classifier_learned_the_topics() -> None:
    model = train_text_model()
    held_out = corpus(400, seed=11)
    x = make_featuriser()([text for text, _ in held_out])
    assert model.score(x, [label for _, label in held_out]) > 0.7


def _row(contender: str, c: int, rps: float, p50: float, p99: float) -> dict[str, Any]:
    return {"contender": contender, "concurrency": c, "rps": rps, "p50_ms": p50, "p99_ms": p99}


def test_the_report_gives_the_pipeline_against_the_chain() -> None:
    rows = [
        _row("schooner-pipeline", 1, 1500.0, 0.6, 1.2),
        _row("schooner-chained", 1, 900.0, 1.0, 2.4),
        _row("schooner-pipeline", 64, 8000.0, 7.0, 12.0),
        _row("schooner-chained", 64, 6000.0, 10.0, 20.0),
    ]
    got = {r["target"]: r for r in ratios(rows)}
    rps = got["pipeline vs client-chained apps, throughput (c=64)"]
    assert rps["measured"] == pytest.approx(8000 / 6000) and rps["pass"] is True
    assert got["pipeline vs client-chained apps, p50 (c=1)"]["measured"] == pytest.approx(0.6)
    assert got["pipeline vs client-chained apps, p50 (c=1)"]["pass"] is True
    assert got["pipeline vs client-chained apps, p99 (c=1)"]["measured"] == pytest.approx(0.5)
    assert got["pipeline vs client-chained apps, p99 (c=64)"]["measured"] == pytest.approx(0.6)
    assert got["pipeline vs client-chained apps, p50 (c=64)"]["pass"] is None  # no goal
    assert got["pipeline vs minimal two-stage pipeline (c=64)"]["display"] == "n/a"


def test_a_groups_targets_take_turns_at_running_first() -> None:
    from benchmarks.contenders import Target
    from benchmarks.run import in_turn

    def target(name: str) -> Target:
        return Target(name, name, "http://127.0.0.1:1/", "text", (1,), list)

    targets = [target("schooner-pipeline"), target("schooner-chained")]
    assert [t.name for t in in_turn(targets, 1)] == ["schooner-pipeline", "schooner-chained"]
    assert [t.name for t in in_turn(targets, 2)] == ["schooner-chained", "schooner-pipeline"]
    assert [t.name for t in in_turn(targets, 3)] == ["schooner-pipeline", "schooner-chained"]
    assert [t.name for t in targets] == ["schooner-pipeline", "schooner-chained"]  # untouched
