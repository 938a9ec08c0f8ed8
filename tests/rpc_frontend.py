"""The query frontend's RPC server and dispatcher in the test's event loop, with the
replica processes it serves, for the tests of what happens to replicas and their queries.

``RpcFrontend`` binds a real ``RpcServer`` (a CURVE ROUTER on a ``ports.free_port``,
plus a unix socket when given ``unix_path``) to a ``Dispatcher`` whose model versions
take fixed batches of up to 8 with a 30 s objective. It records the replicas removed
(``removed``) and every suspension of one in rotation (``suspensions``), starts
replica processes (``started``: a real ``python -m model_container`` from
``container_argv``, or any program that registers) and waits until each is registered
with its own pid, and submits queries as the predict path makes them. ``stop`` cancels
its tasks, closes the server and kills (continuing first) what still runs. Every wait
polls with a deadline; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.asyncio
from credentials import ClusterSecrets, make_cluster_secrets
from polling import eventually_async
from ports import free_port

from model_container.bundle import bundle_digest
from model_container.protocol import InputType
from model_container.rpc_keys import ServerKeys
from query_frontend.batching.dispatch import Dispatcher
from query_frontend.batching.replicas import Replica
from query_frontend.queries import Outcome, Query
from query_frontend.rpc.server import RpcServer

REPO = Path(__file__).resolve().parents[1]
STARTUP_S = 30.0  # a cold interpreter importing numpy on a loaded machine
ANSWER_S = 30.0  # for every query of a test to be answered
Key = tuple[str, str]  # (model name, version)
_ids = itertools.count()


def container_argv(
    bundle: Path, frontend: str, key: Key, replica_id: str, secrets: ClusterSecrets
) -> list[str]:
    """A model container serving ``key`` (doubles) from ``bundle`` to ``frontend``."""
    argv = [sys.executable, "-m", "model_container", "--bundle", str(bundle)]
    argv += ["--bundle-sha256", bundle_digest(bundle)]
    argv += ["--frontend", frontend, "--name", key[0], "--version", key[1]]
    argv += ["--input-type", "doubles", "--replica-id", replica_id, "--log-level", "INFO"]
    argv += ["--secrets-dir", str(secrets.replica_dir)]
    return argv


def spawn_logged(
    argv: list[str], log: Any, env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    """``argv`` with the repository's packages importable and ``env`` added."""
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(argv, stdout=log, stderr=log, env=full_env, cwd=cwd)


class RpcFrontend:
    """The RPC server and dispatcher of a query frontend, serving ``keys``, and the
    replica processes started for it (``procs``: each with its open log)."""

    def __init__(
        self,
        tmp_path: Path,
        heartbeat_ms: int,
        keys: Sequence[Key],
        secrets: ClusterSecrets | None = None,
        timeout_s: float = 0.0,
        unix_path: str = "",
    ) -> None:
        """``timeout_s``: the batch timeout of every key (0: derived from the objective)."""
        self.ctx = zmq.asyncio.Context()
        self.dispatcher = Dispatcher(default_max_batch=8, max_queue=10_000)
        self.keys = list(keys)
        for key in self.keys:
            self.dispatcher.configure(key, InputType.DOUBLES, 8, 30.0, timeout_s=timeout_s)
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.secrets = secrets or make_cluster_secrets(tmp_path / "cluster")
        server_keys = ServerKeys.load(str(self.secrets.frontend_dir))
        self.rpc = RpcServer(
            self.ctx, self.address, self.dispatcher, heartbeat_ms, server_keys, unix_path=unix_path
        )
        self.tmp_path = tmp_path
        self.procs: list[tuple[subprocess.Popen[bytes], Any]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.removed: list[Replica] = []
        self.dispatcher.on_replica_removed = self.removed.append
        self.suspensions: list[tuple[str, str]] = []  # (replica id, why) of each one benched
        suspend = self.dispatcher.suspend_replica

        def record_suspension(identity: bytes, reason: str, now: float) -> None:
            replica = self.dispatcher.by_identity.get(identity)
            if replica is not None and replica.available:
                self.suspensions.append((replica.replica_id, reason))
            suspend(identity, reason, now)

        self.dispatcher.suspend_replica = record_suspension  # type: ignore[method-assign]

    def start(self) -> None:
        """Open the server and serve; the dispatcher sends with ``self.rpc.send`` as it
        is now (a subclass may have wrapped it)."""
        self.rpc.open()
        self.dispatcher.bind(self.rpc.send)
        self.tasks = [
            asyncio.create_task(self.rpc.serve()),
            asyncio.create_task(self.rpc.heartbeat()),
        ]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.rpc.close()
        self.ctx.term()
        for proc, log in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)  # (a stopped one would not die yet)
                proc.kill()
            proc.wait(timeout=ANSWER_S)
            log.close()

    async def started(
        self, replica_id: str, argv: list[str], env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Replica]:
        """Start ``argv`` (a replica ``replica_id``) and wait until it is registered."""
        log_path = self.tmp_path / f"{replica_id}-{len(self.procs)}.log"
        log = log_path.open("wb")
        proc = spawn_logged(argv, log, env or {}, self.tmp_path)
        self.procs.append((proc, log))
        await eventually_async(
            lambda: self.registered(replica_id, proc.pid),
            lambda: f"{replica_id} registered; its log: {log_path.read_text()[-2000:]}",
            STARTUP_S,
        )
        replica = self.find(replica_id)
        assert replica is not None
        return proc, replica

    def registered(self, replica_id: str, pid: int) -> bool:
        replica = self.find(replica_id)
        return replica is not None and replica.pid == pid

    def find(self, replica_id: str) -> Replica | None:
        return next(
            (r for r in self.dispatcher.by_identity.values() if r.replica_id == replica_id), None
        )

    def submit(
        self, xs: list[float], key: Key | None = None, timeout_s: float = 20.0
    ) -> list[Query]:
        """Queries for ``key`` (the first served if None) as the predict path makes them:
        a deadline ``timeout_s`` away, and the default at it."""
        loop = asyncio.get_running_loop()
        q = self.dispatcher.queue(key or self.keys[0], InputType.DOUBLES)
        deadline = loop.time() + timeout_s
        queries = []
        for x in xs:
            query = Query(next(_ids), np.array([x]), deadline, loop.create_future())
            self.dispatcher.deadlines.add(query, q, loop)
            queries.append(query)
        self.dispatcher.submit(q, queries)
        return queries


async def outcomes(queries: list[Query]) -> list[Outcome]:
    return list(await asyncio.wait_for(asyncio.gather(*(q.future for q in queries)), ANSWER_S))


def predictions(xs: list[float]) -> list[bytes]:
    """What the tests' replicas answer: 10 x each input."""
    return [b"%.1f" % (x * 10) for x in xs]


def block_the_event_loop(seconds: float) -> None:
    """What a frontend too busy to read its sockets looks like to the liveness checks."""
    time.sleep(seconds)
