"""The query frontend's side of the wire protocol on the direct unix-socket transport,
for the tests that run a real model container against it (``docs/wire-protocol.md``
§1.3).

``UnixFrontend`` listens on a ``SOCK_STREAM`` unix socket (in a fresh mode-0700
directory unless a path is given), accepts every replica that connects, frames messages
with ``model_container.framing`` and carries ``frontend_side.FrontendSide`` (HELLOs
welcomed, heartbeats answered or strangers REJECTed, PREDICTs of doubles sent), as
``fake_frontend.FakeFrontend`` does over ZeroMQ. A connection's identity is a counter, as the real
frontend's. ``close()`` closes every connection and unlinks the socket file, so that a
"restarted" frontend can listen at the same path at once. ``stop_reading`` leaves what
replicas send in the kernel's buffers (a frontend that does not read). Every wait polls
with a deadline.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from frontend_side import REPLY_S, FrontendSide

from model_container import framing, protocol
from model_container.protocol import Message


class UnixFrontend(FrontendSide[int]):
    """A listening unix socket at ``path`` (in a new temporary directory if None)."""

    def __init__(self, path: str | None = None) -> None:
        super().__init__()
        self._tmp: str | None = None
        if path is None:
            self._tmp = tempfile.mkdtemp(prefix="uf-")  # short: sun_path has 108 bytes
            os.chmod(self._tmp, 0o700)
            path = os.path.join(self._tmp, "query.sock")
        self.path = path
        with_stale = Path(path)
        if with_stale.is_socket():
            with_stale.unlink()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.conns: dict[int, socket.socket] = {}
        self._readers: dict[int, framing.MessageReader] = {}
        self._inbox: list[tuple[int, Message]] = []
        self._next_id = 0
        self.accepted = 0
        self.disconnects = 0

    @property
    def address(self) -> str:
        return f"unix://{self.path}"

    # ------------------------------------------------------------------ sending

    def send(self, identity: int, msg: Message) -> None:
        self.send_frames(identity, protocol.encode(msg))

    def send_frames(self, identity: int, frames: list[Any]) -> None:
        conn = self.conns[identity]
        conn.setblocking(True)
        try:
            conn.sendall(b"".join(bytes(p) for p in framing.encode_message(frames)))
        finally:
            conn.setblocking(False)

    def send_raw(self, identity: int, data: bytes) -> None:
        conn = self.conns[identity]
        conn.setblocking(True)
        try:
            conn.sendall(data)
        finally:
            conn.setblocking(False)

    # ------------------------------------------------------------------ receiving

    def accept_waiting(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            identity = self._next_id
            self._next_id += 1
            self.conns[identity] = conn
            self._readers[identity] = framing.MessageReader()
            self.accepted += 1

    def _pump(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for something, then accept and read what there is."""
        socks: list[socket.socket] = [self.listener, *self.conns.values()]
        readable, _, _ = select.select(socks, [], [], max(0.0, timeout_s))
        if self.listener in readable:
            self.accept_waiting()
        for identity, conn in list(self.conns.items()):
            if conn not in readable:
                continue
            try:
                data = conn.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._drop(identity)
                continue
            for frames in self._readers[identity].feed(data):
                self._inbox.append((identity, protocol.decode(frames)))

    def _drop(self, identity: int) -> None:
        self.conns.pop(identity).close()
        self._readers.pop(identity, None)
        self.welcomed.discard(identity)
        self.disconnects += 1

    def _next(self, deadline: float, what: str) -> tuple[int, Message]:
        while not self._inbox:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} at {self.address} before the deadline")
            self._pump(min(remaining, 0.1))
        return self._inbox.pop(0)

    def _can_reply(self, identity: int) -> bool:
        return identity in self.conns

    def wait_disconnect(self, identity: int, timeout_s: float = REPLY_S) -> None:
        """Read (and drop) messages until the connection ``identity`` is closed."""
        deadline = time.monotonic() + timeout_s
        while identity in self.conns:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection {identity} still open")
            self._pump(min(remaining, 0.1))

    def close(self, remove_dir: bool = True) -> None:
        """Close every connection and the listener, unlink the socket file; keep the
        directory (for a restart at the same path) unless ``remove_dir``."""
        if not self.closed:
            self.closed = True
            for identity in list(self.conns):
                self._drop(identity)
            self.listener.close()
            Path(self.path).unlink(missing_ok=True)
        if self._tmp is not None and remove_dir:
            shutil.rmtree(self._tmp, ignore_errors=True)
