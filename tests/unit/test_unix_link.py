"""``UnixLink`` against a real listening unix socket in this process: connecting (and
not), the peer's uid, buffering for a peer that does not read, reads of any cut, and the
end of a connection. Nothing here asserts how long anything took."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from model_container import framing, protocol, unix_link
from model_container.connection import LinkEvent
from model_container.protocol import Goodbye, Heartbeat, Hello, Result, Welcome
from model_container.unix_link import UnixLink

DEADLINE_S = 10.0


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ul-"))  # short: sun_path has 108 bytes
    path.chmod(0o700)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


def listen(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    return server


def accept(server: socket.socket) -> socket.socket:
    server.settimeout(DEADLINE_S)
    peer, _ = server.accept()
    peer.settimeout(DEADLINE_S)
    return peer


def read_messages(peer: socket.socket, count: int) -> list[list[bytes]]:
    reader = framing.MessageReader()
    got: list[list[bytes]] = []
    while len(got) < count:
        data = peer.recv(1 << 20)
        assert data, "the link closed the connection"
        got += reader.feed(data)
    return got


def hello() -> Hello:
    return Hello("m", "1", protocol.InputType.DOUBLES, "r-0", {}, os.getpid(), 100)


def big_result(batch_id: int, size: int) -> Result:
    lengths, data = protocol.pack_items([bytes([batch_id % 256]) * size])
    return Result(batch_id, lengths, data)


@dataclasses.dataclass
class Connected:
    """A link polled by ``poller`` that has said HELLO, and the listener's end of it."""

    link: UnixLink
    poller: zmq.Poller
    peer: socket.socket


@contextlib.contextmanager
def connected(sock_dir: Path, **link_options: int) -> Iterator[Connected]:
    """Listen in ``sock_dir``, send HELLO over a new ``UnixLink`` and accept it; on
    leaving, close the peer, the link and the listener."""
    server = listen(sock_dir / "q.sock")
    link = UnixLink(f"unix://{sock_dir / 'q.sock'}", **link_options)
    poller = zmq.Poller()
    link.attach(poller)
    try:
        assert link.send(hello())
        peer = accept(server)
        try:
            yield Connected(link, poller, peer)
        finally:
            peer.close()
    finally:
        link.close()
        server.close()


def drain(c: Connected, count: int) -> list[list[bytes]]:
    """Poll the link (it flushes on POLLOUT) while the peer reads ``count`` messages."""
    reader = framing.MessageReader()
    got: list[list[bytes]] = []
    c.peer.setblocking(False)
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < count:
        assert time.monotonic() < deadline, "not everything arrived"
        c.link.ready(dict(c.poller.poll(10)))
        try:
            got += reader.feed(c.peer.recv(1 << 20))
        except BlockingIOError:
            continue
    return got


