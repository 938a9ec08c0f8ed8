"""What the transport alone costs a round trip: ZeroMQ (TCP, ipc, CURVE) against a
plain unix socket, between an asyncio frontend and a model that answers at once.

    flock /work/wt/notes/bench.lock .venv/bin/python -m benchmarks.transport_rtt \\
        --rounds 3 [--count 5000] [--inflight 64] [--inflight-count 20000] \\
        [--transports tcp-curve,ipc-curve,ipc,unix,seqpacket] [--json FILE]

Research for issue 14 ("remove hops the minimal pipeline also pays"): whether a direct
transport without libzmq's I/O threads is worth building for replicas on the same host.
Not a test and not part of ``benchmarks.run``.

Each measurement is two fresh processes:

- the **frontend**: an asyncio event loop on uvloop, as the query frontend runs. It sends
  a 120-byte request and awaits a Future that the socket's read callback resolves with
  the 40-byte reply (replies come back in order, so the callback pops the oldest
  Future);
- the **model**: its main thread blocks on its socket and answers every request at once
  with the reply; no model work, no other thread of ours.

The transports (``--transports``):

- ``tcp-curve``: ZeroMQ ROUTER (frontend, bound, a CURVE server with the ZAP
  allowlist of ``query_frontend.rpc.auth``) / DEALER (model, connects, CURVE client),
  over ``tcp://127.0.0.1``: Schooner's RPC today. The frontend reads it as
  ``query_frontend.rpc.server`` does, with ``rpc.loop_socket.LoopSocket``
  (``loop.add_reader`` on ``ZMQ_FD``, ``NOBLOCK`` reads, sends that never wait). The
  model's context has one I/O thread (``zmq.Context(io_threads=1)``, the default);
- ``ipc-curve``: the same over ``ipc://`` (a unix socket under the hood);
- ``ipc``: ``ipc://`` without CURVE (what ``--insecure-rpc`` would run);
- ``unix``: a raw ``AF_UNIX`` ``SOCK_STREAM`` socket, messages framed as the unix
  transport frames them (``model_container.framing``). Frontend:
  ``loop.create_unix_server`` and an
  ``asyncio.Protocol`` that writes with ``transport.write``; model: a blocking socket
  (``recv_into`` a buffer, parse, one ``sendall`` of the replies to what it read);
- ``seqpacket``: ``AF_UNIX`` ``SOCK_SEQPACKET`` (the kernel keeps message boundaries,
  so no framing): frontend ``loop.add_reader`` and non-blocking ``recv_into``/``send``
  (reading past the first message only while more replies are awaited);
  model blocking ``recv_into``/``send``.

Per transport and round: a warm-up, then ``--count`` round trips one at a time (c=1:
p50 and p99), then ``--inflight-count`` round trips with ``--inflight`` in flight
(round trips per second). For both windows, the CPU time of every thread of both
processes (``/proc/PID/task/TID/schedstat``, nanoseconds, so libzmq's I/O threads show)
and their context switches (``/proc/PID/task/TID/status``): a thread that takes part in
every round trip shows about one voluntary switch per round trip (it went to sleep and
was woken). Rounds interleave the transports (the order rotates each round), because the
machine's speed drifts; the table gives medians over the rounds, and the per-thread
table the medians of the c=1 windows.

Where the scheduler puts the two processes matters as much as the transport on a small
machine: ``--affinity same`` pins both to CPU 0, ``split`` the frontend to CPU 0 and the
model to CPU 1 (a wake-up across cores costs tens of µs of latency and of CPU), ``any``
(the default) leaves it to the scheduler, as production does.

A run on 2026-12-04 05:52 UTC (2 cores, load average 1.6, three rounds, medians;
``--count 10000 --inflight-count 30000``), c=1 p50 / p99 µs, CPU µs per round trip of the
frontend and the model (all threads), RT/s at 64 in flight::

    tcp-curve   150 / 268   100 + 49   59k      (libzmq I/O threads: fe 46, model 33 µs)
    ipc-curve   137 / 252    92 + 45   74k
    ipc         138 / 236    85 + 44   68k
    unix         53 /  94    26 + 25  202k
    seqpacket    54 /  88    25 + 17  193k

At c=1 the ZeroMQ transports wake 5.4 threads per round trip (the frontend's libzmq
I/O thread twice, the model's about 1.5 times, each main thread once), the unix sockets
2.1.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import uvloop
import zmq
import zmq.asyncio

from model_container.framing import MessageReader, encode_message

REQUEST: Final = bytes(range(120))
REPLY: Final = bytes(range(40))
HELLO: Final = b"hello"
TRANSPORTS: Final = ("tcp-curve", "ipc-curve", "ipc", "unix", "seqpacket")
ZMQ_TRANSPORTS: Final = ("tcp-curve", "ipc-curve", "ipc")

OnReply = Callable[[], None]


# --------------------------------------------------------------------------- model side


def model_zmq(endpoint: str, secrets_dir: str | None) -> None:
    """A DEALER that says hello, then answers every request at once, until killed."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context(io_threads=1)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if secrets_dir is not None:
        from model_container.rpc_keys import ClientKeys

        ClientKeys.load(secrets_dir).apply(sock)
    sock.connect(endpoint)
    sock.send(HELLO)
    recv, send = sock.recv, sock.send
    while True:
        recv(copy=False)
        send(REPLY)


