"""The benchmark's floor (``benchmarks.baselines.minimal_pipeline``) answers like the other
contenders: a real uvicorn process, a real ZeroMQ DEALER/ROUTER pair, a real model process."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from benchmarks.contenders import PROBE_BODY, REPO_ROOT
from benchmarks.procs import Server, free_port, running, wait_http_ok


def _post(url: str, body: bytes) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("model", ["sklearn", "noop"])
def test_it_answers_a_row_of_ten_doubles_and_rejects_a_bad_body(model: str, tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.baselines.minimal_pipeline", "--port", str(port)]
    server = Server([*argv, "--model", model], tmp_path / "minimal.log")
    url = f"http://127.0.0.1:{port}/predict"
    with running(server, REPO_ROOT):
        wait_http_ok(url, PROBE_BODY, 60.0, server.proc)
        status, answer = _post(url, PROBE_BODY)
        assert status == 200
        req = urllib.request.Request(url, data=PROBE_BODY, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:  # not chunked, as Schooner
            assert int(resp.headers["Content-Length"]) == len(resp.read())
        assert answer["default"] is False
        assert answer["output"] in (0.0, 1.0)
        if model == "noop":
            assert answer["output"] == 0.0
        assert _post(url, b'{"input":[1.0,2.0]}')[0] == 400
        assert _post(url, b"not json")[0] == 400
        pids = server.pids
        assert len(pids) == 2  # the frontend and its model process
    assert server.pids == []


def test_the_two_stage_floor_answers_what_the_two_functions_give(tmp_path: Path) -> None:
    """``benchmarks.baselines.minimal_two_stage``: a real uvicorn process and two real
    model processes (featuriser, classifier) answer a text with the classifier's label
    of its features, as the Schooner pipeline contender must."""
    from benchmarks.baselines.text_model import corpus, make_featuriser, train_text_model
    from benchmarks.contenders import TEXT_PROBE_BODY

    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.baselines.minimal_two_stage", "--port", str(port)]
    server = Server(argv, tmp_path / "minimal-two-stage.log")
    url = f"http://127.0.0.1:{port}/predict"
    texts = [text for text, _ in corpus(6, seed=5)]
    expected = train_text_model().predict(make_featuriser()(texts)).tolist()
    with running(server, REPO_ROOT):
        wait_http_ok(url, TEXT_PROBE_BODY, 60.0, server.proc)
        got = []
        for text in texts:
            status, answer = _post(url, json.dumps({"input": text}).encode())
            assert status == 200 and answer["default"] is False
            got.append(answer["output"])
        assert got == expected
        assert _post(url, b'{"input":[1.0]}')[0] == 400
        assert _post(url, b"not json")[0] == 400
        assert len(server.pids) == 3  # the frontend and its two model processes
    assert server.pids == []
