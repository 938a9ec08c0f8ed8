"""An operator sees a crash-looping process in the query frontend's /status and /metrics.

The local supervisor publishes each process's state in ``{p}:supervision``; a real
``python -m query_frontend`` (real Redis) reads it in the background. Here the hash is
written the way the supervisor writes it, so the test needs no cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import redis
from credentials import make_cluster_secrets
from polling import eventually
from ports import free_port
from spawning import Spawner

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_a_failed_process_shows_in_status_and_metrics(tmp_path: Path, redis_url: str) -> None:
    secrets = make_cluster_secrets(tmp_path)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.hset(
        "schooner:supervision",
        mapping={
            "replica-m-1-r0": json.dumps(
                {
                    "role": "replica",
                    "state": "failed",
                    "restarts": 5,
                    "reason": "exited with status 1 five times within 60 s",
                }
            ),
            "query": json.dumps({"role": "query", "state": "running", "restarts": 1}),
            "garbage": "not json",
        },
    )
    spawner = Spawner(tmp_path)
    port = free_port()
    try:
        spawner("query", "-m", "query_frontend", "--redis-url", redis_url,
                "--host", "127.0.0.1", "--port", str(port), "--rpc-host", "127.0.0.1",
                "--rpc-port", str(free_port()),
                env={"SCHOONER_SECRETS_DIR": str(secrets.frontend_dir)})  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        headers = secrets.admin_headers

        def status() -> dict[str, object]:
            reply = httpx.get(f"{base}/status", headers=headers, timeout=5)
            reply.raise_for_status()
            return dict(reply.json()["supervision"])

        eventually(
            lambda: status()["failed"] == ["replica-m-1-r0"],
            "the failed replica in /status",
            timeout=60,
            ignoring=(httpx.HTTPError, KeyError),
        )
        processes = status()["processes"]
        assert isinstance(processes, dict)
        assert processes["replica-m-1-r0"]["reason"].startswith("exited with status 1")
        assert "garbage" not in processes  # a malformed entry is left out, not fatal
        metrics = httpx.get(f"{base}/metrics", headers=headers, timeout=5).text
        assert 'schooner_process_failed{process="replica-m-1-r0",role="replica"} 1.0' in metrics
        assert 'schooner_process_restarts_total{process="query",role="query"} 1.0' in metrics
        # Without the admin token, nobody reads it.
        assert httpx.get(f"{base}/status", timeout=5).status_code == 401
    finally:
        spawner.stop()
        client.close()