def _framed(payload: bytes) -> bytes:
    """One message of one frame, as the unix-socket RPC frames it."""
    return b"".join(bytes(piece) for piece in encode_message([payload]))


def _connect_unix(kind: int, path: str) -> socket.socket:
    """Connect to the frontend's unix socket (it binds before starting the model)."""
    sock = socket.socket(socket.AF_UNIX, kind)
    sock.connect(path)
    return sock


def model_unix(path: str) -> None:
    """Blocking reads, frames parsed, the replies to one read sent with one ``sendall``."""
    sock = _connect_unix(socket.SOCK_STREAM, path)
    buf = bytearray(256 * 1024)
    view = memoryview(buf)
    reader = MessageReader(max_message=1024 * 1024)
    reply = _framed(REPLY)
    while True:
        n = sock.recv_into(buf)
        if n == 0:
            return
        got = len(reader.feed(view[:n]))
        if got:
            sock.sendall(reply * got)


def model_seqpacket(path: str) -> None:
    """One message per read, one reply per message."""
    sock = _connect_unix(socket.SOCK_SEQPACKET, path)
    buf = bytearray(64 * 1024)
    while True:
        if sock.recv_into(buf) == 0:
            return
        sock.send(REPLY)


# ------------------------------------------------------------------------ frontend side


