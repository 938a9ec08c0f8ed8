"""The RPC hop alone: the query frontend's real RPC server and dispatcher against a
replica that answers on the thread that owns its socket.

    python -m benchmarks.rpc_bridge [--endpoint tcp|ipc|unix] [--concurrency 1] [--duration 3]

The frontend side is ``query_frontend.rpc.server.RpcServer`` and
``batching.dispatch.Dispatcher`` on uvloop, a CURVE server as in production; the replica
is a child process with a plain blocking DEALER (CURVE client with the cluster's keys)
that sends HELLO and answers every PREDICT at once with a RESULT of one double per
input: no model, so what is measured is the bridge, ZeroMQ and CURVE. With ``--endpoint
unix`` the replica uses the direct unix-socket transport instead (``RpcServer``'s
``unix_path``, a plain blocking socket speaking ``model_container.framing``): no ZeroMQ
and no CURVE on the measured path. Queries are
submitted as the predict path does (a deadline, a default at it) by ``--concurrency``
workers in a loop; it prints one JSON line: round trips per second, p50/p99 of a round
trip in microseconds, and the frontend process's CPU microseconds per query
(``time.process_time``, which does not depend on the machine's other load as much as
wall time does). Run it under ``flock /work/wt/notes/bench.lock`` and compare variants
in the same locked run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uvloop
import zmq
import zmq.asyncio

from admin.container_managers._credentials import ClusterCredentials, write_dir
from model_container import protocol
from model_container.framing import MessageReader, encode_message
from model_container.protocol import Heartbeat, Hello, InputType, Predict, Result, Welcome
from model_container.rpc_keys import ClientKeys, ServerKeys

KEY = ("m", "1")


def replica(endpoint: str, secrets_dir: str) -> None:
    """The replica: HELLO, then answer PREDICTs and heartbeats until killed."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    ClientKeys.load(secrets_dir).apply(sock)
    sock.connect(endpoint)
    hello = Hello(KEY[0], KEY[1], InputType.DOUBLES, "bench-replica", pid=os.getpid())
    sock.send_multipart(protocol.encode(hello))
    one = protocol.pack_outputs([1.0])
    while True:
        msg = protocol.decode(sock.recv_multipart(copy=True))
        if isinstance(msg, Predict):
            n = len(protocol.unpack_lengths(msg.lengths))
            lengths, data = one if n == 1 else protocol.pack_outputs([1.0] * n)
            sock.send_multipart(protocol.encode(Result(msg.batch_id, lengths, data)))
        elif isinstance(msg, Heartbeat):
            sock.send_multipart(protocol.encode(Heartbeat()))
        elif not isinstance(msg, Welcome):
            raise SystemExit(f"replica: unexpected {msg}")


