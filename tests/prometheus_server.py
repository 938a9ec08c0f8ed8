"""A real ``prometheus`` server for tests: Debian's binary on a free port, scraping with
a copy of ``deploy/prometheus/prometheus.yml`` (1 s scrapes) written into the directory
of a cluster's targets file, where its relative paths find the targets and the token.

``require_tool`` skips a test when the binary is missing, or fails it when
``SCHOONER_REQUIRE_PROMETHEUS=1`` (CI provisions it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import ports
import pytest

CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "prometheus.yml"


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("SCHOONER_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(f"{name} is not installed and SCHOONER_REQUIRE_PROMETHEUS=1")
    pytest.skip(f"{name} is not installed (apt-get install prometheus)")


class Prometheus:
    """A prometheus server on a free port, scraping with a copy of the shipped config."""

    def __init__(self, binary: str, config_dir: Path, storage: Path) -> None:
        self.port = ports.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = storage.parent / "prometheus.log"
        text = CONFIG.read_text()
        text = text.replace("scrape_interval: 15s", "scrape_interval: 1s")
        text = text.replace("scrape_timeout: 10s", "scrape_timeout: 1s")
        assert "scrape_interval: 1s" in text and "scrape_timeout: 1s" in text
        config = config_dir / "prometheus-test.yml"  # beside the shipped copy, if any
        config.write_text(text)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={storage}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def get(self, path: str, **params: str) -> Any:
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus exited: {self.log.read_text()[-3000:]}")
        reply = self.client.get(path, params=params)
        assert reply.status_code == 200, f"{path} {params}: {reply.status_code} {reply.text}"
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/targets", state="active")["activeTargets"])

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)
