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