def replica_unix(path: str) -> None:
    """The same replica on the direct unix-socket transport: the replies to one read
    go out in one ``sendall``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    while True:  # until the frontend listens
        try:
            sock.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.01)

    def framed(msg: protocol.Message) -> bytes:
        return b"".join(bytes(p) for p in encode_message(protocol.encode(msg)))

    hello = Hello(KEY[0], KEY[1], InputType.DOUBLES, "bench-replica", pid=os.getpid())
    sock.sendall(framed(hello))
    one = protocol.pack_outputs([1.0])
    reader = MessageReader()
    buf = bytearray(256 * 1024)
    view = memoryview(buf)
    while True:
        n = sock.recv_into(buf)
        if n == 0:
            return
        out = []
        for frames in reader.feed(view[:n]):
            msg = protocol.decode(frames)
            if isinstance(msg, Predict):
                k = len(protocol.unpack_lengths(msg.lengths))
                lengths, data = one if k == 1 else protocol.pack_outputs([1.0] * k)
                out.append(framed(Result(msg.batch_id, lengths, data)))
            elif isinstance(msg, Heartbeat):
                out.append(framed(Heartbeat()))
            elif not isinstance(msg, Welcome):
                raise SystemExit(f"replica: unexpected {msg}")
        if out:
            sock.sendall(b"".join(out))


async def frontend(
    endpoint: str, secrets_dir: str, concurrency: int, duration: float, unix_path: str = ""
) -> dict[str, object]:
    from query_frontend.batching.dispatch import Dispatcher
    from query_frontend.queries import Query
    from query_frontend.rpc.server import RpcServer

    loop = asyncio.get_running_loop()
    ctx = zmq.asyncio.Context()
    dispatcher = Dispatcher(default_max_batch=64, max_queue=10_000)
    dispatcher.configure(KEY, InputType.DOUBLES, -1, 30.0)
    keys = ServerKeys.load(secrets_dir)
    rpc = RpcServer(ctx, endpoint, dispatcher, 1000, keys, unix_path=unix_path)
    rpc.open()
    tasks = [asyncio.ensure_future(rpc.serve()), asyncio.ensure_future(rpc.heartbeat())]
    try:
        while not dispatcher.by_identity:  # noqa: ASYNC110 (polling the registration)
            await asyncio.sleep(0.01)
        q = dispatcher.queue(KEY, InputType.DOUBLES)
        ids = itertools.count()
        x = np.zeros(10)
        latencies: list[float] = []

        async def one() -> None:
            deadline = loop.time() + 10.0
            query = Query(next(ids), x, deadline, loop.create_future())
            dispatcher.deadlines.add(query, q, loop)
            start = time.perf_counter()
            dispatcher.submit(q, [query])
            await query.future
            latencies.append(time.perf_counter() - start)

        async def worker(until: float) -> None:
            while time.perf_counter() < until:
                await one()

        await asyncio.gather(*(worker(time.perf_counter() + 0.5) for _ in range(concurrency)))
        latencies.clear()
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(t0 + duration) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        rpc.close()
        ctx.term()
    n = len(latencies)
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "endpoint": "unix" if unix_path else endpoint.split(":", maxsplit=1)[0],
        "concurrency": concurrency,
        "queries": n,
        "qps": round(n / wall),
        "p50_us": round(cuts[49] * 1e6, 1),
        "p99_us": round(cuts[98] * 1e6, 1),
        "cpu_us_per_query": round(cpu / n * 1e6, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rpc_bridge", description=__doc__)
    p.add_argument("--endpoint", choices=("tcp", "ipc", "unix"), default="tcp")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--label", default="")
    p.add_argument("--replica", nargs=2, metavar=("ENDPOINT", "DIR"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.replica:
        if a.replica[0].startswith("unix://"):
            replica_unix(a.replica[0][len("unix://") :])
        else:
            replica(*a.replica)
        return
    with tempfile.TemporaryDirectory(prefix="rpcb-") as tmp:
        creds = ClusterCredentials.generate()
        write_dir(Path(tmp) / "fe", creds.frontend_files())
        write_dir(Path(tmp) / "re", creds.replica_files())
        unix_path = ""
        if a.endpoint == "ipc":
            endpoint = f"ipc://{tmp}/rpc.sock"
        else:
            with FreePort() as port:
                endpoint = f"tcp://127.0.0.1:{port}"
        replica_endpoint = endpoint
        if a.endpoint == "unix":
            os.chmod(tmp, 0o700)  # (TemporaryDirectory makes it so; the listener checks)
            unix_path = f"{tmp}/direct.sock"
            replica_endpoint = f"unix://{unix_path}"
        # The replica's DEALER (or its unix socket) retries until the frontend has bound.
        argv = [sys.executable, "-m", "benchmarks.rpc_bridge", "--replica", replica_endpoint]
        child = subprocess.Popen([*argv, f"{tmp}/re"])
        try:
            out = uvloop.run(frontend(endpoint, f"{tmp}/fe", a.concurrency, a.duration, unix_path))
        finally:
            child.kill()
            child.wait()
    print(json.dumps({"label": a.label, **out}), flush=True)


class FreePort:
    """A free TCP port on 127.0.0.1 (released on exit, to be bound at once)."""

    def __enter__(self) -> int:
        import socket

        self._s = socket.socket()
        self._s.bind(("127.0.0.1", 0))
        return int(self._s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._s.close()


if __name__ == "__main__":
    main()