class Channel:
    """The frontend's end of one transport: ``send`` a request; ``on_reply`` per reply."""

    def __init__(self, on_reply: OnReply) -> None:
        self.on_reply = on_reply

    async def open(self, tmp: str) -> list[str]:
        """Listen; return the model's argv tail (how it finds us)."""
        raise NotImplementedError

    async def wait_peer(self) -> None:
        raise NotImplementedError

    def send(self, payload: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ZmqChannel(Channel):
    """A ROUTER read as ``query_frontend.rpc.server`` reads it (``LoopSocket``)."""

    def __init__(self, on_reply: OnReply, transport: str) -> None:
        super().__init__(on_reply)
        self._transport = transport
        self._ctx = zmq.asyncio.Context()
        self._peer: asyncio.Future[bytes] | None = None
        self._identity = b""
        self._io: Any = None
        self._auth: Any = None

    async def open(self, tmp: str) -> list[str]:
        from query_frontend.rpc.loop_socket import LoopSocket

        loop = asyncio.get_running_loop()
        self._peer = loop.create_future()
        curve = self._transport.endswith("-curve")
        sock: zmq.Socket[bytes] = zmq.Context.shadow(self._ctx.underlying).socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        tail: list[str] = []
        if curve:
            from admin.container_managers._credentials import ClusterCredentials, write_dir
            from model_container.rpc_keys import ServerKeys
            from query_frontend.rpc.auth import RefusalLog, RpcAuthenticator

            creds = ClusterCredentials.generate()
            write_dir(Path(tmp) / "fe", creds.frontend_files())
            write_dir(Path(tmp) / "re", creds.replica_files())
            keys = ServerKeys.load(f"{tmp}/fe")
            self._auth = RpcAuthenticator(self._ctx, keys, RefusalLog())
            self._auth.start()
            keys.apply(sock)
            tail = [f"{tmp}/re"]
        if self._transport.startswith("tcp"):
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            endpoint = f"tcp://127.0.0.1:{port}"
        else:
            endpoint = f"ipc://{tmp}/rpc.sock"
            sock.bind(endpoint)
        self._io = LoopSocket(sock, self._on_message, lambda _identity: None)
        self._io.start()
        return [endpoint, *tail]

    def _on_message(self, frames: list[zmq.Frame]) -> None:
        if self._identity:
            self.on_reply()
        elif self._peer is not None and not self._peer.done():
            self._identity = frames[0].bytes
            self._peer.set_result(self._identity)

    async def wait_peer(self) -> None:
        assert self._peer is not None
        await self._peer

    def send(self, payload: bytes) -> None:
        self._io.send(self._identity, [payload])

    def close(self) -> None:
        if self._io is not None:
            self._io.stop()
            self._io.sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()


class _FramedProtocol(asyncio.Protocol):
    def __init__(self, owner: UnixChannel) -> None:
        self._owner = owner
        self._reader = MessageReader(max_message=1024 * 1024)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner.connected(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        on_reply = self._owner.on_reply
        for _ in self._reader.feed(data):
            on_reply()


class UnixChannel(Channel):
    """``loop.create_unix_server``; the model's connection served by an asyncio Protocol."""

    def __init__(self, on_reply: OnReply) -> None:
        super().__init__(on_reply)
        self._server: asyncio.AbstractServer | None = None
        self._transport: asyncio.WriteTransport | None = None
        self._peer: asyncio.Future[None] | None = None

    async def open(self, tmp: str) -> list[str]:
        loop = asyncio.get_running_loop()
        self._peer = loop.create_future()
        path = f"{tmp}/direct.sock"
        self._server = await loop.create_unix_server(lambda: _FramedProtocol(self), path)
        return [path]

    def connected(self, transport: asyncio.WriteTransport) -> None:
        self._transport = transport
        if self._peer is not None and not self._peer.done():
            self._peer.set_result(None)

    async def wait_peer(self) -> None:
        assert self._peer is not None
        await self._peer

    def send(self, payload: bytes) -> None:
        assert self._transport is not None
        self._transport.write(_framed(payload))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        if self._server is not None:
            self._server.close()


class SeqpacketChannel(Channel):
    """A ``SOCK_SEQPACKET`` connection read on ``loop.add_reader``."""

    def __init__(self, on_reply: OnReply, in_flight: Callable[[], int]) -> None:
        super().__init__(on_reply)
        self.in_flight = in_flight
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._buf = bytearray(64 * 1024)

    async def open(self, tmp: str) -> list[str]:
        path = f"{tmp}/seq.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(path)
        listener.listen(1)
        listener.setblocking(False)
        self._listener = listener
        return [path]

    async def wait_peer(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self._listener)
        conn.setblocking(False)
        self._conn = conn
        loop.add_reader(conn.fileno(), self._drain)

    def _drain(self) -> None:
        # The reader is level-triggered: the loop calls again while messages wait. A
        # read that finds nothing raises BlockingIOError, which costs more than a turn
        # of the loop, so it reads on past the first message only while more replies
        # are awaited (``in_flight``): at c=1 no read ends in the exception.
        assert self._conn is not None
        recv_into, buf = self._conn.recv_into, self._buf
        for _ in range(256):
            try:
                n = recv_into(buf)
            except BlockingIOError:
                return
            if n == 0:
                return
            self.on_reply()
            if not self.in_flight():
                return

    def send(self, payload: bytes) -> None:
        assert self._conn is not None
        self._conn.send(payload)  # 64 small messages never fill the socket's buffer

    def close(self) -> None:
        if self._conn is not None:
            asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.close()
        if self._listener is not None:
            self._listener.close()


# ------------------------------------------------------------------------ thread stats


@dataclass(frozen=True, slots=True)
class ThreadStat:
    who: str  # "frontend" or "model"
    name: str  # the thread's comm (libzmq names its own: ZMQbg/IO/0, ZMQbg/Reaper)
    cpu_ns: int
    voluntary: int
    involuntary: int


def thread_stats(pids: dict[str, int]) -> dict[tuple[str, int], ThreadStat]:
    out: dict[tuple[str, int], ThreadStat] = {}
    for who, pid in pids.items():
        for tid_dir in Path(f"/proc/{pid}/task").iterdir():
            try:
                cpu_ns = int((tid_dir / "schedstat").read_text().split()[0])
                name = (tid_dir / "comm").read_text().strip()
                status = (tid_dir / "status").read_text().splitlines()
            except (FileNotFoundError, ProcessLookupError):
                continue
            fields = dict(line.split(":", 1) for line in status if ":" in line)
            out[(who, int(tid_dir.name))] = ThreadStat(
                who,
                name,
                cpu_ns,
                int(fields["voluntary_ctxt_switches"]),
                int(fields["nonvoluntary_ctxt_switches"]),
            )
    return out


def per_round_trip(
    before: dict[tuple[str, int], ThreadStat],
    after: dict[tuple[str, int], ThreadStat],
    n: int,
) -> list[dict[str, Any]]:
    """Each thread's CPU µs and context switches per round trip over the window."""
    rows = []
    for key, end in after.items():
        start = before.get(key, ThreadStat(end.who, end.name, 0, 0, 0))
        rows.append(
            {
                "who": end.who,
                "thread": "main" if key[1] in MAIN_TIDS else end.name,
                "cpu_us": (end.cpu_ns - start.cpu_ns) / n / 1e3,
                "vcsw": (end.voluntary - start.voluntary) / n,
                "ivcsw": (end.involuntary - start.involuntary) / n,
            }
        )
    return rows


MAIN_TIDS: set[int] = set()


# ---------------------------------------------------------------------------- frontend


class Driver:
    """Futures for the requests in flight, resolved by the channel's reply callback."""

    def __init__(self) -> None:
        self.pending: collections.deque[asyncio.Future[None]] = collections.deque()
        self.channel: Channel | None = None

    def on_reply(self) -> None:
        self.pending.popleft().set_result(None)

    async def one(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        assert self.channel is not None
        self.channel.send(REQUEST)
        await fut

    async def sequential(self, n: int) -> list[float]:
        latencies = []
        clock = time.perf_counter
        for _ in range(n):
            t0 = clock()
            await self.one()
            latencies.append(clock() - t0)
        return latencies

    async def in_flight(self, n: int, width: int) -> None:
        left = n

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await self.one()

        await asyncio.gather(*(worker() for _ in range(width)))


def make_channel(transport: str, on_reply: OnReply, in_flight: Callable[[], int]) -> Channel:
    if transport in ZMQ_TRANSPORTS:
        return ZmqChannel(on_reply, transport)
    if transport == "unix":
        return UnixChannel(on_reply)
    if transport == "seqpacket":
        return SeqpacketChannel(on_reply, in_flight)
    raise SystemExit(f"unknown transport {transport!r}")


async def frontend(
    transport: str, count: int, inflight: int, inflight_count: int, affinity: str
) -> dict[str, Any]:
    driver = Driver()
    channel = make_channel(transport, driver.on_reply, lambda: len(driver.pending))
    driver.channel = channel
    with tempfile.TemporaryDirectory(prefix="trtt-") as tmp:
        tail = await channel.open(tmp)
        argv = [sys.executable, "-m", "benchmarks.transport_rtt", "--affinity", affinity]
        argv += ["--model", transport, *tail]
        child = subprocess.Popen(argv)  # noqa: ASYNC220 (started once, before measuring)
        try:
            await asyncio.wait_for(channel.wait_peer(), 20.0)
            pids = {"frontend": os.getpid(), "model": child.pid}
            MAIN_TIDS.update(pids.values())
            await driver.sequential(1000)
            await driver.in_flight(5000, inflight)
            await driver.sequential(200)

            s0 = thread_stats(pids)
            latencies = await driver.sequential(count)
            s1 = thread_stats(pids)
            c1 = per_round_trip(s0, s1, count)

            t0 = time.perf_counter()
            await driver.in_flight(inflight_count, inflight)
            wall = time.perf_counter() - t0
            s2 = thread_stats(pids)
            cn = per_round_trip(s1, s2, inflight_count)
        finally:
            channel.close()
            child.kill()
            child.wait()
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "transport": transport,
        "p50_us": cuts[49] * 1e6,
        "p99_us": cuts[98] * 1e6,
        "threads_c1": c1,
        "inflight": inflight,
        "rps": inflight_count / wall,
        "threads_inflight": cn,
    }


# -------------------------------------------------------------------------- the runner


def _cpu(rows: Iterable[dict[str, Any]], who: str, main: bool | None = None) -> float:
    return float(
        sum(
            r["cpu_us"]
            for r in rows
            if r["who"] == who and (main is None or (r["thread"] == "main") == main)
        )
    )


def _switches(rows: Iterable[dict[str, Any]], who: str) -> float:
    return float(sum(r["vcsw"] for r in rows if r["who"] == who))


def _med(values: Sequence[float]) -> float:
    return statistics.median(values)


def summarize(results: list[dict[str, Any]], transports: Sequence[str]) -> str:
    lines = [
        "| transport | c=1 p50 µs | c=1 p99 µs | c=1 CPU µs/RT frontend (main + other threads)"
        " | c=1 CPU µs/RT model (main + other) | c=1 vol. switches/RT fe, model"
        f" | c={results[0]['inflight']} RT/s | c={results[0]['inflight']} CPU µs/RT fe, model |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in transports:
        rs = [r for r in results if r["transport"] == t]
        if not rs:
            continue

        def m(f: Callable[[dict[str, Any]], float], rs: list[dict[str, Any]] = rs) -> float:
            return _med([f(r) for r in rs])

        fe_main = m(lambda r: _cpu(r["threads_c1"], "frontend", True))
        fe_other = m(lambda r: _cpu(r["threads_c1"], "frontend", False))
        mo_main = m(lambda r: _cpu(r["threads_c1"], "model", True))
        mo_other = m(lambda r: _cpu(r["threads_c1"], "model", False))
        lines.append(
            f"| {t} | {m(lambda r: r['p50_us']):.0f} | {m(lambda r: r['p99_us']):.0f}"
            f" | {fe_main + fe_other:.0f} ({fe_main:.0f} + {fe_other:.0f})"
            f" | {mo_main + mo_other:.0f} ({mo_main:.0f} + {mo_other:.0f})"
            f" | {m(lambda r: _switches(r['threads_c1'], 'frontend')):.1f},"
            f" {m(lambda r: _switches(r['threads_c1'], 'model')):.1f}"
            f" | {m(lambda r: r['rps']):,.0f}"
            f" | {m(lambda r: _cpu(r['threads_inflight'], 'frontend')):.0f},"
            f" {m(lambda r: _cpu(r['threads_inflight'], 'model')):.0f} |"
        )
    lines += [
        "",
        "Per thread at c=1 (medians; CPU µs and voluntary context switches per round trip;"
        " threads that ran < 0.05 µs/RT left out):",
        "",
        "| transport | process | thread | CPU µs/RT | vol. switches/RT |",
        "|---|---|---|---|---|",
    ]
    for t in transports:
        rs = [r for r in results if r["transport"] == t]
        keys = sorted({(row["who"], row["thread"]) for r in rs for row in r["threads_c1"]})
        for who, thread in keys:
            cpu = _med([_thread_sum(r, who, thread, "cpu_us") for r in rs])
            vcsw = _med([_thread_sum(r, who, thread, "vcsw") for r in rs])
            if cpu >= 0.05:
                lines.append(f"| {t} | {who} | {thread} | {cpu:.1f} | {vcsw:.2f} |")
    return "\n".join(lines)


def _thread_sum(result: dict[str, Any], who: str, thread: str, field: str) -> float:
    return float(
        sum(r[field] for r in result["threads_c1"] if r["who"] == who and r["thread"] == thread)
    )


def run(args: argparse.Namespace) -> None:
    transports = [t for t in args.transports.split(",") if t]
    for t in transports:
        if t not in TRANSPORTS:
            raise SystemExit(f"unknown transport {t!r} (one of {', '.join(TRANSPORTS)})")
    results: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load0 = os.getloadavg()
    for rnd in range(args.rounds):
        shift = rnd % len(transports)
        for t in transports[shift:] + transports[:shift]:
            argv = [
                sys.executable,
                "-m",
                "benchmarks.transport_rtt",
                "--frontend",
                t,
                "--count",
                str(args.count),
                "--inflight",
                str(args.inflight),
                "--inflight-count",
                str(args.inflight_count),
                "--affinity",
                args.affinity,
            ]
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            result["round"] = rnd
            results.append(result)
            print(
                f"round {rnd + 1} {t:>10}: p50 {result['p50_us']:.0f} µs,"
                f" p99 {result['p99_us']:.0f} µs, c={args.inflight} {result['rps']:,.0f} RT/s",
                flush=True,
            )
    load1 = os.getloadavg()
    print()
    print(
        f"{started} → {time.strftime('%H:%M:%S')}, load average {load0[0]:.2f} → {load1[0]:.2f},"
        f" {args.rounds} rounds, medians; {args.count} round trips at c=1,"
        f" {args.inflight_count} at c={args.inflight}, affinity {args.affinity}"
    )
    print()
    print(summarize(results, transports))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.transport_rtt",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--count", type=int, default=5000, help="round trips measured at c=1")
    p.add_argument("--inflight", type=int, default=64)
    p.add_argument("--inflight-count", type=int, default=20000)
    p.add_argument("--transports", default=",".join(TRANSPORTS))
    p.add_argument(
        "--affinity",
        choices=("any", "same", "split"),
        default="any",
        help="where the scheduler may run the two processes: anywhere (as in production),"
        " both on CPU 0, or the frontend on CPU 0 and the model on CPU 1",
    )
    p.add_argument("--json", help="also write every round's raw figures here")
    p.add_argument("--frontend", help=argparse.SUPPRESS)
    p.add_argument("--model", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.frontend or a.model:
        cpu = {"same": 0, "split": 1 if a.model else 0}.get(a.affinity)
        if cpu is not None:  # before any thread starts: libzmq's threads inherit it
            os.sched_setaffinity(0, {cpu})
    if a.model:
        transport, *rest = a.model
        with contextlib.suppress(KeyboardInterrupt, BrokenPipeError, ConnectionResetError):
            if transport in ZMQ_TRANSPORTS:
                model_zmq(rest[0], rest[1] if len(rest) > 1 else None)
            elif transport == "unix":
                model_unix(rest[0])
            else:
                model_seqpacket(rest[0])
        return
    if a.frontend:
        out = uvloop.run(frontend(a.frontend, a.count, a.inflight, a.inflight_count, a.affinity))
        print(json.dumps(out), flush=True)
        return
    run(a)


if __name__ == "__main__":
    main()