def test_nobody_listening_sends_nothing_and_says_so_once(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    link = UnixLink(f"unix://{sock_dir / 'q.sock'}")
    poller = zmq.Poller()
    link.attach(poller)
    with caplog.at_level(logging.DEBUG, logger=unix_link.__name__):
        assert not link.send(hello())
        assert not link.send(hello())
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot connect" in warnings[0].getMessage()
    assert not link.connected and link.events({}) == []
    # Listening now: the next send connects and delivers.
    server = listen(sock_dir / "q.sock")
    try:
        assert link.send(hello())
        peer = accept(server)
        assert protocol.decode(read_messages(peer, 1)[0]) == hello()
        peer.close()
    finally:
        link.close()
        server.close()


def test_a_listener_of_another_uid_is_refused(
    sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = listen(sock_dir / "q.sock")
    stranger = os.getuid() + 1
    monkeypatch.setattr(unix_link, "peer_uid", lambda sock: stranger)
    link = UnixLink(f"unix://{sock_dir / 'q.sock'}")
    try:
        assert not link.send(hello())
        assert link.events({}) == [LinkEvent.REFUSED]
        assert f"uid {stranger}" in link.refusal and not link.connected
        peer = accept(server)
        assert peer.recv(1024) == b"", "a refused listener got bytes"
        peer.close()
    finally:
        link.close()
        server.close()


def test_a_peer_that_does_not_read_never_blocks_a_send_and_gets_everything_in_order(
    sock_dir: Path,
) -> None:
    with connected(sock_dir) as c:
        # Far more than the kernel's socket buffers hold: sends keep returning at once.
        sent = [big_result(i, 256 * 1024) for i in range(40)]
        for result in sent:
            assert c.link.send(result)
        assert c.link.buffered > 0
        # The peer reads now; the loop flushes on POLLOUT until nothing waits.
        got = drain(c, 1 + len(sent))
        assert c.link.buffered == 0
        assert [protocol.decode(frames) for frames in got] == [hello(), *sent]
        # Nothing waits: the fd is polled for input only again.
        assert all(not flags & zmq.POLLOUT for flags in dict(c.poller.poll(0)).values())


def test_buffered_bytes_have_a_limit_and_whole_messages_are_dropped(sock_dir: Path) -> None:
    with connected(sock_dir, max_buffered=1024 * 1024) as c:
        results = [c.link.send(big_result(i, 256 * 1024)) for i in range(40)]
        assert not all(results), "a peer that never reads made the buffer grow forever"
        assert c.link.buffered <= 1024 * 1024


def test_messages_in_any_cut_and_several_in_one_read(sock_dir: Path) -> None:
    with connected(sock_dir) as c:
        stream = b"".join(
            bytes(piece)
            for msg in (Welcome(100), Heartbeat(), Heartbeat())
            for piece in framing.encode_message(protocol.encode(msg))
        )
        c.peer.sendall(stream[:3])  # half a prefix
        received: list[protocol.Message] = []
        deadline = time.monotonic() + DEADLINE_S
        c.peer.sendall(stream[3:])
        while len(received) < 3:
            assert time.monotonic() < deadline, f"only {received}"
            if c.link.ready(dict(c.poller.poll(100))):
                while (frames := c.link.recv()) is not None:
                    received.append(protocol.decode(frames))
        assert received == [Welcome(100), Heartbeat(), Heartbeat()]
        assert c.link.backlog == 0


def wait_for_events(link: UnixLink, poller: zmq.Poller) -> list[LinkEvent]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if link.ready(dict(poller.poll(100))):
            link.recv()
        events = link.events({})
        if events:
            return events
    raise AssertionError("no event")


def test_eof_is_a_disconnect_and_the_link_is_spent(sock_dir: Path) -> None:
    with connected(sock_dir) as c:
        c.peer.close()
        assert wait_for_events(c.link, c.poller) == [LinkEvent.DISCONNECTED]
        assert not c.link.connected
        assert not c.link.send(hello()), "a spent link dialled again"


def test_a_stream_that_breaks_the_framing_is_a_disconnect(
    sock_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with connected(sock_dir) as c:
        c.peer.sendall(framing.U32.pack(framing.MAX_FRAMES + 1) + b"secret-bytes")
        with caplog.at_level(logging.WARNING, logger=unix_link.__name__):
            assert wait_for_events(c.link, c.poller) == [LinkEvent.DISCONNECTED]
        assert "framing" in caplog.text and "secret-bytes" not in caplog.text


def test_close_with_linger_lets_a_buffered_goodbye_out(sock_dir: Path) -> None:
    with connected(sock_dir) as c:
        for i in range(12):
            assert c.link.send(big_result(i, 256 * 1024))
        assert c.link.send(Goodbye("stopping"))
        assert c.link.buffered > 0
        # The peer drains on a thread while the link lingers on this one.
        got: list[list[bytes]] = []
        reader = threading.Thread(target=lambda: got.extend(read_messages(c.peer, 14)))
        reader.start()
        c.link.close(linger_ms=int(DEADLINE_S * 1000))
        reader.join(DEADLINE_S)
        assert protocol.decode(got[-1]) == Goodbye("stopping")


def test_frames_of_wide_items_are_cut_in_bytes_when_partly_sent(sock_dir: Path) -> None:
    """A frame may be a memoryview of 8-byte doubles: what the kernel did not take is
    kept from the right byte, not the right item."""
    with connected(sock_dir) as c:
        doubles = np.arange(100_001, dtype="<f8")  # 800,008 bytes: more than one send takes
        frames = [protocol.encode(Heartbeat())[0], memoryview(doubles)]
        for _ in range(3):
            assert c.link.send_frames(frames)
        assert c.link.buffered > 0
        got = drain(c, 4)
        assert all(m[1] == doubles.tobytes() for m in got[1:])


LISTEN_AS_OTHER = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(1)
print("listening", flush=True)
conn, _ = s.accept()
conn.settimeout(10)
print(repr(conn.recv(100)), flush=True)
"""


SYSTEM_PYTHON = "/usr/bin/python3"  # one that another user may run (the venv's may not)


@pytest.mark.skipif(
    os.getuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs root (to listen as another user) and a system python3",
)
def test_a_real_listener_of_another_user_gets_nothing(sock_dir: Path) -> None:
    sock_dir.chmod(0o777)  # the other user must be able to create its socket here
    path = sock_dir / "q.sock"
    other = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", LISTEN_AS_OTHER, str(path)],
        user=65534,
        group=65534,
        stdout=subprocess.PIPE,
        text=True,
    )
    link = UnixLink(f"unix://{path}")
    try:
        assert other.stdout is not None
        assert other.stdout.readline().strip() == "listening"
        assert not link.send(hello())
        assert link.events({}) == [LinkEvent.REFUSED]
        assert "uid 65534" in link.refusal
        # The impostor saw the connection and not one byte of it.
        assert other.stdout.readline().strip() == "b''"
    finally:
        link.close()
        other.kill()
        other.communicate(timeout=DEADLINE_S)  # also closes its stdout
